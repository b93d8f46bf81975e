import { AttestationError, type AttestationErrorCode } from '../codes.js';
import * as L from './layout.js';

/**
 * Parser for the SEV-SNP ATTESTATION_REPORT: bytes -> frozen typed struct. No crypto and
 * no I/O; the signature is only decoded here and checked in verify.ts.
 *
 * Spec: AMD SEV-SNP Firmware ABI (pub. 56860), table "ATTESTATION_REPORT Structure"
 * (versions 2, 3, 5); offsets live in layout.ts.
 */

export type SnpProduct = 'Milan' | 'Genoa' | 'Turin';
export type SnpSigningKey = 'vcek' | 'vlek';
/** Byte order of TCB_VERSION: Milan/Genoa, or Turin (CPUID family 0x1A). */
export type SnpTcbLayout = 'milan-genoa' | 'turin';

export interface SnpTcbVersion {
  /** The 8 bytes as a little-endian integer, as in the report. */
  readonly raw: bigint;
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  /** Turin only. */
  readonly fmc?: number;
}

export interface SnpGuestPolicy {
  readonly raw: bigint;
  readonly abiMinor: number;
  readonly abiMajor: number;
  /** bit 16: SMT allowed. */
  readonly smt: boolean;
  /** bit 18: a migration agent may be associated. */
  readonly migrateMa: boolean;
  /** bit 19: debugging allowed (guest memory readable by the host). */
  readonly debug: boolean;
  /** bit 20: guest may only run on a single socket. */
  readonly singleSocket: boolean;
  readonly cxlAllow: boolean;
  readonly memAes256Xts: boolean;
  readonly raplDis: boolean;
  readonly ciphertextHiding: boolean;
  readonly pageSwapDisable: boolean;
}

export interface SnpPlatformInfo {
  readonly raw: bigint;
  readonly smtEnabled: boolean;
  readonly tsmeEnabled: boolean;
  readonly eccEnabled: boolean;
  readonly raplDisabled: boolean;
  readonly ciphertextHidingEnabled: boolean;
  readonly aliasCheckComplete: boolean;
}

export interface SnpFirmwareVersion {
  readonly major: number;
  readonly minor: number;
  readonly build: number;
}

export interface SnpCpuid {
  readonly family: number;
  readonly model: number;
  readonly stepping: number;
}

/**
 * A parsed report. The object graph is frozen; byte fields are private copies (typed
 * arrays cannot be frozen), so mutating them never affects the caller's input.
 */
export interface SnpReport {
  readonly version: number;
  readonly guestSvn: number;
  readonly policy: SnpGuestPolicy;
  readonly familyId: Uint8Array;
  readonly imageId: Uint8Array;
  readonly vmpl: number;
  readonly signatureAlgo: number;
  readonly currentTcb: SnpTcbVersion;
  readonly platformInfo: SnpPlatformInfo;
  readonly authorKeyEn: boolean;
  readonly maskChipKey: boolean;
  readonly signingKey: SnpSigningKey;
  readonly reportData: Uint8Array;
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly idKeyDigest: Uint8Array;
  readonly authorKeyDigest: Uint8Array;
  readonly reportId: Uint8Array;
  readonly reportIdMa: Uint8Array;
  readonly reportedTcb: SnpTcbVersion;
  /** v3+ only. */
  readonly cpuid?: SnpCpuid;
  readonly chipId: Uint8Array;
  readonly committedTcb: SnpTcbVersion;
  readonly currentFirmware: SnpFirmwareVersion;
  readonly committedFirmware: SnpFirmwareVersion;
  readonly launchTcb: SnpTcbVersion;
  /** v5 only. */
  readonly launchMitVector?: bigint;
  /** v5 only. */
  readonly currentMitVector?: bigint;
  /**
   * Product derived from CPUID (v3+). Undefined for v2 reports, which carry no CPUID: the
   * verifier then takes the product from the VCEK/VLEK productName.
   */
  readonly product?: SnpProduct;
  /** Layout used to decode the TCB fields. v2 reports predate Turin: always milan-genoa. */
  readonly tcbLayout: SnpTcbLayout;
  /** ECDSA P-384 signature: r and s, each 72 bytes little-endian, zero-extended. */
  readonly signature: { readonly r: Uint8Array; readonly s: Uint8Array };
  /** Copy of bytes 0x000..0x29F, the region the signature covers. */
  readonly signedRegion: Uint8Array;
}

