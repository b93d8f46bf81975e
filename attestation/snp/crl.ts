import { AttestationError, type AttestationErrorCode } from '../codes.js';
import { x509 } from '../../common/x509.js';
import {
  checkNotRevoked,
  isRevoked,
  MAX_CRL_BYTES,
  parseCrlDer,
  translatePkiFailure,
  verifyCrl,
  type Crl,
  type PkiFailure,
  type PkiFailureReason,
} from '../pki/index.js';
import { parseCertificate, type ParsedCert } from './certs.js';
import { AMD_SIGNATURE_ALGORITHMS, SNP_PKI_CODES, snpPkiError } from './chain.js';

/**
 * AMD certificate revocation lists (CRLs): parse, verify against the chain's root, and
 * look up serial numbers. The X.509 work is pki/crl.ts (parseCrlDer, verifyCrl,
 * checkNotRevoked); this file keeps AMD's PEM envelope, the RSASSA-PSS allow-list, the
 * choice of CRLs for a chain, and the ERR_ATT_SNP_* codes.
 *
 * Spec: AMD KDS interface spec (pub. 57230), "Certificate Revocation List": one CRL per
 * product and signer (`/vcek/v1/{product}/crl`, `/vlek/v1/{product}/crl`), an X.509 v2
 * CRL issued and signed by the ARK with RSASSA-PSS SHA-384 (salt 48), listing revoked
 * ASKs/ASVKs. RFC 5280 §5 for the CRL format and §6.3 for its use.
 */

/** Bound on one CRL's size (pki/crl.ts); AMD's are a few KiB. */
export { MAX_CRL_BYTES };

/** A CRL decoded once, eagerly (pki/crl.ts Crl), with a serial lookup. */
export interface ParsedSnpCrl extends Crl {
  /** True when `serialHex` (any case, leading zeros allowed) is listed. */
  isRevoked(serialHex: string): boolean;
}

// A CRL under another algorithm is an invalid CRL, not a broken chain.
const CRL_CODES: Readonly<Record<PkiFailureReason, AttestationErrorCode>> = Object.freeze({
  ...SNP_PKI_CODES,
  'bad-algorithm': 'ERR_ATT_SNP_CRL_INVALID',
});

const crlError = (f: PkiFailure) => snpPkiError(f, CRL_CODES);

function badCrl(detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CRL', { detail, cause });
}

const PEM_START = '-----BEGIN';
/** PEM labels accepted for a CRL: RFC 7468's "X509 CRL", and the "CRL" some tools write. */
export const CRL_PEM_LABELS: readonly string[] = Object.freeze(['X509 CRL', 'CRL']);

/**
 * DER bytes (a private copy) from DER or PEM ("X509 CRL") input. AMD's PEM rules, kept
 * apart from pki/crl.ts crlDer on purpose: @peculiar/x509's PEM reader tolerates
 * explanatory text and RFC 1421 headers around the one block (as `openssl crl -text`
 * writes), which the SNP interfaces have always accepted.
 */
function crlDer(input: Uint8Array | string): Uint8Array {
  let text: string | undefined;
  if (typeof input === 'string') text = input;
  else if (Buffer.from(input.subarray(0, 64)).toString('latin1').trimStart().startsWith(PEM_START)) {
    text = Buffer.from(input).toString('latin1');
  }
  if (text === undefined) return new Uint8Array(input as Uint8Array);
  let blocks: { type: string; rawData: ArrayBuffer }[];
  try {
    blocks = x509.PemConverter.decodeWithHeaders(text);
  } catch (e) {
    throw badCrl('bad PEM', e);
  }
  if (blocks.length !== 1 || !CRL_PEM_LABELS.includes(blocks[0]!.type)) throw badCrl('expected exactly one "X509 CRL" PEM block');
  return new Uint8Array(blocks[0]!.rawData);
}

/**
 * Parses an X.509 CRL given as DER bytes, PEM bytes or PEM text (pki/crl.ts parseCrlDer).
 *
 * Checks: size <= MAX_CRL_BYTES; strict DER outer structure; version absent or v2;
 * nextUpdate present; valid dates; every revoked serial decodes; no critical extension
 * on the CRL or an entry (RFC 5280 §5.2/§5.3: an unprocessable critical extension makes
 * the CRL unusable; delta CRLs, issuing distribution points and indirect CRLs all come
 * as critical extensions, and none of them is supported). Throws ERR_ATT_SNP_BAD_CRL
 * (ERR_ATT_BAD_ARGUMENT when the input is neither bytes nor text).
 *
 * Does NOT check the signature, the issuer or the dates against a clock: see
 * verifySnpCrl.
 */
