import { createPublicKey, type KeyObject } from 'node:crypto';
import { constantTimeEqual, sha256, toHex } from '../../common/bytes.js';
import {
  checkNotRevoked,
  isPkiFailure,
  parseCertificate,
  parseCrl,
  pemCertificates,
  signatureVerifies,
  verifyCrl,
  verifyPath,
  type Certificate,
  type Crl,
  type PkiFailureReason,
} from '../pki/index.js';
import { ANY_REPORT_DATA, RELAXATION_REPORT_DATA_UNCHECKED } from '../snp/verify.js';
import { isTdxError, TdxError, type TdxErrorCode } from './codes.js';
import { parseQeIdentity, parseTcbInfo, type SignedJson, type TdxCollateral, type TdxQeIdentity, type TdxTcbInfo } from './collateral.js';
import { tdxClaimsFromQuote } from './claims.js';
import { parseTdxQuote, type TdxQuote } from './parse.js';
import { readPckSgxInfo, type PckSgxInfo } from './pck.js';
import { INTEL_SGX_ROOT_CA_SPKI_SHA256, intelRootCa } from './roots.js';
import type { TdxCollateralSource } from './source.js';
import { appraiseTcb } from './tcb.js';
import type { TdxClaims } from './types.js';

// The same symbol and relaxation name as SEV-SNP, so one caller value works for both TEEs.
export { ANY_REPORT_DATA, RELAXATION_REPORT_DATA_UNCHECKED };

/**
 * Intel TDX quote verification: parse -> report_data -> PCK chain to the pinned Intel
 * SGX Root CA -> QE report signature (PCK key) -> QE binding of the attestation key ->
 * quote signature -> CRLs -> TCB Info / QE Identity (signature over the exact transmitted
 * JSON, signing chain, validity window) -> FMSPC/PCE-ID -> TCB status -> claims.
 *
 * Spec: Intel TDX DCAP Quoting Library API (quote format, A.3/A.4), Intel SGX PCK
 * Certificate and CRL Profile, Intel PCS API v4 (collateral), Intel TDX TCB Info and
 * Enclave Identity JSON references.
 */

/** Relaxation recorded when the PCK CRL was absent and allowMissingCrls was set. */
export const RELAXATION_PCK_CRL_UNCHECKED = 'pck-crl-unchecked';
/** Relaxation recorded when the root CA CRL was absent and allowMissingCrls was set. */
export const RELAXATION_ROOT_CRL_UNCHECKED = 'root-ca-crl-unchecked';

export interface TdxVerifyOptions {
  /** Verification time (injected clock): certificates, CRLs and collateral windows, inclusive. */
  readonly now: Date;
  /** REQUIRED 64 bytes the quote's report_data must equal, or ANY_REPORT_DATA (a relaxation). */
  readonly expectedReportData: Uint8Array | typeof ANY_REPORT_DATA;
  /** Collateral for this quote, or a source that provides it by FMSPC and PCK CA. */
  readonly collateral: TdxCollateral | TdxCollateralSource;
  /**
   * Relaxation: accept collateral without a PCK CRL and/or root CA CRL (revocation of the
   * missing list is then not checked, and claims.relaxations says so). Default false: a
   * missing CRL is ERR_ATT_TDX_CRL_MISSING. A CRL that is present is always checked.
   */
  readonly allowMissingCrls?: boolean;
}

const PKI_CODES: Readonly<Record<PkiFailureReason, TdxErrorCode>> = {
  'malformed-cert': 'ERR_ATT_TDX_BAD_CERT',
  'malformed-crl': 'ERR_ATT_TDX_BAD_CRL',
  'pin-mismatch': 'ERR_ATT_TDX_ROOT_PIN_MISMATCH',
  'chain-invalid': 'ERR_ATT_TDX_CHAIN_INVALID',
  'bad-algorithm': 'ERR_ATT_TDX_CHAIN_INVALID',
  'not-ca': 'ERR_ATT_TDX_CHAIN_INVALID',
  'bad-leaf': 'ERR_ATT_TDX_CHAIN_INVALID',
  expired: 'ERR_ATT_TDX_CERT_EXPIRED',
  'not-yet-valid': 'ERR_ATT_TDX_CERT_NOT_YET_VALID',
  'crl-invalid': 'ERR_ATT_TDX_CRL_INVALID',
  'crl-expired': 'ERR_ATT_TDX_CRL_EXPIRED',
  'crl-not-yet-valid': 'ERR_ATT_TDX_CRL_NOT_YET_VALID',
  revoked: 'ERR_ATT_TDX_REVOKED',
};

