import { sign as cryptoSign, type KeyObject } from 'node:crypto';

/**
 * Compact JWS (RFC 7515 section 7.1) SIGNING with ES256 (RFC 7518 section 3.4), on
 * node:crypto, in its callback form: the ECDSA runs on libuv's thread pool.
 *
 * Why: jose 6 signs through WebCrypto, whose JavaScript per call (argument normalisation,
 * key wrapping) costs several times the ECDSA itself on the calling thread; the broker signs
 * four times per key release (token, release, lease, audit head). node:crypto's callback
 * form queues the same job for ~20 µs of event-loop time, against ~50 µs to sign inline. The cryptography is
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
export async function signCompactEs256(header: { readonly kid: string; readonly typ: string }, payload: Uint8Array, key: KeyObject): Promise<string> {
  if (key.type !== 'private' || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new TypeError('ES256 needs an EC P-256 private key');
  }
  const input = `${b64u(JSON.stringify({ alg: ES256, kid: header.kid, typ: header.typ }))}.${b64u(payload)}`;
  const signature = await new Promise<Buffer>((resolve, reject) =>
    cryptoSign('sha256', Buffer.from(input, 'ascii'), { key, dsaEncoding: 'ieee-p1363' }, (err, sig) => (err ? reject(err) : resolve(sig))),
  );
  return `${input}.${signature.toString('base64url')}`;
}
