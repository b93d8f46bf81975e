/**
 * Crash safety: a child process appends with concurrency and prints every acknowledged
 * seq; it is SIGKILLed at random moments, then restarted (which reopens and recovers the
 * log). Afterwards every acknowledged entry is in the log with its hash and the chain
 * verifies. Needs the built dist/ (`npm run build`; `npm test` builds first).
 */
import { spawn } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { CompactSign } from 'jose';
import { describe, expect, it } from 'vitest';
import { AuditLog, AUDIT_LOG_FILE } from './log.js';
import { tempDir } from './testdata/fixtures.js';
import { verifyAuditLog } from './verify.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const DRIVER = path.join(here, 'testdata', 'crash-driver.mjs');
const BUILT = path.join(here, '..', '..', 'dist', 'kms-broker', 'audit', 'index.js');
const KILLS = 25;
const CONCURRENCY = 16;

interface Run {
  readonly acked: Map<number, string>;
  readonly readySeq: number;
}

/** Starts the driver, lets it append for `runMs` after it is ready, SIGKILLs it. */
function runAndKill(dir: string, jwkFile: string, runMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DRIVER, dir, jwkFile, String(CONCURRENCY)], { stdio: ['ignore', 'pipe', 'pipe'] });
    const acked = new Map<number, string>();
    let readySeq = -1;
    let buf = '';
    let stderr = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString('utf8');
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const ready = /^ready (\d+)$/.exec(line);
        if (ready) {
          readySeq = Number(ready[1]);
          timer = setTimeout(() => child.kill('SIGKILL'), runMs);
          continue;
        }
        const m = /^(\d+) ([0-9a-f]{64})$/.exec(line);
        if (m) acked.set(Number(m[1]), m[2]!);
      }
    });
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
    const guard = setTimeout(() => child.kill('SIGKILL'), 15_000);
    child.on('error', reject);
    child.on('close', (_code, signal) => {
      clearTimeout(guard);
      if (timer) clearTimeout(timer);
      if (signal === 'SIGKILL' && readySeq >= 0) resolve({ acked, readySeq });
      else reject(Object.assign(new Error(`driver ended without our kill (${signal ?? 'exit'}): ${stderr.slice(0, 2000)}`), { beforeReady: readySeq < 0 }));
    });
  });
}

describe('audit log crash safety (SIGKILL)', () => {
  it(`keeps every acknowledged entry across ${KILLS} kills at random moments`, async () => {
    expect(existsSync(BUILT), 'dist/ is built (npm run build)').toBe(true);
    const root = await tempDir('cir-audit-crash-');
    const dir = path.join(root, 'audit');
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwkFile = path.join(root, 'signer.jwk.json');
    await writeFile(jwkFile, JSON.stringify({ ...privateKey.export({ format: 'jwk' }), kid: 'crash' }), { mode: 0o600 });
    const jwks = { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'crash', alg: 'ES256' }] };
    // Random kill moments, reproducible from the fast-check seed printed on failure.
    const delays = fc.sample(fc.integer({ min: 0, max: 100 }), { numRuns: KILLS });
    const acked = new Map<number, string>();
    let prevAckedMax = 0;
    for (const delay of delays) {
      // One retry when the driver dies before "ready" (dist/ being rebuilt by a concurrent
      // `npm run build`); a real start-up failure fails twice.
      const run = await runAndKill(dir, jwkFile, delay).catch(async (e: { beforeReady?: boolean }) => {
        if (!e.beforeReady) throw e;
        await new Promise((r) => setTimeout(r, 1000));
        return runAndKill(dir, jwkFile, delay);
      });
      // Reopening never lost an acknowledged entry: the driver started past every ack so far.
      expect(run.readySeq).toBeGreaterThanOrEqual(prevAckedMax);
      for (const [seq, hash] of run.acked) {
        expect(acked.has(seq), `seq ${seq} acknowledged twice`).toBe(false);
        acked.set(seq, hash);
      }
      prevAckedMax = Math.max(prevAckedMax, ...run.acked.keys());
      // Between kills the log verifies (unanchored entries / a torn tail are allowed) or
      // lacks only its first head (killed before the first head write, nothing acknowledged).
      const v = await verifyAuditLog({ dir, jwks });
      if (!v.ok) {
        expect(v.firstBad.reason).toBe('head-missing');
        expect(acked.size).toBe(0);
      }
    }
    // Final recovery in this process, then the whole chain and every acknowledged hash.
    const signer = { sign: (p: Uint8Array) => new CompactSign(p).setProtectedHeader({ alg: 'ES256', kid: 'crash' }).sign(privateKey) };
    await (await AuditLog.open({ dir, signer })).close();
    const v = await verifyAuditLog({ dir, jwks });
    expect(v).toMatchObject({ ok: true, unanchored: 0, tornTail: false, signed: true });
    // Head temp files of killed writes are cleaned up on open.
    expect((await readdir(dir)).sort()).toEqual(['audit.head.json', 'audit.jsonl']);
    const entries = (await readFile(path.join(dir, AUDIT_LOG_FILE), 'utf8'))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { seq: number; hash: string; action: string });
    const bySeq = new Map(entries.map((e) => [e.seq, e.hash]));
    for (const [seq, hash] of acked) expect(bySeq.get(seq), `acknowledged seq ${seq}`).toBe(hash);
    expect(acked.size).toBeGreaterThan(0);
    // Report what the kills did (visible with --reporter=verbose).
    console.log(
      `audit crash test: ${KILLS} kills, ${entries.length} entries, ${acked.size} acknowledged, ` +
        `${entries.filter((e) => e.action === 'audit.recovered').length} recoveries`,
    );
  });
});
