import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyInstance } from 'fastify';
import { CompactSign, compactVerify, generateKeyPair } from 'jose';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { sha256 } from '../common/bytes.js';
import { isKmsError, KmsError } from './codes.js';
import { leaseRoutes, type LeaseRoutesOptions } from './lease-routes.js';
import { LeaseService, renewLease, type JwsSigner, type RenewDeps, type VerifiedAttestation } from './leases.js';
import type { BrokerClaims, PolicyDecision } from './policy.js';
import { problemErrorHandler } from './problem.js';
import { LEASE_JWS_TYPE, LeasePayloadSchema, LeaseRenewResponseSchema, ROUTES } from './protocol.js';
import { RevocationStore } from './revocations.js';

const M = 'ab'.repeat(48);
const T0 = new Date('2030-01-01T00:00:00Z');
const at = (s: number) => new Date(T0.getTime() + s * 1000);

/** An ES256 signer standing in for TokenService.signJws/verifyJws. */
async function testSigner(): Promise<JwsSigner> {
  const { privateKey, publicKey } = await generateKeyPair('ES256');
  return {
    async signJws(typ, payload) {
      return new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256', typ }).sign(privateKey);
    },
    async verifyJws(typ, jws) {
      const r = await compactVerify(jws, publicKey, { algorithms: ['ES256'] });
      if (r.protectedHeader.typ !== typ) throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'typ' });
      return { payload: JSON.parse(Buffer.from(r.payload).toString('utf8')) as Record<string, unknown> };
    },
  };
}

const claims = (measurement = M) => ({ tee: 'sev-snp', measurement, simulated: true }) as unknown as BrokerClaims;
const allow = Object.freeze({ allowed: true, failures: [], policyHash: 'p'.repeat(64), relaxations: [] }) as unknown as PolicyDecision;
const deny = Object.freeze({
  allowed: false,
  failures: [{ field: 'measurement', expected: 'x', observed: M }],
  policyHash: 'p'.repeat(64),
  relaxations: [],
}) as unknown as PolicyDecision;

async function setup(ttlSeconds = 10, renewFraction = 0.5) {
  const signer = await testSigner();
  const leases = new LeaseService(signer, { ttlSeconds, renewFraction, issuer: 'test-broker' });
  const publicKey = randomBytes(32);
  const keyHash = sha256(publicKey).toString('base64url');
  const nonce = randomBytes(32).toString('base64url');
  const lease = await leases.issue({ tenant: 'default', keyId: 'k1', version: 2, measurement: M.toUpperCase(), keyHash, nonce }, T0);
  const attestation = (o: Partial<VerifiedAttestation> = {}): VerifiedAttestation => ({
    claims: claims(),
    keyHash,
    nonce: randomBytes(32).toString('base64url'),
    tenant: 'default',
    ...o,
  });
  const revocations = RevocationStore.memory();
  const deps = (o: Partial<RenewDeps> = {}): RenewDeps => ({
    leases,
    revocations,
    checkKey: async () => ({ policy: {} }),
    evaluate: () => allow,
    ...o,
  });
  return { signer, leases, publicKey, keyHash, nonce, lease, attestation, revocations, deps };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isKmsError(e) ? e.code : `untyped: ${String(e)}`;
  }
  return 'resolved';
}