/** Runs generic PKI code, turning its PkiFailure into the matching TdxError. */
function pki<T>(f: () => T): T {
  try {
    return f();
  } catch (e) {
    if (isPkiFailure(e)) throw new TdxError(PKI_CODES[e.reason], { detail: e.detail, cause: e });
    throw e;
  }
}

/** Intel signs everything in DCAP with ECDSA P-256 / SHA-256. */
const ALGS = ['ecdsa-sha256'] as const;

// --- bounded caches (keyed by content hashes, so a hit is as good as a recomputation) ----

class Lru<V> {
  readonly #m = new Map<string, V>();
  constructor(readonly max: number) {}
  get(k: string): V | undefined {
    const v = this.#m.get(k);
    if (v !== undefined) {
      this.#m.delete(k);
      this.#m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.#m.delete(k);
    if (this.#m.size >= this.max) this.#m.delete(this.#m.keys().next().value!);
    this.#m.set(k, v);
  }
}

const certCache = new Lru<Certificate>(256);
const crlCache = new Lru<Crl>(32);
/** Signed JSON whose signature verified with a given signing key, parsed. */
const signedCache = new Lru<TdxTcbInfo | TdxQeIdentity>(64);

function cert(der: Uint8Array, label: string): Certificate {
  const k = `${label}|${toHex(sha256(der))}`;
  const hit = certCache.get(k);
  if (hit) return hit;
  const c = pki(() => parseCertificate(der, label));
  certCache.set(k, c);
  return c;
}

function crl(bytes: Uint8Array): Crl {
  const k = toHex(sha256(bytes));
  const hit = crlCache.get(k);
  if (hit) return hit;
  const c = pki(() => parseCrl(bytes));
  crlCache.set(k, c);
  return c;
}

function isEcP256(c: Certificate): boolean {
  return c.publicKey.asymmetricKeyType === 'ec' && c.publicKey.asymmetricKeyDetails?.namedCurve === 'prime256v1';
}

// --- checks ---------------------------------------------------------------------------

function checkOptions(opts: TdxVerifyOptions): void {
  const badArg = (detail: string) => new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail });
  if (typeof opts !== 'object' || opts === null) throw badArg('options required');
  if (!(opts.now instanceof Date) || Number.isNaN(opts.now.getTime())) throw badArg('now must be a valid Date');
  // SECURITY: freshness/key binding is required; skipping it takes the explicit symbol.
  const rd = opts.expectedReportData;
  if (rd !== ANY_REPORT_DATA && (!(rd instanceof Uint8Array) || rd.length !== 64)) {
    throw badArg('expectedReportData must be 64 bytes or ANY_REPORT_DATA');
  }
  if (typeof opts.collateral !== 'object' || opts.collateral === null) throw badArg('collateral required');
  if (opts.allowMissingCrls !== undefined && typeof opts.allowMissingCrls !== 'boolean') throw badArg('allowMissingCrls must be a boolean');
}

interface VerifiedPck {
  readonly leaf: Certificate;
  readonly ca: Certificate;
  readonly info: PckSgxInfo;
}

/**
 * PCK <- PCK Platform/Processor CA <- Intel SGX Root CA. The quote's root certificate
 * must carry the pinned key; the path is then verified against the embedded root, so
 * the quote's copy contributes nothing but its key comparison.
 */
function verifyPckChain(q: TdxQuote, now: Date): VerifiedPck {
  const [leafDer, caDer, rootDer] = q.pckChain as [Uint8Array, Uint8Array, Uint8Array];
  const quoteRoot = cert(rootDer, 'quote root CA');
  if (quoteRoot.spkiSha256 !== INTEL_SGX_ROOT_CA_SPKI_SHA256) {
    throw new TdxError('ERR_ATT_TDX_ROOT_PIN_MISMATCH', { detail: `quote root key ${quoteRoot.spkiSha256}` });
  }
  const leaf = cert(leafDer, 'PCK');
  const ca = cert(caDer, 'PCK CA');
  pki(() => verifyPath({ chain: [leaf, ca], root: intelRootCa(), pins: [INTEL_SGX_ROOT_CA_SPKI_SHA256], now, algorithms: ALGS }));
  if (!isEcP256(leaf)) throw new TdxError('ERR_ATT_TDX_BAD_CERT', { detail: 'PCK key is not ECDSA P-256' });
  return { leaf, ca, info: readPckSgxInfo(leaf) };
}