export function parseSnpCrl(input: Uint8Array | string): ParsedSnpCrl {
  if (!(input instanceof Uint8Array) && typeof input !== 'string') {
    throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'CRL must be bytes or PEM text' });
  }
  if (input.length > MAX_CRL_BYTES * 2) throw badCrl(`larger than ${MAX_CRL_BYTES} bytes`);
  const der = crlDer(input); // SECURITY: a private copy either way
  const crl = translatePkiFailure(() => parseCrlDer(der), crlError);
  return Object.freeze({ ...crl, isRevoked: (serialHex: string): boolean => isRevoked(crl, serialHex) });
}

/**
 * Verifies a parsed CRL against the root that must have issued it (internal form;
 * pki/crl.ts verifyCrl with AMD_SIGNATURE_ALGORITHMS).
 *
 * Checks: the CRL issuer Name equals the root's subject (byte for byte); the root's
 * keyUsage, when present, includes cRLSign; the algorithm is RSASSA-PSS SHA-384 salt 48
 * in both algorithm fields, which agree; the signature verifies with the root's key
 * (parameters fixed); all of these are ERR_ATT_SNP_CRL_INVALID. Then thisUpdate <= now
 * (ERR_ATT_SNP_CRL_NOT_YET_VALID) and now <= nextUpdate (ERR_ATT_SNP_CRL_EXPIRED).
 *
 * Does NOT check that the root itself is trusted: the caller passes a root that is
 * already pinned (verify.ts passes the chain's verified root).
 */
export function checkCrlIssuedBy(crl: ParsedSnpCrl, root: ParsedCert, now: Date): void {
  // SECURITY: the issuer key is the root's key; a CRL signed by any other key (even one
  // with the same name) is rejected here, never silently skipped.
  translatePkiFailure(() => verifyCrl(crl, root, now, AMD_SIGNATURE_ALGORITHMS), crlError);
}

/**
 * Verifies a CRL against an ARK certificate (DER) at `now`: see checkCrlIssuedBy. The
 * ARK is only parsed here, not pinned: pass a pinned root (e.g. from the bundled chain).
 * Throws AttestationError (ERR_ATT_SNP_CRL_INVALID, _EXPIRED, _NOT_YET_VALID, or
 * ERR_ATT_SNP_BAD_CERT for an unparseable ARK).
 */
export function verifySnpCrl(crl: ParsedSnpCrl, arkDer: Uint8Array, now: Date): void {
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'now must be a valid Date' });
  checkCrlIssuedBy(crl, parseCertificate(arkDer, 'ARK'), now);
}

export interface RevocationInput {
  readonly crls: readonly ParsedSnpCrl[];
  readonly root: ParsedCert;
  readonly intermediate: ParsedCert;
  readonly leaf: ParsedCert;
  readonly now: Date;
}

/**
 * Revocation check of a verified chain (internal, verify.ts). CRLs whose issuer Name is
 * not the root's subject are ignored (they belong to another product's ARK); at least
 * one must be the root's (ERR_ATT_SNP_CRL_MISSING), and every one that is must verify
 * and be current (checkCrlIssuedBy). The intermediate's (ASK/ASVK) and, following
 * go-sev-guest's VcekNotRevoked, the leaf's (VCEK/VLEK) serials are looked up in each:
 * a hit is ERR_ATT_SNP_REVOKED.
 */
export function checkRevocation(input: RevocationInput): void {
  const mine = input.crls.filter((c) => Buffer.compare(c.issuerDer, input.root.parts.subject) === 0);
  if (mine.length === 0) throw new AttestationError('ERR_ATT_SNP_CRL_MISSING', { detail: `no CRL issued by ${input.root.label}` });
  for (const crl of mine) {
    checkCrlIssuedBy(crl, input.root, input.now);
    for (const c of [input.intermediate, input.leaf]) translatePkiFailure(() => checkNotRevoked(crl, c), crlError);
  }
}
