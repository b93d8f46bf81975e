import { generateKeyPairSync } from 'node:crypto';
import { chmod, mkdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, compactVerify, createLocalJWKSet, decodeProtectedHeader } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKmsError } from './codes.js';
import { appraiseCpu } from './ear.js';
import {
  activateSigningKey,
  addSigningKey,
  JWKS_ARCHIVE_FILE,
  listSigningKeys,
  loadRing,
  MAX_PUBLISHED_KEYS,
  openRing,
  publishRingJwks,
  retireSigningKey,
  ringDir,
  rotateSigningKey,
} from './signing-keys.js';
import { TokenService, type TokenBody } from './tokens.js';
import { T0, makeClaims, captureLogs, tempDir } from './testdata/harness.js';

const TTL = 300;
const OPTS = { issuer: 'cir-kms-broker', ttlSeconds: TTL, watch: false, reloadIntervalMs: 0 };
const later = (s: number) => new Date(T0.getTime() + s * 1000);
const claims = makeClaims();
const BODY: TokenBody = {
  nonce: Buffer.alloc(32, 1).toString('base64url'),
  keyHash: Buffer.alloc(32, 2).toString('base64url'),
  tee: 'sev-snp',
  claims: claims as unknown as Record<string, unknown>,
  relaxations: [],
  policyId: 'attestation/sev-snp',
  policyHash: '0'.repeat(64),
  submods: { cpu: appraiseCpu({ claims, relaxations: [], allowed: true, policyId: 'p' }) },
};

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return isKmsError(e) ? e.code : `untyped: ${(e as Error).name}`;
  }
}

