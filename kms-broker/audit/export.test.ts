import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../../common/bytes.js';
import { canonicalJson } from '../policy.js';
import type { AuditEvent } from './entry.js';
import { exportAudit, verifyAuditExport, EXPORT_FILES, type ExportManifest } from './export.js';
import { AUDIT_LOG_FILE, AuditLog } from './log.js';
import { POLICY_HASH, sampleEvent, steppingClock, tempDir, testSigner, type TestSigner } from './testdata/fixtures.js';

const V2_DOC = { tee: 'tdx', mrtd: ['ef'.repeat(48)] };
const V2_HASH = sha256(Buffer.from(canonicalJson(V2_DOC), 'utf8')).toString('hex');
const UNUSED_DOC = { tee: 'sev-snp', measurements: ['01'.repeat(48)] };
const UNUSED_HASH = sha256(Buffer.from(canonicalJson(UNUSED_DOC), 'utf8')).toString('hex');

let state: string; // a broker state dir: jwks-archive.json + audit/
let keys: TestSigner;
// One entry per second from 10:00:00: seq n has ts 10:00:(n-1).
const at = (seq: number): Date => new Date(Date.parse('2025-03-01T10:00:00.000Z') + (seq - 1) * 1000);

beforeAll(async () => {
  state = await tempDir('cir-audit-state-');
  keys = await testSigner();
  await writeFile(path.join(state, 'jwks-archive.json'), JSON.stringify(keys.jwks));
  const log = await AuditLog.open({ dir: path.join(state, 'audit'), signer: keys.signer, now: steppingClock() });
  const events: AuditEvent[] = [
    sampleEvent(3), // 1: policy.set v1 (POLICY_HASH)
    { ...sampleEvent(3), target: { keyId: 'model-u' }, policyHash: UNUSED_HASH, policy: { id: 'acme/model-u', version: 1, hash: UNUSED_HASH, document: UNUSED_DOC } }, // 2
    sampleEvent(0), // 3
    sampleEvent(2), // 4: release under POLICY_HASH
    { ...sampleEvent(3), policyHash: V2_HASH, policyVersion: 2, policy: { id: 'acme/model-a', version: 2, hash: V2_HASH, document: V2_DOC } }, // 5
    { ...sampleEvent(2), policyHash: V2_HASH, policyVersion: 2 }, // 6
    { ...sampleEvent(2), policyHash: 'aa'.repeat(32), policyVersion: 9 }, // 7: a hash with no document in the log
    sampleEvent(1), // 8
  ];
  for (const e of events) await log.append(e);
  await log.close();
});

