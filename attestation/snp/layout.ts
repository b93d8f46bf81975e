/**
 * Byte layout of the SEV-SNP ATTESTATION_REPORT (internal; shared by the parser and the
 * simulator's encoder so both read the same table).
 *
 * Source: AMD "SEV Secure Nested Paging Firmware ABI Specification" (pub. 56860), table
 * "ATTESTATION_REPORT Structure" (report versions 2, 3 and 5), table "TCB_VERSION
 * Structure", table "Guest Policy Structure" and appendix "Digital Signatures", table
 * "ECDSA P-384 with SHA-384 Signature Format"; cross-checked against the real reports in
 * test/data/vectors (see /work/shared/vectors/MANIFEST.md, "AMD SEV-SNP ATTESTATION_REPORT").
 * All integers are little-endian.
 */

export const REPORT_SIZE = 0x4a0; // 1184

// [offset, size] of every field, in table order.
export const OFF_VERSION = 0x000; // 4
export const OFF_GUEST_SVN = 0x004; // 4
export const OFF_POLICY = 0x008; // 8
export const OFF_FAMILY_ID = 0x010; // 16
export const OFF_IMAGE_ID = 0x020; // 16
export const OFF_VMPL = 0x030; // 4
export const OFF_SIGNATURE_ALGO = 0x034; // 4
export const OFF_CURRENT_TCB = 0x038; // 8
export const OFF_PLATFORM_INFO = 0x040; // 8
export const OFF_FLAGS = 0x048; // 4: bit0 AUTHOR_KEY_EN, bit1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY, 5-31 reserved
export const OFF_RESERVED_04C = 0x04c; // 4, reserved (MBZ)
export const OFF_REPORT_DATA = 0x050; // 64
export const OFF_MEASUREMENT = 0x090; // 48
export const OFF_HOST_DATA = 0x0c0; // 32
export const OFF_ID_KEY_DIGEST = 0x0e0; // 48
export const OFF_AUTHOR_KEY_DIGEST = 0x110; // 48
export const OFF_REPORT_ID = 0x140; // 32
export const OFF_REPORT_ID_MA = 0x160; // 32
export const OFF_REPORTED_TCB = 0x180; // 8
export const OFF_CPUID_FAM_ID = 0x188; // 1 (v3+; reserved in v2)
export const OFF_CPUID_MOD_ID = 0x189; // 1 (v3+)
export const OFF_CPUID_STEP = 0x18a; // 1 (v3+)
export const OFF_RESERVED_18B = 0x18b; // 21, reserved (MBZ) up to 0x1A0
export const OFF_CHIP_ID = 0x1a0; // 64
export const OFF_COMMITTED_TCB = 0x1e0; // 8
export const OFF_CURRENT_BUILD = 0x1e8; // 1
export const OFF_CURRENT_MINOR = 0x1e9; // 1
export const OFF_CURRENT_MAJOR = 0x1ea; // 1
export const OFF_RESERVED_1EB = 0x1eb; // 1, reserved (MBZ)
export const OFF_COMMITTED_BUILD = 0x1ec; // 1
export const OFF_COMMITTED_MINOR = 0x1ed; // 1
export const OFF_COMMITTED_MAJOR = 0x1ee; // 1
export const OFF_RESERVED_1EF = 0x1ef; // 1, reserved (MBZ)
export const OFF_LAUNCH_TCB = 0x1f0; // 8
export const OFF_LAUNCH_MIT_VECTOR = 0x1f8; // 8 (v5; reserved before)
export const OFF_CURRENT_MIT_VECTOR = 0x200; // 8 (v5; reserved before)
export const OFF_RESERVED_208 = 0x208; // 152, reserved (MBZ) up to 0x2A0
export const OFF_SIGNATURE = 0x2a0; // 512: signature block

/** The signature covers bytes [0x000, 0x2A0): everything before the signature block. */
export const SIGNED_REGION_END = OFF_SIGNATURE; // 672 bytes