let dir: string;
beforeEach(async () => {
  dir = await tempDir();
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

describe('signing-key ring', () => {
  it('is created on first open: one active key, 0600 PEM and ring.json, 0700 directory, kid = thumbprint', async () => {
    const ring = await openRing(dir, { now: T0 });
    expect(ring.entries).toHaveLength(1);
    const [e] = ring.entries;
    expect(e).toMatchObject({ state: 'active', createdAt: T0.toISOString(), activatedAt: T0.toISOString() });
    expect(await calculateJwkThumbprint(e!.publicJwk, 'sha256')).toBe(e!.kid);
    expect((await stat(path.join(ringDir(dir), `${e!.kid}.pem`))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(ringDir(dir), 'ring.json'))).mode & 0o777).toBe(0o600);
    expect((await stat(ringDir(dir))).mode & 0o777).toBe(0o700);
    // Reopening keeps the ring.
    expect((await openRing(dir)).active.entry.kid).toBe(e!.kid);
  });

  it('migrates a state dir holding only token-signing-key.pem: same kid, so pinned JWKS keep working', async () => {
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    await writeFile(path.join(dir, 'token-signing-key.pem'), pem, { mode: 0o600 });
    const before = await TokenService.fromPem(pem, OPTS);
    const svc = await TokenService.openRing(dir, OPTS);
    expect(svc.kid).toBe(before.kid);
    expect(svc.jwks()).toEqual(before.jwks());
    const t = await before.issue(BODY, T0);
    expect(await codeOf(svc.verify(t.token, T0))).toBe('OK');
  });

  it('refuses a too-open legacy key rather than silently replacing it', async () => {
    const pem = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    await writeFile(path.join(dir, 'token-signing-key.pem'), pem, { mode: 0o644 });
    await chmod(path.join(dir, 'token-signing-key.pem'), 0o644);
    expect(await codeOf(openRing(dir))).toBe('ERR_KMS_SIGNING_KEY_INVALID');
  });

  it('rotation: old tokens verify until they expire, new ones carry the new kid, JWKS lists both; retire after the TTL kills the old key', async () => {
    const svc = await TokenService.openRing(dir, OPTS);
    const a = svc.kid;
    const tokenA = await svc.issue(BODY, T0);
    expect(decodeProtectedHeader(tokenA.token).kid).toBe(a);

    const b = (await rotateSigningKey(dir, { now: T0 })).kid;
    expect(b).not.toBe(a);
    // The running service picks the change up (reloadIntervalMs 0: on its next use).
    const tokenB = await svc.issue(BODY, later(10));
    expect(decodeProtectedHeader(tokenB.token).kid).toBe(b);
    expect(svc.kid).toBe(b);
    expect(svc.jwks().keys.map((k) => k.kid).sort()).toEqual([a, b].sort());
    expect(await codeOf(svc.verify(tokenA.token, later(299)))).toBe('OK');
    expect(await codeOf(svc.verify(tokenA.token, later(300)))).toBe('ERR_KMS_TOKEN_INVALID'); // expired, not the key
    const rel = await svc.signRelease(
      { keyId: 'k', version: 1, suite: 's', enc: Buffer.alloc(32).toString('base64url'), ciphertextSha256: Buffer.alloc(32).toString('base64url'), keyHash: Buffer.alloc(32).toString('base64url') },
      later(10),
    );
    expect(decodeProtectedHeader(rel).kid).toBe(b);

    // Retiring A before the TTL since it stopped signing is refused, unless forced.
    expect(await codeOf(retireSigningKey(dir, a, { ttlSeconds: TTL, now: later(TTL - 1) }))).toBe('ERR_KMS_SIGNING_KEY_OP_REFUSED');
    expect(await codeOf(retireSigningKey(dir, b, { ttlSeconds: TTL, now: later(10_000) }))).toBe('ERR_KMS_SIGNING_KEY_OP_REFUSED'); // active
    const retired = await retireSigningKey(dir, a, { ttlSeconds: TTL, now: later(TTL) });
    expect(retired).toMatchObject({ kid: a, state: 'retired', retiredAt: later(TTL).toISOString() });
    await expect(stat(path.join(ringDir(dir), `${a}.pem`))).rejects.toMatchObject({ code: 'ENOENT' });

    // A token signed by A (still within its own lifetime) no longer verifies.
    expect(await codeOf(svc.verify(tokenA.token, later(200)))).toBe('ERR_KMS_TOKEN_INVALID');
    expect(await codeOf(svc.verify(tokenB.token, later(200)))).toBe('OK');
    expect(svc.jwks().keys.map((k) => k.kid)).toEqual([b]);
    expect(svc.jwksArchive().keys.map((k) => k.kid).sort()).toEqual([a, b].sort());
  });

  it('a next key is published but neither signs nor verifies until activated', async () => {
    const svc = await TokenService.openRing(dir, OPTS);
    const a = svc.kid;
    const next = await addSigningKey(dir, { now: T0 });
    expect(next.state).toBe('next');
    await svc.reload();
    expect(svc.kid).toBe(a);
    expect(svc.jwks().keys.map((k) => k.kid)).toContain(next.kid);
    // A token signed by the next key (as if its PEM leaked before activation) is refused.
    const pem = await readFile(path.join(ringDir(dir), `${next.kid}.pem`));
    const rogue = await TokenService.fromPem(pem, OPTS);
    const t = await rogue.issue(BODY, T0);
    expect(decodeProtectedHeader(t.token).kid).toBe(next.kid);
    expect(await codeOf(svc.verify(t.token, T0))).toBe('ERR_KMS_TOKEN_INVALID');
    await activateSigningKey(dir, next.kid, { now: T0 });
    expect(await codeOf(svc.verify(t.token, T0))).toBe('OK');
    // The previous active key is now verify-only, deactivated at T0.
    expect((await listSigningKeys(dir)).find((e) => e.kid === a)).toMatchObject({ state: 'verify-only', deactivatedAt: T0.toISOString() });
  });

  it('operations refuse unknown or malformed kids, retired keys, and more than MAX_PUBLISHED_KEYS published keys', async () => {
    await openRing(dir);
    expect(await codeOf(activateSigningKey(dir, 'A'.repeat(43)))).toBe('ERR_KMS_SIGNING_KEY_NOT_FOUND');
    expect(await codeOf(activateSigningKey(dir, '../../etc/passwd'))).toBe('ERR_KMS_SIGNING_KEY_NOT_FOUND');
    const n = await addSigningKey(dir);
    expect(await codeOf(retireSigningKey(dir, n.kid, { ttlSeconds: TTL }))).toBe('OK'); // next never signed: no wait
    expect(await codeOf(activateSigningKey(dir, n.kid))).toBe('ERR_KMS_SIGNING_KEY_OP_REFUSED');
    expect(await codeOf(retireSigningKey(dir, n.kid, { ttlSeconds: TTL }))).toBe('ERR_KMS_SIGNING_KEY_OP_REFUSED');
    for (let i = 1; i < MAX_PUBLISHED_KEYS; i++) await addSigningKey(dir);
    expect(await codeOf(addSigningKey(dir))).toBe('ERR_KMS_SIGNING_KEY_OP_REFUSED');
    // --force retires a verify-only key at once.
    const svc = await TokenService.openRing(dir, OPTS);
    const old = svc.kid;
    const next = (await listSigningKeys(dir)).find((e) => e.state === 'next')!;
    await activateSigningKey(dir, next.kid, { now: T0 });
    expect(await codeOf(retireSigningKey(dir, old, { ttlSeconds: TTL, now: T0, force: true }))).toBe('OK');
  });

  it('a corrupt or inconsistent ring is a typed error; a running service keeps its previous ring and logs', async () => {
    const logs = captureLogs();
    const svc = await TokenService.openRing(dir, { ...OPTS, logger: logs.logger });
    const kid = svc.kid;
    const ringFile = path.join(ringDir(dir), 'ring.json');
    const good = await readFile(ringFile, 'utf8');

    const variants: [string, (j: { keys: Record<string, unknown>[] }) => unknown][] = [
      ['not json', () => '{'],
      ['two active keys', (j) => ({ ...j, keys: [j.keys[0], { ...j.keys[0] }] })],
      ['no active key', (j) => ({ ...j, keys: [{ ...j.keys[0], state: 'verify-only' }] })],
      ['kid not the thumbprint', (j) => ({ ...j, keys: [{ ...j.keys[0], kid: 'B'.repeat(43) }] })],
      ['unknown field', (j) => ({ ...j, extra: 1 })],
    ];
    for (const [name, f] of variants) {
      const out = f(JSON.parse(good));
      await writeFile(ringFile, typeof out === 'string' ? out : JSON.stringify(out));
      expect(await codeOf(loadRing(dir)), name).toBe('ERR_KMS_SIGNING_RING_INVALID');
      expect(await svc.reload(), name).toBe(false);
      expect(svc.kid).toBe(kid);
      expect(await codeOf(svc.issue(BODY, T0))).toBe('OK');
    }
    expect(logs.text()).toContain('does not load; keeping the previous ring');

    // A PEM swapped under the active key's name is refused too.
    await writeFile(ringFile, good);
    const other = generateKeyPairSync('ec', { namedCurve: 'prime256v1' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    await writeFile(path.join(ringDir(dir), `${kid}.pem`), other, { mode: 0o600 });
    expect(await codeOf(loadRing(dir))).toBe('ERR_KMS_SIGNING_RING_INVALID');
    await rm(path.join(ringDir(dir), `${kid}.pem`));
    expect(await codeOf(loadRing(dir))).toBe('ERR_KMS_SIGNING_RING_INVALID');
    // No private key material in the logs.
    expect(logs.text()).not.toContain('PRIVATE KEY');
  });

  it('publishes jwks.json (published keys) and jwks-archive.json (never shrinks), 0644, and onRingChange re-publishes', async () => {
    const files = { jwksFile: path.join(dir, 'jwks.json'), archiveFile: path.join(dir, JWKS_ARCHIVE_FILE) };
    let published = 0;
    const svc = await TokenService.openRing(dir, {
      ...OPTS,
      onRingChange: async (s) => {
        published++;
        await publishRingJwks(s.ring, files);
      },
    });
    await publishRingJwks(svc.ring, files);
    const a = svc.kid;
    // An older archive entry the ring no longer knows is kept.
    const archive0 = JSON.parse(await readFile(files.archiveFile, 'utf8'));
    const ghost = { ...archive0.keys[0], kid: 'G'.repeat(43) };
    await writeFile(files.archiveFile, JSON.stringify({ keys: [ghost, ...archive0.keys] }));

    const b = (await rotateSigningKey(dir, { now: T0 })).kid;
    expect(await svc.reload()).toBe(true);
    expect(published).toBe(1);
    await retireSigningKey(dir, a, { ttlSeconds: TTL, now: later(TTL) });
    expect(await svc.reload()).toBe(true);
    expect(published).toBe(2);

    const jwks = JSON.parse(await readFile(files.jwksFile, 'utf8'));
    const archive = JSON.parse(await readFile(files.archiveFile, 'utf8'));
    expect(jwks.keys.map((k: { kid: string }) => k.kid)).toEqual([b]);
    expect(archive.keys.map((k: { kid: string }) => k.kid).sort()).toEqual([a, b, ghost.kid].sort());
    expect((await stat(files.jwksFile)).mode & 0o777).toBe(0o644);
    expect((await stat(files.archiveFile)).mode & 0o777).toBe(0o644);
    // An audit checkpoint signed with A verifies with the archive after A's retirement.
    expect(JSON.stringify(archive)).not.toMatch(/"d"\s*:/);

    // An unreadable archive is never silently replaced.
    await writeFile(files.archiveFile, 'nope');
    expect(await codeOf(publishRingJwks(svc.ring, files))).toBe('ERR_KMS_SIGNING_RING_INVALID');
  });

  it('audit checkpoints signed before a rotation verify against the archive afterwards', async () => {
    const svc = await TokenService.openRing(dir, OPTS);
    const jws = await svc.checkpointSigner().sign(Buffer.from('head-1'));
    const a = svc.kid;
    await rotateSigningKey(dir, { now: T0 });
    await retireSigningKey(dir, a, { ttlSeconds: TTL, now: later(TTL) });
    await svc.reload();
    const after = await svc.checkpointSigner().sign(Buffer.from('head-2'));
    expect(decodeProtectedHeader(after).kid).not.toBe(a);
    for (const j of [jws, after]) await expect(compactVerify(j, createLocalJWKSet(svc.jwksArchive()))).resolves.toBeDefined();
  });

  it('a running broker-style service with the default interval picks up changes on its watch timer', async () => {
    const svc = await TokenService.openRing(dir, { issuer: 'i', ttlSeconds: TTL, reloadIntervalMs: 250 });
    try {
      const a = svc.kid;
      await rotateSigningKey(dir);
      // No use of the service: only the timer can notice.
      for (let i = 0; i < 40 && svc.kid === a; i++) await new Promise((r) => setTimeout(r, 100));
      expect(svc.kid).not.toBe(a);
    } finally {
      svc.close();
    }
  });

  it('a ring file replaced by a directory or an oversized file is refused', async () => {
    await openRing(dir);
    const ringFile = path.join(ringDir(dir), 'ring.json');
    await rename(ringFile, `${ringFile}.bak`);
    await mkdir(ringFile);
    expect(await codeOf(loadRing(dir))).toBe('ERR_KMS_SIGNING_RING_INVALID');
    await rm(ringFile, { recursive: true });
    await writeFile(ringFile, ' '.repeat(1024 * 1024 + 1));
    expect(await codeOf(loadRing(dir))).toBe('ERR_KMS_SIGNING_RING_INVALID');
  });
});
