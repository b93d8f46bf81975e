import { mkdtemp, readFile, rm, stat, chmod, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { isCirError } from '../../common/errors.js';
import { bearerToken, KeyIndex, mintKey, parseKeyStore, parseToken, readKeyStore, TOKEN_LENGTH, type IssueOptions } from './api-keys.js';
import { issueKey, listKeys, revokeKey, rotateKey } from './key-admin.js';

const NOW = new Date('2025-06-01T12:00:00Z');
const base: IssueOptions = { tenant: 'acme', owner: 'svc-a', environment: 'prod', operations: ['infer'], models: ['m1'], now: NOW };

const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});
async function tmp(): Promise<string> {
  const d = await mkdtemp(path.join(tmpdir(), 'cir-keys-'));
  dirs.push(d);
  return path.join(d, 'keys.json');
}

describe('API key format', () => {
  it('mints cir_<16 hex>_<43 base64url> tokens that parse back', () => {
    const k = mintKey(base);
    expect(k.token).toMatch(/^cir_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(k.token).toHaveLength(TOKEN_LENGTH);
    expect(parseToken(k.token)).toEqual({ keyId: k.record.keyId, secret: k.token.slice(21) });
    expect(JSON.stringify(k.record)).not.toContain(k.token.slice(21));
  });

  it('parseToken and bearerToken never throw on arbitrary input', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string(), fc.anything()), (x) => {
        const p = parseToken(x);
        expect(p === undefined || (typeof p.keyId === 'string' && typeof p.secret === 'string')).toBe(true);
        const b = bearerToken(x);
        expect(b === undefined || typeof b === 'string').toBe(true);
      }),
    );
  });

  it('bearerToken accepts exactly the Bearer scheme', () => {
    expect(bearerToken('Bearer abc')).toBe('abc');
    expect(bearerToken('bearer abc')).toBe('abc');
    expect(bearerToken('Basic abc')).toBeUndefined();
    expect(bearerToken(Buffer.from('Bearer abc'))).toBeUndefined();
  });
});

describe('KeyIndex.authenticate', () => {
  const good = mintKey(base);
  const expired = mintKey({ ...base, expiresAt: new Date(NOW.getTime() - 1) });
  const revokedRec = mintKey(base);
  const index = new KeyIndex(parseKeyStore(Buffer.from(JSON.stringify({ version: 1, keys: [good.record, expired.record, { ...revokedRec.record, revokedAt: NOW.toISOString() }] }))));
  const t = NOW.getTime();

  it('accepts the right token and names its tenant and scopes', () => {
    const p = index.authenticate(good.token, t);
    expect(typeof p).toBe('object');
    expect(p).toMatchObject({ keyId: good.record.keyId, tenant: 'acme', owner: 'svc-a', environment: 'prod' });
  });

  it.each([
    ['missing', undefined],
    ['malformed', 'cir_nothex'],
    ['unknown', mintKey(base).token],
  ])('refuses a %s token', (why, token) => {
    expect(index.authenticate(token, t)).toBe(why);
  });

  it('refuses a wrong secret (one character flipped), expired and revoked keys', () => {
    const last = good.token.at(-1) === 'A' ? 'B' : 'A';
    expect(index.authenticate(good.token.slice(0, -1) + last, t)).toBe('mismatch');
    expect(index.authenticate(expired.token, t)).toBe('expired');
    expect(index.authenticate(revokedRec.token, t)).toBe('revoked');
  });
});

describe('key store file', () => {
  it('arbitrary bytes give a store or ERR_SRV_KEY_STORE, never another error', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 256 }), fc.json().map((j) => Buffer.from(j)), fc.anything().map((a) => Buffer.from(JSON.stringify({ version: 1, keys: [a] }) ?? ''))), (bytes) => {
        try {
          parseKeyStore(bytes);
        } catch (e) {
          expect(isCirError(e) && e.code).toBe('ERR_SRV_KEY_STORE');
        }
      }),
      { numRuns: 300 },
    );
  });

  it('rejects duplicate key ids and names the field, not the value', () => {
    const k = mintKey(base);
    const e = (() => {
      try {
        parseKeyStore(Buffer.from(JSON.stringify({ version: 1, keys: [k.record, k.record] })));
      } catch (x) {
        return x;
      }
    })();
    expect(isCirError(e) && e.code).toBe('ERR_SRV_KEY_STORE');
    expect((e as Error).message).toContain('duplicate keyId');
    expect((e as Error).message).not.toContain(k.record.secretSha256!);
  });

  it('issue writes 0600 with hashes only; a group-readable store is refused', async () => {
    const file = await tmp();
    const k = await issueKey(file, base);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const text = await readFile(file, 'utf8');
    expect(text).not.toContain(k.token);
    expect(text).not.toContain(k.token.slice(21));
    await chmod(file, 0o640);
    const e = await readKeyStore(file).catch((x: unknown) => x);
    expect(isCirError(e) && e.code).toBe('ERR_SRV_KEY_STORE');
  });

  it('rotate keeps owner and scopes and lets both keys work until the old one expires; revoke ends a key', async () => {
    const file = await tmp();
    const old = await issueKey(file, base);
    const oldExpiresAt = new Date(NOW.getTime() + 3_600_000);
    const next = await rotateKey(file, old.record.keyId, { now: NOW, oldExpiresAt });
    expect(next.record).toMatchObject({ tenant: 'acme', owner: 'svc-a', environment: 'prod', scopes: old.record.scopes, rotatedFrom: old.record.keyId });
    const idx = new KeyIndex(await readKeyStore(file));
    expect(typeof idx.authenticate(old.token, NOW.getTime())).toBe('object');
    expect(typeof idx.authenticate(next.token, NOW.getTime())).toBe('object');
    expect(idx.authenticate(old.token, oldExpiresAt.getTime())).toBe('expired');
    expect(typeof idx.authenticate(next.token, oldExpiresAt.getTime())).toBe('object');

    await revokeKey(file, next.record.keyId, NOW);
    const idx2 = new KeyIndex(await readKeyStore(file));
    expect(idx2.authenticate(next.token, NOW.getTime())).toBe('revoked');
    const rows = await listKeys(file, NOW);
    expect(rows.map((r) => r.state)).toEqual(['active', 'revoked']);
    expect(JSON.stringify(rows)).not.toContain('secretSha256');
    const missing = await revokeKey(file, '0000000000000000', NOW).catch((x: unknown) => x);
    expect(isCirError(missing) && missing.code).toBe('ERR_SRV_KEY_NOT_FOUND');
  });

  it('maps mTLS certificate fingerprints to a record', async () => {
    const file = await tmp();
    const fp = 'ab'.repeat(32);
    const k = await issueKey(file, { ...base, certSha256: [fp] });
    const idx = new KeyIndex(await readKeyStore(file));
    expect(idx.byCertificate(fp, NOW.getTime())).toMatchObject({ keyId: k.record.keyId });
    expect(idx.byCertificate('cd'.repeat(32), NOW.getTime())).toBe('unknown');
    await writeFile(file, JSON.stringify({ version: 1, keys: [k.record, { ...mintKey(base).record, certSha256: [fp] }] }), { mode: 0o600 });
    expect(await readKeyStore(file).catch((x: unknown) => isCirError(x) && x.code)).toBe('ERR_SRV_KEY_STORE');
  });
});
