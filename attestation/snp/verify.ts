import { verify as cryptoVerify } from 'node:crypto';
import { z } from 'zod';
import { constantTimeEqual, fromBase64 } from '../../common/bytes.js';
import { AttestationError, isAttestationError } from '../codes.js';
import type { SnpClaims, SnpEvidence } from '../types.js';
import { parseSnpReport, type SnpProduct, type SnpReport, type SnpSigningKey } from './abi.js';
import { parseCertificate, readSnpKeyCertInfo, type ParsedCert, type SnpKeyCertInfo } from './certs.js';
import { parseSnpCertTable } from './certtable.js';
import { parseCertificateCached } from './cert-cache.js';
import { verifyCertChain } from './chain.js';
import type { SnpCollateralSource } from './collateral.js';
import { checkRevocation, parseSnpCrl, type ParsedSnpCrl } from './crl.js';
import { snpClaimsFromReport } from './claims.js';
import { SIG_P384_SCALAR_SIZE } from './layout.js';
import { AMD_ARK_SPKI_SHA256, amdChain } from './roots.js';

/**
 * SEV-SNP evidence verification: envelope -> parse -> report_data binding -> certificate
 * chain to a pinned root -> report signature -> VCEK/VLEK-to-report binding -> claims.
 *
 * Spec: AMD SEV-SNP Firmware ABI (pub. 56860) "ATTESTATION_REPORT Structure" and
 * "Digital Signatures"; AMD KDS interface spec (pub. 57230) for the VCEK/VLEK chain,
 * extensions and CRLs; GHCB spec (pub. 56421) for the extended-report certificate table.
 */

/**
 * Explicit "do not check report_data" value for `expectedReportData` (inspection tools
 * only). SECURITY: it removes freshness and key binding, so it must be asked for by name
 * (undefined still throws), and claims then carry the 'report-data-unchecked' relaxation.
 */
export const ANY_REPORT_DATA: unique symbol = Symbol('cir.any-report-data');

/** Relaxation recorded in claims when `expectedReportData` was ANY_REPORT_DATA. */
export const RELAXATION_REPORT_DATA_UNCHECKED = 'report-data-unchecked';

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
  /**
   * REQUIRED 64-byte value the report's report_data must equal (freshness/key binding),
   * or ANY_REPORT_DATA to skip that check explicitly (recorded in claims.relaxations).
   */
  readonly expectedReportData: Uint8Array | typeof ANY_REPORT_DATA;
  readonly trust?: SnpTrustOptions;
  /**
   * AMD CRLs (DER or PEM bytes). When given (even empty), revocation is checked: a CRL
   * issued by the chain's root must be among them, verify and be current, and neither
   * the ASK/ASVK nor the VCEK/VLEK may be listed. CRLs of other roots are ignored.
   */
  readonly crls?: readonly Uint8Array[];
  /**
   * Source of collateral the evidence lacks: the VCEK (by chip ID and reported TCB) when
   * the evidence carries none, and, when `crls` is not given, the AMD CRL for the
   * product and signer (checked when the source has one; not for simulated chains).
   */
  readonly collateral?: SnpCollateralSource;
}

/** DER certificates that may accompany a report. */
export interface SnpCertificates {
  readonly vcek?: Uint8Array;
  readonly vlek?: Uint8Array;
  readonly ask?: Uint8Array;
  readonly asvk?: Uint8Array;
  readonly ark?: Uint8Array;
  /**
   * Extended-report certificate table (configfs-tsm `auxblob`), parsed with
   * parseSnpCertTable. Its VCEK/VLEK/ASK/ARK entries fill in missing fields; an entry
   * that differs from an explicit field is rejected. The ASK GUID entry is the ASVK for
   * a VLEK-signed report.
   */
  readonly certTable?: Uint8Array;
}

/** At most this many CRLs per verification (one per product and signer is the norm). */
export const MAX_CRLS = 16;

// Size bounds for the envelope: a report is 1184 bytes (1580 base64 characters); AMD
// certificates are under 2 KiB. Generous limits, but bounded before decoding.
const MAX_REPORT_B64 = 2048;
const MAX_CERT_B64 = 16384;
// A certificate table holds up to four certificates and is padded to pages by some hosts.
const MAX_CERT_TABLE_B64 = 98304;