describe('LeaseService', () => {
  it('issues a signed lease whose payload restates the subject, TTL and renew point', async () => {
    const { leases, lease, keyHash, nonce } = await setup(10, 0.5);
    expect(lease.id).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const p = await leases.verify(lease.token, T0);
    expect(LeasePayloadSchema.parse(p)).toEqual({
      iss: 'test-broker',
      lid: lease.id,
      tenant: 'default',
      keyId: 'k1',
      version: 2,
      measurement: M,
      keyHash,
      nonce,
      iat: T0.getTime() / 1000,
      exp: T0.getTime() / 1000 + 10,
      renewAfter: T0.getTime() / 1000 + 5,
    });
    expect(lease.expiresAt).toBe(at(10).toISOString());
    expect(lease.renewAfter).toBe(at(5).toISOString());
    const header = JSON.parse(Buffer.from(lease.token.split('.')[0]!, 'base64url').toString()) as { typ: string };
    expect(header.typ).toBe(LEASE_JWS_TYPE);
  });

  it('renews no later than one second before expiry, whatever the fraction', async () => {
    const { leases } = await setup(2, 0.9);
    const l = await leases.issue({ tenant: 't', keyId: 'k', version: 1, measurement: M, keyHash: 'A'.repeat(43), nonce: 'A'.repeat(43) }, T0);
    expect(l.renewAfter).toBe(at(1).toISOString());
  });

  it('refuses an expired lease (ERR_KMS_LEASE_EXPIRED) at exp, accepts it just before', async () => {
    const { leases, lease } = await setup(10);
    expect(await codeOf(leases.verify(lease.token, at(9.999)))).toBe('resolved');
    expect(await codeOf(leases.verify(lease.token, at(10)))).toBe('ERR_KMS_LEASE_EXPIRED');
  });

  it('refuses a lease that is not ours, tampered, of another typ or issuer (ERR_KMS_LEASE_INVALID)', async () => {
    const { leases, lease, signer } = await setup();
    const other = await setup();
    expect(await codeOf(leases.verify(other.lease.token, T0))).toBe('ERR_KMS_LEASE_INVALID');
    const [h, p, s] = lease.token.split('.');
    const payload = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, exp: payload.exp as number + 1000 })).toString('base64url')}.${s}`;
    expect(await codeOf(leases.verify(forged, T0))).toBe('ERR_KMS_LEASE_INVALID');
    const wrongTyp = await signer.signJws('cir-key-release+jws', payload, T0);
    expect(await codeOf(leases.verify(wrongTyp, T0))).toBe('ERR_KMS_LEASE_INVALID');
    const wrongIss = await signer.signJws(LEASE_JWS_TYPE, { ...payload, iss: 'someone-else' }, T0);
    expect(await codeOf(leases.verify(wrongIss, T0))).toBe('ERR_KMS_LEASE_INVALID');
    const badShape = await signer.signJws(LEASE_JWS_TYPE, { ...payload, renewAfter: (payload.exp as number) + 1 }, T0);
    expect(await codeOf(leases.verify(badShape, T0))).toBe('ERR_KMS_LEASE_INVALID');
    expect(await codeOf(leases.verify('', T0))).toBe('ERR_KMS_LEASE_INVALID');
    expect(await codeOf(leases.verify('a'.repeat(5000), T0))).toBe('ERR_KMS_LEASE_INVALID');
  });

  it('arbitrary lease strings give a payload or a typed lease error, never a crash (property)', async () => {
    const { leases, lease } = await setup();
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ maxLength: 600 }), fc.constant(lease.token).chain((t) => fc.nat(t.length - 1).map((i) => t.slice(0, i) + (t[i] === 'A' ? 'B' : 'A') + t.slice(i + 1)))), async (s) => {
        const code = await codeOf(leases.verify(s, T0));
        expect(['resolved', 'ERR_KMS_LEASE_INVALID']).toContain(code);
      }),
      { numRuns: 150 },
    );
  });

  it('rejects nonsensical configuration', async () => {
    const signer = await testSigner();
    expect(() => new LeaseService(signer, { ttlSeconds: 1, renewFraction: 0.5, issuer: 'i' })).toThrow(KmsError);
    expect(() => new LeaseService(signer, { ttlSeconds: 10, renewFraction: 1, issuer: 'i' })).toThrow(KmsError);
  });
});

describe('renewLease', () => {
  it('renews: same lid, later expiry, the fresh nonce', async () => {
    const { lease, publicKey, attestation, deps, leases } = await setup(10);
    const att = attestation();
    const r = await renewLease({ leaseJws: lease.token, publicKey, attestation: att, now: at(6) }, deps());
    expect(r.lease.id).toBe(lease.id);
    const p = await leases.verify(r.lease.token, at(6));
    expect(p.exp).toBe(T0.getTime() / 1000 + 16);
    expect(p.nonce).toBe(att.nonce);
    expect(p.version).toBe(2);
  });

  it.each([
    ['an expired lease', { now: 10 }, 'ERR_KMS_LEASE_EXPIRED'],
    ['another public key', { publicKey: randomBytes(32) }, 'ERR_KMS_KEY_BINDING_MISMATCH'],
    ['a token bound to another key', { tokenKeyHash: sha256(randomBytes(32)).toString('base64url') }, 'ERR_KMS_KEY_BINDING_MISMATCH'],
    ['a token of another tenant', { tenant: 'other' }, 'ERR_KMS_LEASE_INVALID'],
    ['another measurement', { measurement: 'cd'.repeat(48) }, 'ERR_KMS_LEASE_INVALID'],
  ] as const)('refuses %s', async (_name, o, code) => {
    const { lease, publicKey, attestation, deps } = await setup(10);
    const opts = o as { now?: number; publicKey?: Buffer; tokenKeyHash?: string; tenant?: string; measurement?: string };
    const att = attestation({
      ...(opts.tokenKeyHash ? { keyHash: opts.tokenKeyHash } : {}),
      ...(opts.tenant ? { tenant: opts.tenant } : {}),
      ...(opts.measurement ? { claims: claims(opts.measurement) } : {}),
    });
    expect(await codeOf(renewLease({ leaseJws: lease.token, publicKey: opts.publicKey ?? publicKey, attestation: att, now: at(opts.now ?? 5) }, deps()))).toBe(code);
  });

  it('refuses when a revocation matches (key, version, tenant, measurement), and not after it is lifted', async () => {
    const s = await setup(10);
    const renew = () => codeOf(renewLease({ leaseJws: s.lease.token, publicKey: s.publicKey, attestation: s.attestation(), now: at(5) }, s.deps()));
    for (const req of [
      { scope: 'key', keyId: 'k1', reason: 'r' },
      { scope: 'key', keyId: 'k1', version: 2, reason: 'r' },
      { scope: 'tenant', reason: 'r' },
      { scope: 'measurement', measurement: M, reason: 'r' },
    ] as const) {
      const r = await s.revocations.add('default', req, 'op');
      expect(await renew(), req.scope).toBe('ERR_KMS_LEASE_REVOKED');
      await s.revocations.lift('default', r.id);
      expect(await renew()).toBe('resolved');
    }
    // Not matching: another version, another tenant.
    await s.revocations.add('default', { scope: 'key', keyId: 'k1', version: 1, reason: 'r' }, 'op');
    await s.revocations.add('other', { scope: 'tenant', reason: 'r' }, 'op');
    expect(await renew()).toBe('resolved');
  });

  it('refuses when the key is gone or disabled, and when the policy no longer allows the claims', async () => {
    const s = await setup(10);
    const renew = (d: Partial<RenewDeps>) =>
      codeOf(renewLease({ leaseJws: s.lease.token, publicKey: s.publicKey, attestation: s.attestation(), now: at(5) }, s.deps(d)));
    const seen: unknown[] = [];
    expect(
      await renew({
        checkKey: async (t, k, v) => {
          seen.push([t, k, v]);
          throw new KmsError('ERR_KMS_KEY_NOT_FOUND');
        },
      }),
    ).toBe('ERR_KMS_KEY_NOT_FOUND');
    expect(seen).toEqual([['default', 'k1', 2]]);
    expect(await renew({ checkKey: async () => Promise.reject(new KmsError('ERR_KMS_KEY_VERSION_NOT_FOUND')) })).toBe('ERR_KMS_KEY_VERSION_NOT_FOUND');
    let evaluated: unknown;
    const err = await renewLease(
      { leaseJws: s.lease.token, publicKey: s.publicKey, attestation: s.attestation(), now: at(5) },
      s.deps({
        evaluate: (c, t, k) => {
          evaluated = [c.tee, t, k];
          return deny;
        },
      }),
    ).catch((e: unknown) => e);
    expect(isKmsError(err) && err.code).toBe('ERR_KMS_POLICY_DENIED');
    expect((err as KmsError).details?.failures).toEqual(deny.failures);
    expect(evaluated).toEqual(['sev-snp', 'default', 'k1']);
  });
});

describe('lease routes', () => {
  let app: FastifyInstance | undefined;
  afterEach(async () => {
    await app?.close();
    app = undefined;
  });

  async function build(o: Partial<LeaseRoutesOptions> = {}) {
    const s = await setup(10);
    let now = at(5);
    const tokens = new Map<string, VerifiedAttestation>();
    const identities: Record<string, { id: string; tenant: string; roles: string[] }> = {
      'op-default': { id: 'op1', tenant: 'default', roles: ['operator'] },
      'aud-default': { id: 'aud1', tenant: 'default', roles: ['auditor'] },
      'op-other': { id: 'op2', tenant: 'other', roles: ['operator', 'auditor'] },
    };
    const f = Fastify({ logger: false });
    f.setErrorHandler(problemErrorHandler);
    f.register(leaseRoutes, {
      leases: s.leases,
      revocations: s.revocations,
      now: () => now,
      verifyToken: async (t) => {
        const v = tokens.get(t);
        if (!v) throw new KmsError('ERR_KMS_TOKEN_INVALID');
        return v;
      },
      checkKey: async () => ({ policy: {} }),
      evaluate: () => allow,
      authorize: (request, role) => {
        const id = identities[String(request.headers.authorization).replace(/^Bearer /, '')];
        if (!id) throw new KmsError('ERR_KMS_ADMIN_UNAUTHORIZED');
        if (!id.roles.includes(role)) throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'role' });
        return { id: id.id, tenant: id.tenant };
      },
      ...o,
    });
    await f.ready();
    app = f;
    const token = 'tok1';
    tokens.set(token, s.attestation());
    const renew = (body: unknown, auth = `Bearer ${token}`) =>
      f.inject({ method: 'POST', url: ROUTES.leaseRenew, headers: { authorization: auth, 'content-type': 'application/json' }, payload: JSON.stringify(body) });
    const admin = (method: 'GET' | 'POST' | 'DELETE', url: string, who: string, body?: unknown) =>
      f.inject({ method, url, headers: { authorization: `Bearer ${who}`, ...(body ? { 'content-type': 'application/json' } : {}) }, ...(body ? { payload: JSON.stringify(body) } : {}) });
    return { s, f, renew, admin, setNow: (d: Date) => (now = d) };
  }

  it('renews over HTTP, and answers ERR_KMS_LEASE_REVOKED 403 once an operator revokes the key; lift restores', async () => {
    const { s, renew, admin } = await build();
    const body = { lease: s.lease.token, publicKey: s.publicKey.toString('base64url') };
    const ok = await renew(body);
    expect(ok.statusCode).toBe(200);
    const parsed = LeaseRenewResponseSchema.parse(ok.json());
    expect(parsed.lease.id).toBe(s.lease.id);

    const created = await admin('POST', ROUTES.adminRevocations, 'op-default', { scope: 'key', keyId: 'k1', reason: 'key leaked' });
    expect(created.statusCode).toBe(201);
    const rev = created.json() as { id: string; tenant: string; createdBy: string };
    expect(rev).toMatchObject({ tenant: 'default', createdBy: 'op1' });

    const refused = await renew(body);
    expect(refused.statusCode).toBe(403);
    expect((refused.json() as { code: string }).code).toBe('ERR_KMS_LEASE_REVOKED');

    expect((await admin('DELETE', ROUTES.adminRevocation(rev.id), 'op-default')).statusCode).toBe(200);
    expect((await renew(body)).statusCode).toBe(200);
  });

  it('maps refusals to problem documents: missing token 401, expired lease 410, bad body 400', async () => {
    const { s, renew, setNow } = await build();
    const body = { lease: s.lease.token, publicKey: s.publicKey.toString('base64url') };
    expect((await renew(body, '')).statusCode).toBe(401);
    expect((await renew(body, 'Bearer nope')).statusCode).toBe(401);
    expect((await renew({ lease: s.lease.token })).statusCode).toBe(400);
    setNow(at(11));
    const expired = await renew(body);
    expect(expired.statusCode).toBe(410);
    expect((expired.json() as { code: string }).code).toBe('ERR_KMS_LEASE_EXPIRED');
  });

  it('admin routes: roles and tenant scoping', async () => {
    const { admin } = await build();
    expect((await admin('POST', ROUTES.adminRevocations, 'nobody', { scope: 'tenant', reason: 'r' })).statusCode).toBe(401);
    // An auditor may list but not create or lift.
    expect((await admin('POST', ROUTES.adminRevocations, 'aud-default', { scope: 'tenant', reason: 'r' })).statusCode).toBe(401);
    const mine = (await admin('POST', ROUTES.adminRevocations, 'op-default', { scope: 'measurement', measurement: M, reason: 'r' })).json() as { id: string };
    const theirs = (await admin('POST', ROUTES.adminRevocations, 'op-other', { scope: 'tenant', reason: 'r' })).json() as { id: string; tenant: string };
    expect(theirs.tenant).toBe('other');
    const listed = (await admin('GET', ROUTES.adminRevocations, 'aud-default')).json() as { revocations: { id: string }[] };
    expect(listed.revocations.map((r) => r.id)).toEqual([mine.id]);
    const other = (await admin('GET', ROUTES.adminRevocations, 'op-other')).json() as { revocations: { id: string }[] };
    expect(other.revocations.map((r) => r.id)).toEqual([theirs.id]);
    // Lifting another tenant's revocation is "not found", and it stays.
    const cross = await admin('DELETE', ROUTES.adminRevocation(theirs.id), 'op-default');
    expect(cross.statusCode).toBe(404);
    expect((cross.json() as { code: string }).code).toBe('ERR_KMS_REVOCATION_NOT_FOUND');
    expect((await admin('DELETE', ROUTES.adminRevocation('../../x'), 'op-default')).statusCode).toBe(404);
    expect(((await admin('GET', ROUTES.adminRevocations, 'op-other')).json() as { revocations: unknown[] }).revocations).toHaveLength(1);
    // Scope/field mismatches are 400.
    expect((await admin('POST', ROUTES.adminRevocations, 'op-default', { scope: 'key', reason: 'r' })).statusCode).toBe(400);
  });
});
