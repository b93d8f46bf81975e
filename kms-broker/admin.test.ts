import { rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256 } from '../common/bytes.js';
import { adminTokenMatches, createKey, listKeys, loadAdminToken, setKeyPolicy, showKey } from './admin.js';
import { MemoryAuditSink } from './audit-sink.js';
import { ROLES, type Principal } from './identities.js';
import { loadBrokerConfig } from './config.js';
import { openKeyStore } from './keystore.js';
import { ADMIN_TOKEN, adminHeaders, makeHarness, MEASUREMENT_A, MEASUREMENT_B, tempDir, type Harness } from './testdata/harness.js';

const DEK = Buffer.alloc(32, 5);
const body = (keyId = 'model-a', policy: unknown = { measurements: [MEASUREMENT_A] }) => ({ keyId, dek: DEK.toString('base64url'), policy });

describe('admin HTTP API', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness();
  });
  afterEach(async () => h.close());

  it.each([
    ['no header', {}],
    ['wrong token', adminHeaders('test-admin-token-0123456789abcdeX')],
    ['wrong length', adminHeaders('short')],
    ['wrong scheme', { authorization: `Basic ${ADMIN_TOKEN}` }],
    ['prefix of the token', adminHeaders(ADMIN_TOKEN.slice(0, -1))],
  ])('401s with WWW-Authenticate: Bearer (%s)', async (_n, headers) => {
    for (const [method, url] of [['GET', '/v1/admin/keys'], ['POST', '/v1/admin/keys'], ['GET', '/v1/admin/keys/x'], ['PUT', '/v1/admin/keys/x/policy']] as const) {
      const res = await h.app.inject({ method, url, headers, ...(method === 'GET' ? {} : { payload: body() }) });
      expect(res.statusCode).toBe(401);
      expect(res.headers['www-authenticate']).toMatch(/^Bearer /);
      expect(res.json()).toMatchObject({ code: 'ERR_KMS_ADMIN_UNAUTHORIZED' });
    }
    expect(await h.store.list('default')).toEqual([]);
  });

  it('is disabled (404), never open, without a configured token', async () => {
    await h.close();
    h = await makeHarness({ adminToken: undefined, noIdentities: true });
    const res = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body() });
    expect(res.statusCode).toBe(404);
    expect(res.json()).toMatchObject({ code: 'ERR_KMS_ADMIN_DISABLED' });
    expect((await h.app.inject({ method: 'GET', url: '/v1/admin/keys' })).statusCode).toBe(404);
  });

  it('creates (201, metadata only), lists, shows and re-policies a key', async () => {
    const created = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body() });
    expect(created.statusCode).toBe(201);
    const meta = created.json();
    expect(meta).toMatchObject({ keyId: 'model-a', currentVersion: 1, policy: { measurements: [MEASUREMENT_A] } });
    expect(meta.policyHash).toMatch(/^[0-9a-f]{64}$/);
    expect(created.body).not.toContain(DEK.toString('base64url'));
    expect(meta.dek).toBeUndefined();

    const list = await h.app.inject({ method: 'GET', url: '/v1/admin/keys', headers: adminHeaders() });
    expect(list.json().keys.map((k: { keyId: string }) => k.keyId)).toEqual(['model-a']);
    const show = await h.app.inject({ method: 'GET', url: '/v1/admin/keys/model-a', headers: adminHeaders() });
    expect(show.json()).toEqual(meta);

    const put = await h.app.inject({
      method: 'PUT',
      url: '/v1/admin/keys/model-a/policy',
      headers: adminHeaders(),
      payload: { policy: { measurements: [MEASUREMENT_B.toUpperCase()] } },
    });
    expect(put.statusCode).toBe(200);
    expect(put.json().policy.measurements).toEqual([MEASUREMENT_B]);
    expect(put.json().policyHash).not.toBe(meta.policyHash);
  });

  it('409s a duplicate key id', async () => {
    expect((await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body() })).statusCode).toBe(201);
    const dup = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body() });
    expect(dup.statusCode).toBe(409);
    expect(dup.json()).toMatchObject({ code: 'ERR_KMS_KEY_EXISTS', type: 'urn:cir:error:ERR_KMS_KEY_EXISTS' });
  });

  it.each([
    ['bad key id', { ...body(), keyId: '../x' }, 'ERR_KMS_BAD_REQUEST', 'keyId'],
    ['short dek', { ...body(), dek: Buffer.alloc(16).toString('base64url') }, 'ERR_KMS_BAD_REQUEST', 'dek'],
    ['extra field', { ...body(), extra: 1 }, 'ERR_KMS_BAD_REQUEST', 'extra'],
    ['policy without measurements', body('k', {}), 'ERR_KMS_POLICY_INVALID', 'measurements'],
    ['policy with unknown field', body('k', { anyMeasurement: true, allowEverything: true }), 'ERR_KMS_POLICY_INVALID', 'allowEverything'],
  ])('400s %s, naming the field', async (_n, payload, code, field) => {
    const res = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code });
    expect(res.json().detail).toContain(field);
  });

  it('404s policy updates and reads of unknown keys, 400s bad ids in the path', async () => {
    const put = await h.app.inject({ method: 'PUT', url: '/v1/admin/keys/nope/policy', headers: adminHeaders(), payload: { policy: { anyMeasurement: true } } });
    expect(put.json()).toMatchObject({ status: 404, code: 'ERR_KMS_KEY_NOT_FOUND' });
    const get = await h.app.inject({ method: 'GET', url: '/v1/admin/keys/nope', headers: adminHeaders() });
    expect(get.statusCode).toBe(404);
    for (const id of ['../master', '.hidden', 'a/b']) {
      const bad = await h.app.inject({ method: 'GET', url: `/v1/admin/keys/${encodeURIComponent(id)}`, headers: adminHeaders() });
      expect(bad.json()).toMatchObject({ status: 400, code: 'ERR_KMS_BAD_KEY_ID' });
    }
  });

  it('refuses allowSimulated policies in production (400) but accepts them in development', async () => {
    await h.close();
    h = await makeHarness({ env: { NODE_ENV: 'production' } });
    const policy = { allowSimulated: true, measurements: [MEASUREMENT_A] };
    const res = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body('sim', policy) });
    expect(res.statusCode).toBe(400);
    expect(res.json()).toMatchObject({ code: 'ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION' });
    expect(await h.store.list('default')).toEqual([]);
    await h.close();
    h = await makeHarness({ env: { NODE_ENV: 'development' } });
    const ok = await h.app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: body('sim', policy) });
    expect(ok.statusCode).toBe(201);
  });
});

