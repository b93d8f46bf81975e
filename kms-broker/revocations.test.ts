import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isKmsError } from './codes.js';
import { RevocationCreateRequestSchema } from './protocol.js';
import { deriveRevocationKey, MAX_REVOCATIONS, revocationMatches, RevocationStore, REVOCATIONS_FILE } from './revocations.js';

const M1 = 'aa'.repeat(48);
const M2 = 'bb'.repeat(48);
let dir: string;
let file: string;
const master = randomBytes(32);
const macKey = deriveRevocationKey(master);

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-revocations-'));
  file = path.join(dir, REVOCATIONS_FILE);
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isKmsError(e) ? e.code : `untyped: ${String(e)}`;
  }
  return 'resolved';
}

const target = (o: Partial<{ tenant: string; keyId: string; version: number; measurement: string }> = {}) => ({
  tenant: 'default',
  keyId: 'k1',
  version: 1,
  measurement: M1,
  ...o,
});

describe('revocation matching', () => {
  it('matches by key (all versions or one), tenant and measurement, never across tenants', async () => {
    const s = RevocationStore.memory();
    expect(s.matches(target())).toBeUndefined();
    const key = await s.add('default', { scope: 'key', keyId: 'k1', reason: 'r' }, 'op');
    expect(s.matches(target())?.id).toBe(key.id);
    expect(s.matches(target({ version: 7 }))?.id).toBe(key.id);
    expect(s.matches(target({ keyId: 'k2' }))).toBeUndefined();
    expect(s.matches(target({ tenant: 'other' }))).toBeUndefined();
    await s.lift('default', key.id);
    expect(s.matches(target())).toBeUndefined();

    const v2 = await s.add('default', { scope: 'key', keyId: 'k1', version: 2, reason: 'r' }, 'op');
    expect(s.matches(target({ version: 1 }))).toBeUndefined();
    expect(s.matches(target({ version: 2 }))?.id).toBe(v2.id);

    const m = await s.add('t2', { scope: 'measurement', measurement: M2.toUpperCase(), reason: 'r' }, 'op');
    expect(m.measurement).toBe(M2);
    expect(s.matches(target({ tenant: 't2', measurement: M2 }))?.id).toBe(m.id);
    expect(s.matches(target({ tenant: 't2', measurement: M2.toUpperCase() }))?.id).toBe(m.id);
    expect(s.matches(target({ tenant: 't2', measurement: M1 }))).toBeUndefined();
    expect(s.matches(target({ tenant: 'default', measurement: M2 }))).toBeUndefined();

    const t = await s.add('t3', { scope: 'tenant', reason: 'r' }, 'op');
    expect(s.matches(target({ tenant: 't3', keyId: 'anything' }))?.id).toBe(t.id);
  });

  it('the request schema ties fields to scopes', () => {
    const ok = (v: unknown) => RevocationCreateRequestSchema.safeParse(v).success;
    expect(ok({ scope: 'key', keyId: 'k', reason: 'r' })).toBe(true);
    expect(ok({ scope: 'key', keyId: 'k', version: 2, reason: 'r' })).toBe(true);
    expect(ok({ scope: 'key', reason: 'r' })).toBe(false);
    expect(ok({ scope: 'key', keyId: 'k', measurement: M1, reason: 'r' })).toBe(false);
    expect(ok({ scope: 'tenant', reason: 'r' })).toBe(true);
    expect(ok({ scope: 'tenant', keyId: 'k', reason: 'r' })).toBe(false);
    expect(ok({ scope: 'measurement', measurement: M1, reason: 'r' })).toBe(true);
    expect(ok({ scope: 'measurement', measurement: 'xyz', reason: 'r' })).toBe(false);
    expect(ok({ scope: 'measurement', measurement: M1, version: 1, reason: 'r' })).toBe(false);
    expect(ok({ scope: 'measurement', reason: 'r' })).toBe(false);
    expect(ok({ scope: 'key', keyId: 'k', reason: '' })).toBe(false);
    expect(ok({ scope: 'key', keyId: 'k', reason: 'r', extra: 1 })).toBe(false);
  });

  it('revocationMatches is total over arbitrary targets (property)', () => {
    fc.assert(
      fc.property(fc.string(), fc.string(), fc.integer(), fc.string(), (tenant, keyId, version, measurement) => {
        const r = { id: 'x'.repeat(22), tenant: 'default', scope: 'measurement' as const, measurement: M1, reason: 'r', createdAt: '', createdBy: 'a' };
        expect(typeof revocationMatches(r, { tenant, keyId, version, measurement })).toBe('boolean');
      }),
    );
  });
});

