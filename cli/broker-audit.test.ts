/** `cir broker audit verify|export` through the built CLI (run `npm run build` first). */
import { readFile, readdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { AuditLog, AUDIT_LOG_FILE } from '../kms-broker/audit/index.js';
import { sampleEvent, steppingClock, tempDir, testSigner } from '../kms-broker/audit/testdata/fixtures.js';
import { cir, STACK_TRACE } from '../test/helpers/cli.js';

let state: string;

beforeAll(async () => {
  state = await tempDir('cir-audit-cli-');
  const keys = await testSigner();
  await writeFile(path.join(state, 'jwks-archive.json'), JSON.stringify(keys.jwks));
  const log = await AuditLog.open({ dir: path.join(state, 'audit'), signer: keys.signer, now: steppingClock('2025-03-01T10:00:00.000Z') });
  for (let i = 0; i < 6; i++) await log.append(sampleEvent(i));
  await log.close();
});

async function tamperedCopy(): Promise<string> {
  const root = await tempDir('cir-audit-cli-bad-');
  const { cp } = await import('node:fs/promises');
  await cp(state, root, { recursive: true });
  const file = path.join(root, 'audit', AUDIT_LOG_FILE);
  const l = (await readFile(file, 'utf8')).split('\n');
  l.splice(2, 1); // delete line 3
  await writeFile(file, l.join('\n'));
  return root;
}

describe('cir broker audit verify', () => {
  it('exits 0 on an intact log and reports it', async () => {
    const r = await cir(['broker', 'audit', 'verify', '--dir', state]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('audit log intact: 6 entries, head at seq 6, signed');
    const j = await cir(['broker', 'audit', 'verify', '--dir', path.join(state, 'audit'), '--json']);
    expect(j.code).toBe(0);
    expect(JSON.parse(j.stdout)).toMatchObject({ kind: 'log', ok: true, entries: 6, headSeq: 6, signed: true, unanchored: 0 });
  });

  it('exits 1 naming the first bad entry (line, seq, reason)', async () => {
    const bad = await tamperedCopy();
    const r = await cir(['broker', 'audit', 'verify', '--dir', bad]);
    expect(r.code).toBe(1);
    expect(r.stdout).toMatch(/first bad entry: line 3 \(seq 4\): seq/);
    const j = await cir(['broker', 'audit', 'verify', '--dir', bad, '--json']);
    expect(j.code).toBe(1);
    expect(JSON.parse(j.stdout)).toEqual({ kind: 'log', ok: false, firstBad: { line: 3, seq: 4, reason: 'seq', detail: 'expected seq 3' } });
  });

  it('exits 1 when the head is verified against the wrong keys', async () => {
    const other = await testSigner('other');
    const jwks = path.join(await tempDir(), 'jwks.json');
    await writeFile(jwks, JSON.stringify(other.jwks));
    const r = await cir(['broker', 'audit', 'verify', '--dir', state, '--jwks', jwks, '--json']);
    expect(r.code).toBe(1);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, firstBad: { line: 0, reason: 'head-signature' } });
  });

  it('exits 2 on a missing directory or an unreadable JWKS, without a stack trace', async () => {
    const r = await cir(['broker', 'audit', 'verify', '--dir', path.join(state, 'nope'), '--json']);
    expect(r.code).toBe(2);
    expect(JSON.parse(r.stdout)).toMatchObject({ ok: false, code: 'ERR_KMS_AUDIT_UNREADABLE' });
    const r2 = await cir(['broker', 'audit', 'verify', '--dir', state, '--jwks', path.join(state, 'missing.json')]);
    expect(r2.code).toBe(2);
    expect(r2.stderr).toContain('ERR_KMS_AUDIT_UNREADABLE');
    expect(r2.stderr).not.toMatch(STACK_TRACE);
    const r3 = await cir(['broker', 'audit', 'verify']);
    expect(r3.code).toBe(2);
  });
});

describe('cir broker audit export', () => {
  it('writes a package that verify accepts, and refuses to overwrite it', async () => {
    const out = path.join(await tempDir(), 'pkg');
    const args = ['broker', 'audit', 'export', '--dir', state, '--since', '2025-03-01T10:00:02Z', '--until', '2025-03-01T10:00:04Z', '--out', out];
    const r = await cir([...args, '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { manifest: { entries: { count: number; firstSeq: number; lastSeq: number } } };
    expect(j.manifest.entries).toMatchObject({ count: 4, firstSeq: 2, lastSeq: 5 });
    expect((await readdir(out)).sort()).toEqual(['entries.jsonl', 'head.json', 'jwks.json', 'manifest.json', 'policies.json']);
    const v = await cir(['broker', 'audit', 'verify', '--dir', out]);
    expect(v.code).toBe(0);
    expect(v.stdout).toContain('evidence package intact: 4 entries (seq 2..5)');
    const again = await cir(args);
    expect(again.code).toBe(2);
    expect(again.stderr).toContain('ERR_KMS_AUDIT_EXPORT_INVALID');
  });

  it('exits 2 on a bad --since and 1 on a tampered log', async () => {
    const r = await cir(['broker', 'audit', 'export', '--dir', state, '--since', 'yesterday', '--until', '2025-03-02', '--out', path.join(await tempDir(), 'p')]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('ERR_CLI_BAD_ARGUMENT');
    const bad = await tamperedCopy();
    const r2 = await cir(['broker', 'audit', 'export', '--dir', bad, '--since', '2025-03-01', '--until', '2025-03-02', '--out', path.join(bad, 'p'), '--json']);
    expect(r2.code).toBe(1);
    expect(JSON.parse(r2.stdout)).toMatchObject({ ok: false, code: 'ERR_KMS_AUDIT_LOG_INVALID' });
  });
});