describe('adminTokenMatches', () => {
  const expected = sha256(Buffer.from(ADMIN_TOKEN));
  it.each([
    [`Bearer ${ADMIN_TOKEN}`, true],
    [`bearer ${ADMIN_TOKEN}`, true],
    [`Bearer ${ADMIN_TOKEN}x`, false],
    [`Bearer ${ADMIN_TOKEN.slice(0, -1)}`, false],
    [`Bearer`, false],
    [`Bearer  `, false],
    [ADMIN_TOKEN, false],
    ['', false],
    [undefined, false],
    [`Bearer ${ADMIN_TOKEN} extra`, false],
  ])('%j -> %s', (header, ok) => {
    expect(adminTokenMatches(header, expected)).toBe(ok);
  });
});

describe('store-level admin functions (CLI, break-glass)', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('manage keys offline against a state dir that a broker then serves; every action audited', async () => {
    const env = { NODE_ENV: 'test' };
    const config = loadBrokerConfig({ stateDir: dir }, { env });
    const store = await openKeyStore(config, { env });
    const audit = new MemoryAuditSink();
    const ctx = { store, policy: { production: false }, audit };
    const prod = { store, policy: { production: true }, audit };
    const cli: Principal = { id: 'cli', tenant: 'default', subject: 'cli:test', roles: ROLES, via: 'cli' };
    await createKey(ctx, cli, { keyId: 'offline', dek: DEK, policy: { measurements: [MEASUREMENT_A] } });
    await expect(createKey(prod, cli, { keyId: 'bad', dek: DEK, policy: { allowSimulated: true, anyMeasurement: true } })).rejects.toMatchObject({
      code: 'ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION',
    });
    await expect(createKey(ctx, cli, { keyId: 'short', dek: Buffer.alloc(31), policy: { anyMeasurement: true } })).rejects.toMatchObject({
      code: 'ERR_KMS_DEK_INVALID',
    });
    expect((await listKeys(ctx, cli)).map((k) => k.keyId)).toEqual(['offline']);
    const updated = await setKeyPolicy(ctx, cli, 'offline', { anyMeasurement: true });
    expect((await showKey(ctx, cli, 'offline')).policyHash).toBe(updated.policyHash);
    await expect(showKey(ctx, cli, '../../etc')).rejects.toMatchObject({ code: 'ERR_KMS_BAD_KEY_ID' });
    // A second handle (what a running broker holds) sees the change at once.
    const broker = await openKeyStore(config, { env });
    expect((await broker.get({ tenant: 'default', keyId: 'offline' })).policyHash).toBe(updated.policyHash);
    expect(audit.events.map((e) => [e.action, e.actor.type, e.decision])).toEqual([
      ['key.create', 'cli', 'allow'],
      ['policy.set', 'cli', 'allow'],
    ]);
    expect(audit.events[1]!.policy).toMatchObject({ id: 'default/offline', version: 2, hash: updated.policyHash });
  });
});

describe('loadAdminToken', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('reads env first, then a 0600 file; undefined when neither', async () => {
    const f = path.join(dir, 'admin-token');
    await writeFile(f, `${'f'.repeat(32)}\n`, { mode: 0o600 });
    const config = loadBrokerConfig({ stateDir: dir, adminTokenFile: f }, { env: {} });
    expect(await loadAdminToken(config, { CIR_KMS_ADMIN_TOKEN: 'e'.repeat(32) })).toBe('e'.repeat(32));
    expect(await loadAdminToken(config, {})).toBe('f'.repeat(32));
    expect(await loadAdminToken(loadBrokerConfig({ stateDir: dir }, { env: {} }), {})).toBeUndefined();
  });

  it('refuses a short token without quoting it, and a world-readable file', async () => {
    const config = loadBrokerConfig({ stateDir: dir }, { env: {} });
    const err = await loadAdminToken(config, { CIR_KMS_ADMIN_TOKEN: 'tiny-secret' }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_KMS_CONFIG_INVALID' });
    expect((err as Error).message).not.toContain('tiny-secret');
    const f = path.join(dir, 'open');
    await writeFile(f, 'x'.repeat(32), { mode: 0o644 });
    await expect(loadAdminToken(loadBrokerConfig({ stateDir: dir, adminTokenFile: f }, { env: {} }), {})).rejects.toMatchObject({
      code: 'ERR_KMS_CONFIG_INVALID',
    });
  });
});
