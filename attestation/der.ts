/**
 * Minimal strict DER reader/writer (internal). It only walks TLVs: it splits a
 * certificate into the exact bytes that were signed (RFC 5280 §4.1) and decodes the
 * primitive values AMD puts in VCEK/VLEK extensions (INTEGER, IA5String, OCTET STRING).
 * Anything it does not understand is rejected: indefinite or non-minimal lengths,
 * high-tag-number forms, lengths past the end of the input.
 *
 * Every function returns `undefined` on malformed input; callers turn that into their
 * own typed error. No function here throws on hostile bytes.
 */

export interface Tlv {
  readonly tag: number;
  /** Offset of the tag byte. */
  readonly start: number;
  /** Offset of the first content byte. */
  readonly contentStart: number;
  /** Offset one past the last content byte. */
  readonly end: number;
}

export const TAG_INTEGER = 0x02;
export const TAG_BIT_STRING = 0x03;
export const TAG_OCTET_STRING = 0x04;
export const TAG_IA5_STRING = 0x16;
export const TAG_SEQUENCE = 0x30;

/** Reads one TLV at `off`, bounded by `limit` (default: end of `b`). */
export function readTlv(b: Uint8Array, off: number, limit: number = b.length): Tlv | undefined {
  if (limit > b.length || off < 0 || off + 2 > limit) return undefined;
  const tag = b[off]!;
  if ((tag & 0x1f) === 0x1f) return undefined; // high-tag-number form: never used here
  const first = b[off + 1]!;
  let len: number;
  let contentStart: number;
  if (first < 0x80) {
    len = first;
    contentStart = off + 2;
  } else {
    const n = first & 0x7f;
    // 0x80 is the indefinite form (not DER); more than 4 length bytes is absurd here.
    if (n === 0 || n > 4 || off + 2 + n > limit) return undefined;
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[off + 2 + i]!;
    // DER: the long form only for lengths >= 128 and without leading zero bytes.
    if (len < 0x80 || b[off + 2] === 0) return undefined;
    contentStart = off + 2 + n;
  }
  const end = contentStart + len;
  if (end > limit) return undefined;
  return { tag, start: off, contentStart, end };
}

/** Reads the direct children of a constructed TLV. */
export function children(b: Uint8Array, parent: Tlv): Tlv[] | undefined {
  const out: Tlv[] = [];
  let off = parent.contentStart;
  while (off < parent.end) {
    const t = readTlv(b, off, parent.end);
    if (!t) return undefined;
    out.push(t);
    off = t.end;
  }
  return out;
}

export interface CertificateParts {
  /** The complete tbsCertificate TLV: exactly the bytes the issuer signed. */
  readonly tbs: Uint8Array;
  /** signatureAlgorithm TLV of the outer Certificate. */
  readonly signatureAlgorithm: Uint8Array;
  /** signature field of tbsCertificate; RFC 5280 requires it to equal the outer one. */
  readonly tbsSignatureAlgorithm: Uint8Array;
  /** signatureValue BIT STRING content without the unused-bits octet. */
  readonly signature: Uint8Array;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly subjectPublicKeyInfo: Uint8Array;
}

/**
 * Splits a DER X.509 Certificate (RFC 5280 §4.1). Returns copies. Requires the outer
 * SEQUENCE to span the whole input, and a v3 certificate layout.
 */
export function splitCertificate(der: Uint8Array): CertificateParts | undefined {
  const outer = readTlv(der, 0);
  if (!outer || outer.tag !== TAG_SEQUENCE || outer.end !== der.length) return undefined;
  const top = children(der, outer);
  if (!top || top.length !== 3) return undefined;
  const [tbs, sigAlg, sigVal] = top as [Tlv, Tlv, Tlv];
  if (tbs.tag !== TAG_SEQUENCE || sigAlg.tag !== TAG_SEQUENCE || sigVal.tag !== TAG_BIT_STRING) return undefined;
  if (sigVal.end - sigVal.contentStart < 2 || der[sigVal.contentStart] !== 0) return undefined; // 0 unused bits
  const fields = children(der, tbs);
  if (!fields) return undefined;
  let i = 0;
  if (fields[0]?.tag === 0xa0) i = 1; // [0] EXPLICIT version
  const serial = fields[i];
  const tbsSig = fields[i + 1];
  const issuer = fields[i + 2];
  const validity = fields[i + 3];
  const subject = fields[i + 4];
  const spki = fields[i + 5];
  if (!serial || !tbsSig || !issuer || !validity || !subject || !spki) return undefined;
  if (serial.tag !== TAG_INTEGER || tbsSig.tag !== TAG_SEQUENCE || issuer.tag !== TAG_SEQUENCE) return undefined;
  if (validity.tag !== TAG_SEQUENCE || subject.tag !== TAG_SEQUENCE || spki.tag !== TAG_SEQUENCE) return undefined;
  const cut = (t: Tlv): Uint8Array => der.slice(t.start, t.end);
  return {
    tbs: cut(tbs),
    signatureAlgorithm: cut(sigAlg),
    tbsSignatureAlgorithm: cut(tbsSig),
    signature: der.slice(sigVal.contentStart + 1, sigVal.end),
    issuer: cut(issuer),
    subject: cut(subject),
    subjectPublicKeyInfo: cut(spki),
  };
}

/** Decodes a DER value that must be exactly one TLV with the given tag; returns its content. */
export function decodeSingle(b: Uint8Array, tag: number): Uint8Array | undefined {
  const t = readTlv(b, 0);
  if (!t || t.tag !== tag || t.end !== b.length) return undefined;
  return b.slice(t.contentStart, t.end);
}

/** Decodes a DER INTEGER holding a non-negative value below 2^32 (minimal encoding). */
export function decodeSmallUint(b: Uint8Array): number | undefined {
  const c = decodeSingle(b, TAG_INTEGER);
  if (!c || c.length === 0 || c.length > 5) return undefined;
  if ((c[0]! & 0x80) !== 0) return undefined; // negative
  if (c.length > 1 && c[0] === 0 && (c[1]! & 0x80) === 0) return undefined; // non-minimal
  let v = 0;
  for (const x of c) v = v * 256 + x;
  return v <= 0xffffffff ? v : undefined;
}

/** Decodes a DER IA5String of printable ASCII. */
export function decodeIa5String(b: Uint8Array): string | undefined {
  const c = decodeSingle(b, TAG_IA5_STRING);
  if (!c) return undefined;
  for (const x of c) if (x < 0x20 || x > 0x7e) return undefined;
  return Buffer.from(c).toString('latin1');
}

function encodeLength(n: number): Uint8Array {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  return Uint8Array.of(0x80 | bytes.length, ...bytes);
}

export function encodeTlv(tag: number, content: Uint8Array): Uint8Array {
  return Buffer.concat([Uint8Array.of(tag), encodeLength(content.length), content]);
}

/** DER INTEGER for a non-negative safe integer. */
export function encodeUint(n: number): Uint8Array {
  if (!Number.isSafeInteger(n) || n < 0) throw new RangeError('encodeUint: non-negative safe integer required');
  const bytes: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v & 0xff);
  if (bytes.length === 0 || (bytes[0]! & 0x80) !== 0) bytes.unshift(0);
  return encodeTlv(TAG_INTEGER, Uint8Array.from(bytes));
}

export function encodeIa5String(s: string): Uint8Array {
  return encodeTlv(TAG_IA5_STRING, Buffer.from(s, 'latin1'));
}