function fail(code: AttestationErrorCode, detail: string): never {
  throw new AttestationError(code, { detail });
}

/** Reads `len` bytes at `off` as a copy, after checking the range lies in `b`. */
function bytesAt(b: Uint8Array, off: number, len: number): Uint8Array {
  if (off < 0 || len < 0 || off + len > b.length) fail('ERR_ATT_SNP_BAD_SIZE', `field at 0x${off.toString(16)} out of range`);
  return b.slice(off, off + len);
}

function isZero(b: Uint8Array, off: number, end: number): boolean {
  for (let i = off; i < end; i++) if (b[i] !== 0) return false;
  return true;
}

function requireZero(b: Uint8Array, off: number, end: number, field: string): void {
  if (!isZero(b, off, end)) fail('ERR_ATT_SNP_RESERVED_NONZERO', `${field} (0x${off.toString(16)}..0x${(end - 1).toString(16)})`);
}

const bit = (v: bigint, n: bigint): boolean => ((v >> n) & 1n) === 1n;

/** Maps CPUID family/model to a product, or undefined if unsupported. */
export function productFromCpuid(family: number, model: number): SnpProduct | undefined {
  if (family === L.CPUID_FAMILY_ZEN3_ZEN4) {
    if (model <= 0x0f) return 'Milan';
    if ((model >= 0x10 && model <= 0x1f) || (model >= 0xa0 && model <= 0xaf)) return 'Genoa';
    return undefined;
  }
  // Turin: model 0x02 (Zen 5) and 0x11 (Zen 5c); the range below covers both and nothing newer.
  if (family === L.CPUID_FAMILY_ZEN5 && model <= 0x11) return 'Turin';
  return undefined;
}

export function tcbLayoutFor(product: SnpProduct | undefined): SnpTcbLayout {
  return product === 'Turin' ? 'turin' : 'milan-genoa';
}

/** Decodes an 8-byte TCB_VERSION (table "TCB_VERSION Structure"). */
export function decodeTcb(tcb8: Uint8Array, layout: SnpTcbLayout): SnpTcbVersion {
  if (tcb8.length !== L.LEN_TCB) fail('ERR_ATT_SNP_BAD_SIZE', 'TCB_VERSION must be 8 bytes');
  const raw = new DataView(tcb8.buffer, tcb8.byteOffset, tcb8.byteLength).getBigUint64(0, true);
  const at = (i: number): number => tcb8[i] ?? 0;
  if (layout === 'turin') {
    const p = L.TCB_TURIN;
    return Object.freeze({
      raw,
      fmc: at(p.fmc),
      bootloader: at(p.bootloader),
      tee: at(p.tee),
      snp: at(p.snp),
      microcode: at(p.microcode),
    });
  }
  const p = L.TCB_MILAN_GENOA;
  return Object.freeze({ raw, bootloader: at(p.bootloader), tee: at(p.tee), snp: at(p.snp), microcode: at(p.microcode) });
}

/**
 * Parses a SEV-SNP ATTESTATION_REPORT (versions 2, 3 and 5).
 *
 * Checks: exact size 1184; version in {2, 3, 5}; SIGNATURE_ALGO = 1 (ECDSA P-384/SHA-384);
 * SIGNING_KEY 0 (VCEK) or 1 (VLEK); guest policy bit 17 set and bits 26-63 clear; the
 * reserved ranges 0x04C, flags bits 5-31, 0x18B..0x19F (0x188.. in v2), 0x1EB, 0x1EF,
 * 0x1F8..0x207 (before v5), 0x208..0x29F are zero; CPUID family/model is a supported
 * product (v3+); signature r/s fit in 48 bytes (bytes 48..71 zero) and the signature
 * block's reserved tail is zero.
 *
 * Does NOT check: the signature, certificates, report_data, or any policy. The result is
 * untrusted until verify.ts has checked it. Does NOT make the encoding unique: the ECDSA
 * variant (r, n - s) of a valid signature is accepted too, so the report bytes are
 * malleable outside the signed region.
 */
