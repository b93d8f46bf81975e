import { verify as cryptoVerify } from 'node:crypto';
import { z } from 'zod';
import { constantTimeEqual, fromBase64 } from '../../common/bytes.js';
import { AttestationError, isAttestationError } from '../codes.js';
import type { SnpClaims, SnpEvidence } from '../types.js';
import { parseSnpReport, type SnpReport, type SnpSigningKey } from './abi.js';
import { parseCertificate, readSnpKeyCertInfo, type ParsedCert, type SnpKeyCertInfo } from './certs.js';
import { verifyCertChain } from './chain.js';
import { snpClaimsFromReport } from './claims.js';
import { SIG_P384_SCALAR_SIZE } from './layout.js';
import { AMD_ARK_SPKI_SHA256, amdChain } from './roots.js';

/**
 * SEV-SNP evidence verification: envelope -> parse -> report_data binding -> certificate
 * chain to a pinned root -> report signature -> VCEK/VLEK-to-report binding -> claims.
 *
 * Spec: AMD SEV-SNP Firmware ABI (pub. 56860) "ATTESTATION_REPORT Structure" and
 * "Digital Signatures"; AMD KDS interface spec (pub. 57230) for the VCEK/VLEK chain and
 * extensions.
 */

/** Relaxation recorded in claims when the chain ended in the configured simulated root. */
export const RELAXATION_SIMULATED_ROOT = 'simulated-root';

export interface SnpTrustOptions {
  /**
   * The ONLY way to trust a root other than the pinned AMD ARKs: the simulator's ARK
   * certificate (DER). A chain ending in it yields `claims.simulated = true`.
   */
  readonly simulatedRoot?: { readonly arkDer: Uint8Array };
  /** Must also be true for evidence chaining to `simulatedRoot` to verify. Default false. */
  readonly allowSimulated?: boolean;
}

export interface SnpVerifyOptions {
  /** Verification time (injected clock). Certificate validity bounds are inclusive. */
  readonly now: Date;
  /** REQUIRED 64-byte value the report's report_data must equal (freshness/key binding). */
  readonly expectedReportData: Uint8Array;
  readonly trust?: SnpTrustOptions;
}

/** DER certificates that may accompany a report. */
export interface SnpCertificates {
  readonly vcek?: Uint8Array;
  readonly vlek?: Uint8Array;
  readonly ask?: Uint8Array;
  readonly asvk?: Uint8Array;
  readonly ark?: Uint8Array;
}

// Size bounds for the envelope: a report is 1184 bytes (1580 base64 characters); AMD
// certificates are under 2 KiB. Generous limits, but bounded before decoding.
const MAX_REPORT_B64 = 2048;
const MAX_CERT_B64 = 16384;

const b64 = (max: number) =>
  z
    .string()
    .max(max)
    .refine((s) => fromBase64(s) !== undefined, { message: 'not strict standard base64' });

const SnpEvidenceSchema = z.strictObject({
  tee: z.literal('sev-snp'),
  report: b64(MAX_REPORT_B64),
  certs: z
    .strictObject({
      vcek: b64(MAX_CERT_B64).optional(),
      vlek: b64(MAX_CERT_B64).optional(),
      ask: b64(MAX_CERT_B64).optional(),
      asvk: b64(MAX_CERT_B64).optional(),
      ark: b64(MAX_CERT_B64).optional(),
    })
    .optional(),
});

/** Checks the JSON envelope shape (strict, standard base64) and decodes it. No crypto. */
export function decodeSnpEvidence(evidence: SnpEvidence | unknown): { report: Uint8Array; certs: SnpCertificates } {
  const r = SnpEvidenceSchema.safeParse(evidence);
  if (!r.success) {
    const where = r.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
    throw new AttestationError('ERR_ATT_SNP_BAD_EVIDENCE', { detail: `invalid field(s): ${where}` });
  }
  const dec = (s: string | undefined): Uint8Array | undefined => (s === undefined ? undefined : new Uint8Array(fromBase64(s)!));
  const c = r.data.certs ?? {};
  const certs: { -readonly [K in keyof SnpCertificates]: SnpCertificates[K] } = {};
  for (const k of ['vcek', 'vlek', 'ask', 'asvk', 'ark'] as const) {
    const v = dec(c[k]);
    if (v) certs[k] = v;
  }
  return { report: dec(r.data.report)!, certs };
}

/** Trust options with the simulated root parsed once. */
export interface PreparedSnpTrust {
  readonly simulatedRoot?: ParsedCert;
  readonly allowSimulated: boolean;
}