// Strict standard base64 is checked once, while decoding (decodeSnpEvidence), not here too.
const b64 = (max: number) => z.string().max(max);

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
      certTable: b64(MAX_CERT_TABLE_B64).optional(),
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
  const bad: string[] = [];
  const dec = (s: string | undefined, where: string): Uint8Array | undefined => {
    if (s === undefined) return undefined;
    const b = fromBase64(s);
    if (b === undefined) bad.push(where);
    return b === undefined ? undefined : new Uint8Array(b); // a private copy, off node's shared Buffer pool
  };
  const report = dec(r.data.report, 'report');
  const c = r.data.certs ?? {};
  const certs: { -readonly [K in keyof SnpCertificates]: SnpCertificates[K] } = {};
  for (const k of ['vcek', 'vlek', 'ask', 'asvk', 'ark', 'certTable'] as const) {
    const v = dec(c[k], `certs.${k}`);
    if (v) certs[k] = v;
  }
  if (bad.length > 0 || report === undefined) {
    throw new AttestationError('ERR_ATT_SNP_BAD_EVIDENCE', { detail: `invalid field(s): ${bad.join(', ')} (not strict standard base64)` });
  }
  return { report, certs };
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
  // SECURITY: freshness/key binding is a required input, never "skipped when undefined";
  // skipping it takes the explicit ANY_REPORT_DATA symbol.
  const rd = opts.expectedReportData;
  if (rd !== ANY_REPORT_DATA && (!(rd instanceof Uint8Array) || rd.length !== 64)) {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'expectedReportData must be 64 bytes or ANY_REPORT_DATA' });
  }
  if (opts.crls !== undefined) {
    if (!Array.isArray(opts.crls) || !opts.crls.every((c) => c instanceof Uint8Array)) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'crls must be an array of byte arrays' });
    }
    if (opts.crls.length > MAX_CRLS) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `at most ${MAX_CRLS} CRLs` });
  }
  const c = opts.collateral;
  if (c !== undefined && (typeof c !== 'object' || c === null || typeof c.vcek !== 'function' || typeof c.crl !== 'function')) {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'collateral must implement vcek() and crl()' });
  }
}

type MutableCerts = { -readonly [K in keyof SnpCertificates]: SnpCertificates[K] };

/**
 * Fills missing certificate fields from the certificate table. The ASK GUID entry goes
 * to `ask` for a VCEK-signed report and to `asvk` for a VLEK-signed one. SECURITY: an
 * entry that disagrees with an explicit field is an error, not a silent choice.
 */
function mergeCertTable(certs: SnpCertificates, kind: SnpSigningKey): SnpCertificates {
  if (!certs.certTable) return certs;
  const table = parseSnpCertTable(certs.certTable);
  const out: MutableCerts = { ...certs };
  const put = (field: 'vcek' | 'vlek' | 'ask' | 'asvk' | 'ark', v: Uint8Array | undefined): void => {
    if (!v) return;
    const have = out[field];
    if (have && !sameBytes(have, v)) {
      throw new AttestationError('ERR_ATT_SNP_BAD_CERT_TABLE', { detail: `table entry conflicts with certs.${field}` });
    }
    out[field] = v;
  };
  put('vcek', table.vcek);
  put('vlek', table.vlek);
  put(kind === 'vcek' ? 'ask' : 'asvk', table.ask);
  put('ark', table.ark);
  return out;
}

/**
 * Calls a collateral source. SECURITY: a source that throws something other than an
 * AttestationError (a fetcher's network error) is "unavailable", never a verification
 * failure and never the untyped backstop.
 */
async function fromCollateral(f: () => Promise<Uint8Array | undefined>): Promise<Uint8Array | undefined> {
  let v: unknown;
  try {
    v = await f();
  } catch (e) {
    if (isAttestationError(e)) throw e;
    throw new AttestationError('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE', { cause: e });
  }
  if (v !== undefined && !(v instanceof Uint8Array)) {
    throw new AttestationError('ERR_ATT_SNP_BAD_COLLATERAL', { detail: 'collateral source returned something other than bytes' });
  }
  return v;
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
      const ark = parseCertificateCached(certs.ark, 'evidence ARK');
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
    const ark = parseCertificateCached(certs.ark, 'evidence ARK');
    if (ark.spkiSha256 !== sim.spkiSha256) {
      throw new AttestationError('ERR_ATT_SNP_ARK_PIN_MISMATCH', { detail: 'evidence ARK is not the configured simulated ARK' });
    }
  }
  return {
    // Parsed once per distinct DER (cert-cache.ts); verifyCertChain still checks it in full.
    intermediate: parseCertificateCached(evidenceInter, `simulated ${interName}`),
    root: sim,
    pin: sim.spkiSha256,
    simulated: true,
  };
}

