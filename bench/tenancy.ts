/**
 * Micro-benchmark of the per-request admission path of server/tenancy (issue 7 target:
 * authorization + quota checks add <= 50 µs per request at p50).
 *
 *   node dist/bench/tenancy.js [--iters N] [--warmup N]
 *
 * Each variant wraps the same trivial handler (resolves a fixed ModelInfer response at
 * once, so only the wrapper is measured) and times call -> callback per request with
 * process.hrtime.bigint(), over a realistic Silero VAD request (6 KiB of FP32 input):
 *   baseline        grpc-errors.ts `unary` (the wrapper before tenancy)
 *   relaxed         tenancy with `auth.mode: none`, no limits, access log off
 *   controls        API key (SHA-256 + constant-time compare), scope, per-key and
 *                   per-tenant token buckets, daily request/byte quotas, query budget,
 *                   hard limits, concurrency caps, fair shedding, metrics; access log off
 *   controls+detect the same plus the extraction detector (input signals, and the boundary
 *                   statistic of the one-score output)
 *   controls+log    controls+detect plus the access log line (the server's logger, to a discarding stream)
 * Prints ns/op p50/p90/p99 and the p50 overhead over the baseline. Not a test: nothing
 * here asserts on time.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { createLogger } from '../common/logger.js';
import { unary } from '../server/grpc-errors.js';
import { DetectorConfigSchema, LimitsConfigSchema, ObservabilityConfigSchema, type AuthConfig } from '../server/tenancy/config.js';
import { createMetrics } from '../server/tenancy/metrics.js';
import { KeyIndex, readKeyStore } from '../server/tenancy/api-keys.js';
import { issueKey } from '../server/tenancy/key-admin.js';
import { createTenancy } from '../server/tenancy/tenancy.js';
import { toRawBytes } from '../server/tensors.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  const v = i >= 0 ? Number(process.argv[i + 1]) : dflt;
  return Number.isInteger(v) && v > 0 ? v : dflt;
}

const ITERS = arg('--iters', 100_000);
const WARMUP = arg('--warmup', 20_000);

function vadRequest(seed: number): Record<string, unknown> {
  const audio = Float32Array.from({ length: 1536 }, (_, i) => 0.3 * Math.sin((i + seed * 31) / 7) + 0.01 * Math.sin(i * seed));
  return {
    model_name: 'vad',
    id: '',
    inputs: [
      { name: 'input', datatype: 'FP32', shape: ['1', '1536'] },
      { name: 'sr', datatype: 'INT64', shape: [] },
      { name: 'h', datatype: 'FP32', shape: ['2', '1', '64'] },
      { name: 'c', datatype: 'FP32', shape: ['2', '1', '64'] },
    ],
    raw_input_contents: [toRawBytes(audio), toRawBytes(BigInt64Array.from([16000n])), toRawBytes(new Float32Array(128)), toRawBytes(new Float32Array(128))].map((b) => Buffer.from(b)),
  };
}

// The VAD's speech probability (one FP32 score): the detector's boundary statistic reads it.
const RESPONSE = { model_name: 'vad', model_version: '1', id: '', parameters: {}, outputs: [{ name: 'output', datatype: 'FP32', shape: ['1', '1'] }], raw_output_contents: [Buffer.from(Float32Array.of(0.9).buffer)] };

function fakeCall(request: unknown, token: string | undefined): grpc.ServerUnaryCall<unknown, unknown> {
  const metadata = new grpc.Metadata();
  if (token) metadata.set('authorization', `Bearer ${token}`);
  return { request, metadata, getPeer: () => 'ipv4:127.0.0.1:5000', getAuthContext: () => ({}) } as unknown as grpc.ServerUnaryCall<unknown, unknown>;
}

async function measure(name: string, handler: grpc.handleUnaryCall<unknown, unknown>, calls: grpc.ServerUnaryCall<unknown, unknown>[]): Promise<{ name: string; p50: number; p90: number; p99: number; errors: number }> {
  const samples = new Float64Array(ITERS);
  let errors = 0;
  const one = (c: grpc.ServerUnaryCall<unknown, unknown>) =>
    new Promise<void>((resolve) => {
      handler(c, ((err: unknown) => {
        if (err) errors++;
        resolve();
      }) as grpc.sendUnaryData<unknown>);
    });
  for (let i = 0; i < WARMUP; i++) await one(calls[i % calls.length]!);
  errors = 0;
  for (let i = 0; i < ITERS; i++) {
    const t0 = process.hrtime.bigint();
    await one(calls[i % calls.length]!);
    samples[i] = Number(process.hrtime.bigint() - t0);
  }
  samples.sort();
  const q = (p: number) => samples[Math.min(ITERS - 1, Math.floor(p * ITERS))]!;
  return { name, p50: q(0.5), p90: q(0.9), p99: q(0.99), errors };
}

async function main(): Promise<void> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cir-bench-tenancy-'));
  try {
    const store = path.join(dir, 'keys.json');
    const key = await issueKey(store, { tenant: 't1', owner: 'bench', environment: 'bench', operations: ['infer'], models: ['vad'], now: new Date() });
    // Other tenants' keys so the index is not trivially small.
    for (let i = 0; i < 200; i++) await issueKey(store, { tenant: `t${i % 20}`, owner: 'bench', environment: 'bench', operations: ['infer'], models: '*', now: new Date() });
    const index = new KeyIndex(await readKeyStore(store));

    const silent = pino({ level: 'silent' });
    // The server's own logger (its redaction list included), writing nowhere.
    const discard = createLogger({ level: 'info', destination: new Writable({ write: (_c, _e, cb) => cb() }) });
    const requests = Array.from({ length: 64 }, (_, i) => vadRequest(i));
    const anon = requests.map((r) => fakeCall(r, undefined));
    const keyed = requests.map((r) => fakeCall(r, key.token));
    const handler = async () => RESPONSE;

    const limits = LimitsConfigSchema.parse({
      perKey: { ratePerSec: 1e6, burst: 1e6, maxConcurrent: 1000, dailyRequests: 1e12, dailyTensorBytes: Number.MAX_SAFE_INTEGER },
      perTenant: { ratePerSec: 1e6, burst: 1e6, maxConcurrent: 1000, dailyRequests: 1e12, dailyTensorBytes: Number.MAX_SAFE_INTEGER },
      maxBatch: 64,
      maxRequestElements: 1 << 24,
      maxRequestBytes: 64 << 20,
      shedding: { maxInflight: 1000, shedAt: 750 },
    });
    const apiKeys: AuthConfig = { mode: 'api-keys', storeFile: store, pollMs: 2000 };
    const mk = (o: { auth: AuthConfig; limits?: typeof limits; detector?: boolean; log?: boolean }) =>
      createTenancy({
        auth: o.auth,
        limits: o.limits ?? LimitsConfigSchema.parse({}),
        observability: ObservabilityConfigSchema.parse({ accessLog: o.log ? 'all' : 'off' }),
        models: [{ name: 'vad', tenant: 't1', defenses: { queryBudgetPerDay: 1e12, ...(o.detector ? { detector: DetectorConfigSchema.parse({ window: 64, minRequests: 32, action: 'alert', penaltyMs: 1000, boundary: true, boundaryOutput: 'output' }) } : {}) } }],
        maxConcurrentInfers: 1000,
        logger: o.log ? discard : silent,
        keys: () => index,
        isReady: () => true,
        metrics: createMetrics(),
      }).wrap('ModelInfer', handler);

    const rows = [];
    rows.push(await measure('baseline (unary)', unary(silent, 'ModelInfer', handler), anon));
    rows.push(await measure('relaxed (auth none)', mk({ auth: { mode: 'none' } }), anon));
    rows.push(await measure('controls', mk({ auth: apiKeys, limits }), keyed));
    rows.push(await measure('controls+detect', mk({ auth: apiKeys, limits, detector: true }), keyed));
    rows.push(await measure('controls+detect+log', mk({ auth: apiKeys, limits, detector: true, log: true }), keyed));
    const base = rows[0]!.p50;
    process.stdout.write(`tenancy admission micro-benchmark: ${ITERS} iterations after ${WARMUP} warm-up, node ${process.version}\n`);
    process.stdout.write(`| variant | p50 ns | p90 ns | p99 ns | p50 overhead vs baseline | errors |\n|---|---|---|---|---|---|\n`);
    for (const r of rows) {
      process.stdout.write(`| ${r.name} | ${r.p50.toFixed(0)} | ${r.p90.toFixed(0)} | ${r.p99.toFixed(0)} | ${(r.p50 - base).toFixed(0)} ns | ${r.errors} |\n`);
    }
    process.stdout.write(`${JSON.stringify({ bench: 'tenancy', iters: ITERS, rows })}\n`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench failed: ${(e as Error).message}\n`);
  process.exitCode = 1;
});
