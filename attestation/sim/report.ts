import { sign as cryptoSign, type KeyObject } from 'node:crypto';
import type { SnpTcb } from '../types.js';
import type { SnpTcbLayout } from '../snp/abi.js';
import * as L from '../snp/layout.js';

/**
 * Encoder for SEV-SNP ATTESTATION_REPORTs, used by the simulated TEE and the test mint.
 * Writes the exact layout parse reads (same constants, snp/layout.ts), so a simulated
 * report goes through exactly the same parser and verifier as a real one.
 */

export interface SnpReportFields {
  readonly version: number;
  readonly guestSvn: number;
  readonly policy: bigint;
  readonly familyId: Uint8Array;
  readonly imageId: Uint8Array;
  readonly vmpl: number;
  readonly signatureAlgo: number;
  readonly currentTcb: bigint;
  readonly platformInfo: bigint;
  /** FLAGS word: bit0 AUTHOR_KEY_EN, bit1 MASK_CHIP_KEY, bits 2-4 SIGNING_KEY. */
  readonly flags: number;
  readonly reportData: Uint8Array;
  readonly measurement: Uint8Array;
  readonly hostData: Uint8Array;
  readonly idKeyDigest: Uint8Array;
  readonly authorKeyDigest: Uint8Array;
  readonly reportId: Uint8Array;
  readonly reportIdMa: Uint8Array;
  readonly reportedTcb: bigint;
  readonly cpuid: { readonly family: number; readonly model: number; readonly stepping: number };
  readonly chipId: Uint8Array;
  readonly committedTcb: bigint;
  readonly currentFirmware: { readonly major: number; readonly minor: number; readonly build: number };
  readonly committedFirmware: { readonly major: number; readonly minor: number; readonly build: number };
  readonly launchTcb: bigint;
  readonly launchMitVector: bigint;
  readonly currentMitVector: bigint;
}

/** Encodes TCB components into the 8-byte TCB_VERSION integer for a layout. */
export function encodeTcb(t: SnpTcb, layout: SnpTcbLayout): bigint {
  const b = new Uint8Array(8);
  if (layout === 'turin') {
    b[L.TCB_TURIN.fmc] = t.fmc ?? 0;
    b[L.TCB_TURIN.bootloader] = t.bootloader;
    b[L.TCB_TURIN.tee] = t.tee;
    b[L.TCB_TURIN.snp] = t.snp;
    b[L.TCB_TURIN.microcode] = t.microcode;
  } else {
    b[L.TCB_MILAN_GENOA.bootloader] = t.bootloader;
    b[L.TCB_MILAN_GENOA.tee] = t.tee;
    b[L.TCB_MILAN_GENOA.snp] = t.snp;
    b[L.TCB_MILAN_GENOA.microcode] = t.microcode;
  }
  return new DataView(b.buffer).getBigUint64(0, true);
}

function put(out: Uint8Array, off: number, src: Uint8Array, len: number, name: string): void {
  if (src.length !== len) throw new RangeError(`${name} must be ${len} bytes, got ${src.length}`);
  out.set(src, off);
}

