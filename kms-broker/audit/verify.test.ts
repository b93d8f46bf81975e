import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import fc from 'fast-check';
import { CompactSign, generateKeyPair } from 'jose';
import { beforeAll, describe, expect, it } from 'vitest';
import { isKmsError } from '../codes.js';
import { checkLine, entryHash, headPayload } from './entry.js';
import { AUDIT_HEAD_FILE, AUDIT_LOG_FILE, AuditLog } from './log.js';
import { sampleEvent, steppingClock, tempDir, testSigner, type TestSigner } from './testdata/fixtures.js';
import { verifyAuditLog, type AuditVerifyResult } from './verify.js';
import { canonicalJson } from '../policy.js';

const N = 8;
let golden: string; // a signed log of N entries: <golden>/audit/...
let keys: TestSigner;

beforeAll(async () => {
  golden = await tempDir('cir-audit-golden-');
  keys = await testSigner();
  const log = await AuditLog.open({ dir: path.join(golden, 'audit'), signer: keys.signer, now: steppingClock() });
  for (let i = 0; i < N; i++) await log.append(sampleEvent(i));
  await log.close();
});

/** A copy of the golden log to tamper with; returns its audit dir. */
async function copy(): Promise<string> {
  const root = await tempDir('cir-audit-tamper-');
  await cp(path.join(golden, 'audit'), path.join(root, 'audit'), { recursive: true });
  return path.join(root, 'audit');
}

const readLines = async (dir: string): Promise<string[]> => (await readFile(path.join(dir, AUDIT_LOG_FILE), 'utf8')).split('\n').slice(0, -1);
const writeLines = (dir: string, l: string[]): Promise<void> => writeFile(path.join(dir, AUDIT_LOG_FILE), l.length ? `${l.join('\n')}\n` : '');
const readHead = async (dir: string): Promise<Record<string, unknown>> => JSON.parse(await readFile(path.join(dir, AUDIT_HEAD_FILE), 'utf8')) as Record<string, unknown>;
const writeHead = (dir: string, h: unknown): Promise<void> => writeFile(path.join(dir, AUDIT_HEAD_FILE), JSON.stringify(h));

/** Re-hashes every line from index `from` on so the chain is internally consistent again. */
function rehashFrom(lines: string[], from: number): string[] {
  const out = [...lines];
  let prev = from > 0 ? (JSON.parse(out[from - 1]!) as { hash: string }).hash : '0'.repeat(64);
  for (let i = from; i < out.length; i++) {
    const e = JSON.parse(out[i]!) as Record<string, unknown>;
    e['prev'] = prev;
    e['hash'] = entryHash(e);
    prev = e['hash'] as string;
    out[i] = canonicalJson(e);
  }
  return out;
}

