import { children, readTlv, type Tlv } from '../der.js';

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

// RSASSA-PSS-params for SHA-384, MGF1-SHA-384, salt 48, trailer 1, exactly as AMD writes
// them (RFC 4055 §3.1): the only RSA-PSS parameter set accepted.
const PSS_SHA384_PARAMS = Buffer.from(
  '3039a00f300d06096086480165030402020500a11c301a06092a864886f70d010108300d06096086480165030402020500a203020130a303020101',
  'hex',
);

/**
 * Recognises a DER AlgorithmIdentifier (RFC 5280 §4.1.1.2). ECDSA identifiers must have
 * absent parameters (RFC 5758 §3.2); RSA-PSS must carry exactly the SHA-384/salt-48
 * parameters. Anything else is undefined (the caller rejects it).
 */
export function signatureAlgorithmOf(algDer: Uint8Array): SignatureAlgorithm | undefined {
  const outer = readTlv(algDer, 0);
  if (!outer || outer.tag !== 0x30 || outer.end !== algDer.length) return undefined;
  const kids = children(algDer, outer);
  if (!kids || kids.length === 0 || kids.length > 2) return undefined;
  const oid = oidAt(algDer, kids[0]!);
  const params = kids[1];
  if (oid === OID_ECDSA_SHA256 && !params) return 'ecdsa-sha256';
  if (oid === OID_ECDSA_SHA384 && !params) return 'ecdsa-sha384';
  if (oid === OID_RSASSA_PSS && params && Buffer.compare(algDer.subarray(params.start, params.end), PSS_SHA384_PARAMS) === 0) {
    return 'rsa-pss-sha384';
  }
  return undefined;
}
