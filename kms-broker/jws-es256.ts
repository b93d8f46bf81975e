import { sign as cryptoSign, type KeyObject } from 'node:crypto';

/**
 * Compact JWS (RFC 7515 section 7.1) SIGNING with ES256 (RFC 7518 section 3.4), on
 * node:crypto, synchronously.
 *
 * Why: jose 6 signs through WebCrypto, one asynchronous job on libuv's thread pool per
 * signature; the broker signs four times per key release (token, release, lease, audit
 * head), and those jobs cost several times the ECDSA itself. The cryptography is
 * node:crypto's ECDSA P-256 with SHA-256 in IEEE P1363 form (r ‖ s, 64 bytes); this file
 * only lays out the three base64url parts.
 *
 * Verification is NOT done here: every token, release, lease and audit head is verified
 * with jose (`jwtVerify`, `compactVerify`), and the tests check that jose accepts exactly
 * what this signs.
 */
export const ES256 = 'ES256';

function b64u(bytes: Uint8Array | string): string {
  return (typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('base64url');
}

/**
 * `BASE64URL({alg: "ES256", kid, typ}) . BASE64URL(payload) . BASE64URL(signature)`.
 * Throws TypeError unless `key` is an EC P-256 private key.
 */
export function signCompactEs256(header: { readonly kid: string; readonly typ: string }, payload: Uint8Array, key: KeyObject): string {
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new TypeError('ES256 needs an EC P-256 private key');
  }
  const input = `${b64u(JSON.stringify({ alg: ES256, kid: header.kid, typ: header.typ }))}.${b64u(payload)}`;
  const signature = cryptoSign('sha256', Buffer.from(input, 'ascii'), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}