function attestationKeyObject(raw: Uint8Array): KeyObject | undefined {
  try {
    return createPublicKey({
      key: { kty: 'EC', crv: 'P-256', x: Buffer.from(raw.subarray(0, 32)).toString('base64url'), y: Buffer.from(raw.subarray(32, 64)).toString('base64url') },
      format: 'jwk',
    });
  } catch {
    return undefined; // not a point on P-256
  }
}

function checkQuoteSignatures(q: TdxQuote, pck: VerifiedPck): void {
  // 1. QE report signed by the PCK key (r||s).
  if (!signatureVerifies(pck.leaf.publicKey, 'ecdsa-sha256', q.qeReport.raw, q.qeReportSignature, 'ieee-p1363')) {
    throw new TdxError('ERR_ATT_TDX_BAD_QE_SIGNATURE');
  }
  // 2. The QE vouches for the attestation key: report_data = SHA-256(key || auth) || 0^32.
  const expected = new Uint8Array(64);
  expected.set(sha256(q.attestationKey, q.qeAuthData), 0);
  if (!constantTimeEqual(expected, q.qeReport.reportData)) throw new TdxError('ERR_ATT_TDX_QE_BINDING_MISMATCH');
  // 3. The quote (header and body) signed by the attestation key.
  const key = attestationKeyObject(q.attestationKey);
  if (!key || !signatureVerifies(key, 'ecdsa-sha256', q.signedRegion, q.signature, 'ieee-p1363')) {
    throw new TdxError('ERR_ATT_TDX_BAD_QUOTE_SIGNATURE');
  }
}

/**
 * The TCB Signing chain of a collateral item: [signing cert, (root)]. When the chain
 * carries a root, its key must be the pinned one; the path is verified against the
 * embedded root either way.
 */
function verifySigningChain(pem: string, what: string, now: Date): Certificate {
  const ders = pki(() => pemCertificates(pem, `${what} issuer chain`));
  if (ders.length > 2) throw new TdxError('ERR_ATT_TDX_BAD_COLLATERAL', { detail: `${what} issuer chain has ${ders.length} certificates` });
  if (ders.length === 2) {
    const r = cert(ders[1]!, `${what} chain root`);
    if (r.spkiSha256 !== INTEL_SGX_ROOT_CA_SPKI_SHA256) {
      throw new TdxError('ERR_ATT_TDX_ROOT_PIN_MISMATCH', { detail: `${what} chain root key ${r.spkiSha256}` });
    }
  }
  const signer = cert(ders[0]!, `${what} signing certificate`);
  pki(() => verifyPath({ chain: [signer], root: intelRootCa(), pins: [INTEL_SGX_ROOT_CA_SPKI_SHA256], now, algorithms: ALGS }));
  if (!isEcP256(signer)) throw new TdxError('ERR_ATT_TDX_BAD_CERT', { detail: `${what} signing key is not ECDSA P-256` });
  return signer;
}

/**
 * Checks a signed JSON object: the r||s ECDSA P-256/SHA-256 signature over the UTF-8
 * bytes of the exact transmitted object text, with the signing certificate's key; then
 * parses it. Cached by (text, signature, signing key) hashes.
 */
function verifySigned<T extends TdxTcbInfo | TdxQeIdentity>(s: SignedJson, signer: Certificate, parse: (raw: string) => T, what: string): T {
  const raw = Buffer.from(s.raw, 'utf8');
  const k = `${what}|${toHex(sha256(raw))}|${toHex(s.signature)}|${signer.spkiSha256}`;
  const hit = signedCache.get(k);
  if (hit) return hit as T;
  // SECURITY: the signature is checked over the bytes Intel signed, never a re-serialisation.
  if (!signatureVerifies(signer.publicKey, 'ecdsa-sha256', raw, s.signature, 'ieee-p1363')) {
    throw new TdxError('ERR_ATT_TDX_BAD_COLLATERAL_SIGNATURE', { detail: what });
  }
  const v = parse(s.raw);
  signedCache.set(k, v);
  return v;
}