/** Encodes the signed region and an all-zero signature block (1184 bytes). */
export function encodeSnpReport(f: SnpReportFields): Uint8Array {
  const out = new Uint8Array(L.REPORT_SIZE);
  const dv = new DataView(out.buffer);
  dv.setUint32(L.OFF_VERSION, f.version, true);
  dv.setUint32(L.OFF_GUEST_SVN, f.guestSvn, true);
  dv.setBigUint64(L.OFF_POLICY, f.policy, true);
  put(out, L.OFF_FAMILY_ID, f.familyId, L.LEN_FAMILY_ID, 'familyId');
  put(out, L.OFF_IMAGE_ID, f.imageId, L.LEN_IMAGE_ID, 'imageId');
  dv.setUint32(L.OFF_VMPL, f.vmpl, true);
  dv.setUint32(L.OFF_SIGNATURE_ALGO, f.signatureAlgo, true);
  dv.setBigUint64(L.OFF_CURRENT_TCB, f.currentTcb, true);
  dv.setBigUint64(L.OFF_PLATFORM_INFO, f.platformInfo, true);
  dv.setUint32(L.OFF_FLAGS, f.flags, true);
  put(out, L.OFF_REPORT_DATA, f.reportData, L.LEN_REPORT_DATA, 'reportData');
  put(out, L.OFF_MEASUREMENT, f.measurement, L.LEN_MEASUREMENT, 'measurement');
  put(out, L.OFF_HOST_DATA, f.hostData, L.LEN_HOST_DATA, 'hostData');
  put(out, L.OFF_ID_KEY_DIGEST, f.idKeyDigest, L.LEN_ID_KEY_DIGEST, 'idKeyDigest');
  put(out, L.OFF_AUTHOR_KEY_DIGEST, f.authorKeyDigest, L.LEN_AUTHOR_KEY_DIGEST, 'authorKeyDigest');
  put(out, L.OFF_REPORT_ID, f.reportId, L.LEN_REPORT_ID, 'reportId');
  put(out, L.OFF_REPORT_ID_MA, f.reportIdMa, L.LEN_REPORT_ID, 'reportIdMa');
  dv.setBigUint64(L.OFF_REPORTED_TCB, f.reportedTcb, true);
  if (f.version >= 3) {
    dv.setUint8(L.OFF_CPUID_FAM_ID, f.cpuid.family);
    dv.setUint8(L.OFF_CPUID_MOD_ID, f.cpuid.model);
    dv.setUint8(L.OFF_CPUID_STEP, f.cpuid.stepping);
  }
  put(out, L.OFF_CHIP_ID, f.chipId, L.LEN_CHIP_ID, 'chipId');
  dv.setBigUint64(L.OFF_COMMITTED_TCB, f.committedTcb, true);
  dv.setUint8(L.OFF_CURRENT_BUILD, f.currentFirmware.build);
  dv.setUint8(L.OFF_CURRENT_MINOR, f.currentFirmware.minor);
  dv.setUint8(L.OFF_CURRENT_MAJOR, f.currentFirmware.major);
  dv.setUint8(L.OFF_COMMITTED_BUILD, f.committedFirmware.build);
  dv.setUint8(L.OFF_COMMITTED_MINOR, f.committedFirmware.minor);
  dv.setUint8(L.OFF_COMMITTED_MAJOR, f.committedFirmware.major);
  dv.setBigUint64(L.OFF_LAUNCH_TCB, f.launchTcb, true);
  if (f.version >= 5) {
    dv.setBigUint64(L.OFF_LAUNCH_MIT_VECTOR, f.launchMitVector, true);
    dv.setBigUint64(L.OFF_CURRENT_MIT_VECTOR, f.currentMitVector, true);
  }
  return out;
}

/**
 * Signs bytes 0x000..0x29F with an ECDSA P-384 key (SHA-384) and writes r and s
 * little-endian, zero-extended to 72 bytes, into a copy of `report`.
 */
export function signSnpReport(report: Uint8Array, key: KeyObject): Uint8Array {
  if (report.length !== L.REPORT_SIZE) throw new RangeError(`report must be ${L.REPORT_SIZE} bytes`);
  const out = new Uint8Array(report);
  const sig = cryptoSign('sha384', out.subarray(0, L.SIGNED_REGION_END), { key, dsaEncoding: 'ieee-p1363' });
  const n = L.SIG_P384_SCALAR_SIZE;
  if (sig.length !== 2 * n) throw new Error('signing key is not ECDSA P-384');
  out.fill(0, L.OFF_SIGNATURE, L.REPORT_SIZE);
  for (let i = 0; i < n; i++) {
    out[L.OFF_SIG_R + i] = sig[n - 1 - i]!;
    out[L.OFF_SIG_S + i] = sig[2 * n - 1 - i]!;
  }
  return out;
}
