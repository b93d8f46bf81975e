import { AttestationError } from '../codes.js';
import { children, readTlv, TAG_BIT_STRING, TAG_INTEGER, TAG_SEQUENCE, type Tlv } from '../der.js';
import { x509 } from '../../common/x509.js';
import { normalizeSerialHex, parseCertificate, type ParsedCert } from './certs.js';
import { isAmdPssAlgorithm, rsaPssSha384Verifies } from './chain.js';

/**
 * AMD certificate revocation lists (CRLs): parse, verify against the chain's root, and
 * look up serial numbers.
 *
 * Spec: AMD KDS interface spec (pub. 57230), "Certificate Revocation List": one CRL per
 * product and signer (`/vcek/v1/{product}/crl`, `/vlek/v1/{product}/crl`), an X.509 v2
 * CRL issued and signed by the ARK with RSASSA-PSS SHA-384 (salt 48), listing revoked
 * ASKs/ASVKs. RFC 5280 §5 for the CRL format and §6.3 for its use.
 */

/** Bound on one CRL's size; AMD's are a few KiB. */
export const MAX_CRL_BYTES = 1024 * 1024;

const KEY_USAGE_CRL_SIGN = x509.KeyUsageFlags.cRLSign;

/** A CRL decoded once, eagerly (like ParsedCert): nothing later touches the library object. */
export interface ParsedSnpCrl {
  readonly der: Uint8Array;
  /** Issuer DN (text, for details and tests). */
  readonly issuer: string;
  /** Issuer Name DER, compared byte for byte with the root's subject. */
  readonly issuerDer: Uint8Array;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Normalized serials (normalizeSerialHex) of the revoked certificates. */
  readonly revokedSerials: ReadonlySet<string>;
  /** True when `serialHex` (any case, leading zeros allowed) is listed. */
  isRevoked(serialHex: string): boolean;
  /** The exact signed bytes (tbsCertList TLV), the signature and both algorithm fields. */
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
  readonly signatureAlgorithmDer: Uint8Array;
  readonly tbsSignatureAlgorithmDer: Uint8Array;
  readonly signatureAlgorithm?: ParsedCert['signatureAlgorithm'];
}

function badCrl(detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CRL', { detail, cause });
}

const PEM_START = '-----BEGIN';
/** PEM labels accepted for a CRL: RFC 7468's "X509 CRL", and the "CRL" some tools write. */
export const CRL_PEM_LABELS: readonly string[] = Object.freeze(['X509 CRL', 'CRL']);

/** DER bytes from DER or PEM ("X509 CRL") input. */
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

interface CrlParts {
  readonly tbs: Uint8Array;
  readonly signatureAlgorithmDer: Uint8Array;
  readonly tbsSignatureAlgorithmDer: Uint8Array;
  readonly signature: Uint8Array;
  readonly issuerDer: Uint8Array;
}

/** Splits CertificateList (RFC 5280 §5.1) with the strict DER reader; undefined if malformed. */
function splitCrl(der: Uint8Array): CrlParts | undefined {
  const outer = readTlv(der, 0);
  if (!outer || outer.tag !== TAG_SEQUENCE || outer.end !== der.length) return undefined;
  const top = children(der, outer);
  if (!top || top.length !== 3) return undefined;
  const [tbs, sigAlg, sigVal] = top as [Tlv, Tlv, Tlv];
  if (tbs.tag !== TAG_SEQUENCE || sigAlg.tag !== TAG_SEQUENCE || sigVal.tag !== TAG_BIT_STRING) return undefined;
  if (sigVal.end - sigVal.contentStart < 2 || der[sigVal.contentStart] !== 0) return undefined;
  const fields = children(der, tbs);
  if (!fields) return undefined;
  let i = 0;
  if (fields[0]?.tag === TAG_INTEGER) {
    // version: only v2 (INTEGER 1) may be present (RFC 5280 §5.1.2.1).
    const v = fields[0];
    if (v.end - v.contentStart !== 1 || der[v.contentStart] !== 1) return undefined;
    i = 1;
  }
  const tbsSig = fields[i];
  const issuer = fields[i + 1];
  if (!tbsSig || !issuer || tbsSig.tag !== TAG_SEQUENCE || issuer.tag !== TAG_SEQUENCE) return undefined;
  const cut = (t: Tlv): Uint8Array => der.slice(t.start, t.end);
  return {
    tbs: cut(tbs),
    signatureAlgorithmDer: cut(sigAlg),
    tbsSignatureAlgorithmDer: cut(tbsSig),
    signature: der.slice(sigVal.contentStart + 1, sigVal.end),
    issuerDer: cut(issuer),
  };
}