/**
 * The report's ECDSA P-384 signature under the VCEK/VLEK. node:crypto's callback form runs
 * the verification on libuv's thread pool: it is the costliest step of a verification
 * (about 0.7 ms), and a broker or server verifying many reports keeps its event loop free
 * for other requests meanwhile (measured: bench/release.ts).
 */
async function checkReportSignature(report: SnpReport, leaf: ParsedCert): Promise<void> {
  const ok = await new Promise<boolean>((resolve) => {
    try {
      cryptoVerify('sha384', report.signedRegion, { key: leaf.publicKey, dsaEncoding: 'ieee-p1363' }, p1363FromReport(report), (err, valid) =>
        resolve(!err && valid === true),
      );
    } catch {
      resolve(false);
    }
  });
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

/**
 * The CRLs to check, parsed: `opts.crls` when given; otherwise the collateral source's
 * CRL for the product and signer when it has one (never for a simulated chain, whose
 * root AMD does not publish CRLs for); otherwise undefined (no revocation check).
 */
async function revocationLists(
  opts: SnpVerifyOptions,
  product: SnpProduct,
  kind: SnpSigningKey,
  simulated: boolean,
): Promise<ParsedSnpCrl[] | undefined> {
  if (opts.crls !== undefined) return opts.crls.map((c) => parseSnpCrl(c));
  const collateral = opts.collateral;
  if (!collateral || simulated) return undefined;
  const der = await fromCollateral(() => collateral.crl(product, kind));
  return der ? [parseSnpCrl(der)] : undefined;
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
  const relaxations: string[] = [];

  const expected = opts.expectedReportData;
  if (expected === ANY_REPORT_DATA) {
    relaxations.push(RELAXATION_REPORT_DATA_UNCHECKED);
  } else if (!constantTimeEqual(report.reportData, expected)) {
    // SECURITY: constant-time comparison of the binding value.
    throw new AttestationError('ERR_ATT_SNP_REPORT_DATA_MISMATCH');
  }

  const kind = report.signingKey;
  certs = mergeCertTable(certs, kind);
  let leafDer = kind === 'vcek' ? certs.vcek : certs.vlek;
  const otherDer = kind === 'vcek' ? certs.vlek : certs.vcek;
  if (!leafDer) {
    if (otherDer) {
      throw new AttestationError('ERR_ATT_SNP_SIGNING_KEY_MISMATCH', {
        detail: `report is signed by a ${kind.toUpperCase()} but only a ${kind === 'vcek' ? 'VLEK' : 'VCEK'} was supplied`,
      });
    }
    // VCEKs can be looked up by chip ID and TCB; VLEKs cannot (KDS serves them to CSPs
    // only), so a VLEK must come with the evidence. A v2 report names no product, and a
    // masked (all-zero) chip ID names no chip.
    const collateral = opts.collateral;
    const product = report.product;
    if (kind === 'vcek' && collateral && product && report.chipId.some((x) => x !== 0)) {
      leafDer = await fromCollateral(() => collateral.vcek(product, new Uint8Array(report.chipId), report.reportedTcb));
    }
    if (!leafDer) throw new AttestationError('ERR_ATT_SNP_MISSING_CERT', { detail: `${kind.toUpperCase()} certificate required` });
  }
  const leaf = parseCertificateCached(leafDer, kind.toUpperCase());
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

  await checkReportSignature(report, leaf);
  checkKeyCertBinding(report, info, kind);

  const crls = await revocationLists(opts, info.product, kind, chain.simulated);
  if (crls) checkRevocation({ crls, root: chain.root, intermediate: chain.intermediate, leaf, now: opts.now });

  if (chain.simulated) relaxations.unshift(RELAXATION_SIMULATED_ROOT);
  return snpClaimsFromReport(report, {
    product: info.product,
    productName: info.productName,
    simulated: chain.simulated,
    relaxations,
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
 * With `expectedReportData: ANY_REPORT_DATA` the report_data check is skipped and the
 * claims carry the 'report-data-unchecked' relaxation. A certificate table
 * (`certs.certTable`, base64 auxblob) fills in missing certificates. When the evidence
 * has no VCEK, `collateral.vcek` is asked for one (it is then verified exactly like one
 * from the evidence). With `crls` (or, failing that, a CRL from `collateral`), the chain
 * is checked for revocation (crl.ts checkRevocation) after the signature checks.
 *
 * Does NOT check: revocation unless CRLs are supplied or found through `collateral`, or
 * any policy (measurement, debug, TCB minimums, VMPL ...): that is validateSnpClaims. Throws AttestationError, and only
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
