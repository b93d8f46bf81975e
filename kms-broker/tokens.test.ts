import { generateKeyPairSync, createSecretKey } from 'node:crypto';
import { mkdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { SignJWT, UnsecuredJWT, compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ATTESTATION_TOKEN_TYPE, RELEASE_JWS_TYPE, ReleaseSignedPayloadSchema, TOKEN_AUDIENCE } from './protocol.js';
import { TokenService, type ReleaseSignedBody, type TokenBody } from './tokens.js';
import { T0, makeClaims, tempDir } from './testdata/harness.js';

const OPTS = { issuer: 'cir-kms-broker', ttlSeconds: 300 };
const BODY: TokenBody = {
  nonce: Buffer.alloc(32, 1).toString('base64url'),
  keyHash: Buffer.alloc(32, 2).toString('base64url'),
  tee: 'sev-snp',
  claims: makeClaims() as unknown as Record<string, unknown>,
  relaxations: [],
  policyHash: '0'.repeat(64),
};
const later = (s: number) => new Date(T0.getTime() + s * 1000);

describe('TokenService', () => {
  let svc: TokenService;
  beforeEach(async () => {
    svc = await TokenService.generate(OPTS);
  });

  it('round-trips and expires after the TTL (<= 5 min)', async () => {
    const t = await svc.issue(BODY, T0);
    expect(t.expiresAt.getTime() - T0.getTime()).toBe(300_000);
    const p = await svc.verify(t.token, later(299));
    expect(p).toMatchObject({ ...BODY, aud: TOKEN_AUDIENCE, iss: 'cir-kms-broker', jti: t.jti });
    await expect(svc.verify(t.token, later(300))).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID', detail: 'ERR_JWT_EXPIRED' });
  });

  it('refuses a token issued in the future', async () => {
    const t = await svc.issue(BODY, later(60));
    await expect(svc.verify(t.token, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
  });

  it('refuses tokens signed by another key, even with our kid', async () => {
    const other = await TokenService.generate(OPTS);
    const t = await other.issue(BODY, T0);
    await expect(svc.verify(t.token, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const forged = await new SignJWT({ ...BODY })
      .setProtectedHeader({ alg: 'ES256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE })
      .setIssuer(OPTS.issuer)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(Math.floor(T0.getTime() / 1000))
      .setExpirationTime(Math.floor(T0.getTime() / 1000) + 60)
      .setJti('x')
      .sign(privateKey);
    await expect(svc.verify(forged, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
  });

  it('refuses alg=none and HS256 (alg allow-list)', async () => {
    const iat = Math.floor(T0.getTime() / 1000);
    const none = new UnsecuredJWT({ ...BODY }).setIssuer(OPTS.issuer).setAudience(TOKEN_AUDIENCE).setIssuedAt(iat).setExpirationTime(iat + 60).setJti('x').encode();
    await expect(svc.verify(none, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    const jwk = svc.jwks().keys[0]!;
    const hs = await new SignJWT({ ...BODY })
      .setProtectedHeader({ alg: 'HS256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE })
      .setIssuer(OPTS.issuer)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 60)
      .setJti('x')
      .sign(createSecretKey(Buffer.from(JSON.stringify(jwk))));
    await expect(svc.verify(hs, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
  });

  it('refuses another audience or issuer', async () => {
    const wrongIss = await TokenService.generate({ ...OPTS, issuer: 'someone-else' });
    const t = await wrongIss.issue(BODY, T0);
    await expect(svc.verify(t.token, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    expect(decodeJwt(t.token).aud).toBe(TOKEN_AUDIENCE);
  });

  it('refuses a tampered payload and oversized input', async () => {
    const t = await svc.issue(BODY, T0);
    const [h, p, s] = t.token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    payload.keyHash = Buffer.alloc(32, 3).toString('base64url');
    const tampered = `${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`;
    await expect(svc.verify(tampered, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    await expect(svc.verify('a'.repeat(20_000), T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    await expect(svc.verify('', T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
  });

  it('publishes only public members in the JWKS', () => {
    const [k] = svc.jwks().keys;
    expect(Object.keys(k!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
  });
});

describe('TokenService.signRelease', () => {
  const RELEASE: ReleaseSignedBody = {
    keyId: 'model-a',
    version: 3,
    suite: 'DHKEM(X25519)/HKDF-SHA256/AES-256-GCM',
    enc: Buffer.alloc(32, 4).toString('base64url'),
    ciphertextSha256: Buffer.alloc(32, 5).toString('base64url'),
    keyHash: Buffer.alloc(32, 6).toString('base64url'),
  };
  let svc: TokenService;
  beforeEach(async () => {
    svc = await TokenService.generate(OPTS);
  });

  it('is a compact ES256 JWS with kid and typ, verifiable against the JWKS, payload exactly the schema', async () => {
    const jws = await svc.signRelease(RELEASE, T0);
    expect(jws.split('.')).toHaveLength(3);
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', kid: svc.kid, typ: RELEASE_JWS_TYPE });
    const { payload, protectedHeader } = await compactVerify(jws, createLocalJWKSet(svc.jwks()), { algorithms: ['ES256'] });
    expect(protectedHeader.kid).toBe(svc.kid);
    const body = JSON.parse(Buffer.from(payload).toString('utf8'));
    expect(body).toEqual({ ...RELEASE, iss: 'cir-kms-broker', iat: Math.floor(T0.getTime() / 1000) });
    expect(ReleaseSignedPayloadSchema.parse(body)).toEqual(body);
  });

  it('does not verify against another broker key', async () => {
    const other = await TokenService.generate(OPTS);
    const jws = await svc.signRelease(RELEASE, T0);
    await expect(compactVerify(jws, createLocalJWKSet(other.jwks()))).rejects.toThrow();
  });

  it('cannot pass for an attestation token, and a token cannot pass for a release (typ)', async () => {
    const jws = await svc.signRelease(RELEASE, T0);
    await expect(svc.verify(jws, T0)).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID' });
    await expect(jwtVerify(jws, createLocalJWKSet(svc.jwks()), { typ: ATTESTATION_TOKEN_TYPE })).rejects.toThrow();
    const t = await svc.issue(BODY, T0);
    expect(decodeProtectedHeader(t.token).typ).not.toBe(RELEASE_JWS_TYPE);
  });

  it('refuses a payload that does not match its schema (extra field or bad digest)', async () => {
    await expect(svc.signRelease({ ...RELEASE, ciphertextSha256: 'short' }, T0)).rejects.toMatchObject({ code: 'ERR_KMS_INTERNAL' });
    await expect(svc.signRelease({ ...RELEASE, dek: 'x' } as ReleaseSignedBody, T0)).rejects.toMatchObject({ code: 'ERR_KMS_INTERNAL' });
  });
});

describe('TokenService.open', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('generates a 0600 PKCS#8 key on first start and reuses it (stable kid)', async () => {
    const f = path.join(dir, 'token-signing-key.pem');
    const a = await TokenService.open(f, OPTS);
    expect((await stat(f)).mode & 0o777).toBe(0o600);
    const b = await TokenService.open(f, OPTS);
    expect(b.kid).toBe(a.kid);
    const t = await a.issue(BODY, T0);
    await expect(b.verify(t.token, T0)).resolves.toMatchObject({ jti: t.jti });
  });

  it('refuses a non-P-256 key, garbage, or a world-readable file', async () => {
    const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    const f1 = path.join(dir, 'rsa.pem');
    await writeFile(f1, rsa, { mode: 0o600 });
    await expect(TokenService.open(f1, OPTS)).rejects.toMatchObject({ code: 'ERR_KMS_SIGNING_KEY_INVALID' });
    const f2 = path.join(dir, 'junk.pem');
    await writeFile(f2, 'junk', { mode: 0o600 });
    await expect(TokenService.open(f2, OPTS)).rejects.toMatchObject({ code: 'ERR_KMS_SIGNING_KEY_INVALID' });
    const f3 = path.join(dir, 'open.pem');
    await writeFile(f3, generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o644 });
    await expect(TokenService.open(f3, OPTS)).rejects.toMatchObject({ code: 'ERR_KMS_SIGNING_KEY_INVALID' });
    await mkdir(path.join(dir, 'd.pem'));
    await expect(TokenService.open(path.join(dir, 'd.pem'), OPTS)).rejects.toMatchObject({ code: 'ERR_KMS_SIGNING_KEY_INVALID' });
  });
});