function checkWindow(what: string, issueDate: Date, nextUpdate: Date, now: Date): void {
  const t = now.getTime();
  if (t < issueDate.getTime()) {
    throw new TdxError('ERR_ATT_TDX_COLLATERAL_NOT_YET_VALID', { detail: `${what} issueDate ${issueDate.toISOString()}` });
  }
  if (t > nextUpdate.getTime()) {
    throw new TdxError('ERR_ATT_TDX_COLLATERAL_EXPIRED', { detail: `${what} nextUpdate ${nextUpdate.toISOString()}` });
  }
}

function checkCollateralShape(c: TdxCollateral): void {
  const bad = (detail: string) => new TdxError('ERR_ATT_TDX_BAD_COLLATERAL', { detail });
  const signed = (s: unknown, what: string): void => {
    const o = s as SignedJson | undefined;
    if (typeof o !== 'object' || o === null || typeof o.raw !== 'string' || !(o.signature instanceof Uint8Array) || o.signature.length !== 64) {
      throw bad(`${what} must be { raw: string, signature: 64 bytes }`);
    }
  };
  signed(c.tcbInfo, 'tcbInfo');
  signed(c.qeIdentity, 'qeIdentity');
  if (typeof c.tcbInfoIssuerChain !== 'string' || typeof c.qeIdentityIssuerChain !== 'string') throw bad('issuer chains must be PEM text');
  if (c.pckCrl !== undefined && !(c.pckCrl instanceof Uint8Array)) throw bad('pckCrl must be bytes');
  if (c.rootCaCrl !== undefined && !(c.rootCaCrl instanceof Uint8Array)) throw bad('rootCaCrl must be bytes');
}

function isSource(c: TdxCollateral | TdxCollateralSource): c is TdxCollateralSource {
  return typeof (c as TdxCollateralSource).collateralFor === 'function';
}

/** Which PCK CA issued the leaf, to pick the PCK CRL (the name only selects; keys decide trust). */
function pckCaKind(ca: Certificate): 'platform' | 'processor' {
  return /Processor CA/.test(ca.subject) ? 'processor' : 'platform';
}

async function obtainCollateral(opts: TdxVerifyOptions, pck: VerifiedPck): Promise<TdxCollateral> {
  const c = opts.collateral;
  if (!isSource(c)) return c;
  let got: unknown;
  try {
    got = await c.collateralFor({ fmspc: pck.info.fmspc, pckCa: pckCaKind(pck.ca) });
  } catch (e) {
    if (isTdxError(e)) throw e;
    throw new TdxError('ERR_ATT_TDX_COLLATERAL_UNAVAILABLE', { cause: e });
  }
  return got as TdxCollateral;
}

/**
 * SECURITY: the verifier throws TdxError and nothing else; anything unanticipated becomes
 * ERR_ATT_TDX_UNVERIFIABLE (rejected as unverified), with the original kept as `cause`.
 */
async function onlyTdxErrors<T>(f: () => Promise<T>): Promise<T> {
  try {
    return await f();
  } catch (e) {
    if (isTdxError(e)) throw e;
    if (isPkiFailure(e)) throw new TdxError(PKI_CODES[e.reason], { detail: e.detail, cause: e });
    throw new TdxError('ERR_ATT_TDX_UNVERIFIABLE', { cause: e });
  }
}