describe('exportAudit', () => {
  it('writes entries of the window plus the linking entry, referenced policies, keys, head and manifest', async () => {
    const out = path.join(await tempDir(), 'pkg');
    const m = await exportAudit({ dir: state, since: at(4), until: at(7), out, now: () => new Date('2025-04-01T00:00:00.000Z') });
    expect((await readdir(out)).sort()).toEqual([...EXPORT_FILES, 'manifest.json'].sort());
    const entries = (await readFile(path.join(out, 'entries.jsonl'), 'utf8')).split('\n').filter(Boolean).map((l) => JSON.parse(l) as { seq: number; hash: string });
    expect(entries.map((e) => e.seq)).toEqual([3, 4, 5, 6, 7]);
    const policies = JSON.parse(await readFile(path.join(out, 'policies.json'), 'utf8')) as { hash: string; version: number }[];
    expect(policies.map((p) => p.hash).sort()).toEqual([POLICY_HASH, V2_HASH].sort());
    expect(m.policies.missing).toEqual(['aa'.repeat(32)]);
    expect(JSON.parse(await readFile(path.join(out, 'jwks.json'), 'utf8'))).toEqual(keys.jwks);
    expect(m).toMatchObject({
      format: 'cir-audit-export',
      createdAt: '2025-04-01T00:00:00.000Z',
      window: { since: at(4).toISOString(), until: at(7).toISOString() },
      entries: { count: 5, inWindow: 4, firstSeq: 3, lastSeq: 7, firstHash: entries[0]!.hash, lastHash: entries[4]!.hash },
      head: { seq: 8, signed: true },
      verification: { ok: true, entries: 8, signed: true },
    });
    const onDisk = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as ExportManifest;
    expect(onDisk).toEqual(m);
    for (const f of EXPORT_FILES) expect(m.files[f]).toBe(sha256(await readFile(path.join(out, f))).toString('hex'));
    expect(await verifyAuditExport({ dir: out })).toEqual({ ok: true, entries: 5, firstSeq: 3, lastSeq: 7, signed: true, anchoredByHead: false });
  });

  it('is anchored by the signed head when the window reaches it', async () => {
    const out = path.join(await tempDir(), 'pkg');
    await exportAudit({ dir: state, since: at(6), until: at(100), out });
    expect(await verifyAuditExport({ dir: out })).toMatchObject({ ok: true, firstSeq: 5, lastSeq: 8, anchoredByHead: true });
  });

  it('exports from the first entry without a linking entry, and an empty window as an empty package', async () => {
    const out = path.join(await tempDir(), 'pkg');
    const m = await exportAudit({ dir: state, since: at(-5), until: at(1), out });
    expect(m.entries).toMatchObject({ count: 1, firstSeq: 1, lastSeq: 1 });
    const out2 = path.join(await tempDir(), 'pkg');
    const m2 = await exportAudit({ dir: state, since: at(50), until: at(60), out: out2 });
    expect(m2.entries).toEqual({ count: 0, inWindow: 0, firstSeq: null, lastSeq: null, firstHash: null, lastHash: null });
    expect(await verifyAuditExport({ dir: out2 })).toMatchObject({ ok: true, entries: 0 });
  });

  it('refuses a non-empty output directory and an inverted window', async () => {
    const out = await tempDir();
    await writeFile(path.join(out, 'keep.txt'), 'x');
    await expect(exportAudit({ dir: state, since: at(1), until: at(2), out })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_EXPORT_INVALID' });
    expect(await readFile(path.join(out, 'keep.txt'), 'utf8')).toBe('x');
    await expect(exportAudit({ dir: state, since: at(3), until: at(2), out: path.join(out, 'new') })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_EXPORT_INVALID' });
    await expect(exportAudit({ dir: state, since: new Date('x'), until: at(2), out: path.join(out, 'new') })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_EXPORT_INVALID' });
  });

  it('refuses to cut a package from a log that fails verification', async () => {
    const bad = await tempDir();
    await mkdir(path.join(bad, 'audit'));
    const l = (await readFile(path.join(state, 'audit', AUDIT_LOG_FILE), 'utf8')).split('\n');
    l[2] = l[2]!.replace('"decision":"info"', '"decision":"deny"');
    await writeFile(path.join(bad, 'audit', AUDIT_LOG_FILE), l.join('\n'));
    await writeFile(path.join(bad, 'audit', 'audit.head.json'), await readFile(path.join(state, 'audit', 'audit.head.json')));
    await expect(exportAudit({ dir: bad, since: at(1), until: at(9), out: path.join(bad, 'pkg'), jwks: keys.jwks })).rejects.toMatchObject({
      code: 'ERR_KMS_AUDIT_LOG_INVALID',
    });
  });
});

describe('verifyAuditExport', () => {
  async function pkg(): Promise<string> {
    const out = path.join(await tempDir(), 'pkg');
    await exportAudit({ dir: state, since: at(2), until: at(8), out });
    return out;
  }

  it('detects a file changed after export', async () => {
    const out = await pkg();
    const p = path.join(out, 'policies.json');
    await writeFile(p, (await readFile(p, 'utf8')).replace('sev-snp', 'tdx'));
    expect(await verifyAuditExport({ dir: out })).toMatchObject({ ok: false, firstBad: { file: 'policies.json', reason: 'file-hash' } });
  });

  it('detects an edited entry even when the manifest hash is updated', async () => {
    const out = await pkg();
    const p = path.join(out, 'entries.jsonl');
    const text = (await readFile(p, 'utf8')).replace('"decision":"allow"', '"decision":"deny"');
    await writeFile(p, text);
    const m = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as ExportManifest;
    await writeFile(path.join(out, 'manifest.json'), JSON.stringify({ ...m, files: { ...m.files, 'entries.jsonl': sha256(Buffer.from(text)).toString('hex') } }));
    expect(await verifyAuditExport({ dir: out })).toMatchObject({ ok: false, firstBad: { file: 'entries.jsonl', reason: 'hash' } });
  });

  it('detects a policy document that does not match its hash, even with the manifest updated', async () => {
    const out = await pkg();
    const p = path.join(out, 'policies.json');
    const list = JSON.parse(await readFile(p, 'utf8')) as { document: { tee: string } }[];
    list[0]!.document.tee = 'other';
    const text = JSON.stringify(list);
    await writeFile(p, text);
    const m = JSON.parse(await readFile(path.join(out, 'manifest.json'), 'utf8')) as ExportManifest;
    await writeFile(path.join(out, 'manifest.json'), JSON.stringify({ ...m, files: { ...m.files, 'policies.json': sha256(Buffer.from(text)).toString('hex') } }));
    expect(await verifyAuditExport({ dir: out })).toMatchObject({ ok: false, firstBad: { file: 'policies.json', reason: 'policy-hash' } });
  });

  it('refuses a malformed manifest and reports missing files as unreadable', async () => {
    const out = await pkg();
    await writeFile(path.join(out, 'manifest.json'), '{"format":"x"}');
    expect(await verifyAuditExport({ dir: out })).toMatchObject({ ok: false, firstBad: { reason: 'manifest-malformed' } });
    await expect(verifyAuditExport({ dir: await tempDir() })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_UNREADABLE' });
  });
});
