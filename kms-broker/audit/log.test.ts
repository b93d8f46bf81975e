import { appendFile, copyFile, mkdir, readdir, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import type { AuditSink } from '../audit-sink.js';
import { canonicalJson } from '../policy.js';
import { GENESIS_HASH, checkLine, entryHash, type AuditEvent } from './entry.js';
import { AUDIT_HEAD_FILE, AUDIT_LOG_FILE, AuditLog, DEFER_MAX_MS } from './log.js';
import { POLICY_DOC, POLICY_HASH, sampleEvent, steppingClock, tempDir, testSigner } from './testdata/fixtures.js';
import { verifyAuditLog } from './verify.js';

const lines = async (dir: string): Promise<string[]> => (await readFile(path.join(dir, AUDIT_LOG_FILE), 'utf8')).split('\n').filter(Boolean);
const parsed = async (dir: string): Promise<Record<string, unknown>[]> => (await lines(dir)).map((l) => JSON.parse(l) as Record<string, unknown>);

async function fresh(n = 0): Promise<{ dir: string; log: AuditLog; jwks: Awaited<ReturnType<typeof testSigner>>['jwks']; signer: Awaited<ReturnType<typeof testSigner>>['signer'] }> {
  const dir = path.join(await tempDir(), 'audit');
  const { signer, jwks } = await testSigner();
  const log = await AuditLog.open({ dir, signer, now: steppingClock() });
  for (let i = 0; i < n; i++) await log.append(sampleEvent(i));
  return { dir, log, jwks, signer };
}

describe('AuditLog: append', () => {
  it('creates a 0700 directory with 0600 files, and chains canonical lines from the genesis hash', async () => {
    const { dir, log, jwks } = await fresh();
    const r1 = await log.append(sampleEvent(0));
    const r2 = await log.append(sampleEvent(1));
    expect([r1.seq, r2.seq]).toEqual([1, 2]);
    expect((await stat(dir)).mode & 0o777).toBe(0o700);
    expect((await stat(path.join(dir, AUDIT_LOG_FILE))).mode & 0o777).toBe(0o600);
    expect((await stat(path.join(dir, AUDIT_HEAD_FILE))).mode & 0o777).toBe(0o600);
    const raw = await lines(dir);
    const [a, b] = await parsed(dir);
    expect(raw[0]).toBe(canonicalJson(a));
    expect(a!['prev']).toBe(GENESIS_HASH);
    expect(b!['prev']).toBe(a!['hash']);
    expect(a!['hash']).toBe(entryHash(a!));
    expect(r2.hash).toBe(b!['hash']);
    const head = JSON.parse(await readFile(path.join(dir, AUDIT_HEAD_FILE), 'utf8')) as Record<string, unknown>;
    expect(head).toMatchObject({ seq: 2, hash: r2.hash });
    expect(typeof head['jws']).toBe('string');
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 2, headSeq: 2, unanchored: 0, signed: true });
    await log.close();
  });

  it('group-commits concurrent appends: contiguous seqs, fewer heads signed than entries', async () => {
    const { dir, log, jwks, signer } = await fresh();
    const results = await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(sampleEvent(i))));
    expect(results.map((r) => r.seq).sort((x, y) => x - y)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(signer.calls).toBeLessThan(300);
    expect(signer.calls).toBeGreaterThan(0);
    const entries = await parsed(dir);
    for (const r of results) expect(entries[r.seq - 1]!['hash']).toBe(r.hash);
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 300, headSeq: 300 });
    await log.close();
  });

  it('never lets ts go backwards when the clock does', async () => {
    const dir = path.join(await tempDir(), 'audit');
    const times = ['2025-03-01T10:00:05.000Z', '2025-03-01T10:00:01.000Z', '2025-03-01T10:00:09.000Z'];
    let i = 0;
    const log = await AuditLog.open({ dir, now: () => new Date(times[i++]!) });
    for (let k = 0; k < 3; k++) await log.append(sampleEvent(k));
    expect((await parsed(dir)).map((e) => e['ts'])).toEqual([times[0], times[0], times[2]]);
    await log.close();
  });

  it('is an AuditSink (the interface the broker routes write to)', async () => {
    const { log } = await fresh();
    const sink: AuditSink = log;
    await expect(sink.append({ actor: { type: 'system' }, action: 'broker.start', decision: 'info' })).resolves.toMatchObject({ seq: 1 });
    await log.close();
  });

  const bad: [string, unknown][] = [
    ['an unknown field (evidence bytes)', { ...sampleEvent(1), evidence: 'AAAA' }],
    ['an unknown actor field', { ...sampleEvent(0), actor: { type: 'server', token: 'x' } }],
    ['a secret-named detail key', { ...sampleEvent(0), detail: { dek: 'x' } }],
    ['a token-named detail key', { ...sampleEvent(0), detail: { bearerToken: 'x' } }],
    ['a JWT-shaped detail value', { ...sampleEvent(0), detail: { note: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln' } }],
    ['a PEM-shaped detail value', { ...sampleEvent(0), detail: { note: '-----BEGIN PRIVATE KEY-----' } }],
    ['an object detail value', { ...sampleEvent(0), detail: { nested: { a: 1 } } }],
    ['a too-long detail string', { ...sampleEvent(0), detail: { note: 'x'.repeat(129) } }],
    ['too many detail keys', { ...sampleEvent(0), detail: Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`k${i}`, i])) }],
    ['a non-finite number', { ...sampleEvent(0), detail: { n: Number.POSITIVE_INFINITY } }],
    ['a reason that is not an error code', { ...sampleEvent(2), reason: 'denied because the token was eyJ...' }],
    ['an unknown decision', { ...sampleEvent(0), decision: 'maybe' }],
    ['an unknown actor type', { ...sampleEvent(0), actor: { type: 'root' } }],
    ['an upper-case evidence hash', { ...sampleEvent(1), evidenceSha256: 'AB'.repeat(32) }],
    ['a policy on a release', { ...sampleEvent(2), policy: { id: 'p', version: 1, hash: POLICY_HASH, document: POLICY_DOC } }],
    ['a policy whose hash is not its document', { ...sampleEvent(3), policy: { id: 'p', version: 1, hash: 'ab'.repeat(32), document: POLICY_DOC } }],
    ['a huge policy document', { ...sampleEvent(3), policy: { id: 'p', version: 1, hash: POLICY_HASH, document: { x: 'y'.repeat(40_000) } } }],
    ['a deeply nested policy document', { ...sampleEvent(3), policy: { id: 'p', version: 1, hash: POLICY_HASH, document: JSON.parse('['.repeat(100) + ']'.repeat(100)) as unknown } }],
    ['a key id with spaces', { ...sampleEvent(2), target: { keyId: 'a b' } }],
    ['an action with upper case', { ...sampleEvent(0), action: 'Release' }],
    ['not an object', 'release'],
  ];
  it.each(bad)('refuses %s with ERR_KMS_AUDIT_EVENT_INVALID and writes nothing', async (_name, event) => {
    const { dir, log } = await fresh(1);
    await expect(log.append(event as AuditEvent)).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_EVENT_INVALID' });
    await expect(log.append(sampleEvent(0))).resolves.toMatchObject({ seq: 2 });
    expect(await lines(dir)).toHaveLength(2);
    await log.close();
  });

  it('keeps values out of the error message of a refused event', async () => {
    const { log } = await fresh();
    const err = await log.append({ ...sampleEvent(0), detail: { note: 'eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJjYW5hcnkifQ.c2ln' } }).catch((e: Error) => e);
    expect(String((err as Error).message)).not.toContain('eyJ');
    await log.close();
  });

  it('rejects appends after close, and close waits for queued appends', async () => {
    const { dir, log } = await fresh();
    const pending = Array.from({ length: 20 }, (_, i) => log.append(sampleEvent(i)));
    await log.close();
    await expect(Promise.all(pending)).resolves.toHaveLength(20);
    await expect(log.append(sampleEvent(0))).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CLOSED' });
    expect(await lines(dir)).toHaveLength(20);
  });

  it('writes a deferred entry with the next commit another append starts, in append order', async () => {
    const { dir, log, jwks, signer } = await fresh(1);
    const heads = signer.calls;
    const deferred = [log.append(sampleEvent(1), { defer: true }), log.append(sampleEvent(2), { defer: true })];
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(await lines(dir)).toHaveLength(1); // no commit started for them
    const durable = await log.append(sampleEvent(3));
    const [d1, d2] = await Promise.all(deferred);
    expect([d1!.seq, d2!.seq, durable.seq]).toEqual([2, 3, 4]);
    expect(signer.calls - heads).toBe(1); // one commit, one head, for all three
    expect((await parsed(dir)).map((e) => e['action'])).toEqual([0, 1, 2, 3].map((i) => sampleEvent(i).action));
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 4, headSeq: 4, unanchored: 0 });
    await log.close();
  });

  it('commits a deferred entry on its own once DEFER_MAX_MS have passed, not before', async () => {
    const { dir, log, jwks } = await fresh();
    const yieldIo = async () => {
      for (let i = 0; i < 3; i++) await new Promise((r) => setImmediate(r));
    };
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const pending = log.append(sampleEvent(0), { defer: true });
      await yieldIo();
      vi.advanceTimersByTime(DEFER_MAX_MS - 1);
      await yieldIo();
      expect(await readFile(path.join(dir, AUDIT_LOG_FILE), 'utf8')).toBe(''); // still waiting for a carrier
      vi.advanceTimersByTime(1);
      await expect(pending).resolves.toMatchObject({ seq: 1 });
    } finally {
      vi.useRealTimers();
    }
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 1, headSeq: 1 });
    await log.close();
  });

  it('writes entries deferred during a running commit right after it, in order', async () => {
    const dir = path.join(await tempDir(), 'audit');
    const { signer, jwks } = await testSigner();
    let release!: () => void;
    let gate: Promise<void> | undefined = new Promise<void>((r) => (release = r));
    const slow = {
      sign: async (p: Uint8Array) => {
        const g = gate; // only the first head waits
        gate = undefined;
        if (g) await g;
        return signer.sign(p);
      },
    };
    const log = await AuditLog.open({ dir, signer: slow, now: steppingClock() });
    const first = log.append(sampleEvent(0)); // its commit waits on the signer
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    const deferred = log.append(sampleEvent(1), { defer: true });
    release();
    await expect(first).resolves.toMatchObject({ seq: 1 });
    await expect(deferred).resolves.toMatchObject({ seq: 2 });
    expect((await parsed(dir)).map((e) => e['action'])).toEqual([sampleEvent(0).action, sampleEvent(1).action]);
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 2, headSeq: 2 });
    await log.close();
  });

  it('close writes deferred entries before closing', async () => {
    const { dir, log, jwks } = await fresh();
    const pending = [log.append(sampleEvent(0), { defer: true }), log.append(sampleEvent(1), { defer: true })];
    await log.close();
    await expect(Promise.all(pending)).resolves.toHaveLength(2);
    expect(await lines(dir)).toHaveLength(2);
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 2, headSeq: 2 });
  });

  it('rejects the whole batch with ERR_KMS_AUDIT_WRITE_FAILED when the head cannot be written, and rolls the file back', async () => {
    const { dir, log, jwks } = await fresh(3);
    const before = await readFile(path.join(dir, AUDIT_LOG_FILE));
    // The head path becomes a non-empty directory: the atomic rename over it fails.
    await rm(path.join(dir, AUDIT_HEAD_FILE));
    await mkdir(path.join(dir, AUDIT_HEAD_FILE, 'x'), { recursive: true });
    const results = await Promise.allSettled([log.append(sampleEvent(3)), log.append(sampleEvent(4))]);
    for (const r of results) expect(r).toMatchObject({ status: 'rejected', reason: { code: 'ERR_KMS_AUDIT_WRITE_FAILED' } });
    expect(await readFile(path.join(dir, AUDIT_LOG_FILE))).toEqual(before);
    await rm(path.join(dir, AUDIT_HEAD_FILE), { recursive: true });
    await expect(log.append(sampleEvent(5))).resolves.toMatchObject({ seq: 4 });
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 4, headSeq: 4 });
    await log.close();
  });

  it('rejects the batch when the injected clock throws, and stays usable', async () => {
    const dir = path.join(await tempDir(), 'audit');
    let fail = true;
    const log = await AuditLog.open({
      dir,
      now: () => {
        if (fail) throw new Error('clock');
        return new Date('2025-03-01T00:00:00.000Z');
      },
    });
    await expect(log.append(sampleEvent(0))).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_WRITE_FAILED' });
    fail = false;
    await expect(log.append(sampleEvent(0))).resolves.toMatchObject({ seq: 1 });
    await log.close();
  });

  it('rejects the batch when the signer fails, and stays usable', async () => {
    const dir = path.join(await tempDir(), 'audit');
    let fail = true;
    const { signer, jwks } = await testSigner();
    const log = await AuditLog.open({ dir, signer: { sign: (p) => (fail ? Promise.reject(new Error('hsm down')) : signer.sign(p)) } });
    await expect(log.append(sampleEvent(0))).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_WRITE_FAILED' });
    fail = false;
    await expect(log.append(sampleEvent(0))).resolves.toMatchObject({ seq: 1 });
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 1 });
    await log.close();
  });
});

