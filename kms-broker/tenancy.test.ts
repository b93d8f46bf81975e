/**
 * Tenants, admin identities, roles, separation of duties, the two-person rule, key
 * lifecycle at release time, dry-run policies, and object-level authorization on every
 * route: an identity or token of one tenant can neither see, change nor release another
 * tenant's keys, whatever ids it guesses.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Role } from './identities.js';
import { attest, makeHarness, MEASUREMENT_A, MEASUREMENT_B, release, type Harness } from './testdata/harness.js';

const policyA = { measurements: [MEASUREMENT_A] };
const policyB = { measurements: [MEASUREMENT_B] };

type Headers = Record<string, string>;

describe('tenancy and admin identities', () => {
  let h: Harness;
  let acmeAll: Headers;
  let globexAll: Headers;
  beforeEach(async () => {
    h = await makeHarness();
    acmeAll = (await h.identity('acme', ['key-admin', 'policy-admin', 'auditor', 'operator'], 'acme-root')).headers;
    globexAll = (await h.identity('globex', ['key-admin', 'policy-admin', 'auditor', 'operator'], 'globex-root')).headers;
  });
  afterEach(async () => h.close());

  const inject = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, headers: Headers, payload?: unknown) =>
    h.app.inject({ method, url, headers, ...(payload !== undefined ? { payload: payload as object } : {}) });

  async function createAcmeKey(keyId = 'model', policy: unknown = policyA) {
    const res = await inject('POST', '/v1/admin/keys', acmeAll, { keyId, policy });
    expect(res.statusCode).toBe(201);
    return res.json();
  }

  /** Every admin route on one key id, with a body that would succeed on an existing key. */
  const keyRoutes = (keyId: string): [string, 'GET' | 'POST' | 'PUT' | 'DELETE', string, unknown?][] => [
    ['show', 'GET', `/v1/admin/keys/${keyId}`],
    ['policies', 'GET', `/v1/admin/keys/${keyId}/policies`],
    ['set-policy', 'PUT', `/v1/admin/keys/${keyId}/policy`, { policy: policyB }],
    ['approve', 'POST', `/v1/admin/keys/${keyId}/policy/approve`, { version: 1 }],
    ['dry-run set', 'PUT', `/v1/admin/keys/${keyId}/policy/dry-run`, { policy: policyB }],
    ['dry-run clear', 'DELETE', `/v1/admin/keys/${keyId}/policy/dry-run`],
    ['rotate', 'POST', `/v1/admin/keys/${keyId}/rotate`, {}],
    ['disable', 'POST', `/v1/admin/keys/${keyId}/disable`, {}],
    ['enable', 'POST', `/v1/admin/keys/${keyId}/enable`, {}],
    ['destroy', 'POST', `/v1/admin/keys/${keyId}/destroy`, { confirm: keyId }],
  ];

  it('object-level authorization: another tenant gets 404 on every admin route, exactly as for a missing key', async () => {
    const before = await createAcmeKey();
    const missingRoutes = keyRoutes('no-such-key');
    for (const [i, [name, method, url, payload]] of keyRoutes('model').entries()) {
      const theirs = await inject(method, url, globexAll, payload);
      const [, , missingUrl, missingPayload] = missingRoutes[i]!;
      const missing = await inject(method, missingUrl, globexAll, missingPayload);
      expect([name, theirs.statusCode, theirs.json().code]).toEqual([name, 404, 'ERR_KMS_KEY_NOT_FOUND']);
      // Indistinguishable from a key that does not exist: same status, code and detail shape.
      expect([missing.statusCode, missing.json().code]).toEqual([404, 'ERR_KMS_KEY_NOT_FOUND']);
    }
    const list = await inject('GET', '/v1/admin/keys', globexAll);
    expect(list.json().keys).toEqual([]);
    // Nothing changed on acme's key.
    const after = (await inject('GET', '/v1/admin/keys/model', acmeAll)).json();
    expect(after).toEqual(before);
    // And globex may create its own key of the same id without touching acme's.
    expect((await inject('POST', '/v1/admin/keys', globexAll, { keyId: 'model', policy: policyB })).statusCode).toBe(201);
    expect((await inject('GET', '/v1/admin/keys/model', acmeAll)).json().policyHash).toBe(before.policyHash);
  });

  it('object-level authorization on release: a token of tenant B cannot release tenant A keys by any route', async () => {
    await createAcmeKey();
    const b = await attest(h.app, { tenant: 'globex' });
    expect(b.res.statusCode).toBe(200);
    const token = b.res.json().token as string;
    for (const [keyId, tenant] of [
      ['model', 'acme'],
      ['model', 'globex'],
      ['model', undefined],
    ] as const) {
      const res = await release(h.app, keyId, token, b.keyPair.publicKey, undefined, tenant);
      expect([tenant, res.statusCode, res.json().code]).toEqual([tenant, 404, 'ERR_KMS_KEY_NOT_FOUND']);
    }
    // The right tenant's token releases it.
    const a = await attest(h.app, { tenant: 'acme' });
    const ok = await release(h.app, 'model', a.res.json().token, a.keyPair.publicKey, undefined, 'acme');
    expect(ok.statusCode).toBe(200);
    expect(ok.json().lease).toBeDefined();
  });

  it('object-level authorization on renewal: a token of tenant B cannot renew a lease on tenant A keys', async () => {
    await createAcmeKey();
    const a = await attest(h.app, { tenant: 'acme' });
    const rel = await release(h.app, 'model', a.res.json().token, a.keyPair.publicKey, undefined, 'acme');
    const lease = rel.json().lease.token as string;
    // Same TEE key, fresh evidence, but attested for another tenant.
    const b = await attest(h.app, { tenant: 'globex', keyPair: a.keyPair });
    const renew = (token: string) =>
      h.app.inject({
        method: 'POST',
        url: '/v1/leases/renew',
        headers: { authorization: `Bearer ${token}` },
        payload: { lease, publicKey: Buffer.from(a.keyPair.publicKey).toString('base64url') },
      });
    const refused = await renew(b.res.json().token);
    expect(refused.statusCode).toBeGreaterThanOrEqual(400);
    expect(refused.statusCode).toBeLessThan(500);
    const again = await attest(h.app, { tenant: 'acme', keyPair: a.keyPair });
    expect((await renew(again.res.json().token)).statusCode).toBe(200);
  });

  it('object-level authorization on revocations: tenants see and lift only their own', async () => {
    await createAcmeKey();
    const created = await inject('POST', '/v1/admin/revocations', acmeAll, { scope: 'key', keyId: 'model', reason: 'incident' });
    expect(created.statusCode).toBe(201);
    const id = created.json().id as string;
    expect((await inject('GET', '/v1/admin/revocations', globexAll)).json().revocations).toEqual([]);
    const lift = await inject('DELETE', `/v1/admin/revocations/${id}`, globexAll);
    expect(lift.statusCode).toBe(404);
    expect((await inject('GET', '/v1/admin/revocations', acmeAll)).json().revocations).toHaveLength(1);
  });

  it('role matrix: each route needs its role; a refusal is 403 ERR_KMS_ADMIN_FORBIDDEN before any lookup', async () => {
    await createAcmeKey();
    const roleOf: Record<string, Role> = {
      show: 'auditor',
      policies: 'auditor',
      'set-policy': 'policy-admin',
      approve: 'policy-admin',
      'dry-run set': 'policy-admin',
      'dry-run clear': 'policy-admin',
      rotate: 'key-admin',
      disable: 'key-admin',
      enable: 'key-admin',
      destroy: 'key-admin',
    };
    const byRole: Record<Role, Headers> = {
      'key-admin': (await h.identity('acme', ['key-admin'])).headers,
      'policy-admin': (await h.identity('acme', ['policy-admin'])).headers,
      auditor: (await h.identity('acme', ['auditor'])).headers,
      operator: (await h.identity('acme', ['operator'])).headers,
    };
    const readers: Role[] = ['key-admin', 'policy-admin', 'auditor', 'operator'];
    for (const [name, method, url, payload] of keyRoutes('model').filter(([n]) => n !== 'destroy' && n !== 'approve')) {
      for (const role of readers) {
        const allowed = method === 'GET' ? true : roleOf[name] === role;
        const res = await inject(method, url, byRole[role], payload);
        if (allowed) expect([name, role, res.statusCode]).toEqual([name, role, 200]);
        else expect([name, role, res.statusCode, res.json().code]).toEqual([name, role, 403, 'ERR_KMS_ADMIN_FORBIDDEN']);
      }
    }
    // Forbidden before lookup: a missing key answers 403, not 404, to the wrong role.
    const probe = await inject('POST', '/v1/admin/keys/no-such-key/rotate', byRole.auditor, {});
    expect(probe.statusCode).toBe(403);
    const revoke = await inject('POST', '/v1/admin/revocations', byRole['key-admin'], { scope: 'tenant', reason: 'x' });
    expect(revoke.statusCode).toBe(403);
    expect((await inject('POST', '/v1/admin/revocations', byRole.operator, { scope: 'tenant', reason: 'x' })).statusCode).toBe(201);
    expect((await inject('GET', '/v1/admin/revocations', byRole.auditor)).statusCode).toBe(200);
  });

  it('separation of duties: a key-admin alone creates keys only without a policy; a policy-admin sets it', async () => {
    const keyAdmin = (await h.identity('acme', ['key-admin'], 'kim')).headers;
    const policyAdmin = (await h.identity('acme', ['policy-admin'], 'pat')).headers;
    const withPolicy = await inject('POST', '/v1/admin/keys', keyAdmin, { keyId: 'k', policy: policyA });
    expect([withPolicy.statusCode, withPolicy.json().code]).toEqual([403, 'ERR_KMS_ADMIN_FORBIDDEN']);
    const created = await inject('POST', '/v1/admin/keys', keyAdmin, { keyId: 'k' });
    expect(created.statusCode).toBe(201);
    expect(created.json()).toMatchObject({ policy: null, policyHash: null });
    expect((await inject('PUT', '/v1/admin/keys/k/policy', keyAdmin, { policy: policyA })).statusCode).toBe(403);
    const set = await inject('PUT', '/v1/admin/keys/k/policy', policyAdmin, { policy: policyA });
    expect(set.statusCode).toBe(200);
    expect(set.json().policyVersion).toBe(1);
    // An identity holding both roles may do both.
    expect((await inject('POST', '/v1/admin/keys', acmeAll, { keyId: 'k2', policy: policyA })).statusCode).toBe(201);
  });

  it('a key without an active policy is never released', async () => {
    const keyAdmin = (await h.identity('acme', ['key-admin'])).headers;
    await inject('POST', '/v1/admin/keys', keyAdmin, { keyId: 'bare' });
    const a = await attest(h.app, { tenant: 'acme' });
    const res = await release(h.app, 'bare', a.res.json().token, a.keyPair.publicKey, undefined, 'acme');
    expect([res.statusCode, res.json().code]).toEqual([403, 'ERR_KMS_NO_ACTIVE_POLICY']);
  });

  it('two-person rule: a change is pending until a different identity of a different subject approves', async () => {
    await h.store.setTenantSettings('acme', { twoPersonRule: true });
    const alice = await h.identity('acme', ['policy-admin', 'key-admin'], 'alice');
    const alice2 = await h.identity('acme', ['policy-admin'], 'alice');
    const bob = await h.identity('acme', ['policy-admin'], 'bob');
    const created = await inject('POST', '/v1/admin/keys', alice.headers, { keyId: 'k', policy: policyA });
    expect(created.json()).toMatchObject({ policy: null, pendingPolicy: { version: 1 } });
    // Pending policies release nothing.
    const a = await attest(h.app, { tenant: 'acme' });
    expect((await release(h.app, 'k', a.res.json().token, a.keyPair.publicKey, undefined, 'acme')).json().code).toBe('ERR_KMS_NO_ACTIVE_POLICY');
    for (const who of [alice, alice2]) {
      const self = await inject('POST', '/v1/admin/keys/k/policy/approve', who.headers, { version: 1 });
      expect([self.statusCode, self.json().code]).toEqual([403, 'ERR_KMS_SAME_APPROVER']);
    }
    const approved = await inject('POST', '/v1/admin/keys/k/policy/approve', bob.headers, { version: 1 });
    expect(approved.statusCode).toBe(200);
    expect(approved.json()).toMatchObject({ policyVersion: 1, pendingPolicy: null });
    const b = await attest(h.app, { tenant: 'acme' });
    expect((await release(h.app, 'k', b.res.json().token, b.keyPair.publicKey, undefined, 'acme')).statusCode).toBe(200);
    // A later change waits too, and the active policy keeps deciding meanwhile.
    const change = await inject('PUT', '/v1/admin/keys/k/policy', alice.headers, { policy: policyB });
    expect(change.json()).toMatchObject({ policyVersion: 1, pendingPolicy: { version: 2 } });
    const history = await inject('GET', '/v1/admin/keys/k/policies', bob.headers);
    expect(history.json().policies.map((p: { version: number; status: string }) => [p.version, p.status])).toEqual([
      [1, 'active'],
      [2, 'pending'],
    ]);
    const approvals = h.audit.events.filter((e) => e.action === 'policy.approve');
    expect(approvals).toHaveLength(1);
    expect(approvals[0]).toMatchObject({ actor: { id: bob.id }, decision: 'allow', tenant: 'acme' });
  });

  it('expired and revoked identities are refused (401); tokens are stored only as hashes', async () => {
    const carol = await h.identity('acme', ['auditor'], 'carol');
    expect((await inject('GET', '/v1/admin/whoami', carol.headers)).json()).toMatchObject({ tenant: 'acme', subject: 'carol', roles: ['auditor'] });
    const file = await readFile(path.join(h.config.stateDir, 'identities.json'), 'utf8');
    expect(file).not.toContain(carol.headers.authorization!.slice('Bearer '.length));
    await h.identities.revoke(carol.id);
    expect((await inject('GET', '/v1/admin/keys', carol.headers)).statusCode).toBe(401);
    const dave = await h.identity('acme', ['auditor'], 'dave');
    h.clock.advance(86400 + 1);
    expect((await inject('GET', '/v1/admin/keys', dave.headers)).statusCode).toBe(401);
    // A forged token with a real id and a wrong secret.
    const forged = `Bearer cira_${dave.id}_${'A'.repeat(43)}`;
    expect((await inject('GET', '/v1/admin/keys', { authorization: forged })).statusCode).toBe(401);
    const denials = h.audit.events.filter((e) => e.action === 'admin.auth' && e.decision === 'deny');
    expect(denials.length).toBeGreaterThanOrEqual(3);
  });

  it('key lifecycle at release: rotate keeps old versions, disable blocks, destroy shreds', async () => {
    await createAcmeKey();
    const rotated = await inject('POST', '/v1/admin/keys/model/rotate', acmeAll, {});
    expect(rotated.json().currentVersion).toBe(2);
    const rel = async (version?: number) => {
      const a = await attest(h.app, { tenant: 'acme' });
      return release(h.app, 'model', a.res.json().token, a.keyPair.publicKey, version, 'acme');
    };
    expect((await rel()).json().version).toBe(2);
    expect((await rel(1)).json().version).toBe(1);
    await inject('POST', '/v1/admin/keys/model/disable', acmeAll, { version: 1 });
    expect((await rel(1)).json().code).toBe('ERR_KMS_KEY_DISABLED');
    expect((await rel(2)).statusCode).toBe(200);
    await inject('POST', '/v1/admin/keys/model/disable', acmeAll, {});
    expect((await rel(2)).json().code).toBe('ERR_KMS_KEY_DISABLED');
    await inject('POST', '/v1/admin/keys/model/enable', acmeAll, {});
    const wrongConfirm = await inject('POST', '/v1/admin/keys/model/destroy', acmeAll, { confirm: 'other' });
    expect(wrongConfirm.statusCode).toBe(400);
    const destroyed = await inject('POST', '/v1/admin/keys/model/destroy', acmeAll, { confirm: 'model' });
    expect(destroyed.json().state).toBe('destroyed');
    expect((await rel(2)).json().code).toBe('ERR_KMS_KEY_DISABLED');
    const actions = h.audit.events.filter((e) => e.actor.type === 'admin' && e.decision === 'allow').map((e) => e.action);
    expect(actions).toEqual(['key.create', 'key.rotate', 'key.disable', 'key.disable', 'key.enable', 'key.destroy']);
  });

  it('dry-run: a stricter candidate is evaluated and audited on live releases without being enforced', async () => {
    await createAcmeKey();
    expect((await inject('PUT', '/v1/admin/keys/model/policy/dry-run', acmeAll, { policy: policyB })).statusCode).toBe(200);
    const a = await attest(h.app, { tenant: 'acme' });
    const res = await release(h.app, 'model', a.res.json().token, a.keyPair.publicKey, undefined, 'acme');
    expect(res.statusCode).toBe(200);
    const dry = h.audit.events.find((e) => e.action === 'release.dry-run');
    expect(dry).toMatchObject({ decision: 'deny', tenant: 'acme', detail: { enforcedDecision: 'allow' } });
    const logged = h.logs.lines.map((l) => JSON.parse(l) as { msg?: string; wouldAllow?: boolean });
    expect(logged.some((l) => l.msg === 'dry-run policy evaluated' && l.wouldAllow === false)).toBe(true);
  });

  it('the audit trail records challenge, attest and release with decision, policy hash and evidence hash, and no secrets', async () => {
    const meta = await createAcmeKey();
    const a = await attest(h.app, { tenant: 'acme' });
    const token = a.res.json().token as string;
    const ok = await release(h.app, 'model', token, a.keyPair.publicKey, undefined, 'acme');
    const denied = await release(h.app, 'model', token, Buffer.alloc(32, 9), undefined, 'acme');
    expect(denied.statusCode).toBe(403);
    const byAction = (action: string) => h.audit.events.filter((e) => e.action === action);
    expect(byAction('challenge').length).toBeGreaterThanOrEqual(1);
    expect(byAction('attest')[0]).toMatchObject({ decision: 'allow', tenant: 'acme', tee: 'sev-snp' });
    expect(byAction('attest')[0]!.evidenceSha256).toMatch(/^[0-9a-f]{64}$/);
    expect(byAction('release')).toEqual([
      expect.objectContaining({ decision: 'allow', policyHash: meta.policyHash, policyVersion: 1, target: expect.objectContaining({ keyId: 'model', version: 1 }) }),
      expect.objectContaining({ decision: 'deny', reason: 'ERR_KMS_KEY_BINDING_MISMATCH' }),
    ]);
    const all = JSON.stringify(h.audit.events);
    expect(all).not.toContain(token);
    expect(all).not.toContain(token.split('.')[2]!);
    expect(all).not.toContain(ok.json().ciphertext);
    expect(all).not.toContain(acmeAll.authorization!.slice('Bearer '.length));
  });
});