/** Validates and parses trust options. Throws ERR_ATT_SNP_BAD_TRUST on bad configuration. */
export function prepareSnpTrust(trust: SnpTrustOptions | undefined): PreparedSnpTrust {
  if (trust === undefined) return Object.freeze({ allowSimulated: false });
  if (typeof trust !== 'object' || trust === null) {
    throw new AttestationError('ERR_ATT_SNP_BAD_TRUST', { detail: 'trust must be an object' });
  }
  if (trust.allowSimulated !== undefined && typeof trust.allowSimulated !== 'boolean') {
    throw new AttestationError('ERR_ATT_SNP_BAD_TRUST', { detail: 'allowSimulated must be a boolean' });
  }
  let simulatedRoot: ParsedCert | undefined;
  if (trust.simulatedRoot !== undefined) {
    const der = trust.simulatedRoot?.arkDer;
    if (!(der instanceof Uint8Array)) {
      throw new AttestationError('ERR_ATT_SNP_BAD_TRUST', { detail: 'simulatedRoot.arkDer must be DER bytes' });
    }
    try {
      simulatedRoot = parseCertificate(der, 'simulated ARK');
    } catch (e) {
      throw new AttestationError('ERR_ATT_SNP_BAD_TRUST', { detail: 'simulatedRoot.arkDer is not a certificate', cause: e });
    }
    // SECURITY: a "simulated" root that is really an AMD ARK would mark genuine evidence
    // as simulated (harmless) but signals a configuration mistake; refuse it.
    if (Object.values(AMD_ARK_SPKI_SHA256).includes(simulatedRoot.spkiSha256)) {
      throw new AttestationError('ERR_ATT_SNP_BAD_TRUST', { detail: 'simulatedRoot is an AMD ARK' });
    }
  }
  return Object.freeze({ ...(simulatedRoot ? { simulatedRoot } : {}), allowSimulated: trust.allowSimulated === true });
}

function checkVerifyOptions(opts: SnpVerifyOptions): void {
  if (typeof opts !== 'object' || opts === null) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'options required' });
  if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'now must be a valid Date' });
  }
  // SECURITY: freshness/key binding is a required input, never "skipped when undefined".
  if (!(opts.expectedReportData instanceof Uint8Array) || opts.expectedReportData.length !== 64) {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'expectedReportData must be 64 bytes' });
  }
}