export const LEN_FAMILY_ID = 16;
export const LEN_IMAGE_ID = 16;
export const LEN_REPORT_DATA = 64;
export const LEN_MEASUREMENT = 48;
export const LEN_HOST_DATA = 32;
export const LEN_ID_KEY_DIGEST = 48;
export const LEN_AUTHOR_KEY_DIGEST = 48;
export const LEN_REPORT_ID = 32;
export const LEN_CHIP_ID = 64;
export const LEN_TCB = 8;

// ECDSA P-384 signature block: R at +0x00 (72 bytes), S at +0x48 (72 bytes), both
// little-endian and zero-extended; +0x90..+0x1FF reserved.
export const SIG_COMPONENT_SIZE = 72;
export const SIG_P384_SCALAR_SIZE = 48;
export const OFF_SIG_R = OFF_SIGNATURE + 0x00;
export const OFF_SIG_S = OFF_SIGNATURE + 0x48;
export const OFF_SIG_RESERVED = OFF_SIGNATURE + 0x90; // up to REPORT_SIZE

export const SUPPORTED_VERSIONS: readonly number[] = [2, 3, 5];
/** SIGNATURE_ALGO: 1 = ECDSA P-384 with SHA-384 (the only algorithm the spec defines). */
export const SIG_ALGO_ECDSA_P384_SHA384 = 1;

// FLAGS (0x048)
export const FLAG_AUTHOR_KEY_EN = 1 << 0;
export const FLAG_MASK_CHIP_KEY = 1 << 1;
export const FLAG_SIGNING_KEY_SHIFT = 2;
export const FLAG_SIGNING_KEY_MASK = 0b111;
export const FLAG_RESERVED_MASK = 0xffffffe0; // bits 5-31
export const SIGNING_KEY_VCEK = 0;
export const SIGNING_KEY_VLEK = 1;

// Guest policy (0x008), table "Guest Policy Structure".
export const POLICY_ABI_MINOR_SHIFT = 0n; // bits 0-7
export const POLICY_ABI_MAJOR_SHIFT = 8n; // bits 8-15
export const POLICY_SMT_BIT = 16n;
export const POLICY_RESERVED_ONE_BIT = 17n; // reserved, must be one
export const POLICY_MIGRATE_MA_BIT = 18n;
export const POLICY_DEBUG_BIT = 19n;
export const POLICY_SINGLE_SOCKET_BIT = 20n;
export const POLICY_CXL_ALLOW_BIT = 21n;
export const POLICY_MEM_AES_256_XTS_BIT = 22n;
export const POLICY_RAPL_DIS_BIT = 23n;
export const POLICY_CIPHERTEXT_HIDING_BIT = 24n;
export const POLICY_PAGE_SWAP_DISABLE_BIT = 25n;
/** Bits 26-63 are reserved and must be zero. */
export const POLICY_MBZ_MASK = ~((1n << 26n) - 1n) & 0xffff_ffff_ffff_ffffn;

// PLATFORM_INFO (0x040)
export const PLATFORM_SMT_EN_BIT = 0n;
export const PLATFORM_TSME_EN_BIT = 1n;
export const PLATFORM_ECC_EN_BIT = 2n;
export const PLATFORM_RAPL_DIS_BIT = 3n;
export const PLATFORM_CIPHERTEXT_HIDING_EN_BIT = 4n;
export const PLATFORM_ALIAS_CHECK_COMPLETE_BIT = 5n;

// TCB_VERSION byte positions (table "TCB_VERSION Structure"; Turin per MANIFEST.md).
export const TCB_MILAN_GENOA = { bootloader: 0, tee: 1, snp: 6, microcode: 7 } as const;
export const TCB_TURIN = { fmc: 0, bootloader: 1, tee: 2, snp: 3, microcode: 7 } as const;

// CPUID family / model ranges (CPUID Fn0000_0001_EAX extended family / model).
export const CPUID_FAMILY_ZEN3_ZEN4 = 0x19; // Milan, Genoa
export const CPUID_FAMILY_ZEN5 = 0x1a; // Turin
