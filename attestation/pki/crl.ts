import { sha256, toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';
import { children, readTlv, TAG_BIT_STRING, TAG_INTEGER, TAG_SEQUENCE, type Tlv } from '../der.js';
import { signatureAlgorithmOf, type SignatureAlgorithm } from './asn1.js';
import { KeyUsage, normalizeSerialHex, type Certificate } from './cert.js';
import { PkiFailure } from './failure.js';
import { signatureVerifies } from './path.js';

/**
 * Generic X.509 v2 CRLs (RFC 5280 §5): parse, verify against a given issuer at `now`,
 * look up serials.
 */

/** Bound on one CRL's DER size. Intel's PCK CRLs are a few KiB, AMD's smaller. */
export const MAX_CRL_BYTES = 1024 * 1024;

export interface Crl {
  readonly der: Uint8Array;
  readonly derSha256: string;
  /** Issuer DN text: details and tests only. */
  readonly issuer: string;
  /** Issuer Name DER, compared byte for byte with the issuing certificate's subject. */
  readonly issuerDer: Uint8Array;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  readonly revokedSerials: ReadonlySet<string>;
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
  readonly signatureAlgorithm: SignatureAlgorithm | undefined;
  /** The outer and the TBS signature AlgorithmIdentifier, as DER. */
  readonly signatureAlgorithmDer: Uint8Array;
  readonly tbsSignatureAlgorithmDer: Uint8Array;
  /** True when the outer and TBS algorithm fields are byte-identical. */
  readonly algorithmFieldsAgree: boolean;
}

const malformed = (detail: string, cause?: unknown) =>
  new PkiFailure('malformed-crl', detail, cause === undefined ? undefined : { cause });

interface CrlParts {
  readonly tbs: Uint8Array;
  readonly sigAlg: Uint8Array;
  readonly tbsSigAlg: Uint8Array;
  readonly signature: Uint8Array;
  readonly issuerDer: Uint8Array;
}

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
    const v = fields[0];
    if (v.end - v.contentStart !== 1 || der[v.contentStart] !== 1) return undefined; // v2 only
    i = 1;
  }
  const tbsSig = fields[i];
  const issuer = fields[i + 1];
  if (!tbsSig || !issuer || tbsSig.tag !== TAG_SEQUENCE || issuer.tag !== TAG_SEQUENCE) return undefined;
  const cut = (t: Tlv): Uint8Array => der.slice(t.start, t.end);
  return {
    tbs: cut(tbs),
    sigAlg: cut(sigAlg),
    tbsSigAlg: cut(tbsSig),
    signature: der.slice(sigVal.contentStart + 1, sigVal.end),
    issuerDer: cut(issuer),
  };
}

const PEM_CRL_RE = /^\s*-----BEGIN (X509 CRL|CRL)-----([A-Za-z0-9+/=\s]*)-----END \1-----\s*$/;

