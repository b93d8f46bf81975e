import { createSecretKey, generateKeyPairSync } from 'node:crypto';
import fc from 'fast-check';
import { CompactSign, SignJWT, UnsecuredJWT, compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, jwtVerify } from 'jose';
import { beforeEach, describe, expect, it } from 'vitest';
import { isKmsError } from './codes.js';
import { appraisalPolicyId, appraiseCpu, EAR_PROFILE } from './ear.js';
import { ATTESTATION_TOKEN_TYPE, RELEASE_JWS_TYPE, ReleaseSignedPayloadSchema, TOKEN_AUDIENCE } from './protocol.js';
import { AUDIT_HEAD_JWS_TYPE, TokenService, type ReleaseSignedBody, type TokenBody } from './tokens.js';
import { T0, makeClaims } from './testdata/harness.js';

const OPTS = { issuer: 'cir-kms-broker', ttlSeconds: 300 };
const claims = makeClaims();
const POLICY_HASH = '0'.repeat(64);
const BODY: TokenBody = {
  nonce: Buffer.alloc(32, 1).toString('base64url'),
  keyHash: Buffer.alloc(32, 2).toString('base64url'),
  tee: 'sev-snp',
  claims: claims as unknown as Record<string, unknown>,
  relaxations: ['any-measurement'],
  policyId: 'attestation/sev-snp',
  policyHash: POLICY_HASH,
  submods: {
    cpu: appraiseCpu({ claims, relaxations: ['any-measurement'], allowed: true, policyId: appraisalPolicyId('attestation/sev-snp', POLICY_HASH) }),
  },
};
const later = (s: number) => new Date(T0.getTime() + s * 1000);
const iat0 = Math.floor(T0.getTime() / 1000);

/** The wire payload `issue` would sign for BODY, for forging tests. */
function wirePayload(): Record<string, unknown> {
  return {
    eat_profile: EAR_PROFILE,
    'ear.verifier-id': { build: 'cir 0.0.0', developer: 'cir' },
    eat_nonce: BODY.nonce,
    submods: BODY.submods,
    'cir.tee': 'sev-snp',
    'cir.tenant': 'default',
    'cir.key-hash': BODY.keyHash,
    'cir.policy-id': BODY.policyId,
    'cir.policy-hash': BODY.policyHash,
    'cir.relaxations': BODY.relaxations,
    'cir.claims': BODY.claims,
  };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return isKmsError(e) ? e.code : `untyped: ${(e as Error).name}`;
  }
}