/**
 * Parses an X.509 CRL given as DER bytes, PEM bytes or PEM text.
 *
 * Checks: size <= MAX_CRL_BYTES; strict DER outer structure; version absent or v2;
 * nextUpdate present; valid dates; every revoked serial decodes; no critical extension
 * on the CRL or an entry (RFC 5280 §5.2/§5.3: an unprocessable critical extension makes
 * the CRL unusable; delta CRLs, issuing distribution points and indirect CRLs all come
 * as critical extensions, and none of them is supported). Throws ERR_ATT_SNP_BAD_CRL.
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
  if (der.length > MAX_CRL_BYTES) throw badCrl(`larger than ${MAX_CRL_BYTES} bytes`);
  const parts = splitCrl(der);
  if (!parts) throw badCrl('not a DER X.509 CRL');
  // SECURITY: @peculiar/x509 decodes lazily and throws untyped errors on hostile bytes;
  // every access happens inside this try, and the library object is not kept.
  try {
    const crl = new x509.X509Crl(der);
    const thisUpdate = new Date(crl.thisUpdate.getTime());
    const next = crl.nextUpdate;
    if (!next) throw badCrl('nextUpdate is missing');
    const nextUpdate = new Date(next.getTime());
    if (Number.isNaN(thisUpdate.getTime()) || Number.isNaN(nextUpdate.getTime())) throw badCrl('invalid dates');
    for (const ext of crl.extensions) {
      if (ext.critical) throw badCrl(`unsupported critical CRL extension ${ext.type}`);
    }
    const revoked = new Set<string>();
    for (const entry of crl.entries) {
      const serial = normalizeSerialHex(entry.serialNumber);
      if (serial === undefined) throw badCrl('revoked serial number does not decode');
      for (const ext of entry.extensions) {
        if (ext.critical) throw badCrl(`unsupported critical CRL entry extension ${ext.type}`);
      }
      revoked.add(serial);
    }
    let signatureAlgorithm: ParsedCert['signatureAlgorithm'];
    try {
      const alg: unknown = crl.signatureAlgorithm;
      signatureAlgorithm = alg && typeof alg === 'object' ? (alg as ParsedCert['signatureAlgorithm']) : undefined;
    } catch {
      signatureAlgorithm = undefined; // unknown algorithm: verifySnpCrl rejects it
    }
    const issuer = crl.issuer;
    const frozenRevoked: ReadonlySet<string> = revoked;
    return Object.freeze({
      der,
      issuer,
      ...parts,
      thisUpdate,
      nextUpdate,
      revokedSerials: frozenRevoked,
      isRevoked: (serialHex: string): boolean => {
        const s = normalizeSerialHex(serialHex);
        return s !== undefined && revoked.has(s);
      },
      ...(signatureAlgorithm ? { signatureAlgorithm } : {}),
    });
  } catch (e) {
    if (e instanceof AttestationError) throw e;
    throw badCrl('unparseable CRL', e);
  }
}

/**
 * Verifies a parsed CRL against the root that must have issued it (internal form).
 *
 * Checks: the CRL issuer Name equals the root's subject (byte for byte); the root's
 * keyUsage, when present, includes cRLSign; the algorithm is RSASSA-PSS SHA-384 salt 48
 * in both algorithm fields, which agree; the signature verifies with the root's key
 * (parameters fixed here); thisUpdate <= now <= nextUpdate, inclusive.
 *
 * Does NOT check that the root itself is trusted: the caller passes a root that is
 * already pinned (verify.ts passes the chain's verified root).
 */
export function checkCrlIssuedBy(crl: ParsedSnpCrl, root: ParsedCert, now: Date): void {
  const invalid = (detail: string) => new AttestationError('ERR_ATT_SNP_CRL_INVALID', { detail: `CRL of ${crl.issuer}: ${detail}` });
  if (Buffer.compare(crl.issuerDer, root.parts.subject) !== 0) throw invalid(`not issued by ${root.label}`);
  if (root.keyUsage !== undefined && (root.keyUsage & KEY_USAGE_CRL_SIGN) === 0) throw invalid(`${root.label} keyUsage lacks cRLSign`);
  if (!isAmdPssAlgorithm(crl.signatureAlgorithm)) throw invalid('signature algorithm must be RSASSA-PSS SHA-384 salt 48');
  if (Buffer.compare(crl.signatureAlgorithmDer, crl.tbsSignatureAlgorithmDer) !== 0) throw invalid('signature algorithm fields disagree');
  // SECURITY: the issuer key is the root's key; a CRL signed by any other key (even one
  // with the same name) is rejected here, never silently skipped.
  if (!rsaPssSha384Verifies(root.publicKey, crl.tbs, crl.signature)) throw invalid(`signature does not verify with ${root.label}`);
  const t = now.getTime();
  if (t < crl.thisUpdate.getTime()) {
    throw new AttestationError('ERR_ATT_SNP_CRL_NOT_YET_VALID', { detail: `thisUpdate ${crl.thisUpdate.toISOString()}` });
  }
  if (t > crl.nextUpdate.getTime()) {
    throw new AttestationError('ERR_ATT_SNP_CRL_EXPIRED', { detail: `nextUpdate ${crl.nextUpdate.toISOString()}` });
  }
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
    for (const c of [input.intermediate, input.leaf]) {
      if (crl.isRevoked(c.serialHex)) throw new AttestationError('ERR_ATT_SNP_REVOKED', { detail: `${c.label} serial ${c.serialHex}` });
    }
  }
}
