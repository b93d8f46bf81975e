import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { loadBrokerConfig, type BrokerConfig } from './config.js';
import { FileKeyStore, loadMasterKey, openKeyStore, type KeyRef } from './keystore.js';
import { canonicalJson, parseReleasePolicy, policyHash } from './policy.js';
import { Clock, MEASUREMENT_A, MEASUREMENT_B, tempDir } from './testdata/harness.js';

const NOENV = { NODE_ENV: 'test' };
const policy = (m = MEASUREMENT_A) => parseReleasePolicy({ measurements: [m] }, { production: false });
const active = (m = MEASUREMENT_A) => ({ policy: policy(m), arrival: 'active' as const });
const DEK = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
const DEK2 = Buffer.alloc(32, 0x77);
const A: KeyRef = { tenant: 'acme', keyId: 'model-a' };
const BY = 'id1:alice';

function mode(st: { mode: number }): number {
  return st.mode & 0o777;
}

describe('FileKeyStore', () => {
  let dir: string;
  let config: BrokerConfig;
  let store: FileKeyStore;
  const clock = new Clock();

  beforeEach(async () => {
    dir = await tempDir();
    config = loadBrokerConfig({ stateDir: path.join(dir, 'state') }, { env: NOENV });
    store = await openKeyStore(config, { env: NOENV, now: clock.now });
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  const keyFile = (ref: KeyRef) => path.join(config.stateDir, 'tenants', ref.tenant, 'keys', `${ref.keyId}.json`);

  it('creates a key: metadata only, version 1, active policy with hash, creator recorded', async () => {
    const meta = await store.create(A, DEK, BY, active());
    expect(meta).toMatchObject({ tenant: 'acme', keyId: 'model-a', state: 'enabled', createdBy: BY, currentVersion: 1, policyVersion: 1 });
    expect(meta.versions).toMatchObject([{ version: 1, state: 'enabled', createdBy: BY }]);
    expect(meta.policyHash).toBe(policyHash(policy()));
    expect(meta.createdAt).toBe(clock.now().toISOString());
    expect(JSON.stringify(meta)).not.toContain(DEK.toString('base64url'));
    const got = await store.unwrap(A);
    expect(got.dek.equals(DEK)).toBe(true);
    expect(got.version).toBe(1);
  });

  it('a key without a policy has policy null', async () => {
    const meta = await store.create(A, DEK, BY);
    expect(meta).toMatchObject({ policy: null, policyHash: null, policyVersion: null, pendingPolicy: null });
  });

  it('encrypts at rest: the DEK bytes appear in no encoding in the file', async () => {
    await store.create(A, DEK, BY, active());
    const raw = await readFile(keyFile(A));
    const text = raw.toString('utf8');
    for (const enc of ['hex', 'base64', 'base64url'] as const) expect(text).not.toContain(DEK.toString(enc));
    expect(raw.includes(DEK)).toBe(false);
  });

  it('writes key files 0600 in 0700 directories, master key 0600', async () => {
    await store.create(A, DEK, BY, active());
    expect(mode(await stat(keyFile(A)))).toBe(0o600);
    expect(mode(await stat(path.dirname(keyFile(A))))).toBe(0o700);
    expect(mode(await stat(path.join(config.stateDir, 'tenants')))).toBe(0o700);
    expect(mode(await stat(config.stateDir))).toBe(0o700);
    expect(mode(await stat(path.join(config.stateDir, 'master.key')))).toBe(0o600);
  });

  it('tenants are separate namespaces: the same id in two tenants are two keys', async () => {
    await store.create(A, DEK, BY, active());
    const B = { tenant: 'globex', keyId: 'model-a' };
    await expect(store.get(B)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_NOT_FOUND' });
    await store.create(B, DEK2, BY, active(MEASUREMENT_B));
    expect((await store.unwrap(A)).dek.equals(DEK)).toBe(true);
    expect((await store.unwrap(B)).dek.equals(DEK2)).toBe(true);
    expect((await store.list('acme')).map((k) => k.tenant)).toEqual(['acme']);
    expect(await store.listTenants()).toEqual(['acme', 'globex']);
  });

  it('a record copied into another tenant is refused (the MAC binds the tenant)', async () => {
    await store.create(A, DEK, BY, active());
    const B = { tenant: 'globex', keyId: 'model-a' };
    await mkdir(path.dirname(keyFile(B)), { recursive: true });
    await writeFile(keyFile(B), await readFile(keyFile(A)), { mode: 0o600 });
    await expect(store.unwrap(B)).rejects.toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT' });
  });

  it('refuses a duplicate key id with ERR_KMS_KEY_EXISTS', async () => {
    await store.create(A, DEK, BY, active());
    await expect(store.create(A, DEK, BY, active())).rejects.toMatchObject({ code: 'ERR_KMS_KEY_EXISTS' });
  });

  it('serialises concurrent creates of one id: exactly one wins', async () => {
    const results = await Promise.allSettled([1, 2, 3, 4].map(() => store.create(A, DEK, BY, active())));
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
  });

  it('rejects a wrong-size DEK', async () => {
    await expect(store.create(A, Buffer.alloc(16), BY)).rejects.toMatchObject({ code: 'ERR_KMS_DEK_INVALID' });
  });

  it.each(['../escape', '..', '.hidden', 'a/b', 'a\\b', '', 'x'.repeat(129), 'a\0b', '/etc/passwd'])(
    'rejects key id %j (path traversal and friends)',
    async (id) => {
      const ref = { tenant: 'acme', keyId: id };
      await expect(store.get(ref)).rejects.toMatchObject({ code: 'ERR_KMS_BAD_KEY_ID' });
      await expect(store.create(ref, DEK, BY)).rejects.toMatchObject({ code: 'ERR_KMS_BAD_KEY_ID' });
      await expect(store.unwrap(ref)).rejects.toMatchObject({ code: 'ERR_KMS_BAD_KEY_ID' });
    },
  );

  it.each(['../x', 'Acme', '', '-a', 'a/b', 'x'.repeat(64), 'a b'])('rejects tenant %j', async (tenant) => {
    await expect(store.get({ tenant, keyId: 'k' })).rejects.toMatchObject({ code: 'ERR_KMS_BAD_TENANT' });
    await expect(store.list(tenant)).rejects.toMatchObject({ code: 'ERR_KMS_BAD_TENANT' });
  });

  it('lists keys sorted and ignores leftover .tmp files and strays', async () => {
    await store.create({ tenant: 'acme', keyId: 'b-key' }, DEK, BY, active());
    await store.create({ tenant: 'acme', keyId: 'a-key' }, DEK, BY, active());
    const keys = path.dirname(keyFile(A));
    // What a kill -9 in the middle of writeFileAtomic leaves behind.
    await writeFile(path.join(keys, '.a-key.json.0123456789ab.tmp'), '{"half":', { mode: 0o600 });
    await writeFile(path.join(keys, '.c-key.json.ba9876543210.tmp'), '', { mode: 0o600 });
    await writeFile(path.join(keys, 'README'), 'not a key');
    const list = await store.list('acme');
    expect(list.map((k) => k.keyId)).toEqual(['a-key', 'b-key']);
    expect(await store.list('nobody')).toEqual([]);
  });

  it.each([
    ['truncated JSON', (s: string) => s.slice(0, Math.floor(s.length / 2))],
    ['empty file', () => ''],
    ['not an object', () => '42'],
    ['missing field', (s: string) => JSON.stringify({ ...JSON.parse(s), versions: undefined })],
    ['loosened policy', (s: string) => {
      const r = JSON.parse(s);
      r.policies[0].document = { anyMeasurement: true };
      return JSON.stringify(r);
    }],
    ['policy hash edited', (s: string) => {
      const r = JSON.parse(s);
      r.policies[0].hash = '0'.repeat(64);
      return JSON.stringify(r);
    }],
    ['version re-enabled', (s: string) => {
      const r = JSON.parse(s);
      r.state = 'enabled';
      return JSON.stringify(r);
    }],
    ['ciphertext flipped', (s: string) => {
      const r = JSON.parse(s);
      const ct = Buffer.from(r.versions[0].ciphertext, 'base64url');
      ct[0]! ^= 1;
      r.versions[0].ciphertext = ct.toString('base64url');
      return JSON.stringify(r);
    }],
    ['record from another key id', (s: string) => s.replaceAll('"model-a"', '"model-b"')],
  ])('a corrupted file (%s) gives ERR_KMS_STORE_CORRUPT, never a crash', async (name, mutate) => {
    await store.create(A, DEK, BY, active());
    if (name === 'version re-enabled') await store.setState(A, 'disabled', BY);
    const f = keyFile(A);
    await writeFile(f, mutate(await readFile(f, 'utf8')));
    const err = await store.unwrap(A).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT', name: 'KmsError' });
    expect((err as Error).message).toContain('model-a.json');
    await expect(store.get(A)).rejects.toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT' });
    await expect(store.list('acme')).rejects.toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT' });
  });

  // Known limitation (README.md, "Known limitations"): the MAC stops edits, not rollback.
  // If rollback protection lands, this test must flip to expect ERR_KMS_STORE_CORRUPT.
  it('KNOWN LIMITATION: an older, validly MACed record restored over the current one is accepted (rollback)', async () => {
    const original = await store.create(A, DEK, BY, active(MEASUREMENT_A));
    const old = await readFile(keyFile(A));
    const changed = await store.proposePolicy(A, policy(MEASUREMENT_B), BY, 'active');
    expect(changed.policyHash).not.toBe(original.policyHash);
    await writeFile(keyFile(A), old, { mode: 0o600 });
    const rolledBack = await store.unwrap(A);
    expect(rolledBack.metadata.policyHash).toBe(original.policyHash);
  });

  it('rotate adds a version and makes it current; earlier versions stay releasable', async () => {
    await store.create(A, DEK, BY, active());
    clock.advance(5);
    const meta = await store.rotate(A, DEK2, 'id2:bob');
    expect(meta.currentVersion).toBe(2);
    expect(meta.versions.map((v) => [v.version, v.state, v.createdBy])).toEqual([[1, 'enabled', BY], [2, 'enabled', 'id2:bob']]);
    expect((await store.unwrap(A)).dek.equals(DEK2)).toBe(true);
    expect((await store.unwrap(A, 1)).dek.equals(DEK)).toBe(true);
    await expect(store.unwrap(A, 3)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_VERSION_NOT_FOUND' });
  });

  it('disable and enable: the key, or one version', async () => {
    await store.create(A, DEK, BY, active());
    await store.rotate(A, DEK2, BY);
    await store.setState(A, 'disabled', BY, 1);
    await expect(store.unwrap(A, 1)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DISABLED' });
    expect((await store.unwrap(A, 2)).dek.equals(DEK2)).toBe(true);
    await store.setState(A, 'disabled', BY);
    await expect(store.unwrap(A, 2)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DISABLED' });
    await store.setState(A, 'enabled', BY);
    await store.setState(A, 'enabled', BY, 1);
    expect((await store.unwrap(A, 1)).dek.equals(DEK)).toBe(true);
  });

  it('destroy crypto-shreds: no wrapped DEK remains, only a tombstone; irreversible', async () => {
    await store.create(A, DEK, BY, active());
    await store.rotate(A, DEK2, BY);
    const before = await readFile(keyFile(A), 'utf8');
    const wrapped = JSON.parse(before).versions.map((v: { ciphertext: string }) => v.ciphertext) as string[];
    await expect(store.destroy(A, BY, 2)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_STATE' });
    const partly = await store.destroy(A, BY, 1);
    expect(partly.versions.map((v) => v.state)).toEqual(['destroyed', 'enabled']);
    expect(await readFile(keyFile(A), 'utf8')).not.toContain(wrapped[0]);
    await expect(store.unwrap(A, 1)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DISABLED' });
    const gone = await store.destroy(A, BY);
    expect(gone.state).toBe('destroyed');
    const after = await readFile(keyFile(A), 'utf8');
    for (const w of wrapped) expect(after).not.toContain(w);
    expect(JSON.parse(after).versions.every((v: object) => !('ciphertext' in v) && !('iv' in v))).toBe(true);
    await expect(store.unwrap(A)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DISABLED' });
    await expect(store.setState(A, 'enabled', BY)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DESTROYED' });
    await expect(store.rotate(A, DEK, BY)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_DESTROYED' });
    await expect(store.create(A, DEK, BY)).rejects.toMatchObject({ code: 'ERR_KMS_KEY_EXISTS' });
    // No other file in the directory still holds the old record.
    const names = await readdir(path.dirname(keyFile(A)));
    expect(names).toEqual(['model-a.json']);
  });

  it('recover() overwrites and removes a shred file left by a crash mid-destroy', async () => {
    await store.create(A, DEK, BY, active());
    const leftover = path.join(path.dirname(keyFile(A)), '.model-a.shred-0123456789ab');
    await writeFile(leftover, await readFile(keyFile(A)), { mode: 0o600 });
    const again = await openKeyStore(config, { env: NOENV });
    await expect(stat(leftover)).rejects.toMatchObject({ code: 'ENOENT' });
    expect((await again.unwrap(A)).dek.equals(DEK)).toBe(true);
  });

  it('policy history: every version kept; two-person flow pending -> approved by another actor', async () => {
    await store.create(A, DEK, BY, active(MEASUREMENT_A));
    const pending = await store.proposePolicy(A, policy(MEASUREMENT_B), BY, 'pending');
    expect(pending.policyVersion).toBe(1);
    expect(pending.pendingPolicy).toMatchObject({ version: 2, createdBy: BY });
    await expect(store.approvePolicy(A, 2, BY)).rejects.toMatchObject({ code: 'ERR_KMS_SAME_APPROVER' });
    await expect(store.approvePolicy(A, 1, 'id2:bob')).rejects.toMatchObject({ code: 'ERR_KMS_POLICY_NOT_PENDING' });
    const approved = await store.approvePolicy(A, 2, 'id2:bob');
    expect(approved).toMatchObject({ policyVersion: 2, pendingPolicy: null, policyHash: policyHash(policy(MEASUREMENT_B)) });
    const history = await store.policyHistory(A);
    expect(history.map((h) => [h.version, h.status, h.approvedBy])).toEqual([[1, 'superseded', undefined], [2, 'active', 'id2:bob']]);
  });

  it('a newer proposal withdraws an older pending one', async () => {
    await store.create(A, DEK, BY, active());
    await store.proposePolicy(A, policy(MEASUREMENT_B), BY, 'pending');
    const m = await store.proposePolicy(A, policy(MEASUREMENT_A), BY, 'pending');
    expect(m.pendingPolicy?.version).toBe(3);
    expect((await store.policyHistory(A)).map((h) => h.status)).toEqual(['active', 'withdrawn', 'pending']);
  });

  it('dry-run policy is stored and cleared without touching the active one', async () => {
    const created = await store.create(A, DEK, BY, active());
    const m = await store.setDryRunPolicy(A, policy(MEASUREMENT_B), BY);
    expect(m.dryRunPolicy?.hash).toBe(policyHash(policy(MEASUREMENT_B)));
    expect(m.policyHash).toBe(created.policyHash);
    expect((await store.setDryRunPolicy(A, null, BY)).dryRunPolicy).toBeNull();
  });

  it('tenant settings: default off, persisted, MAC-protected', async () => {
    expect(await store.tenantSettings('acme')).toMatchObject({ twoPersonRule: false });
    await store.setTenantSettings('acme', { twoPersonRule: true });
    expect((await (await openKeyStore(config, { env: NOENV })).tenantSettings('acme')).twoPersonRule).toBe(true);
    const f = path.join(config.stateDir, 'tenants', 'acme', 'tenant.json');
    await writeFile(f, (await readFile(f, 'utf8')).replace('"twoPersonRule": true', '"twoPersonRule": false'));
    await expect(store.tenantSettings('acme')).rejects.toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT' });
  });

  it('sees a change made by another process (cache keyed on the file identity)', async () => {
    await store.create(A, DEK, BY, active());
    expect((await store.get(A)).currentVersion).toBe(1);
    const other = await openKeyStore(config, { env: NOENV });
    await other.rotate(A, DEK2, BY);
    expect((await store.get(A)).currentVersion).toBe(2);
  });

  it('a different master key cannot read the store', async () => {
    await store.create(A, DEK, BY, active());
    const other = new FileKeyStore({ root: config.stateDir, masterKey: Buffer.alloc(32, 1) });
    await expect(other.unwrap(A)).rejects.toMatchObject({ code: 'ERR_KMS_STORE_CORRUPT' });
  });

  it('migrates a single-tenant v1 record into tenant default, keeping DEK and policy hash', async () => {
    const { key } = await loadMasterKey(config, { env: NOENV });
    const wrapKey = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'cir/kms-broker/master/dek-wrap/v1', 32));
    const macKey = Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), 'cir/kms-broker/master/record-mac/v1', 32));
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', wrapKey, iv);
    c.setAAD(Buffer.from('cir/kms-broker/dek-wrap/v1\0legacy\x001', 'utf8'));
    const ct = Buffer.concat([c.update(DEK), c.final(), c.getAuthTag()]);
    const p = policy();
    const rec = {
      format: 'cir-kms-key/v1', keyId: 'legacy', createdAt: '2026-01-01T00:00:00.000Z', updatedAt: '2026-01-01T00:00:00.000Z',
      currentVersion: 1, policy: p, policyHash: policyHash(p),
      versions: [{ version: 1, createdAt: '2026-01-01T00:00:00.000Z', state: 'enabled', iv: iv.toString('base64url'), ciphertext: ct.toString('base64url') }],
    };
    const mac = createHmac('sha256', macKey).update(canonicalJson(rec)).digest('base64url');
    await mkdir(path.join(config.stateDir, 'keys'), { recursive: true });
    await writeFile(path.join(config.stateDir, 'keys', 'legacy.json'), JSON.stringify({ ...rec, mac }), { mode: 0o600 });
    const again = await openKeyStore(config, { env: NOENV });
    const got = await again.unwrap({ tenant: 'default', keyId: 'legacy' });
    expect(got.dek.equals(DEK)).toBe(true);
    expect(got.metadata).toMatchObject({ policyHash: policyHash(p), createdBy: 'migrated-v1' });
    expect(await readdir(path.join(config.stateDir, 'keys'))).toEqual([]);
  });
});

describe('loadMasterKey', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await tempDir();
  });
  afterEach(async () => rm(dir, { recursive: true, force: true }));

  it('generates a 0600 master key file on first start, then reuses it', async () => {
    const config = loadBrokerConfig({ stateDir: dir }, { env: NOENV });
    const a = await loadMasterKey(config, { env: NOENV });
    expect(a.source).toBe('generated');
    expect(a.key).toHaveLength(32);
    const f = path.join(dir, 'master.key');
    expect(mode(await stat(f))).toBe(0o600);
    const b = await loadMasterKey(config, { env: NOENV });
    expect(b.source).toBe('file');
    expect(b.key.equals(a.key)).toBe(true);
    expect((await readdir(dir)).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('concurrent first starts agree on one key', async () => {
    const config = loadBrokerConfig({ stateDir: dir }, { env: NOENV });
    const keys = await Promise.all([1, 2, 3, 4, 5].map(() => loadMasterKey(config, { env: NOENV })));
    for (const k of keys) expect(k.key.equals(keys[0]!.key)).toBe(true);
  });

  it('takes the key from the environment (base64), generating no file', async () => {
    const key = Buffer.alloc(32, 0x42);
    const config = loadBrokerConfig({ stateDir: dir, masterKeyEnv: 'MY_KMS_KEY' }, { env: NOENV });
    const got = await loadMasterKey(config, { env: { MY_KMS_KEY: key.toString('base64') } });
    expect(got).toMatchObject({ source: 'env' });
    expect(got.key.equals(key)).toBe(true);
    await expect(stat(path.join(dir, 'master.key'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it.each([
    ['short', Buffer.alloc(16).toString('base64')],
    ['not base64', '!!!not-base64!!!'],
  ])('rejects a bad env key (%s) without echoing it', async (_n, value) => {
    const config = loadBrokerConfig({ stateDir: dir }, { env: NOENV });
    const err = await loadMasterKey(config, { env: { CIR_KMS_MASTER_KEY: value } }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_KMS_MASTER_KEY_INVALID' });
    expect((err as Error).message).not.toContain(value);
  });

  it('refuses env and file that disagree', async () => {
    const config = loadBrokerConfig({ stateDir: dir }, { env: NOENV });
    await loadMasterKey(config, { env: NOENV });
    await expect(
      loadMasterKey(config, { env: { CIR_KMS_MASTER_KEY: Buffer.alloc(32, 9).toString('base64') } }),
    ).rejects.toMatchObject({ code: 'ERR_KMS_MASTER_KEY_INVALID' });
  });

  it('refuses a master key file readable by group or others, and a directory in its place', async () => {
    const f = path.join(dir, 'mk');
    await writeFile(f, `${Buffer.alloc(32, 3).toString('base64')}\n`, { mode: 0o644 });
    const config = loadBrokerConfig({ stateDir: dir, masterKeyFile: f }, { env: NOENV });
    await expect(loadMasterKey(config, { env: NOENV })).rejects.toMatchObject({ code: 'ERR_KMS_MASTER_KEY_INVALID' });
    const d = path.join(dir, 'mkdir');
    await mkdir(d);
    const config2 = loadBrokerConfig({ stateDir: dir, masterKeyFile: d }, { env: NOENV });
    await expect(loadMasterKey(config2, { env: NOENV })).rejects.toMatchObject({ code: 'ERR_KMS_MASTER_KEY_INVALID' });
  });

  it('reads a 0600 base64 master key file', async () => {
    const f = path.join(dir, 'mk');
    const key = Buffer.alloc(32, 3);
    await writeFile(f, `${key.toString('base64')}\n`, { mode: 0o600 });
    const config = loadBrokerConfig({ stateDir: dir, masterKeyFile: f }, { env: NOENV });
    const got = await loadMasterKey(config, { env: NOENV });
    expect(got.source).toBe('file');
    expect(got.key.equals(key)).toBe(true);
  });
});