describe('TokenService: EAR attestation-result tokens', () => {
  let svc: TokenService;
  beforeEach(async () => {
    svc = await TokenService.generate(OPTS);
  });

  it('carries the EAR JWT claims and cir private claims, and round-trips', async () => {
    const t = await svc.issue({ ...BODY, tenant: 'acme' }, T0);
    expect(t.kid).toBe(svc.kid);
    expect(t.expiresAt.getTime() - T0.getTime()).toBe(300_000);
    const p = decodeJwt(t.token);
    expect(p).toMatchObject({
      iss: 'cir-kms-broker',
      aud: TOKEN_AUDIENCE,
      iat: iat0,
      exp: iat0 + 300,
      jti: t.jti,
      eat_profile: 'tag:ietf.org,2025-07:ear',
      eat_nonce: BODY.nonce,
      'cir.tee': 'sev-snp',
      'cir.tenant': 'acme',
      'cir.key-hash': BODY.keyHash,
      'cir.policy-id': 'attestation/sev-snp',
      'cir.policy-hash': POLICY_HASH,
      'cir.relaxations': ['any-measurement'],
    });
    expect((p['ear.verifier-id'] as { build: string }).build).toMatch(/^cir \d+\.\d+\.\d+/);
    expect(p.submods).toEqual({ cpu: BODY.submods.cpu });
    expect((p.submods as { cpu: Record<string, unknown> }).cpu['ear.status']).toBe('affirming');

    const v = await svc.verify(t.token, later(299));
    expect(v).toMatchObject({ kid: svc.kid, jti: t.jti, tee: 'sev-snp', tenant: 'acme', keyHash: BODY.keyHash, nonce: BODY.nonce, policyId: 'attestation/sev-snp' });
    expect(v.claims).toEqual(BODY.claims);
    expect(v['cir.claims']).toEqual(BODY.claims);
    await expect(svc.verify(t.token, later(300))).rejects.toMatchObject({ code: 'ERR_KMS_TOKEN_INVALID', detail: 'ERR_JWT_EXPIRED' });
  });

  it("defaults the tenant to 'default' and accepts GPU submodules next to cpu", async () => {
    const t = await svc.issue({ ...BODY, submods: { cpu: BODY.submods.cpu, 'gpu-0': BODY.submods.cpu } }, T0);
    const v = await svc.verify(t.token, T0);
    expect(v.tenant).toBe('default');
    expect(Object.keys(v.submods)).toEqual(['cpu', 'gpu-0']);
  });

  it('refuses to issue a payload that breaks the schema (a bug)', async () => {
    await expect(svc.issue({ ...BODY, policyHash: 'nothex' }, T0)).rejects.toMatchObject({ code: 'ERR_KMS_INTERNAL' });
    await expect(svc.issue({ ...BODY, submods: { cpu: BODY.submods.cpu, evil: BODY.submods.cpu } as never }, T0)).rejects.toMatchObject({ code: 'ERR_KMS_INTERNAL' });
    await expect(svc.issue({ ...BODY, tee: 'tdx' }, T0)).rejects.toMatchObject({ code: 'ERR_KMS_INTERNAL' });
  });

  it('refuses a token issued in the future', async () => {
    const t = await svc.issue(BODY, later(60));
    expect(await codeOf(svc.verify(t.token, T0))).toBe('ERR_KMS_TOKEN_INVALID');
  });

  it('refuses a token re-signed by a key not in the ring, even with our kid', async () => {
    const other = await TokenService.generate(OPTS);
    expect(await codeOf(svc.verify((await other.issue(BODY, T0)).token, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    const t = await svc.issue(BODY, T0);
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const resigned = await new SignJWT(decodeJwt(t.token)).setProtectedHeader({ alg: 'ES256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE }).sign(privateKey);
    expect(await codeOf(svc.verify(resigned, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    // The same payload signed by us verifies: the test fails only on the key.
    const ours = await new SignJWT(decodeJwt(t.token)).setProtectedHeader({ alg: 'ES256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE }).sign(await exportActive(svc));
    expect(await codeOf(svc.verify(ours, T0))).toBe('OK');
  });

  it('refuses alg=none and HS256 (alg allow-list)', async () => {
    const none = new UnsecuredJWT(wirePayload()).setIssuer(OPTS.issuer).setAudience(TOKEN_AUDIENCE).setIssuedAt(iat0).setExpirationTime(iat0 + 60).setJti('x').encode();
    expect(await codeOf(svc.verify(none, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    const jwk = svc.jwks().keys[0]!;
    const hs = await new SignJWT(wirePayload())
      .setProtectedHeader({ alg: 'HS256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE })
      .setIssuer(OPTS.issuer)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(iat0)
      .setExpirationTime(iat0 + 60)
      .setJti('x')
      .sign(createSecretKey(Buffer.from(JSON.stringify(jwk))));
    expect(await codeOf(svc.verify(hs, T0))).toBe('ERR_KMS_TOKEN_INVALID');
  });

  it('refuses another issuer, and a tampered payload, and oversized input', async () => {
    const wrongIss = await TokenService.generate({ ...OPTS, issuer: 'someone-else' });
    expect(await codeOf(svc.verify((await wrongIss.issue(BODY, T0)).token, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    const t = await svc.issue(BODY, T0);
    const [h, p, s] = t.token.split('.') as [string, string, string];
    const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
    payload['cir.key-hash'] = Buffer.alloc(32, 3).toString('base64url');
    expect(await codeOf(svc.verify(`${h}.${Buffer.from(JSON.stringify(payload)).toString('base64url')}.${s}`, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    expect(await codeOf(svc.verify('a'.repeat(20_000), T0))).toBe('ERR_KMS_TOKEN_INVALID');
    expect(await codeOf(svc.verify('', T0))).toBe('ERR_KMS_TOKEN_INVALID');
  });

  it('refuses a correctly signed token whose payload is not an EAR of ours (schema)', async () => {
    const key = await exportActive(svc);
    const sign = (p: Record<string, unknown>) =>
      new SignJWT(p).setProtectedHeader({ alg: 'ES256', kid: svc.kid, typ: ATTESTATION_TOKEN_TYPE }).setIssuer(OPTS.issuer).setAudience(TOKEN_AUDIENCE).setIssuedAt(iat0).setExpirationTime(iat0 + 60).setJti('j').sign(key);
    expect(await codeOf(svc.verify(await sign(wirePayload()), T0))).toBe('OK');
    for (const bad of [{ eat_profile: 'tag:github.com,2023:veraison/ear' }, { submods: {} }, { 'cir.tee': 'tdx' }, { eat_nonce: 'short' }]) {
      expect(await codeOf(svc.verify(await sign({ ...wirePayload(), ...bad }), T0))).toBe('ERR_KMS_TOKEN_INVALID');
    }
  });

  it('publishes only public members in the JWKS', () => {
    const [k] = svc.jwks().keys;
    expect(Object.keys(k!).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
  });

  it('property: arbitrary strings and JWS-shaped input only ever give ERR_KMS_TOKEN_INVALID', async () => {
    const seg = fc.oneof(fc.base64String().map((s) => s.replace(/=+$/, '').replace(/\+/g, '-').replace(/\//g, '_')), fc.string());
    const header = fc
      .record({ alg: fc.constantFrom('ES256', 'none', 'HS256', 'RS256', ''), kid: fc.oneof(fc.constant(svc.kid), fc.string()), typ: fc.oneof(fc.constant(ATTESTATION_TOKEN_TYPE), fc.string()) }, { requiredKeys: [] })
      .map((h) => Buffer.from(JSON.stringify(h)).toString('base64url'));
    const payload = fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v)).toString('base64url'));
    const input = fc.oneof(fc.string({ maxLength: 200 }), fc.tuple(seg, seg, seg).map((p) => p.join('.')), fc.tuple(header, payload, seg).map((p) => p.join('.')));
    await fc.assert(
      fc.asyncProperty(input, async (s) => {
        expect(await codeOf(svc.verify(s, T0))).toBe('ERR_KMS_TOKEN_INVALID');
      }),
      { numRuns: 300 },
    );
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
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', kid: svc.kid, typ: RELEASE_JWS_TYPE });
    const { payload } = await compactVerify(jws, createLocalJWKSet(svc.jwks()), { algorithms: ['ES256'] });
    const body = JSON.parse(Buffer.from(payload).toString('utf8'));
    expect(body).toEqual({ ...RELEASE, iss: 'cir-kms-broker', iat: iat0 });
    expect(ReleaseSignedPayloadSchema.parse(body)).toEqual(body);
  });

  it('does not verify against another broker key', async () => {
    const other = await TokenService.generate(OPTS);
    await expect(compactVerify(await svc.signRelease(RELEASE, T0), createLocalJWKSet(other.jwks()))).rejects.toThrow();
  });

  it('cannot pass for an attestation token, and a token cannot pass for a release (typ)', async () => {
    const jws = await svc.signRelease(RELEASE, T0);
    expect(await codeOf(svc.verify(jws, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    await expect(jwtVerify(jws, createLocalJWKSet(svc.jwks()), { typ: ATTESTATION_TOKEN_TYPE })).rejects.toThrow();
    expect(decodeProtectedHeader((await svc.issue(BODY, T0)).token).typ).not.toBe(RELEASE_JWS_TYPE);
  });

  it('refuses a payload that does not match its schema (extra field or bad digest)', async () => {
    expect(await codeOf(svc.signRelease({ ...RELEASE, ciphertextSha256: 'short' }, T0))).toBe('ERR_KMS_INTERNAL');
    expect(await codeOf(svc.signRelease({ ...RELEASE, dek: 'x' } as ReleaseSignedBody, T0))).toBe('ERR_KMS_INTERNAL');
  });
});

describe('TokenService.signJws / verifyJws (generic documents, e.g. leases)', () => {
  const TYP = 'cir-key-lease+jws';
  let svc: TokenService;
  beforeEach(async () => {
    svc = await TokenService.generate(OPTS);
  });

  it('signs with the active key and the given typ, adds iss and iat, and verifies', async () => {
    const jws = await svc.signJws(TYP, { lid: 'x', exp: iat0 + 60 }, T0);
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', kid: svc.kid, typ: TYP });
    const r = await svc.verifyJws(TYP, jws);
    expect(r).toEqual({ payload: { iss: 'cir-kms-broker', iat: iat0, lid: 'x', exp: iat0 + 60 }, kid: svc.kid });
    // A caller's own iss (the issuer) and iat are kept.
    const own = await svc.verifyJws(TYP, await svc.signJws(TYP, { iss: 'cir-kms-broker', iat: 5 }, T0));
    expect(own.payload).toEqual({ iss: 'cir-kms-broker', iat: 5 });
  });

  it('refuses reserved and malformed typs in both directions', async () => {
    for (const typ of [ATTESTATION_TOKEN_TYPE, RELEASE_JWS_TYPE, AUDIT_HEAD_JWS_TYPE, RELEASE_JWS_TYPE.toUpperCase(), '', 'a b', 'x'.repeat(65)]) {
      expect(await codeOf(svc.signJws(typ, {}, T0))).toBe('ERR_KMS_INTERNAL');
      expect(await codeOf(svc.verifyJws(typ, 'a.b.c'))).toBe('ERR_KMS_JWS_INVALID');
    }
    // A release signature cannot be read back through the generic path.
    const rel = await svc.signRelease(
      { keyId: 'k', version: 1, suite: 's', enc: Buffer.alloc(32).toString('base64url'), ciphertextSha256: Buffer.alloc(32).toString('base64url'), keyHash: Buffer.alloc(32).toString('base64url') },
      T0,
    );
    expect(await codeOf(svc.verifyJws(TYP, rel))).toBe('ERR_KMS_JWS_INVALID');
  });

  it('refuses a bad payload on signing (a bug) and another typ, another key, a non-object payload on verifying', async () => {
    expect(await codeOf(svc.signJws(TYP, { iss: 'mallory' }, T0))).toBe('ERR_KMS_INTERNAL');
    expect(await codeOf(svc.signJws(TYP, { iat: 'soon' }, T0))).toBe('ERR_KMS_INTERNAL');
    expect(await codeOf(svc.signJws(TYP, [] as unknown as Record<string, unknown>, T0))).toBe('ERR_KMS_INTERNAL');
    expect(await codeOf(svc.signJws(TYP, { big: 'x'.repeat(20_000) }, T0))).toBe('ERR_KMS_INTERNAL');
    const jws = await svc.signJws(TYP, { a: 1 }, T0);
    expect(await codeOf(svc.verifyJws('cir-other+jws', jws))).toBe('ERR_KMS_JWS_INVALID');
    const other = await TokenService.generate(OPTS);
    expect(await codeOf(other.verifyJws(TYP, jws))).toBe('ERR_KMS_JWS_INVALID');
    const arr = await new CompactSign(Buffer.from('[1]')).setProtectedHeader({ alg: 'ES256', kid: svc.kid, typ: TYP }).sign(await exportActive(svc));
    expect(await codeOf(svc.verifyJws(TYP, arr))).toBe('ERR_KMS_JWS_INVALID');
  });

  it('property: arbitrary input to verifyJws only ever gives ERR_KMS_JWS_INVALID', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ maxLength: 300 }), fc.array(fc.base64String(), { minLength: 3, maxLength: 3 }).map((a) => a.join('.'))), async (s) => {
        expect(await codeOf(svc.verifyJws(TYP, s))).toBe('ERR_KMS_JWS_INVALID');
      }),
      { numRuns: 200 },
    );
  });
});

describe('TokenService.checkpointSigner', () => {
  it('signs audit heads with the active key and typ cir-audit-head+jws, verifiable with the archive', async () => {
    const svc = await TokenService.generate(OPTS);
    const head = Buffer.from('{"seq":7,"hash":"ab"}');
    const jws = await svc.checkpointSigner().sign(head);
    expect(decodeProtectedHeader(jws)).toEqual({ alg: 'ES256', kid: svc.kid, typ: AUDIT_HEAD_JWS_TYPE });
    const r = await compactVerify(jws, createLocalJWKSet(svc.jwksArchive()), { algorithms: ['ES256'] });
    expect(Buffer.from(r.payload)).toEqual(head);
    // Not usable as a token or a generic document.
    expect(await codeOf(svc.verify(jws, T0))).toBe('ERR_KMS_TOKEN_INVALID');
  });
});

/** The active private key of an in-memory service, for tests that sign payloads by hand. */
async function exportActive(svc: TokenService) {
  const k = svc.ring.active.privateKey;
  if (!k) throw new Error('no private key');
  return k;
}
