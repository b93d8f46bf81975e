import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Fastify, { type FastifyInstance } from 'fastify';
import fc from 'fast-check';
import { register as globalRegistry } from 'prom-client';
import { afterEach, describe, expect, it } from 'vitest';
import { kmsReportData } from '../attestation/binding.js';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { CirError } from '../common/errors.js';
import { generateHpkeKeyPair } from '../common/hpke.js';
import { BrokerConfigSchema, loadBrokerConfig, type BrokerConfigInput } from './config.js';
import { brokerLimits, limitVerifier, type LimitsConfig } from './limits.js';
import { BrokerMetrics, brokerMetricsPlugin, decisionOf, startMetricsServer, type MetricsServer } from './metrics.js';
import { startBroker } from './main.js';
import { notFoundHandler, problemErrorHandler } from './problem.js';
import { ROUTES } from './protocol.js';
import { captureLogs, makeClaims, makeTdxClaims } from './testdata/harness.js';

const SECRET = 'tenant-secret-Zq9vXw';

function limitsOf(input: BrokerConfigInput['limits'] = {}): LimitsConfig {
  return BrokerConfigSchema.parse({ stateDir: 'unused', limits: input }).limits;
}

/** An app wired like `buildApp`: problem handlers, limits, then metrics, then routes. */
async function appWith(metrics: BrokerMetrics, limits: LimitsConfig = limitsOf()): Promise<FastifyInstance> {
  const app = Fastify();
  app.setErrorHandler(problemErrorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.register(brokerLimits, { limits, observer: metrics });
  app.register(brokerMetricsPlugin, { metrics });
  app.post(ROUTES.challenge, async () => ({ ok: true }));
  app.post(ROUTES.attest, async (request, reply) => {
    const body = request.body as { allow?: boolean };
    if (body.allow) {
      request.decision = { action: 'attest', outcome: 'allow', tee: 'tdx' };
      return { ok: true };
    }
    return reply.code(403).send({ denied: true });
  });
  app.post<{ Params: { keyId: string } }>('/v1/keys/:keyId/release', async (request) => {
    // A route that sets a decision with hostile values: they must not become labels.
    request.decision = { action: 'release', outcome: 'allow', tee: request.headers['x-tee'] as string };
    return { ok: true };
  });
  app.get(ROUTES.adminKeys, async (_request, reply) => reply.code(401).send({}));
  await app.ready();
  return app;
}

async function scrape(url: string): Promise<{ status: number; type: string | null; text: string }> {
  const res = await fetch(url);
  return { status: res.status, type: res.headers.get('content-type'), text: await res.text() };
}

/** The value of one sample line `name{labels} value`, labels given in registration order. */
function sample(text: string, name: string, labels: Record<string, string>): number | undefined {
  const l = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  const line = text.split('\n').find((x) => x.startsWith(`${name}{${l}} `));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

const closers: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of closers.splice(0).reverse()) await c();
});

async function setup(limits?: LimitsConfig): Promise<{ app: FastifyInstance; metrics: BrokerMetrics; server: MetricsServer }> {
  const metrics = new BrokerMetrics();
  const app = await appWith(metrics, limits);
  closers.push(() => app.close());
  const server = await startMetricsServer(metrics, { host: '127.0.0.1', port: 0 });
  closers.push(() => server.close());
  return { app, metrics, server };
}