/**
 * Verifies an Intel TDX quote (v4 or v5) and returns its claims.
 *
 * Checks, in order: options; parseTdxQuote; report_data equals `expectedReportData`
 * (constant time; or ANY_REPORT_DATA, recorded as a relaxation); the PCK chain (PCK <-
 * PCK CA <- Intel SGX Root CA, the root compared by SPKI hash with the pin, CA flags,
 * path length, key usage, ECDSA-SHA256, inclusive validity at `now`); the QE report
 * signature with the PCK key; the QE binding (QE report_data = SHA-256(attestation key ||
 * QE auth data) || 0^32); the quote signature with the attestation key over header (and
 * v5 descriptor) and body; the root CA CRL (signed by the pinned root, current; neither
 * the PCK CA nor the TCB Signing certificates listed) and the PCK CRL (signed by the
 * quote's PCK CA, current; the PCK not listed), each ERR_ATT_TDX_CRL_MISSING when absent
 * unless `allowMissingCrls`; the TCB Info and QE Identity signatures (ECDSA P-256 over the
 * exact object text, by a TCB Signing certificate that chains to the pinned root) and
 * their issueDate..nextUpdate windows; FMSPC and PCE-ID of the PCK equal the TCB Info's;
 * the TCB status (tcb.ts: platform level, TDX module identity, QE identity).
 *
 * Does NOT apply any policy: a Revoked or OutOfDate status, a debug TD or unexpected
 * measurements are reported in the claims and rejected by validateTdxClaims. Throws
 * TdxError, and only TdxError.
 */
export async function verifyTdxQuote(quoteBytes: Uint8Array, opts: TdxVerifyOptions): Promise<TdxClaims> {
  return onlyTdxErrors(async () => {
    checkOptions(opts);
    const q = parseTdxQuote(quoteBytes);
    const relaxations: string[] = [];
    const expected = opts.expectedReportData;
    if (expected === ANY_REPORT_DATA) relaxations.push(RELAXATION_REPORT_DATA_UNCHECKED);
    else if (!constantTimeEqual(q.body.reportData, expected)) throw new TdxError('ERR_ATT_TDX_REPORT_DATA_MISMATCH');

    const now = opts.now;
    const pck = verifyPckChain(q, now);
    checkQuoteSignatures(q, pck);

    const collateral = await obtainCollateral(opts, pck);
    checkCollateralShape(collateral);

    const tcbSigner = verifySigningChain(collateral.tcbInfoIssuerChain, 'tcbInfo', now);
    const qeSigner = verifySigningChain(collateral.qeIdentityIssuerChain, 'enclaveIdentity', now);

    // Revocation. SECURITY: a CRL that is present is always checked; a missing one is an
    // error unless the caller explicitly accepted it (and the claims say so).
    const root = intelRootCa();
    if (collateral.rootCaCrl) {
      const rc = crl(collateral.rootCaCrl);
      pki(() => {
        verifyCrl(rc, root, now, ALGS);
        for (const c of [pck.ca, tcbSigner, qeSigner]) checkNotRevoked(rc, c);
      });
    } else if (opts.allowMissingCrls) relaxations.push(RELAXATION_ROOT_CRL_UNCHECKED);
    else throw new TdxError('ERR_ATT_TDX_CRL_MISSING', { detail: 'root CA CRL' });
    if (collateral.pckCrl) {
      const pc = crl(collateral.pckCrl);
      pki(() => {
        verifyCrl(pc, pck.ca, now, ALGS);
        checkNotRevoked(pc, pck.leaf);
      });
    } else if (opts.allowMissingCrls) relaxations.push(RELAXATION_PCK_CRL_UNCHECKED);
    else throw new TdxError('ERR_ATT_TDX_CRL_MISSING', { detail: 'PCK CRL' });

    const tcbInfo = verifySigned(collateral.tcbInfo, tcbSigner, parseTcbInfo, 'tcbInfo');
    const qeIdentity = verifySigned(collateral.qeIdentity, qeSigner, parseQeIdentity, 'enclaveIdentity');
    checkWindow('tcbInfo', tcbInfo.issueDate, tcbInfo.nextUpdate, now);
    checkWindow('enclaveIdentity', qeIdentity.issueDate, qeIdentity.nextUpdate, now);

    if (tcbInfo.fmspc !== pck.info.fmspc || tcbInfo.pceId !== pck.info.pceId) {
      throw new TdxError('ERR_ATT_TDX_FMSPC_MISMATCH', {
        detail: `PCK fmspc ${pck.info.fmspc} pceId ${pck.info.pceId}, tcbInfo fmspc ${tcbInfo.fmspc} pceId ${tcbInfo.pceId}`,
      });
    }
    const tcb = appraiseTcb(tcbInfo, qeIdentity, pck.info, q.body, q.qeReport);
    return tdxClaimsFromQuote(q, pck.info, tcb, tcbInfo.tcbEvaluationDataNumber, relaxations);
  });
}