/** DER from DER bytes, PEM bytes or PEM text (one "X509 CRL" block). */
export function crlDer(input: Uint8Array | string): Uint8Array {
  let text: string | undefined;
  if (typeof input === 'string') text = input;
  else if (Buffer.from(input.subarray(0, 64)).toString('latin1').trimStart().startsWith('-----BEGIN')) {
    text = Buffer.from(input).toString('latin1');
  }
  if (text === undefined) return new Uint8Array(input as Uint8Array);
  if (text.length > MAX_CRL_BYTES * 2) throw malformed(`larger than ${MAX_CRL_BYTES} bytes`);
  const m = PEM_CRL_RE.exec(text);
  const b64 = m?.[2]?.replace(/\s+/g, '');
  if (!b64 || !/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(b64)) {
    throw malformed('expected exactly one "X509 CRL" PEM block');
  }
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/**
 * Parses a CRL (DER, or PEM bytes/text): crlDer, then parseCrlDer. Throws
 * PkiFailure('malformed-crl'). Does NOT check the signature or dates (verifyCrl).
 */
export function parseCrl(input: Uint8Array | string): Crl {
  if (!(input instanceof Uint8Array) && typeof input !== 'string') throw malformed('CRL must be bytes or PEM text');
  return parseCrlDer(crlDer(input)); // SECURITY: crlDer returns a private copy either way
}

/**
 * Parses a DER CRL that the caller already owns (it is kept, not copied: pass a private
 * copy). For callers with their own PEM rules. Checks: size; strict DER outer structure;
 * version absent or v2; nextUpdate present; valid dates; every revoked serial decodes; no
 * critical extension on the CRL or an entry (delta CRLs, issuing distribution points and
 * indirect CRLs all come as critical extensions and none is supported). Throws
 * PkiFailure('malformed-crl'). Does NOT check the signature or dates (verifyCrl).
 */
export function parseCrlDer(der: Uint8Array): Crl {
  if (!(der instanceof Uint8Array)) throw malformed('CRL must be bytes');
  if (der.length > MAX_CRL_BYTES) throw malformed(`larger than ${MAX_CRL_BYTES} bytes`);
  const parts = splitCrl(der);
  if (!parts) throw malformed('not a DER X.509 v2 CRL');
  // SECURITY: @peculiar/x509 decodes lazily and throws untyped errors on hostile bytes;
  // every access happens inside this try, and the library object is not kept.
  try {
    const crl = new x509.X509Crl(der);
    const thisUpdate = new Date(crl.thisUpdate.getTime());
    const next = crl.nextUpdate;
    if (!next) throw malformed('nextUpdate is missing');
    const nextUpdate = new Date(next.getTime());
    if (Number.isNaN(thisUpdate.getTime()) || Number.isNaN(nextUpdate.getTime())) throw malformed('invalid dates');
    for (const ext of crl.extensions) if (ext.critical) throw malformed(`unsupported critical CRL extension ${ext.type}`);
    const revoked = new Set<string>();
    for (const entry of crl.entries) {
      const serial = normalizeSerialHex(entry.serialNumber);
      if (serial === undefined) throw malformed('revoked serial number does not decode');
      for (const ext of entry.extensions) if (ext.critical) throw malformed(`unsupported critical entry extension ${ext.type}`);
      revoked.add(serial);
    }
    return Object.freeze({
      der,
      derSha256: toHex(sha256(der)),
      issuer: crl.issuer,
      issuerDer: parts.issuerDer,
      thisUpdate,
      nextUpdate,
      revokedSerials: revoked as ReadonlySet<string>,
      tbs: parts.tbs,
      signature: parts.signature,
      signatureAlgorithm: signatureAlgorithmOf(parts.sigAlg),
      signatureAlgorithmDer: parts.sigAlg,
      tbsSignatureAlgorithmDer: parts.tbsSigAlg,
      algorithmFieldsAgree: Buffer.compare(parts.sigAlg, parts.tbsSigAlg) === 0,
    });
  } catch (e) {
    if (e instanceof PkiFailure) throw e;
    throw malformed('unparseable CRL', e);
  }
}

/** True when `serialHex` (any case, leading zeros allowed) is listed. */
export function isRevoked(crl: Crl, serialHex: string): boolean {
  const s = normalizeSerialHex(serialHex);
  return s !== undefined && crl.revokedSerials.has(s);
}

/**
 * Verifies `crl` against the certificate that must have issued it, at `now`: issuer Name
 * equals the certificate's subject (bytes); its keyUsage, when present, has cRLSign; the
 * algorithm is on the allow-list and both algorithm fields agree; the signature verifies
 * with the issuer's key; thisUpdate <= now <= nextUpdate (inclusive).
 *
 * Does NOT check that `issuer` is trusted: pass a certificate whose path was verified.
 */
export function verifyCrl(crl: Crl, issuer: Certificate, now: Date, algorithms: readonly SignatureAlgorithm[]): void {
  const invalid = (d: string) => new PkiFailure('crl-invalid', `CRL of ${crl.issuer}: ${d}`);
  if (Buffer.compare(crl.issuerDer, issuer.parts.subject) !== 0) throw invalid(`not issued by ${issuer.label}`);
  if (issuer.keyUsage !== undefined && (issuer.keyUsage & KeyUsage.cRLSign) === 0) throw invalid(`${issuer.label} keyUsage lacks cRLSign`);
  const alg = crl.signatureAlgorithm;
  if (alg === undefined || !algorithms.includes(alg) || !crl.algorithmFieldsAgree) {
    throw new PkiFailure('bad-algorithm', `CRL of ${crl.issuer}: signature algorithm not allowed or fields disagree`);
  }
  // SECURITY: the key decides, never the name: a CRL signed by any other key is rejected.
  if (!signatureVerifies(issuer.publicKey, alg, crl.tbs, crl.signature)) throw invalid(`signature does not verify with ${issuer.label}`);
  const t = now.getTime();
  if (t < crl.thisUpdate.getTime()) throw new PkiFailure('crl-not-yet-valid', `CRL of ${crl.issuer}: thisUpdate ${crl.thisUpdate.toISOString()}`);
  if (t > crl.nextUpdate.getTime()) throw new PkiFailure('crl-expired', `CRL of ${crl.issuer}: nextUpdate ${crl.nextUpdate.toISOString()}`);
}

/** Throws PkiFailure('revoked') when `cert`'s serial is listed in `crl`. */
export function checkNotRevoked(crl: Crl, cert: Certificate): void {
  if (isRevoked(crl, cert.serialHex)) throw new PkiFailure('revoked', `${cert.label}: serial ${cert.serialHex}`);
}