/** Converts the report's little-endian, zero-extended r and s to IEEE P1363 (r||s, big-endian). */
export function p1363FromReport(r: SnpReport): Uint8Array {
  const out = new Uint8Array(2 * SIG_P384_SCALAR_SIZE);
  for (let i = 0; i < SIG_P384_SCALAR_SIZE; i++) {
    out[SIG_P384_SCALAR_SIZE - 1 - i] = r.signature.r[i]!;
    out[2 * SIG_P384_SCALAR_SIZE - 1 - i] = r.signature.s[i]!;
  }
  return out;
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

interface SelectedChain {
  readonly intermediate: ParsedCert;
  readonly root: ParsedCert;
  readonly pin: string;
  readonly simulated: boolean;
}

function selectChain(
  leaf: ParsedCert,
  info: SnpKeyCertInfo,
  kind: SnpSigningKey,
  certs: SnpCertificates,
  trust: PreparedSnpTrust,
): SelectedChain {
  const interName = kind === 'vcek' ? 'ASK' : 'ASVK';
  const evidenceInter = kind === 'vcek' ? certs.ask : certs.asvk;
  const amd = amdChain(info.product, kind);
  if (sameBytes(leaf.parts.issuer, amd.intermediate.parts.subject)) {
    // SECURITY: the ASK/ASVK and ARK come from the bundled, pinned files; CA certificates
    // in the evidence are never used, and must be the bundled ones if present.
    if (evidenceInter && !sameBytes(evidenceInter, amd.intermediate.der)) {
      throw new AttestationError('ERR_ATT_SNP_UNTRUSTED_CERT', { detail: `evidence ${interName} is not the AMD ${interName}` });
    }
    if (certs.ark) {
      const ark = parseCertificate(certs.ark, 'evidence ARK');
      if (ark.spkiSha256 !== AMD_ARK_SPKI_SHA256[info.product]) {
        throw new AttestationError('ERR_ATT_SNP_ARK_PIN_MISMATCH', { detail: `evidence ARK is not the pinned ARK-${info.product}` });
      }
    }
    return { intermediate: amd.intermediate, root: amd.ark, pin: AMD_ARK_SPKI_SHA256[info.product], simulated: false };
  }
  const sim = trust.simulatedRoot;
  if (!sim) {
    throw new AttestationError('ERR_ATT_SNP_UNTRUSTED_ROOT', {
      detail: `${kind.toUpperCase()} issuer is not the AMD ${interName} for ${info.product}`,
    });
  }
  // Simulated chain: the intermediate comes from the evidence and must chain to the
  // configured simulated ARK, which is the only anchor (pinned by its own key).
  if (!evidenceInter) throw new AttestationError('ERR_ATT_SNP_MISSING_CERT', { detail: `simulated evidence lacks the ${interName}` });
  if (certs.ark) {
    const ark = parseCertificate(certs.ark, 'evidence ARK');
    if (ark.spkiSha256 !== sim.spkiSha256) {
      throw new AttestationError('ERR_ATT_SNP_ARK_PIN_MISMATCH', { detail: 'evidence ARK is not the configured simulated ARK' });
    }
  }
  return {
    intermediate: parseCertificate(evidenceInter, `simulated ${interName}`),
    root: sim,
    pin: sim.spkiSha256,
    simulated: true,
  };
}

function checkReportSignature(report: SnpReport, leaf: ParsedCert): void {
  let ok = false;
  try {
    ok = cryptoVerify('sha384', report.signedRegion, { key: leaf.publicKey, dsaEncoding: 'ieee-p1363' }, p1363FromReport(report));
  } catch {
    ok = false;
  }
  if (!ok) throw new AttestationError('ERR_ATT_SNP_BAD_SIGNATURE', { detail: `does not verify with the ${leaf.label}` });
}

function checkKeyCertBinding(report: SnpReport, info: SnpKeyCertInfo, kind: SnpSigningKey): void {
  const t = report.reportedTcb;
  const diffs: string[] = [];
  for (const k of ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const) {
    const a = info.tcb[k];
    const b = t[k];
    if (a !== b) diffs.push(`${k} cert=${a ?? '-'} report=${b ?? '-'}`);
  }
  if (diffs.length > 0) throw new AttestationError('ERR_ATT_SNP_TCB_MISMATCH', { detail: diffs.join(', ') });
  if (kind === 'vcek') {
    const hw = info.hwId;
    if (!hw) throw new AttestationError('ERR_ATT_SNP_BAD_CERT_EXTENSION', { detail: 'VCEK: hwID missing' });
    // Turin VCEKs carry an 8-byte hwID; the report's chip_id is that followed by zeros.
    const expected = new Uint8Array(report.chipId.length);
    expected.set(hw.subarray(0, Math.min(hw.length, expected.length)));
    if (!constantTimeEqual(expected, report.chipId)) {
      throw new AttestationError('ERR_ATT_SNP_CHIP_ID_MISMATCH', { detail: 'chip_id differs from the VCEK hwID' });
    }
  }
}

/**
 * SECURITY: the verifiers' contract is that they throw AttestationError and nothing else.
 * Every check has its own code; this backstop turns anything else (a library throwing an
 * untyped error on hostile bytes that no check anticipated) into ERR_ATT_SNP_UNVERIFIABLE,
 * so the evidence is rejected as unverified (never a 500 at the edge), with the original
 * error kept as `cause` for the logs. Reaching it is a bug worth a dedicated check.
 */
async function onlyAttestationErrors<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (isAttestationError(e)) throw e;
    throw new AttestationError('ERR_ATT_SNP_UNVERIFIABLE', { cause: e });
  }
}

/**
 * Verifies a raw report with DER certificates. See verifySnpEvidence for the checks.
 * Throws only AttestationError.
 */
export async function verifySnpReport(
  reportBytes: Uint8Array,
  certs: SnpCertificates,
  opts: SnpVerifyOptions,
  prepared?: PreparedSnpTrust,
): Promise<SnpClaims> {
  return onlyAttestationErrors(async () => verifySnpReportUnguarded(reportBytes, certs, opts, prepared));
}