describe('verifyAuditLog', () => {
  it('accepts the intact log, from the audit dir or the state dir', async () => {
    const ok = { ok: true, entries: N, headSeq: N, unanchored: 0, tornTail: false, signed: true, kid: keys.kid };
    expect(await verifyAuditLog({ dir: path.join(golden, 'audit'), jwks: keys.jwks })).toMatchObject(ok);
    const dir = await copy();
    await writeFile(path.join(path.dirname(dir), 'jwks-archive.json'), JSON.stringify(keys.jwks));
    expect(await verifyAuditLog({ dir: path.dirname(dir) })).toMatchObject(ok);
  });

  it('prefers jwks-archive.json over jwks.json in the state dir', async () => {
    const dir = await copy();
    const other = await testSigner('other');
    await writeFile(path.join(path.dirname(dir), 'jwks.json'), JSON.stringify(other.jwks));
    expect(await verifyAuditLog({ dir })).toMatchObject({ ok: false, firstBad: { reason: 'head-signature' } });
    await writeFile(path.join(path.dirname(dir), 'jwks-archive.json'), JSON.stringify({ keys: [...other.jwks.keys, ...keys.jwks.keys] }));
    expect(await verifyAuditLog({ dir })).toMatchObject({ ok: true, signed: true });
  });

  type Tamper = (dir: string) => Promise<void>;
  const tampering: [string, Tamper, Partial<{ line: number; seq: number; reason: string }>][] = [
    [
      'edit a field',
      async (d) => {
        const l = await readLines(d);
        l[3] = l[3]!.replace('"decision":"allow"', '"decision":"deny"');
        await writeLines(d, l);
      },
      { line: 4, seq: 4, reason: 'hash' },
    ],
    [
      'delete a middle line',
      async (d) => {
        const l = await readLines(d);
        l.splice(4, 1);
        await writeLines(d, l);
      },
      { line: 5, seq: 6, reason: 'seq' },
    ],
    [
      'swap two lines',
      async (d) => {
        const l = await readLines(d);
        [l[2], l[3]] = [l[3]!, l[2]!];
        await writeLines(d, l);
      },
      { line: 3, seq: 4, reason: 'seq' },
    ],
    [
      'truncate the tail',
      async (d) => writeLines(d, (await readLines(d)).slice(0, N - 2)),
      { line: N - 1, seq: N - 1, reason: 'truncated' },
    ],
    [
      'cut the last line in half',
      async (d) => {
        const raw = await readFile(path.join(d, AUDIT_LOG_FILE));
        await writeFile(path.join(d, AUDIT_LOG_FILE), raw.subarray(0, raw.length - 20));
      },
      { line: N, seq: N, reason: 'not-json' },
    ],
    ['drop the head', async (d) => rm(path.join(d, AUDIT_HEAD_FILE)), { line: 0, reason: 'head-missing' }],
    [
      'forge the head without the key',
      async (d) => {
        const h = await readHead(d);
        const { privateKey } = await generateKeyPair('ES256');
        const forged = { ...h, seq: N - 2 };
        const jws = await new CompactSign(headPayload(forged as never)).setProtectedHeader({ alg: 'ES256', kid: keys.kid }).sign(privateKey);
        await writeHead(d, { ...forged, jws });
      },
      { line: 0, reason: 'head-signature' },
    ],
    [
      'move the head back without re-signing (hide later entries as "unanchored")',
      async (d) => {
        const h = await readHead(d);
        const l = await readLines(d);
        const e = JSON.parse(l[2]!) as { hash: string };
        await writeHead(d, { ...h, seq: 3, hash: e.hash });
      },
      { line: 0, reason: 'head-payload' },
    ],
    [
      'strip the head signature',
      async (d) => {
        const { jws: _jws, ...h } = await readHead(d);
        await writeHead(d, h);
      },
      { line: 0, reason: 'head-unsigned' },
    ],
    [
      're-hash only the edited entry',
      async (d) => {
        const l = await readLines(d);
        l[2] = l[2]!.replace('"decision":"allow"', '"decision":"deny"');
        l[2] = rehashFrom(l, 2)[2]!;
        await writeLines(d, l);
      },
      { line: 4, seq: 4, reason: 'prev' },
    ],
    [
      're-hash an edited entry and all later entries',
      async (d) => {
        const l = await readLines(d);
        l[2] = l[2]!.replace('"decision":"allow"', '"decision":"deny"');
        await writeLines(d, rehashFrom(l, 2));
      },
      { line: N, seq: N, reason: 'head-mismatch' },
    ],
    [
      're-hash everything and rewrite the head fields (signature no longer matches)',
      async (d) => {
        const l = rehashFrom((await readLines(d)).map((x, i) => (i === 1 ? x.replace('"tee":"sev-snp"', '"tee":"tdx"') : x)), 1);
        const h = await readHead(d);
        await writeLines(d, l);
        await writeHead(d, { ...h, hash: (JSON.parse(l[N - 1]!) as { hash: string }).hash });
      },
      { line: 0, reason: 'head-payload' },
    ],
    [
      'replace an entry with a valid one from another log position (replay)',
      async (d) => {
        const l = await readLines(d);
        l[5] = l[1]!;
        await writeLines(d, l);
      },
      { line: 6, seq: 2, reason: 'seq' },
    ],
    [
      'insert a whitespace (non-canonical) line',
      async (d) => {
        const l = await readLines(d);
        l[1] = l[1]!.replace('{', '{ ');
        await writeLines(d, l);
      },
      { line: 2, seq: 2, reason: 'not-canonical' },
    ],
  ];

  it.each(tampering)('detects: %s', async (_name, tamper, expected) => {
    const dir = await copy();
    await tamper(dir);
    const r = await verifyAuditLog({ dir, jwks: keys.jwks });
    expect(r.ok).toBe(false);
    expect((r as Extract<AuditVerifyResult, { ok: false }>).firstBad).toMatchObject(expected);
  });

  it('accepts entries after the head as unanchored, and a torn tail beyond the head', async () => {
    const dir = await copy();
    const log = await AuditLog.open({ dir, signer: keys.signer });
    await log.append(sampleEvent(0));
    await log.close();
    const head = await readFile(path.join(dir, AUDIT_HEAD_FILE));
    const log2 = await AuditLog.open({ dir, signer: keys.signer });
    await log2.append(sampleEvent(1));
    await log2.append(sampleEvent(2));
    await log2.close();
    await writeFile(path.join(dir, AUDIT_HEAD_FILE), head);
    await writeFile(path.join(dir, AUDIT_LOG_FILE), '{"v":1,"seq":', { flag: 'a' });
    expect(await verifyAuditLog({ dir, jwks: keys.jwks })).toMatchObject({ ok: true, entries: N + 3, headSeq: N + 1, unanchored: 2, tornTail: true });
  });

  it('reports an unsigned head as weaker when no JWKS is at hand, and refuses it when one is required', async () => {
    const root = await tempDir();
    const dir = path.join(root, 'audit');
    const log = await AuditLog.open({ dir });
    await log.append(sampleEvent(0));
    await log.close();
    expect(await verifyAuditLog({ dir })).toMatchObject({ ok: true, signed: false });
    expect(await verifyAuditLog({ dir, requireSigned: true })).toMatchObject({ ok: false, firstBad: { reason: 'head-unsigned' } });
    expect(await verifyAuditLog({ dir, jwks: keys.jwks })).toMatchObject({ ok: false, firstBad: { reason: 'head-unsigned' } });
  });

  it('accepts an empty directory log without head; throws ERR_KMS_AUDIT_UNREADABLE without a log', async () => {
    const root = await tempDir();
    await (await AuditLog.open({ dir: path.join(root, 'audit') })).close();
    expect(await verifyAuditLog({ dir: root })).toMatchObject({ ok: true, entries: 0, headSeq: 0 });
    const empty = await tempDir();
    await expect(verifyAuditLog({ dir: empty })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_UNREADABLE' });
    await expect(verifyAuditLog({ dir: path.join(empty, 'nope') })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_UNREADABLE' });
  });

  it('throws ERR_KMS_AUDIT_UNREADABLE for a signed head with no JWKS, or a malformed JWKS', async () => {
    const dir = await copy();
    await expect(verifyAuditLog({ dir })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_UNREADABLE' });
    const bad = path.join(path.dirname(dir), 'bad.json');
    await writeFile(bad, '{"keys": 3}');
    await expect(verifyAuditLog({ dir, jwks: bad })).rejects.toMatchObject({ code: 'ERR_KMS_AUDIT_UNREADABLE' });
  });
});

describe('property tests (fast-check)', () => {
  it('checkLine never throws on arbitrary bytes or JSON', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }), fc.jsonValue().map((v) => Buffer.from(JSON.stringify(v) ?? 'null'))), (bytes) => {
        const r = checkLine(bytes);
        expect(typeof r.ok).toBe('boolean');
      }),
      { numRuns: 2000 },
    );
  });

  it('checkLine never accepts a mutated valid entry unless it is that entry', async () => {
    const l = (await readLines(path.join(golden, 'audit')))[2]!;
    fc.assert(
      fc.property(fc.nat({ max: l.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, x) => {
        const b = Buffer.from(l);
        b[pos] = b[pos]! ^ x;
        expect(checkLine(b).ok).toBe(false);
      }),
      { numRuns: 1000 },
    );
  });

  it('verifyAuditLog returns a result or throws only typed errors on arbitrary files', async () => {
    const root = await tempDir();
    const dir = path.join(root, 'audit');
    await mkdir(dir);
    const line = fc.oneof(
      fc.string({ maxLength: 80 }),
      fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'),
      fc.constantFrom('{"v":1,"seq":1}', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]'),
    );
    await fc.assert(
      fc.asyncProperty(
        fc.array(line, { maxLength: 6 }),
        fc.boolean(),
        fc.option(fc.oneof(fc.string({ maxLength: 60 }), fc.jsonValue().map((v) => JSON.stringify(v) ?? 'null'), fc.constant(JSON.stringify({ v: 1, seq: 1, hash: '0'.repeat(64), ts: '2025-01-01T00:00:00.000Z' })))),
        async (lines, trailingNewline, head) => {
          await writeFile(path.join(dir, AUDIT_LOG_FILE), lines.join('\n') + (trailingNewline ? '\n' : ''));
          if (head === null) await rm(path.join(dir, AUDIT_HEAD_FILE), { force: true });
          else await writeFile(path.join(dir, AUDIT_HEAD_FILE), head);
          try {
            const r = await verifyAuditLog({ dir });
            expect(typeof r.ok).toBe('boolean');
          } catch (e) {
            expect(isKmsError(e)).toBe(true);
          }
        },
      ),
      { numRuns: 300 },
    );
  });

  it('detects any single-byte flip anywhere in a valid audit.jsonl', async () => {
    const dir = await copy();
    const original = await readFile(path.join(dir, AUDIT_LOG_FILE));
    await fc.assert(
      fc.asyncProperty(fc.nat({ max: original.length - 1 }), fc.integer({ min: 1, max: 255 }), async (pos, x) => {
        const b = Buffer.from(original);
        b[pos] = b[pos]! ^ x;
        await writeFile(path.join(dir, AUDIT_LOG_FILE), b);
        const r = await verifyAuditLog({ dir, jwks: keys.jwks });
        expect(r.ok).toBe(false);
      }),
      { numRuns: 400 },
    );
  });
});
