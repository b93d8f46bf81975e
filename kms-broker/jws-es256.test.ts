import { generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { compactVerify, decodeProtectedHeader, jwtVerify } from 'jose';
import { describe, expect, it } from 'vitest';
import { signCompactEs256 } from './jws-es256.js';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });

describe('signCompactEs256 (verified by jose)', () => {
  it('produces a compact JWS that jose verifies, with the given kid and typ', async () => {
    const jws = await signCompactEs256({ kid: 'k1', typ: 'cir-test+jws' }, Buffer.from('{"a":1}'), privateKey);
    const { payload, protectedHeader } = await compactVerify(jws, publicKey, { algorithms: ['ES256'] });
    expect(Buffer.from(payload).toString()).toBe('{"a":1}');
    expect(protectedHeader).toEqual({ alg: 'ES256', kid: 'k1', typ: 'cir-test+jws' });
  });

  it('jose refuses it under another key, and after any change to any part', async () => {
    const jws = await signCompactEs256({ kid: 'k1', typ: 't' }, Buffer.from('{"a":1}'), privateKey);
    await expect(compactVerify(jws, other.publicKey, { algorithms: ['ES256'] })).rejects.toMatchObject({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' });
    const [h, p, s] = jws.split('.') as [string, string, string];
    const flip = (x: string) => (x[4] === 'A' ? `${x.slice(0, 4)}B${x.slice(5)}` : `${x.slice(0, 4)}A${x.slice(5)}`);
    for (const bad of [`${flip(h)}.${p}.${s}`, `${h}.${flip(p)}.${s}`, `${h}.${p}.${flip(s)}`]) {
      await expect(compactVerify(bad, publicKey, { algorithms: ['ES256'] })).rejects.toBeDefined();
    }
  });

  it('JWT payloads pass jose jwtVerify with its claim checks', async () => {
    const now = Math.floor(Date.now() / 1000);
    const claims = { iss: 'i', aud: 'a', iat: now, exp: now + 60, jti: 'j' };
    const jwt = await signCompactEs256({ kid: 'k', typ: 'cir-attestation-result+jwt' }, Buffer.from(JSON.stringify(claims)), privateKey);
    const r = await jwtVerify(jwt, publicKey, { algorithms: ['ES256'], issuer: 'i', audience: 'a', typ: 'cir-attestation-result+jwt' });
    expect(r.payload).toEqual(claims);
    await expect(jwtVerify(jwt, publicKey, { algorithms: ['ES256'], issuer: 'other' })).rejects.toMatchObject({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED' });
  });

  it('refuses keys that are not P-256 private keys', async () => {
    const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    const ed = generateKeyPairSync('ed25519').privateKey;
    for (const k of [publicKey, p384, ed]) await expect(signCompactEs256({ kid: 'k', typ: 't' }, Buffer.alloc(1), k)).rejects.toThrow(TypeError);
  });

  it('property: any payload and header strings round-trip through jose', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 256 }), fc.string({ maxLength: 40 }), fc.string({ maxLength: 40 }), async (payload, kid, typ) => {
        const jws = await signCompactEs256({ kid, typ }, payload, privateKey);
        const v = await compactVerify(jws, publicKey, { algorithms: ['ES256'] });
        expect(Buffer.from(v.payload).equals(Buffer.from(payload))).toBe(true);
        expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', kid, typ });
      }),
      { numRuns: 50 },
    );
  });
});