async function verifySnpReportUnguarded(
  reportBytes: Uint8Array,
  certs: SnpCertificates,
  opts: SnpVerifyOptions,
  prepared?: PreparedSnpTrust,
): Promise<SnpClaims> {
  checkVerifyOptions(opts);
  const trust = prepared ?? prepareSnpTrust(opts.trust);
  const report = parseSnpReport(reportBytes);

  // SECURITY: constant-time comparison of the binding value.
  if (!constantTimeEqual(report.reportData, opts.expectedReportData)) {
    throw new AttestationError('ERR_ATT_SNP_REPORT_DATA_MISMATCH');
  }

  const kind = report.signingKey;
  const leafDer = kind === 'vcek' ? certs.vcek : certs.vlek;
  const otherDer = kind === 'vcek' ? certs.vlek : certs.vcek;
  if (!leafDer) {
    if (otherDer) {
      throw new AttestationError('ERR_ATT_SNP_SIGNING_KEY_MISMATCH', {
        detail: `report is signed by a ${kind.toUpperCase()} but only a ${kind === 'vcek' ? 'VLEK' : 'VCEK'} was supplied`,
      });
    }
    throw new AttestationError('ERR_ATT_SNP_MISSING_CERT', { detail: `${kind.toUpperCase()} certificate required` });
  }
  const leaf = parseCertificate(leafDer, kind.toUpperCase());
  const info = readSnpKeyCertInfo(leaf);
  // SECURITY: a VCEK (chip-bound, has hwID) and a VLEK (CSP-bound, has cspID) are not
  // interchangeable; the report's SIGNING_KEY decides which one is acceptable.
  if (kind === 'vcek' && info.cspId !== undefined) {
    throw new AttestationError('ERR_ATT_SNP_SIGNING_KEY_MISMATCH', { detail: 'VCEK report but the certificate is a VLEK' });
  }
  if (kind === 'vlek' && info.hwId !== undefined) {
    throw new AttestationError('ERR_ATT_SNP_SIGNING_KEY_MISMATCH', { detail: 'VLEK report but the certificate is a VCEK' });
  }
  if (report.product !== undefined && report.product !== info.product) {
    throw new AttestationError('ERR_ATT_SNP_PRODUCT_MISMATCH', {
      detail: `report CPUID says ${report.product}, certificate says ${info.productName}`,
    });
  }
  if (report.product === undefined && info.product === 'Turin') {
    // v2 reports predate Turin; their TCB fields were decoded with the Milan/Genoa layout.
    throw new AttestationError('ERR_ATT_SNP_PRODUCT_MISMATCH', { detail: 'a v2 report cannot come from Turin' });
  }

  const chain = selectChain(leaf, info, kind, certs, trust);
  verifyCertChain({ leaf, intermediate: chain.intermediate, root: chain.root, rootSpkiSha256: chain.pin, now: opts.now });
  // SECURITY: simulated evidence needs two explicit opt-ins: the root and this flag.
  if (chain.simulated && !trust.allowSimulated) throw new AttestationError('ERR_ATT_SNP_SIMULATED_NOT_ALLOWED');

  checkReportSignature(report, leaf);
  checkKeyCertBinding(report, info, kind);

  return snpClaimsFromReport(report, {
    product: info.product,
    productName: info.productName,
    simulated: chain.simulated,
    relaxations: chain.simulated ? [RELAXATION_SIMULATED_ROOT] : [],
    ...(info.cspId !== undefined ? { cspId: info.cspId } : {}),
  });
}

/**
 * Verifies SEV-SNP evidence and returns its claims.
 *
 * Checks, in order: the JSON envelope (strict shape, strict base64, size bounds); the
 * report (parseSnpReport); report_data equals `expectedReportData` (constant time);
 * the certificate kind matches SIGNING_KEY (VCEK for 0, VLEK for 1); the product from
 * CPUID agrees with the certificate's productName; the chain leaf <- ASK/ASVK <- ARK,
 * where ASK/ASVK and ARK are the bundled AMD certificates for that product and the ARK
 * key matches the pin in roots.ts (or, only when `trust.simulatedRoot` is configured
 * and the leaf was not issued by AMD, the evidence ASK and the simulated ARK, which also
 * requires `trust.allowSimulated`); the ECDSA P-384/SHA-384 report signature over bytes
 * 0x000..0x29F; the certificate's TCB SPLs equal reported_tcb and (VCEK) hwID equals
 * chip_id.
 *
 * Does NOT check: revocation (AMD CRLs), or any policy (measurement, debug, TCB minimums,
 * VMPL ...): that is validateSnpClaims. Throws AttestationError, and only
 * AttestationError, on any failure: a malformed certificate is ERR_ATT_SNP_BAD_CERT, and
 * any failure no check anticipated is ERR_ATT_SNP_UNVERIFIABLE.
 */
export async function verifySnpEvidence(evidence: SnpEvidence | unknown, opts: SnpVerifyOptions): Promise<SnpClaims> {
  return onlyAttestationErrors(async () => {
    checkVerifyOptions(opts);
    const trust = prepareSnpTrust(opts.trust);
    const { report, certs } = decodeSnpEvidence(evidence);
    return verifySnpReportUnguarded(report, certs, opts, trust);
  });
}

/** verifySnpEvidence with trust already prepared (internal: SnpEvidenceVerifier). */
export async function verifySnpEvidenceWithTrust(
  evidence: unknown,
  opts: SnpVerifyOptions,
  trust: PreparedSnpTrust,
): Promise<SnpClaims> {
  return onlyAttestationErrors(async () => {
    const { report, certs } = decodeSnpEvidence(evidence);
    return verifySnpReportUnguarded(report, certs, opts, trust);
  });
}
