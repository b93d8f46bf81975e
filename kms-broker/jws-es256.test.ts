import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { CompactSign, compactVerify, decodeProtectedHeader, jwtVerify, SignJWT, type JWTPayload } from 'jose';
import { describe, expect, it } from 'vitest';
import { signCompactEs256, verifyCompactEs256, verifyJwtEs256, type JwtChecks } from './jws-es256.js';

// jose is the reference: what this module signs, jose verifies; what jose signs, this module
// verifies; and on claims sets around every boundary, both decide alike with the same code.

const p256 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const otherP256 = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
const KID = 'k1';
const TYP = 'cir-ear+jwt';
const resolve = (key: KeyObject) => () => key;
const ours = resolve(p256.publicKey);

function codeOf(f: () => unknown): string {
  try {
    f();
    return 'OK';
  } catch (e) {
    return String((e as { code?: unknown }).code ?? (e as Error).name);
  }
}
async function codeOfAsync(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return String((e as { code?: unknown }).code ?? (e as Error).name);
  }
}
const seg = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

describe('signCompactEs256 / verifyCompactEs256 interoperate with jose', () => {
  const payload = Buffer.from(JSON.stringify({ a: 1, b: 'é', c: [true, null] }), 'utf8');

  it('what it signs, jose verifies; header and payload segments are byte-identical to jose CompactSign', async () => {
    const jws = signCompactEs256({ kid: KID, typ: TYP }, payload, p256.privateKey);
    const r = await compactVerify(jws, p256.publicKey, { algorithms: ['ES256'] });
    expect(Buffer.from(r.payload).equals(payload)).toBe(true);
    expect(r.protectedHeader).toEqual({ alg: 'ES256', kid: KID, typ: TYP });
    const viaJose = await new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: KID, typ: TYP }).sign(p256.privateKey);
    expect(jws.split('.').slice(0, 2)).toEqual(viaJose.split('.').slice(0, 2));
    await expect(compactVerify(jws, otherP256.publicKey)).rejects.toThrow();
  });

  it('what jose signs, it verifies, with the key the resolver picks from the header', async () => {
    const jws = await new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: KID, typ: TYP }).sign(p256.privateKey);
    const seen: unknown[] = [];
    const r = verifyCompactEs256(jws, (h) => (seen.push(h.kid), p256.publicKey));
    expect(seen).toEqual([KID]);
    expect(Buffer.from(r.payload).equals(payload)).toBe(true);
    expect(r.protectedHeader).toEqual(decodeProtectedHeader(jws));
    expect(codeOf(() => verifyCompactEs256(jws, resolve(otherP256.publicKey)))).toBe('ERR_JWS_SIGNATURE_VERIFICATION_FAILED');
  });

  it('refuses every other alg, crit, malformed segments, a wrong-length signature and a key of another type', async () => {
    const good = signCompactEs256({ kid: KID, typ: TYP }, payload, p256.privateKey);
    const [h, p, s] = good.split('.') as [string, string, string];
    const withHeader = (hdr: Record<string, unknown>) => `${seg(hdr)}.${p}.${s}`;
    const cases: [string, string][] = [
      [withHeader({ alg: 'none', kid: KID }), 'ERR_JOSE_ALG_NOT_ALLOWED'],
      [withHeader({ alg: 'HS256', kid: KID }), 'ERR_JOSE_ALG_NOT_ALLOWED'],
      [withHeader({ alg: 'ES384', kid: KID }), 'ERR_JOSE_ALG_NOT_ALLOWED'],
      [withHeader({ alg: 'es256', kid: KID }), 'ERR_JOSE_ALG_NOT_ALLOWED'],
      [withHeader({ kid: KID }), 'ERR_JWS_INVALID'],
      [withHeader({ alg: 'ES256', kid: KID, crit: ['b64'], b64: true }), 'ERR_JWS_INVALID'],
      [withHeader({ alg: 'ES256', kid: KID, crit: ['exp'] }), 'ERR_JWS_INVALID'],
      [`${seg([1])}.${p}.${s}`, 'ERR_JWS_INVALID'],
      [`${Buffer.from('not json').toString('base64url')}.${p}.${s}`, 'ERR_JWS_INVALID'],
      [`.${p}.${s}`, 'ERR_JWS_INVALID'],
      [`${h}.${p}`, 'ERR_JWS_INVALID'],
      [`${h}.${p}.${s}.x`, 'ERR_JWS_INVALID'],
      [`${h}=.${p}.${s}`, 'ERR_JWS_INVALID'],
      [`${h}.${p}.${s}=`, 'ERR_JWS_INVALID'],
      [`${h}.${p}+.${s}`, 'ERR_JWS_INVALID'],
      [`${h}.${p}.${Buffer.from(s, 'base64url').subarray(0, 63).toString('base64url')}`, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'],
      [`${h}.${p}.${Buffer.concat([Buffer.from(s, 'base64url'), Buffer.alloc(1)]).toString('base64url')}`, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'],
      [`${h}.${p}.${Buffer.alloc(64).toString('base64url')}`, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'],
      [`${h}.${seg({ a: 2 })}.${s}`, 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED'],
    ];
    for (const [jws, code] of cases) expect([jws, codeOf(() => verifyCompactEs256(jws, ours))]).toEqual([jws, code]);
    // A non-canonical spelling of the same signature bytes (stray low bits in the last character).
    const sigBytes = Buffer.from(s, 'base64url');
    expect(sigBytes.length).toBe(64); // 86 characters: the last one carries 2 spare bits
    const last = s[s.length - 1]!;
    const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
    const twin = alphabet[alphabet.indexOf(last) ^ 1]!;
    const nonCanonical = `${h}.${p}.${s.slice(0, -1)}${twin}`;
    expect(Buffer.from(nonCanonical.split('.')[2]!, 'base64url').equals(sigBytes)).toBe(true);
    expect(codeOf(() => verifyCompactEs256(nonCanonical, ours))).toBe('ERR_JWS_INVALID');
    expect(codeOf(() => verifyCompactEs256(good, resolve(p384.publicKey)))).toBe('ERR_JOSE_NOT_SUPPORTED');
    expect(codeOf(() => verifyCompactEs256(good, resolve(p256.privateKey)))).toBe('ERR_JOSE_NOT_SUPPORTED');
    expect(codeOf(() => signCompactEs256({ kid: KID, typ: TYP }, payload, p384.privateKey))).toBe('ERR_JOSE_NOT_SUPPORTED');
    expect(codeOf(() => signCompactEs256({ kid: KID, typ: TYP }, payload, p256.publicKey))).toBe('ERR_JOSE_NOT_SUPPORTED');
    expect(codeOf(() => verifyCompactEs256(good, ours))).toBe('OK');
    // Whatever the resolver throws comes out unchanged.
    const mine = new Error('unknown kid');
    expect(() => verifyCompactEs256(good, () => { throw mine; })).toThrow(mine);
  });

  it('property: never accepts what jose refuses, on mutations of a valid JWS and on arbitrary strings', async () => {
    const good = signCompactEs256({ kid: KID, typ: TYP }, payload, p256.privateKey);
    const mutated = fc.tuple(fc.nat({ max: good.length - 1 }), fc.string({ minLength: 0, maxLength: 3 })).map(([i, r]) => good.slice(0, i) + r + good.slice(i + 1));
    await fc.assert(
      fc.asyncProperty(fc.oneof(mutated, fc.string({ maxLength: 200 })), async (jws) => {
        const mineCode = codeOf(() => verifyCompactEs256(jws, ours));
        expect(mineCode).toMatch(/^(OK|ERR_J[A-Z_]+)$/);
        if (mineCode === 'OK') expect(await codeOfAsync(compactVerify(jws, p256.publicKey, { algorithms: ['ES256'] }))).toBe('OK');
      }),
      { numRuns: 400 },
    );
  });
});

describe('verifyJwtEs256 decides exactly as jose jwtVerify with the same options', () => {
  const NOW = new Date('2026-06-01T12:00:00Z');
  const now = Math.floor(NOW.getTime() / 1000);
  const TTL = 300;
  const checks: JwtChecks = { typ: TYP, issuer: 'cir-kms-broker', audience: 'cir-kms-broker/release', now: NOW, maxTokenAgeSeconds: TTL, requiredClaims: ['iss', 'aud', 'iat', 'exp', 'jti'] };
  const joseOptions = {
    algorithms: ['ES256'],
    issuer: checks.issuer,
    audience: checks.audience,
    typ: checks.typ,
    currentDate: NOW,
    maxTokenAge: TTL,
    requiredClaims: [...checks.requiredClaims],
  };
  const absent = Symbol('absent');
  // Mostly a valid value (so that about a third of the claims sets pass), else an edge or nothing.
  const field = <T,>(valid: fc.Arbitrary<T>, edges: fc.Arbitrary<unknown>, canBeAbsent = true) =>
    fc.oneof(
      { arbitrary: valid, weight: 12 },
      { arbitrary: edges, weight: 2 },
      { arbitrary: fc.constant(absent), weight: canBeAbsent ? 1 : 0 },
    );
  const claimsArb = fc.record({
    iss: field(fc.constant('cir-kms-broker'), fc.constantFrom<unknown>('someone-else', 1, ['cir-kms-broker'])),
    aud: field(fc.constantFrom<unknown>('cir-kms-broker/release', ['cir-kms-broker/release'], ['x', 'cir-kms-broker/release']), fc.constantFrom<unknown>('x', [], 5, null)),
    iat: field(fc.integer({ min: now - TTL, max: now }), fc.oneof(fc.integer({ min: now - TTL - 3, max: now + 3 }), fc.constantFrom<unknown>('soon', now - 0.5, null))),
    exp: field(fc.integer({ min: now + 1, max: now + TTL }), fc.oneof(fc.integer({ min: now - 3, max: now + 3 }), fc.constantFrom<unknown>('later'))),
    nbf: field(fc.constant(absent), fc.oneof(fc.integer({ min: now - 3, max: now + 3 }), fc.constantFrom<unknown>('x'))),
    jti: field(fc.constant('j'), fc.constantFrom<unknown>('', 7)),
  });
  const typArb = field<string>(fc.constant(TYP), fc.constantFrom(TYP.toUpperCase(), `application/${TYP}`, 'Application/CIR-EAR+JWT', 'jwt', `${TYP} `));

  it('property: same verdict and same error code on claims sets around every boundary', async () => {
    const verdicts = new Map<string, number>();
    await fc.assert(
      fc.asyncProperty(claimsArb, typArb, async (c, typ) => {
        const claims: JWTPayload = {};
        for (const [k, v] of Object.entries(c)) if (v !== absent) claims[k] = v;
        const header = { alg: 'ES256', kid: KID, ...(typeof typ === 'string' ? { typ } : {}) };
        const jwt = await new SignJWT(claims).setProtectedHeader(header).sign(p256.privateKey);
        const theirs = await codeOfAsync(jwtVerify(jwt, p256.publicKey, joseOptions));
        const mine = codeOf(() => verifyJwtEs256(jwt, ours, checks));
        expect(mine).toBe(theirs);
        verdicts.set(mine, (verdicts.get(mine) ?? 0) + 1);
        if (mine === 'OK') expect(verifyJwtEs256(jwt, ours, checks).payload).toEqual((await jwtVerify(jwt, p256.publicKey, joseOptions)).payload);
      }),
      { numRuns: 400 },
    );
    // Both verdicts were exercised, and every kind of refusal.
    expect(verdicts.get('OK') ?? 0).toBeGreaterThan(20);
    for (const code of ['ERR_JWT_CLAIM_VALIDATION_FAILED', 'ERR_JWT_EXPIRED']) expect(verdicts.get(code) ?? 0).toBeGreaterThan(5);
  });

  it('examples at the edges: exp equal to now is expired, iat exactly TTL old is accepted, one second more is not', async () => {
    const sign = (claims: JWTPayload) => new SignJWT(claims).setProtectedHeader({ alg: 'ES256', kid: KID, typ: TYP }).sign(p256.privateKey);
    const base = { iss: checks.issuer, aud: checks.audience, jti: 'j' };
    expect(codeOf(() => verifyJwtEs256('', ours, checks))).toBe('ERR_JWS_INVALID');
    const ok = await sign({ ...base, iat: now - TTL, exp: now + 1 });
    expect(codeOf(() => verifyJwtEs256(ok, ours, checks))).toBe('OK');
    {
      const t = await sign({ ...base, iat: now - TTL - 1, exp: now + 1 });
      expect(codeOf(() => verifyJwtEs256(t, ours, checks))).toBe('ERR_JWT_EXPIRED');
    }
    {
      const t = await sign({ ...base, iat: now, exp: now });
      expect(codeOf(() => verifyJwtEs256(t, ours, checks))).toBe('ERR_JWT_EXPIRED');
    }
    {
      const t = await sign({ ...base, iat: now + 1, exp: now + 5 });
      expect(codeOf(() => verifyJwtEs256(t, ours, checks))).toBe('ERR_JWT_CLAIM_VALIDATION_FAILED');
    }
    // A JWS whose payload is not a JSON object is not a JWT.
    const notJwt = signCompactEs256({ kid: KID, typ: TYP }, Buffer.from('[1,2]'), p256.privateKey);
    expect(codeOf(() => verifyJwtEs256(notJwt, ours, checks))).toBe('ERR_JWT_INVALID');
    expect(await codeOfAsync(jwtVerify(notJwt, p256.publicKey, joseOptions))).toBe('ERR_JWT_INVALID');
  });
});