describe('tenant scoping', () => {
  it('lists and lifts only within the caller tenant; another tenant id is not found', async () => {
    const s = RevocationStore.memory();
    const a = await s.add('a', { scope: 'tenant', reason: 'r' }, 'op-a');
    const b = await s.add('b', { scope: 'key', keyId: 'k', reason: 'r' }, 'op-b');
    expect(s.list('a').map((r) => r.id)).toEqual([a.id]);
    expect(s.list('b').map((r) => r.id)).toEqual([b.id]);
    expect(await codeOf(s.lift('a', b.id))).toBe('ERR_KMS_REVOCATION_NOT_FOUND');
    expect(s.list('b')).toHaveLength(1);
    expect((await s.lift('b', b.id)).id).toBe(b.id);
    expect(await codeOf(s.lift('b', b.id))).toBe('ERR_KMS_REVOCATION_NOT_FOUND');
  });
});

describe('persistence and integrity', () => {
  it('persists across reopen (0600), empty when absent', async () => {
    const s = await RevocationStore.open({ file, macKey });
    expect(s.size).toBe(0);
    const r = await s.add('default', { scope: 'key', keyId: 'k1', reason: 'leaked' }, 'op');
    expect(((await stat(file)).mode & 0o777).toString(8)).toBe('600');
    const again = await RevocationStore.open({ file, macKey });
    expect(again.list('default')).toEqual([r]);
    expect(again.matches(target())?.id).toBe(r.id);
    await again.lift('default', r.id);
    expect((await RevocationStore.open({ file, macKey })).size).toBe(0);
  });

  it('an edited, re-keyed, truncated or malformed file is ERR_KMS_REVOCATIONS_CORRUPT', async () => {
    const s = await RevocationStore.open({ file, macKey });
    await s.add('default', { scope: 'key', keyId: 'k1', reason: 'leaked' }, 'op');
    const good = await readFile(file, 'utf8');

    const doc = JSON.parse(good) as { revocations: { keyId: string }[] };
    doc.revocations[0]!.keyId = 'k2';
    await writeFile(file, JSON.stringify(doc));
    expect(await codeOf(RevocationStore.open({ file, macKey }))).toBe('ERR_KMS_REVOCATIONS_CORRUPT');

    const dropped = JSON.parse(good) as { revocations: unknown[] };
    dropped.revocations = [];
    await writeFile(file, JSON.stringify(dropped));
    expect(await codeOf(RevocationStore.open({ file, macKey }))).toBe('ERR_KMS_REVOCATIONS_CORRUPT');

    await writeFile(file, good);
    expect(await codeOf(RevocationStore.open({ file, macKey: deriveRevocationKey(randomBytes(32)) }))).toBe('ERR_KMS_REVOCATIONS_CORRUPT');

    await writeFile(file, good.slice(0, good.length / 2));
    expect(await codeOf(RevocationStore.open({ file, macKey }))).toBe('ERR_KMS_REVOCATIONS_CORRUPT');

    await writeFile(file, good);
    expect(await codeOf(RevocationStore.open({ file, macKey }))).toBe('resolved');
  });

  it('arbitrary file contents give a store or the typed error, never a crash (property)', async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string(), fc.json(), fc.uint8Array({ maxLength: 256 }).map((b) => Buffer.from(b).toString('latin1'))), async (text) => {
        await writeFile(file, text);
        const code = await codeOf(RevocationStore.open({ file, macKey }));
        expect(['resolved', 'ERR_KMS_REVOCATIONS_CORRUPT']).toContain(code);
      }),
      { numRuns: 60 },
    );
  });

  it('a failed write leaves the previous state (a lift that cannot be persisted keeps the revocation)', async () => {
    const sub = path.join(dir, 'sub');
    const s = await RevocationStore.open({ file: path.join(sub, REVOCATIONS_FILE), macKey });
    const r = await s.add('default', { scope: 'tenant', reason: 'r' }, 'op');
    // Make the directory a file so the next atomic write fails.
    await rm(sub, { recursive: true });
    await writeFile(sub, 'not a dir');
    expect(await codeOf(s.lift('default', r.id))).toBe('ERR_KMS_STORE_IO');
    expect(s.matches(target({ keyId: 'x' }))?.id).toBe(r.id);
    expect(await codeOf(s.add('default', { scope: 'key', keyId: 'k', reason: 'r' }, 'op'))).toBe('ERR_KMS_STORE_IO');
    expect(s.size).toBe(1);
  });

  it('is bounded', async () => {
    expect(MAX_REVOCATIONS).toBeGreaterThan(0);
    const s = RevocationStore.memory();
    // Fill cheaply through the public API would take MAX_REVOCATIONS writes; memory stores are fast enough.
    for (let i = 0; i < MAX_REVOCATIONS; i++) await s.add('default', { scope: 'tenant', reason: 'r' }, 'op');
    expect(await codeOf(s.add('default', { scope: 'tenant', reason: 'r' }, 'op'))).toBe('ERR_KMS_REVOCATIONS_FULL');
  });

  it('derives a key that depends on the master key and differs from it', () => {
    expect(deriveRevocationKey(master)).toEqual(macKey);
    expect(deriveRevocationKey(randomBytes(32))).not.toEqual(macKey);
    expect(macKey.equals(master)).toBe(false);
    expect(() => deriveRevocationKey(randomBytes(16))).toThrow();
  });
});
