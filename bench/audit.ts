/**
 * Audit log append throughput: N concurrent appenders, each awaiting its append (durable:
 * fdatasync + signed head per group commit) before the next. Prints appends/s, latency
 * percentiles and the mean batch size; asserts nothing.
 *
 *   npm run build && node dist/bench/audit.js [--concurrency 64] [--seconds 5] [--unsigned]
 *
 * The figure depends mostly on the disk's fdatasync latency (three syncs per batch: the
 * log, the head temp file, the directory); group commit makes it scale with concurrency.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { CompactSign, generateKeyPair } from 'jose';
import { AuditLog } from '../kms-broker/audit/index.js';
import { scriptArgs } from './script-args.js';

const { values, concurrency, seconds } = scriptArgs('bench/audit', () => {
  const { values } = parseArgs({
    options: {
      concurrency: { type: 'string', default: '64' },
      seconds: { type: 'string', default: '5' },
      unsigned: { type: 'boolean', default: false },
      dir: { type: 'string' },
    },
  });
  const c = Number(values.concurrency);
  const s = Number(values.seconds);
  if (!(c > 0) || !(s > 0)) throw new Error('--concurrency and --seconds must be positive numbers');
  // Appenders are counted in whole ones: 0.5 would start none and leave nothing to report.
  if (!Number.isInteger(c)) throw new Error('--concurrency must be a whole number of appenders');
  return { values, concurrency: c, seconds: s };
});

const root = values.dir ?? (await mkdtemp(path.join(tmpdir(), 'cir-bench-audit-')));
const { privateKey } = await generateKeyPair('ES256');
let batches = 0;
const signer = {
  sign: (p: Uint8Array) => {
    batches++;
    return new CompactSign(p).setProtectedHeader({ alg: 'ES256', kid: 'bench' }).sign(privateKey);
  },
};
const log = await AuditLog.open({ dir: path.join(root, 'audit'), ...(values.unsigned ? {} : { signer }) });
const latencies: number[] = [];
let done = 0;
const until = performance.now() + seconds * 1000;
const t0 = performance.now();
await Promise.all(
  Array.from({ length: concurrency }, async (_, w) => {
    let i = 0;
    while (performance.now() < until) {
      const t = performance.now();
      await log.append({
        actor: { type: 'server', id: `bench-${w}`, ip: '127.0.0.1' },
        action: 'release',
        tenant: 'bench',
        target: { keyId: 'model', version: 1 },
        decision: 'allow',
        policyHash: 'ab'.repeat(32),
        evidenceSha256: 'cd'.repeat(32),
        detail: { i: i++ },
      });
      latencies.push(performance.now() - t);
      done++;
    }
  }),
);
const elapsed = (performance.now() - t0) / 1000;
await log.close();
if (!values.dir) await rm(root, { recursive: true, force: true });
latencies.sort((a, b) => a - b);
const pct = (p: number) => latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))]!.toFixed(2);
console.log(`audit appends, ${concurrency} concurrent appenders, ${seconds} s, ${values.unsigned ? 'unsigned' : 'ES256-signed'} heads (node ${process.version})`);
console.log(`appends/s ${(done / elapsed).toFixed(0)}  p50 ${pct(50)} ms  p99 ${pct(99)} ms  mean batch ${values.unsigned ? 'n/a' : (done / Math.max(1, batches)).toFixed(1)}`);