describe('broker metrics, scraped over real HTTP on their own port', () => {
  it('counts decisions by action, outcome and tee, with route-set and derived decisions', async () => {
    const { app, server } = await setup();
    await app.inject({ method: 'POST', url: ROUTES.attest, payload: { allow: true } });
    await app.inject({ method: 'POST', url: ROUTES.attest, payload: { evidence: { tee: 'tdx' } } });
    await app.inject({ method: 'POST', url: ROUTES.attest, payload: { evidence: { report: 'x' } } });
    await app.inject({ method: 'POST', url: ROUTES.attest, payload: { evidence: { tee: SECRET } } });
    await app.inject({ method: 'POST', url: '/v1/keys/k1/release', payload: {}, headers: { 'x-tee': 'sev-snp' } });
    await app.inject({ method: 'POST', url: '/v1/keys/k1/release', payload: {}, headers: { 'x-tee': SECRET } });
    await app.inject({ method: 'GET', url: ROUTES.adminKeys });
    await app.inject({ method: 'POST', url: ROUTES.challenge });
    const m = await scrape(server.url);
    expect(m.status).toBe(200);
    expect(m.type).toContain('text/plain');
    const d = (action: string, outcome: string, tee: string) => sample(m.text, 'cir_broker_decisions_total', { action, outcome, tee });
    expect(d('attest', 'allow', 'tdx')).toBe(1);
    expect(d('attest', 'deny', 'tdx')).toBe(1);
    // No `tdx` tee field: the default verifier treats it as SEV-SNP, and so do the metrics.
    expect(d('attest', 'deny', 'sev-snp')).toBe(2);
    expect(d('release', 'allow', 'sev-snp')).toBe(1);
    expect(d('release', 'allow', 'unknown')).toBe(1);
    expect(d('admin', 'deny', 'unknown')).toBe(1);
    // The challenge decides nothing.
    expect(m.text).not.toContain('action="challenge"');
  });

  it('labels requests by route template and status class, never by raw URL or client text', async () => {
    const { app, server } = await setup();
    await app.inject({ method: 'POST', url: `/v1/keys/${SECRET}/release`, payload: {}, headers: { authorization: `Bearer ${SECRET}`, 'x-tee': SECRET } });
    await app.inject({ method: 'GET', url: `/v1/${SECRET}?token=${SECRET}` });
    await app.inject({ method: 'PROPFIND' as 'GET', url: `/${SECRET}` });
    const m = await scrape(server.url);
    expect(sample(m.text, 'cir_broker_http_requests_total', { route: '/v1/keys/:keyId/release', method: 'POST', status_class: '2xx' })).toBe(1);
    expect(sample(m.text, 'cir_broker_http_requests_total', { route: '(unmatched)', method: 'GET', status_class: '4xx' })).toBe(1);
    expect(m.text).not.toContain(SECRET);
    expect(m.text).toMatch(/cir_broker_http_request_seconds_count\{group="release"\} 1/);
  });

  it('counts rate-limit hits by group and scope, and overload rejections by reason', async () => {
    const { app, metrics, server } = await setup(limitsOf({ rate: { attest: { perIp: 1, perIdentity: 100 } } }));
    await app.inject({ method: 'POST', url: ROUTES.challenge });
    await app.inject({ method: 'POST', url: ROUTES.challenge });
    await app.inject({ method: 'POST', url: ROUTES.challenge });
    metrics.overloaded('verifier-queue-full');
    const m = await scrape(server.url);
    expect(sample(m.text, 'cir_broker_rate_limited_total', { group: 'attest', scope: 'ip' })).toBe(2);
    expect(sample(m.text, 'cir_broker_overload_rejections_total', { reason: 'verifier-queue-full' })).toBe(1);
    expect(sample(m.text, 'cir_broker_http_requests_total', { route: ROUTES.challenge, method: 'POST', status_class: '4xx' })).toBe(2);
  });

  it('times verifications by tee and outcome, and reports the verifier gate', async () => {
    const { metrics, server } = await setup();
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const inner = {
      calls: 0,
      async verify(evidence: unknown) {
        inner.calls++;
        const e = evidence as { tee?: string; fail?: string };
        if (e.fail === 'hold') await held;
        if (e.fail === 'bad') throw new CirError('ERR_ATT_X', { category: 'bad-input', message: 'x' });
        if (e.fail === 'crash') throw new TypeError('boom');
        return e.tee === 'tdx' ? makeTdxClaims() : makeClaims();
      },
    };
    const gate = limitVerifier(metrics.instrumentVerifier(inner), { maxConcurrent: 1, maxQueued: 4, maxQueueWaitMs: 60_000 });
    metrics.watchVerifierGate(gate);
    const o = { now: new Date(0), expectedReportData: new Uint8Array(64) };
    await gate.verify({ tee: 'sev-snp' }, o);
    await gate.verify({ tee: 'tdx' }, o);
    await expect(gate.verify({ tee: 'tdx', fail: 'bad' }, o)).rejects.toThrow();
    await expect(gate.verify({ fail: 'crash' }, o)).rejects.toThrow();
    const holding = gate.verify({ fail: 'hold' }, o);
    const queued = gate.verify({ tee: 'tdx' }, o);
    await new Promise((r) => setImmediate(r));
    let m = await scrape(server.url);
    const count = (tee: string, outcome: string) => sample(m.text, 'cir_broker_verification_seconds_count', { tee, outcome });
    expect(count('sev-snp', 'ok')).toBe(1);
    expect(count('tdx', 'ok')).toBe(1);
    expect(count('tdx', 'malformed')).toBe(1);
    expect(count('sev-snp', 'error')).toBe(1);
    expect(sample(m.text, 'cir_broker_verifications', { state: 'running' })).toBe(1);
    expect(sample(m.text, 'cir_broker_verifications', { state: 'queued' })).toBe(1);
    release();
    await holding;
    await queued;
    m = await scrape(server.url);
    expect(sample(m.text, 'cir_broker_verifications', { state: 'running' })).toBe(0);
    expect(count('tdx', 'ok')).toBe(2);
    expect(inner.calls).toBe(6);
  });

  it('uses its own registry, serves only GET/HEAD /metrics, and includes process metrics', async () => {
    const { server } = await setup();
    const m = await scrape(server.url);
    expect(m.text).toContain('cir_broker_process_cpu_user_seconds_total');
    expect(await globalRegistry.metrics()).not.toContain('cir_broker_');
    const base = server.url.replace(/\/metrics$/, '');
    expect((await fetch(`${base}/`)).status).toBe(404);
    expect((await fetch(`${base}/metrics/x`)).status).toBe(404);
    const post = await fetch(server.url, { method: 'POST' });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toBe('GET, HEAD');
    const head = await fetch(server.url, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(await head.text()).toBe('');
  });

  it('two brokers in one process keep separate metrics', async () => {
    const a = await setup();
    const b = await setup();
    await a.app.inject({ method: 'POST', url: ROUTES.attest, payload: { allow: true } });
    expect(sample((await scrape(a.server.url)).text, 'cir_broker_decisions_total', { action: 'attest', outcome: 'allow', tee: 'tdx' })).toBe(1);
    expect(sample((await scrape(b.server.url)).text, 'cir_broker_decisions_total', { action: 'attest', outcome: 'allow', tee: 'tdx' })).toBeUndefined();
  });
});

describe('decision labels stay in bounded sets', () => {
  it('recordDecision drops unknown actions and outcomes and maps unknown tees to `unknown`', async () => {
    const metrics = new BrokerMetrics({ processMetrics: false });
    metrics.recordDecision({ action: SECRET as 'attest', outcome: 'allow', tee: 'tdx' });
    metrics.recordDecision({ action: 'attest', outcome: SECRET as 'allow', tee: 'tdx' });
    metrics.recordDecision({ action: 'renew', outcome: 'error', tee: SECRET });
    const text = await metrics.registry.metrics();
    expect(text).not.toContain(SECRET);
    expect(sample(text, 'cir_broker_decisions_total', { action: 'renew', outcome: 'error', tee: 'unknown' })).toBe(1);
  });

  it('decisionOf: any route, status and body give a decision from the fixed sets, or none', () => {
    fc.assert(
      fc.property(fc.option(fc.string(), { nil: undefined }), fc.integer({ min: 100, max: 599 }), fc.anything(), (route, status, body) => {
        const d = decisionOf(route, status, body);
        if (d === undefined) return;
        expect(['attest', 'release', 'renew', 'admin']).toContain(d.action);
        expect(['allow', 'deny', 'limited', 'error']).toContain(d.outcome);
        expect(['sev-snp', 'tdx', 'unknown']).toContain(d.tee);
      }),
    );
    expect(decisionOf(ROUTES.challenge, 200, {})).toBeUndefined();
    expect(decisionOf(ROUTES.jwks, 200, {})).toBeUndefined();
    expect(decisionOf('/v1/leases/:leaseId/renew', 429, {})).toEqual({ action: 'renew', outcome: 'limited', tee: 'unknown' });
    expect(decisionOf('/v1/tenants/:tenant/keys/:keyId/release', 503, {})).toEqual({ action: 'release', outcome: 'error', tee: 'unknown' });
  });
});

describe('startBroker with config.metrics (real HTTP, simulated SEV-SNP)', () => {
  it('serves metrics on their own port, records a real attestation, and stops with the broker', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-kms-metrics-'));
    closers.push(() => rm(dir, { recursive: true, force: true }));
    const sim = await SimulatedSnp.open(path.join(dir, 'sim'));
    const arkFile = path.join(dir, 'ark.pem');
    await writeFile(arkFile, sim.arkPem);
    const env = { NODE_ENV: 'development' };
    const config = loadBrokerConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        stateDir: path.join(dir, 'broker'),
        attestation: { simulatedRootFile: arkFile, allowSimulated: true },
        metrics: { host: '127.0.0.1', port: 0 },
      },
      { env },
    );
    const broker = await startBroker(config, { logger: captureLogs().logger, env });
    closers.push(() => broker.close());
    expect(broker.metricsUrl).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/metrics$/);
    expect(new URL(broker.metricsUrl!).port).not.toBe(new URL(broker.url).port);

    const post = async (route: string, body: unknown) =>
      fetch(new URL(route, broker.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const { nonce } = (await (await post(ROUTES.challenge, {})).json()) as { nonce: string };
    const kp = await generateHpkeKeyPair();
    const evidence = await sim.provider({ measurement: Buffer.alloc(48, 1) }).collect(kmsReportData(Buffer.from(nonce, 'base64url'), kp.publicKey));
    const res = await post(ROUTES.attest, { nonce, evidence, publicKey: Buffer.from(kp.publicKey).toString('base64url') });
    expect(res.status).toBe(200);

    const m = await scrape(broker.metricsUrl!);
    expect(sample(m.text, 'cir_broker_decisions_total', { action: 'attest', outcome: 'allow', tee: 'sev-snp' })).toBe(1);
    expect(sample(m.text, 'cir_broker_verification_seconds_count', { tee: 'sev-snp', outcome: 'ok' })).toBe(1);
    expect(sample(m.text, 'cir_broker_verifications', { state: 'running' })).toBe(0);
    expect(sample(m.text, 'cir_broker_http_requests_total', { route: ROUTES.challenge, method: 'POST', status_class: '2xx' })).toBe(1);
    await broker.close();
    await expect(fetch(broker.metricsUrl!)).rejects.toThrow();
  }, 120_000);
});