export function parseSnpReport(bytes: Uint8Array): SnpReport {
  if (!(bytes instanceof Uint8Array)) {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'report must be a Uint8Array' });
  }
  // SECURITY: copy first, so the caller cannot change the bytes between check and use.
  const b = new Uint8Array(bytes);
  if (b.length !== L.REPORT_SIZE) fail('ERR_ATT_SNP_BAD_SIZE', `expected ${L.REPORT_SIZE} bytes, got ${b.length}`);
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const u32 = (off: number): number => dv.getUint32(off, true);
  const u64 = (off: number): bigint => dv.getBigUint64(off, true);
  const u8 = (off: number): number => dv.getUint8(off);

  const version = u32(L.OFF_VERSION);
  if (!L.SUPPORTED_VERSIONS.includes(version)) fail('ERR_ATT_SNP_UNSUPPORTED_VERSION', `version ${version}`);

  const signatureAlgo = u32(L.OFF_SIGNATURE_ALGO);
  if (signatureAlgo !== L.SIG_ALGO_ECDSA_P384_SHA384) {
    fail('ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO', `signature_algo ${signatureAlgo}`);
  }

  const flags = u32(L.OFF_FLAGS);
  const signingKeyBits = (flags >>> L.FLAG_SIGNING_KEY_SHIFT) & L.FLAG_SIGNING_KEY_MASK;
  // SECURITY: only VCEK (0) and VLEK (1) are accepted; 7 ("no key") and the reserved
  // values 2..6 would leave nothing to check the signature against.
  if (signingKeyBits !== L.SIGNING_KEY_VCEK && signingKeyBits !== L.SIGNING_KEY_VLEK) {
    fail('ERR_ATT_SNP_UNSUPPORTED_SIGNING_KEY', `signing_key ${signingKeyBits}`);
  }
  if ((flags & L.FLAG_RESERVED_MASK) !== 0) fail('ERR_ATT_SNP_RESERVED_NONZERO', 'flags bits 5-31');

  const policyRaw = u64(L.OFF_POLICY);
  if (!bit(policyRaw, L.POLICY_RESERVED_ONE_BIT)) fail('ERR_ATT_SNP_BAD_GUEST_POLICY', 'policy bit 17 must be one');
  if ((policyRaw & L.POLICY_MBZ_MASK) !== 0n) fail('ERR_ATT_SNP_BAD_GUEST_POLICY', 'policy bits 26-63 must be zero');

  requireZero(b, L.OFF_RESERVED_04C, L.OFF_REPORT_DATA, 'reserved');
  requireZero(b, version >= 3 ? L.OFF_RESERVED_18B : L.OFF_CPUID_FAM_ID, L.OFF_CHIP_ID, 'reserved');
  requireZero(b, L.OFF_RESERVED_1EB, L.OFF_RESERVED_1EB + 1, 'reserved');
  requireZero(b, L.OFF_RESERVED_1EF, L.OFF_RESERVED_1EF + 1, 'reserved');
  if (version < 5) requireZero(b, L.OFF_LAUNCH_MIT_VECTOR, L.OFF_RESERVED_208, 'reserved (mitigation vectors before v5)');
  requireZero(b, L.OFF_RESERVED_208, L.SIGNED_REGION_END, 'reserved');

  // SECURITY: the signature block is outside the signed region, so its padding (r and s
  // bytes 48..71, the reserved tail) must be zero: otherwise anyone could stuff arbitrary
  // bytes into accepted evidence. This does NOT make a report non-malleable: ECDSA accepts
  // both (r, s) and (r, n - s), so anyone holding a signed report can derive a second byte
  // form that verifies (malleability.test.ts shows it). High s is deliberately NOT
  // rejected: AMD does not document low-s signatures and real firmware may produce either.
  // Hence neither the report bytes nor their hash is a unique identifier or replay key:
  // replay protection is report_data binding a fresh challenge (binding.ts); to recognise
  // "the same report", compare the signed region (0x000..0x29F), never the whole report.
  if (!isZero(b, L.OFF_SIG_R + L.SIG_P384_SCALAR_SIZE, L.OFF_SIG_R + L.SIG_COMPONENT_SIZE)) {
    fail('ERR_ATT_SNP_BAD_SIGNATURE_ENCODING', 'signature r exceeds 48 bytes');
  }
  if (!isZero(b, L.OFF_SIG_S + L.SIG_P384_SCALAR_SIZE, L.OFF_SIG_S + L.SIG_COMPONENT_SIZE)) {
    fail('ERR_ATT_SNP_BAD_SIGNATURE_ENCODING', 'signature s exceeds 48 bytes');
  }
  if (!isZero(b, L.OFF_SIG_RESERVED, L.REPORT_SIZE)) fail('ERR_ATT_SNP_BAD_SIGNATURE_ENCODING', 'signature reserved bytes');

  let cpuid: SnpCpuid | undefined;
  let product: SnpProduct | undefined;
  if (version >= 3) {
    cpuid = Object.freeze({ family: u8(L.OFF_CPUID_FAM_ID), model: u8(L.OFF_CPUID_MOD_ID), stepping: u8(L.OFF_CPUID_STEP) });
    product = productFromCpuid(cpuid.family, cpuid.model);
    if (product === undefined) {
      fail('ERR_ATT_SNP_UNSUPPORTED_PRODUCT', `cpuid family 0x${cpuid.family.toString(16)} model 0x${cpuid.model.toString(16)}`);
    }
  }
  const tcbLayout = tcbLayoutFor(product);
  const tcb = (off: number): SnpTcbVersion => decodeTcb(bytesAt(b, off, L.LEN_TCB), tcbLayout);

  const platformRaw = u64(L.OFF_PLATFORM_INFO);
  const report: SnpReport = {
    version,
    guestSvn: u32(L.OFF_GUEST_SVN),
    policy: Object.freeze({
      raw: policyRaw,
      abiMinor: Number((policyRaw >> L.POLICY_ABI_MINOR_SHIFT) & 0xffn),
      abiMajor: Number((policyRaw >> L.POLICY_ABI_MAJOR_SHIFT) & 0xffn),
      smt: bit(policyRaw, L.POLICY_SMT_BIT),
      migrateMa: bit(policyRaw, L.POLICY_MIGRATE_MA_BIT),
      debug: bit(policyRaw, L.POLICY_DEBUG_BIT),
      singleSocket: bit(policyRaw, L.POLICY_SINGLE_SOCKET_BIT),
      cxlAllow: bit(policyRaw, L.POLICY_CXL_ALLOW_BIT),
      memAes256Xts: bit(policyRaw, L.POLICY_MEM_AES_256_XTS_BIT),
      raplDis: bit(policyRaw, L.POLICY_RAPL_DIS_BIT),
      ciphertextHiding: bit(policyRaw, L.POLICY_CIPHERTEXT_HIDING_BIT),
      pageSwapDisable: bit(policyRaw, L.POLICY_PAGE_SWAP_DISABLE_BIT),
    }),
    familyId: bytesAt(b, L.OFF_FAMILY_ID, L.LEN_FAMILY_ID),
    imageId: bytesAt(b, L.OFF_IMAGE_ID, L.LEN_IMAGE_ID),
    vmpl: u32(L.OFF_VMPL),
    signatureAlgo,
    currentTcb: tcb(L.OFF_CURRENT_TCB),
    platformInfo: Object.freeze({
      raw: platformRaw,
      smtEnabled: bit(platformRaw, L.PLATFORM_SMT_EN_BIT),
      tsmeEnabled: bit(platformRaw, L.PLATFORM_TSME_EN_BIT),
      eccEnabled: bit(platformRaw, L.PLATFORM_ECC_EN_BIT),
      raplDisabled: bit(platformRaw, L.PLATFORM_RAPL_DIS_BIT),
      ciphertextHidingEnabled: bit(platformRaw, L.PLATFORM_CIPHERTEXT_HIDING_EN_BIT),
      aliasCheckComplete: bit(platformRaw, L.PLATFORM_ALIAS_CHECK_COMPLETE_BIT),
    }),
    authorKeyEn: (flags & L.FLAG_AUTHOR_KEY_EN) !== 0,
    maskChipKey: (flags & L.FLAG_MASK_CHIP_KEY) !== 0,
    signingKey: signingKeyBits === L.SIGNING_KEY_VLEK ? 'vlek' : 'vcek',
    reportData: bytesAt(b, L.OFF_REPORT_DATA, L.LEN_REPORT_DATA),
    measurement: bytesAt(b, L.OFF_MEASUREMENT, L.LEN_MEASUREMENT),
    hostData: bytesAt(b, L.OFF_HOST_DATA, L.LEN_HOST_DATA),
    idKeyDigest: bytesAt(b, L.OFF_ID_KEY_DIGEST, L.LEN_ID_KEY_DIGEST),
    authorKeyDigest: bytesAt(b, L.OFF_AUTHOR_KEY_DIGEST, L.LEN_AUTHOR_KEY_DIGEST),
    reportId: bytesAt(b, L.OFF_REPORT_ID, L.LEN_REPORT_ID),
    reportIdMa: bytesAt(b, L.OFF_REPORT_ID_MA, L.LEN_REPORT_ID),
    reportedTcb: tcb(L.OFF_REPORTED_TCB),
    ...(cpuid ? { cpuid } : {}),
    chipId: bytesAt(b, L.OFF_CHIP_ID, L.LEN_CHIP_ID),
    committedTcb: tcb(L.OFF_COMMITTED_TCB),
    currentFirmware: Object.freeze({
      major: u8(L.OFF_CURRENT_MAJOR),
      minor: u8(L.OFF_CURRENT_MINOR),
      build: u8(L.OFF_CURRENT_BUILD),
    }),
    committedFirmware: Object.freeze({
      major: u8(L.OFF_COMMITTED_MAJOR),
      minor: u8(L.OFF_COMMITTED_MINOR),
      build: u8(L.OFF_COMMITTED_BUILD),
    }),
    launchTcb: tcb(L.OFF_LAUNCH_TCB),
    ...(version >= 5
      ? { launchMitVector: u64(L.OFF_LAUNCH_MIT_VECTOR), currentMitVector: u64(L.OFF_CURRENT_MIT_VECTOR) }
      : {}),
    ...(product ? { product } : {}),
    tcbLayout,
    signature: Object.freeze({
      r: bytesAt(b, L.OFF_SIG_R, L.SIG_COMPONENT_SIZE),
      s: bytesAt(b, L.OFF_SIG_S, L.SIG_COMPONENT_SIZE),
    }),
    signedRegion: bytesAt(b, 0, L.SIGNED_REGION_END),
  };
  return Object.freeze(report);
}

/** Returns a copy of the signed region (bytes 0x000..0x29F) of a report of the right size. */
export function snpSignedRegion(bytes: Uint8Array): Uint8Array {
  if (!(bytes instanceof Uint8Array) || bytes.length !== L.REPORT_SIZE) {
    fail('ERR_ATT_SNP_BAD_SIZE', `expected ${L.REPORT_SIZE} bytes`);
  }
  return bytes.slice(0, L.SIGNED_REGION_END);
}

export const SNP_REPORT_SIZE = L.REPORT_SIZE;
export const SNP_SIGNED_REGION_END = L.SIGNED_REGION_END;
