import { timingSafeEqual, createHash } from 'node:crypto';

/** Constant-time equality for secrets and digests. Different lengths compare unequal. */
export function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) {
    // SECURITY: still spend a comparison so the length mismatch path is not much faster.
    timingSafeEqual(Buffer.from(a), Buffer.from(a));
    return false;
  }
  return timingSafeEqual(a, b);
}

export function toHex(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');
}

const HEX_RE = /^(?:[0-9a-fA-F]{2})*$/;

/** Strict hex decode: rejects odd length and non-hex characters (Buffer.from silently truncates). */
export function fromHex(s: string): Buffer | undefined {
  if (!HEX_RE.test(s)) return undefined;
  return Buffer.from(s, 'hex');
}

const B64URL_RE = /^[A-Za-z0-9_-]*$/;
const B64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (standard alphabet, padded) decode. */
export function fromBase64(s: string): Buffer | undefined {
  if (!B64_RE.test(s)) return undefined;
  return Buffer.from(s, 'base64');
}

/** Strict base64url (unpadded) decode. */
export function fromBase64Url(s: string): Buffer | undefined {
  if (!B64URL_RE.test(s) || s.length % 4 === 1) return undefined;
  return Buffer.from(s, 'base64url');
}

export function sha256(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function sha384(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha384');
  for (const p of parts) h.update(p);
  return h.digest();
}

export function sha512(...parts: Uint8Array[]): Buffer {
  const h = createHash('sha512');
  for (const p of parts) h.update(p);
  return h.digest();
}