describe('AuditLog: open and recovery', () => {
  it('continues the chain after a clean reopen, without a recovery entry', async () => {
    const { dir, log, jwks, signer } = await fresh(5);
    await log.close();
    const again = await AuditLog.open({ dir, signer, now: steppingClock('2025-03-02T00:00:00.000Z') });
    expect(again.recovery).toBeUndefined();
    expect(again.last.seq).toBe(5);
    await expect(again.append(sampleEvent(5))).resolves.toMatchObject({ seq: 6 });
    await again.close();
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 6 });
  });

  it.each([
    ['a torn line without newline', '{"v":1,"seq":6,"ts":"2025'],
    ['a garbage line with newline', '\u0000\u0000\u0000garbage\n'],
  ])('cuts off %s beyond the head and records audit.recovered', async (_name, tail) => {
    const { dir, log, jwks, signer } = await fresh(5);
    await log.close();
    const good = await readFile(path.join(dir, AUDIT_LOG_FILE));
    await appendFile(path.join(dir, AUDIT_LOG_FILE), tail);
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 5, tornTail: true });
    const again = await AuditLog.open({ dir, signer });
    expect(again.recovery).toEqual({ discardedBytes: Buffer.byteLength(tail), unanchoredEntries: 0, previousHeadSeq: 5 });
    await again.close();
    const entries = await parsed(dir);
    expect(entries).toHaveLength(6);
    expect(entries[5]).toMatchObject({ seq: 6, action: 'audit.recovered', decision: 'info', actor: { type: 'system' }, detail: { discardedBytes: Buffer.byteLength(tail) } });
    // The acknowledged bytes are untouched; the recovery entry follows them directly.
    expect((await readFile(path.join(dir, AUDIT_LOG_FILE))).subarray(0, good.length)).toEqual(good);
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 6, tornTail: false });
  });

  it('anchors complete entries written after the last head (crash between fsync and head write)', async () => {
    const { dir, log, jwks, signer } = await fresh(3);
    await copyFile(path.join(dir, AUDIT_HEAD_FILE), path.join(dir, 'old-head'));
    await log.append(sampleEvent(3));
    await log.append(sampleEvent(4));
    await log.close();
    await copyFile(path.join(dir, 'old-head'), path.join(dir, AUDIT_HEAD_FILE));
    await rm(path.join(dir, 'old-head'));
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 5, headSeq: 3, unanchored: 2 });
    const again = await AuditLog.open({ dir, signer });
    expect(again.recovery).toEqual({ discardedBytes: 0, unanchoredEntries: 2, previousHeadSeq: 3 });
    await again.close();
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 6, headSeq: 6, unanchored: 0 });
  });

  it('recovers a log whose first batch never got a head', async () => {
    const { dir, log, jwks, signer } = await fresh(2);
    await log.close();
    await rm(path.join(dir, AUDIT_HEAD_FILE));
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: false, firstBad: { reason: 'head-missing' } });
    const again = await AuditLog.open({ dir, signer });
    expect(again.recovery).toMatchObject({ unanchoredEntries: 2, previousHeadSeq: 0 });
    await again.close();
    expect(await verifyAuditLog({ dir, jwks })).toMatchObject({ ok: true, entries: 3 });
  });

  it('refuses to open a log shorter than its head (truncation)', async () => {
    const { dir, log } = await fresh(5);
    await log.close();
    const l = await lines(dir);
    await writeFile(path.join(dir, AUDIT_LOG_FILE), `${l.slice(0, 3).join('\n')}\n`);
    await expect(AuditLog.open({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CORRUPT' });
  });

  it('refuses to cut off a torn line the head covers (it was acknowledged)', async () => {
    const { dir, log } = await fresh(5);
    await log.close();
    const size = (await stat(path.join(dir, AUDIT_LOG_FILE))).size;
    await truncate(path.join(dir, AUDIT_LOG_FILE), size - 10);
    await expect(AuditLog.open({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CORRUPT' });
  });

  it('refuses an edited entry before the last line', async () => {
    const { dir, log } = await fresh(5);
    await log.close();
    const l = await lines(dir);
    l[3] = l[3]!.replace('"decision":"allow"', '"decision":"deny"').replace('"decision":"info"', '"decision":"deny"');
    await writeFile(path.join(dir, AUDIT_LOG_FILE), `${l.join('\n')}\n`);
    await expect(AuditLog.open({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CORRUPT' });
  });

  it('refuses a head whose hash is not the entry it names', async () => {
    const { dir, log } = await fresh(3);
    await log.close();
    const head = JSON.parse(await readFile(path.join(dir, AUDIT_HEAD_FILE), 'utf8')) as Record<string, unknown>;
    await writeFile(path.join(dir, AUDIT_HEAD_FILE), JSON.stringify({ ...head, hash: 'ab'.repeat(32) }));
    await expect(AuditLog.open({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CORRUPT' });
  });

  it('refuses a malformed head', async () => {
    const { dir, log } = await fresh(1);
    await log.close();
    await writeFile(path.join(dir, AUDIT_HEAD_FILE), '{"seq":1');
    await expect(AuditLog.open({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_CORRUPT' });
  });

  it('removes head temp files a killed write left behind, and nothing else', async () => {
    const { dir, log } = await fresh(1);
    await log.close();
    await writeFile(path.join(dir, '.audit.head.json.0123456789ab.tmp'), 'x');
    await writeFile(path.join(dir, 'notes.txt'), 'x');
    await (await AuditLog.open({ dir })).close();
    expect((await readdir(dir)).sort()).toEqual(['audit.head.json', 'audit.jsonl', 'notes.txt']);
  });

  it('writes lines that checkLine accepts', async () => {
    const { dir, log } = await fresh(8);
    await log.close();
    for (const l of await lines(dir)) expect(checkLine(Buffer.from(l)).ok).toBe(true);
  });
});
