import { children, readTlv, TAG_INTEGER, TAG_SEQUENCE, type Tlv } from '../der.js';

/**
 * Small DER helpers on top of attestation/der.ts that the X.509 helpers and the TEE
 * extension readers need: OBJECT IDENTIFIER decoding and AlgorithmIdentifier recognition.
 * Every function returns undefined on malformed input and never throws.
 */

export const TAG_OID = 0x06;
export const TAG_ENUMERATED = 0x0a;
export const TAG_NULL = 0x05;

/** Decodes the content bytes of an OBJECT IDENTIFIER (X.690 §8.19) to dotted form. */
export function decodeOidContent(c: Uint8Array): string | undefined {
  if (c.length === 0 || c.length > 64) return undefined;
  const arcs: number[] = [];
  let v = 0;
  let inArc = false;
  for (let i = 0; i < c.length; i++) {
    const b = c[i]!;
    if (!inArc && b === 0x80) return undefined; // non-minimal subidentifier
    v = v * 128 + (b & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) return undefined;
    if (b & 0x80) {
      inArc = true;
      continue;
    }
    arcs.push(v);
    v = 0;
    inArc = false;
  }
  if (inArc) return undefined; // truncated subidentifier
  const first = arcs[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

/** Decodes a TLV that must be an OID; returns the dotted form. */
export function oidAt(b: Uint8Array, t: Tlv): string | undefined {
  if (t.tag !== TAG_OID) return undefined;
  return decodeOidContent(b.subarray(t.contentStart, t.end));
}

/** Signature algorithms the helpers can verify. */
export type SignatureAlgorithm = 'ecdsa-sha256' | 'ecdsa-sha384' | 'rsa-pss-sha384';

const OID_ECDSA_SHA256 = '1.2.840.10045.4.3.2';
const OID_ECDSA_SHA384 = '1.2.840.10045.4.3.3';
const OID_RSASSA_PSS = '1.2.840.113549.1.1.10';
const OID_SHA384 = '2.16.840.1.101.3.4.2.2';
const OID_MGF1 = '1.2.840.113549.1.1.8';
const PSS_SALT_LENGTH = 48;

/**
 * An AlgorithmIdentifier naming `oid` with NULL or absent parameters: RFC 4055 §2.1 makes
 * both encodings legal for the SHA-2 identifiers (AMD writes NULL, @peculiar/x509 and
 * WebCrypto omit it).
 */
function isDigestAlgorithm(b: Uint8Array, t: Tlv | undefined, oid: string): boolean {
  if (!t || t.tag !== TAG_SEQUENCE) return false;
  const kids = children(b, t);
  if (!kids || kids.length === 0 || kids.length > 2) return false;
  const params = kids[1];
  return oidAt(b, kids[0]!) === oid && (!params || (params.tag === TAG_NULL && params.end === params.contentStart));
}

/** The single TLV inside an EXPLICIT context tag `[n]`; undefined for anything else. */
function explicit(b: Uint8Array, t: Tlv | undefined, n: number): Tlv | undefined {
  if (!t || t.tag !== (0xa0 | n)) return undefined;
  const kids = children(b, t);
  return kids && kids.length === 1 ? kids[0] : undefined;
}

/** An INTEGER TLV whose content is exactly the one byte `v` (v < 0x80). */
function isSmallInteger(b: Uint8Array, t: Tlv | undefined, v: number): boolean {
  return !!t && t.tag === TAG_INTEGER && t.end - t.contentStart === 1 && b[t.contentStart] === v;
}

/**
 * RSASSA-PSS-params (RFC 4055 §3.1) saying hashAlgorithm SHA-384, maskGenAlgorithm MGF1
 * with SHA-384, saltLength 48, trailerField 1: the parameter set AMD uses for every
 * certificate and CRL it signs, and the only one accepted. The three first fields must
 * be present (their DEFAULTs are SHA-1 and salt 20); trailerField may be written (AMD) or
 * omitted as DER wants (@peculiar/x509); digest parameters may be NULL or absent.
 */
function isPssSha384Salt48(b: Uint8Array, params: Tlv): boolean {
  if (params.tag !== TAG_SEQUENCE) return false;
  const f = children(b, params);
  if (!f || f.length < 3 || f.length > 4) return false;
  if (!isDigestAlgorithm(b, explicit(b, f[0], 0), OID_SHA384)) return false;
  const mgf = explicit(b, f[1], 1);
  const mgfKids = mgf && mgf.tag === TAG_SEQUENCE ? children(b, mgf) : undefined;
  if (!mgfKids || mgfKids.length !== 2 || oidAt(b, mgfKids[0]!) !== OID_MGF1 || !isDigestAlgorithm(b, mgfKids[1], OID_SHA384)) return false;
  if (!isSmallInteger(b, explicit(b, f[2], 2), PSS_SALT_LENGTH)) return false;
  return f.length === 3 || isSmallInteger(b, explicit(b, f[3], 3), 1);
}

/**
 * Recognises a DER AlgorithmIdentifier (RFC 5280 §4.1.1.2). ECDSA identifiers must have
 * absent parameters (RFC 5758 §3.2); RSA-PSS must carry the SHA-384/MGF1-SHA-384/salt-48
 * parameters (isPssSha384Salt48). Anything else is undefined (the caller rejects it).
 * Which algorithms are acceptable is each caller's allow-list, not decided here.
 */
export function signatureAlgorithmOf(algDer: Uint8Array): SignatureAlgorithm | undefined {
  const outer = readTlv(algDer, 0);
  if (!outer || outer.tag !== TAG_SEQUENCE || outer.end !== algDer.length) return undefined;
  const kids = children(algDer, outer);
  if (!kids || kids.length === 0 || kids.length > 2) return undefined;
  const oid = oidAt(algDer, kids[0]!);
  const params = kids[1];
  if (oid === OID_ECDSA_SHA256 && !params) return 'ecdsa-sha256';
  if (oid === OID_ECDSA_SHA384 && !params) return 'ecdsa-sha384';
  if (oid === OID_RSASSA_PSS && params && isPssSha384Salt48(algDer, params)) return 'rsa-pss-sha384';
  return undefined;
}
