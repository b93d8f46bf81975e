import { createPublicKey, type KeyObject } from 'node:crypto';
import { sha256, toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';
import { splitCertificate, type CertificateParts } from '../der.js';
import { signatureAlgorithmOf, type SignatureAlgorithm } from './asn1.js';
import { PkiFailure } from './failure.js';

/**
 * Generic X.509 certificate decoding (RFC 5280 §4.1): DER -> a frozen, eagerly decoded
 * Certificate. No signature, validity or profile is checked here (path.ts does that).
 */

export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';

/** keyUsage bits as @peculiar/x509 numbers them (RFC 5280 §4.2.1.3). */
export const KeyUsage = {
  digitalSignature: x509.KeyUsageFlags.digitalSignature,
  keyCertSign: x509.KeyUsageFlags.keyCertSign,
  cRLSign: x509.KeyUsageFlags.cRLSign,
} as const;

export interface Certificate {
  /** What the certificate is, for failure details ("PCK", "Intel SGX Root CA", ...). */
  readonly label: string;
  readonly der: Uint8Array;
  readonly parts: CertificateParts;
  readonly publicKey: KeyObject;
  /** Lower-case hex SHA-256 of the SubjectPublicKeyInfo DER: the value roots are pinned by. */
  readonly spkiSha256: string;
  /** Lower-case hex SHA-256 of the whole DER (cache key). */
  readonly derSha256: string;
  /** Subject DN as text: for details and tests only, never for trust decisions. */
  readonly subject: string;
  /** Serial number, normalized by normalizeSerialHex. */
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** The outer signatureAlgorithm when it is one the helpers can verify. */
  readonly signatureAlgorithm: SignatureAlgorithm | undefined;
  readonly basicConstraints: { readonly ca: boolean; readonly pathLength?: number } | undefined;
  /** keyUsage flags (KeyUsage), when the extension is present. */
  readonly keyUsage: number | undefined;
  /** Extensions by OID; duplicates are rejected at parse time. */
  readonly extensions: ReadonlyMap<string, { readonly critical: boolean; readonly value: Uint8Array }>;
}

/**
 * Normalizes the hex of an INTEGER's content bytes: lower case, leading zero octets
 * removed; "0" for zero. Undefined for anything that is not even-length hex. Certificate
 * serials and CRL entries are compared in this form (RFC 5280 §5.3).
 */
export function normalizeSerialHex(hex: string): string | undefined {
  if (typeof hex !== 'string' || hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
  const s = hex.toLowerCase().replace(/^(?:00)+/, '');
  return s === '' ? '0' : s;
}

const malformed = (label: string, detail: string, cause?: unknown) =>
  new PkiFailure('malformed-cert', `${label}: ${detail}`, cause === undefined ? undefined : { cause });

/**
 * Parses one DER certificate, decoding eagerly every field the path checks use
 * (extensions with duplicates rejected, basicConstraints, keyUsage, validity, serial,
 * subject, public key, signature algorithm). Throws PkiFailure('malformed-cert').
 * Checks no signature and no date.
 */
export function parseCertificate(derIn: Uint8Array, label: string): Certificate {
  if (!(derIn instanceof Uint8Array)) throw malformed(label, 'not bytes');
  const der = new Uint8Array(derIn); // SECURITY: private copy
  const parts = splitCertificate(der);
  if (!parts) throw malformed(label, 'not a DER X.509 certificate');
  // SECURITY: @peculiar/x509 decodes lazily and throws untyped errors on hostile bytes;
  // every access happens inside this try and the library object is not kept.
  try {
    const cert = new x509.X509Certificate(der);
    const publicKey = createPublicKey({ key: Buffer.from(parts.subjectPublicKeyInfo), format: 'der', type: 'spki' });
    const extensions = new Map<string, { critical: boolean; value: Uint8Array }>();
    for (const ext of cert.extensions) {
      if (extensions.has(ext.type)) throw malformed(label, `duplicate extension ${ext.type}`);
      extensions.set(ext.type, { critical: ext.critical, value: new Uint8Array(ext.value) });
    }
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    const notBefore = new Date(cert.notBefore.getTime());
    const notAfter = new Date(cert.notAfter.getTime());
    // SECURITY: an invalid Date compares false both ways and would pass a validity check.
    if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw malformed(label, 'invalid validity dates');
    if (bc && bc.pathLength !== undefined && !(Number.isSafeInteger(bc.pathLength) && bc.pathLength >= 0)) {
      throw malformed(label, 'pathLenConstraint is not a small non-negative integer');
    }
    const serialHex = normalizeSerialHex(cert.serialNumber);
    if (serialHex === undefined) throw malformed(label, 'serialNumber is not an INTEGER');
    return Object.freeze({
      label,
      der,
      parts,
      publicKey,
      spkiSha256: toHex(sha256(parts.subjectPublicKeyInfo)),
      derSha256: toHex(sha256(der)),
      subject: cert.subject,
      serialHex,
      notBefore,
      notAfter,
      signatureAlgorithm: signatureAlgorithmOf(parts.signatureAlgorithm),
      basicConstraints: bc
        ? Object.freeze({ ca: bc.ca === true, ...(bc.pathLength !== undefined ? { pathLength: bc.pathLength } : {}) })
        : undefined,
      keyUsage: ku ? ku.usages : undefined,
      extensions,
    });
  } catch (e) {
    if (e instanceof PkiFailure) throw e;
    throw malformed(label, 'unparseable certificate, extension or public key', e);
  }
}

/** Upper bound on a PEM certificate chain's text; Intel's are under 4 KiB. */
export const MAX_PEM_CHAIN_CHARS = 64 * 1024;
/** At most this many certificates in one PEM chain. */
export const MAX_PEM_CERTS = 8;

const PEM_CERT_RE = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*?)-----END CERTIFICATE-----/g;

/**
 * Splits a PEM chain ("CERTIFICATE" blocks only) into DER certificates, in order.
 * Tolerates surrounding whitespace and trailing NUL bytes (DCAP quotes NUL-terminate the
 * PCK chain). Rejects any other text between or around blocks, bad base64, an empty
 * chain and chains over MAX_PEM_CERTS / MAX_PEM_CHAIN_CHARS. Throws
 * PkiFailure('malformed-cert').
 */
export function pemCertificates(input: string | Uint8Array, label: string): Uint8Array[] {
  let text = typeof input === 'string' ? input : Buffer.from(input).toString('latin1');
  if (text.length > MAX_PEM_CHAIN_CHARS) throw malformed(label, 'PEM chain too large');
  text = text.replace(/\0+$/, '');
  const out: Uint8Array[] = [];
  let last = 0;
  for (const m of text.matchAll(PEM_CERT_RE)) {
    if (text.slice(last, m.index).trim() !== '') throw malformed(label, 'unexpected text in PEM chain');
    const b64 = m[1]!.replace(/\s+/g, '');
    if (!/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/.test(b64) || b64.length === 0) {
      throw malformed(label, 'bad base64 in PEM block');
    }
    out.push(new Uint8Array(Buffer.from(b64, 'base64')));
    if (out.length > MAX_PEM_CERTS) throw malformed(label, `more than ${MAX_PEM_CERTS} certificates`);
    last = m.index + m[0].length;
  }
  if (text.slice(last).trim() !== '') throw malformed(label, 'unexpected text in PEM chain');
  if (out.length === 0) throw malformed(label, 'no certificate in PEM chain');
  return out;
}
