import { connect, type Socket } from 'node:net';
import { Readable } from 'node:stream';
import Fastify, { type FastifyInstance } from 'fastify';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { CirError } from '../common/errors.js';
import { KmsError } from './codes.js';
import { BrokerConfigSchema, type BrokerConfigInput } from './config.js';
import {
  ATTEST_ENVELOPE_BYTES,
  brokerLimits,
  enforceIdentityLimit,
  limitVerifier,
  routeGroupOf,
  ROUTE_GROUPS,
  type LimitObserver,
  type LimitsConfig,
} from './limits.js';
import { notFoundHandler, problemErrorHandler } from './problem.js';
import { PROBLEM_CONTENT_TYPE, ProblemSchema, ROUTES } from './protocol.js';
import type { BrokerClaims } from './policy.js';
import { makeClaims } from './testdata/harness.js';

function limitsOf(input: BrokerConfigInput['limits'] = {}): LimitsConfig {
  return BrokerConfigSchema.parse({ stateDir: 'unused', limits: input }).limits;
}

function recorder(): LimitObserver & { events: string[] } {
  const events: string[] = [];
  return {
    events,
    rateLimited: (group, scope) => events.push(`rate:${group}:${scope}`),
    overloaded: (reason) => events.push(`overload:${reason}`),
  };
}

/**
 * An app set up like `buildApp` (problem handlers, the limits plugin first), with routes at
 * the broker's real templates, and an admin-like child plugin whose `onRequest` hook
 * authenticates from `x-test-principal`.
 */
async function appWith(limits: LimitsConfig, observer?: LimitObserver): Promise<FastifyInstance> {
  const app = Fastify({ bodyLimit: 1024 * 1024 });
  app.setErrorHandler(problemErrorHandler);
  app.setNotFoundHandler(notFoundHandler);
  app.register(brokerLimits, { limits, ...(observer ? { observer } : {}) });
  app.get(ROUTES.health, async () => ({ status: 'ok' }));
  app.get(ROUTES.jwks, async () => ({ keys: [] }));
  app.post(ROUTES.challenge, async () => ({ ok: true }));
  app.post(ROUTES.attest, async (request) => ({ bytes: JSON.stringify(request.body).length }));
  app.post<{ Params: { keyId: string } }>('/v1/keys/:keyId/release', async (request) => {
    // Authenticates inside the handler, as the release route does.
    const p = request.headers['x-test-principal'];
    if (typeof p === 'string') {
      request.principal = `token:${p}`;
      await enforceIdentityLimit(request);
    }
    return { ok: true };
  });
  app.register(async (admin) => {
    admin.addHook('onRequest', async (request) => {
      const p = request.headers['x-test-principal'];
      if (typeof p === 'string') request.principal = `admin:${p}`;
    });
    admin.get(ROUTES.adminKeys, async (request) => ({ principal: request.principal ?? null }));
  });
  await app.ready();
  return app;
}

type Res = Awaited<ReturnType<FastifyInstance['inject']>>;

function expectProblem(res: Res, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  expect(String(res.headers['content-type'])).toContain(PROBLEM_CONTENT_TYPE);
  const p = ProblemSchema.parse(res.json());
  expect(p).toMatchObject({ status, code, type: `urn:cir:error:${code}` });
  return p;
}

const apps: FastifyInstance[] = [];
afterEach(async () => {
  for (const a of apps.splice(0)) await a.close();
});
async function track(app: Promise<FastifyInstance>): Promise<FastifyInstance> {
  const a = await app;
  apps.push(a);
  return a;
}

describe('routeGroupOf', () => {
  it.each([
    [ROUTES.challenge, 'attest'],
    [ROUTES.attest, 'attest'],
    ['/v1/keys/:keyId/release', 'release'],
    ['/v1/tenants/:tenant/keys/:keyId/release', 'release'],
    ['/v1/leases/:leaseId/renew', 'release'],
    ['/v1/leases/renew', 'release'],
    [ROUTES.adminKeys, 'admin'],
    ['/v1/admin/keys/:keyId/policy', 'admin'],
    ['/v1/tenants/:tenant/admin/identities', 'admin'],
    [ROUTES.jwks, 'other'],
    [ROUTES.health, 'health'],
    [undefined, 'other'],
  ] as const)('%s -> %s', (route, group) => {
    expect(routeGroupOf(route)).toBe(group);
  });

  it('maps any string to a known group without throwing', () => {
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect([...ROUTE_GROUPS, 'health']).toContain(routeGroupOf(s));
      }),
    );
  });
});

describe('rate limits', () => {
  it('limits a client address per route group with 429, Retry-After and a typed problem', async () => {
    const obs = recorder();
    const app = await track(appWith(limitsOf({ rate: { windowSeconds: 30, attest: { perIp: 3, perIdentity: 100 } } }), obs));
    for (let i = 0; i < 3; i++) expect((await app.inject({ method: 'POST', url: ROUTES.challenge })).statusCode).toBe(200);
    const res = await app.inject({ method: 'POST', url: ROUTES.challenge });
    const p = expectProblem(res, 429, 'ERR_KMS_RATE_LIMITED');
    const retry = Number(res.headers['retry-after']);
    expect(retry).toBeGreaterThanOrEqual(1);
    expect(retry).toBeLessThanOrEqual(30);
    expect(p.detail).toBe('attest (ip): 3 per 30s');
    expect(p.detail).not.toContain('127.0.0.1');
    // The attest route shares the group's counter; another group does not.
    expectProblem(await app.inject({ method: 'POST', url: ROUTES.attest, payload: {} }), 429, 'ERR_KMS_RATE_LIMITED');
    expect((await app.inject({ method: 'GET', url: ROUTES.jwks })).statusCode).toBe(200);
    // Another address has its own counter.
    expect((await app.inject({ method: 'POST', url: ROUTES.challenge, remoteAddress: '192.0.2.7' })).statusCode).toBe(200);
    expect(obs.events).toEqual(['rate:attest:ip', 'rate:attest:ip']);
  });

  it('never limits the health route', async () => {
    const app = await track(appWith(limitsOf({ rate: { other: { perIp: 1, perIdentity: 1 } } })));
    for (let i = 0; i < 5; i++) expect((await app.inject({ method: 'GET', url: ROUTES.health })).statusCode).toBe(200);
  });

  it('counts unknown routes (404s) in the `other` group', async () => {
    const app = await track(appWith(limitsOf({ rate: { other: { perIp: 2, perIdentity: 100 } } })));
    expectProblem(await app.inject({ method: 'GET', url: '/nope/1' }), 404, 'ERR_KMS_NOT_FOUND');
    expectProblem(await app.inject({ method: 'GET', url: '/nope/2' }), 404, 'ERR_KMS_NOT_FOUND');
    expectProblem(await app.inject({ method: 'GET', url: '/nope/3' }), 429, 'ERR_KMS_RATE_LIMITED');
  });

  it('counts an IPv6 client by its /64 and an IPv4-mapped address as IPv4', async () => {
    const app = await track(appWith(limitsOf({ rate: { attest: { perIp: 2, perIdentity: 100 } } })));
    const hit = (remoteAddress: string) => app.inject({ method: 'POST', url: ROUTES.challenge, remoteAddress });
    expect((await hit('2001:db8:1:2::1')).statusCode).toBe(200);
    expect((await hit('2001:db8:1:2:ffff::9')).statusCode).toBe(200);
    expectProblem(await hit('2001:db8:1:2:aaaa:bbbb:cccc:dddd'), 429, 'ERR_KMS_RATE_LIMITED');
    expect((await hit('2001:db8:1:3::1')).statusCode).toBe(200);
    expect((await hit('::ffff:198.51.100.4')).statusCode).toBe(200);
    expect((await hit('198.51.100.4')).statusCode).toBe(200);
    expectProblem(await hit('::ffff:198.51.100.4'), 429, 'ERR_KMS_RATE_LIMITED');
  });

  it('limits per identity after authentication: the principal an onRequest auth hook sets is the key', async () => {
    const obs = recorder();
    const app = await track(appWith(limitsOf({ rate: { admin: { perIp: 100, perIdentity: 2 } } }), obs));
    const as = (who: string) => app.inject({ method: 'GET', url: ROUTES.adminKeys, headers: { 'x-test-principal': who } });
    const first = await as('alice');
    expect(first.json()).toEqual({ principal: 'admin:alice' });
    expect((await as('alice')).statusCode).toBe(200);
    const p = expectProblem(await as('alice'), 429, 'ERR_KMS_RATE_LIMITED');
    expect(p.detail).toBe('admin (identity): 2 per 60s');
    expect(p.detail).not.toContain('alice');
    // Same address, another identity: its own budget.
    expect((await as('bob')).statusCode).toBe(200);
    expect(obs.events).toEqual(['rate:admin:identity']);
  });

  it('unauthenticated groups fall back to the client address as the identity', async () => {
    const app = await track(appWith(limitsOf({ rate: { attest: { perIp: 100, perIdentity: 1 } } })));
    expect((await app.inject({ method: 'POST', url: ROUTES.challenge })).statusCode).toBe(200);
    const p = expectProblem(await app.inject({ method: 'POST', url: ROUTES.challenge }), 429, 'ERR_KMS_RATE_LIMITED');
    expect(p.detail).toBe('attest (identity): 1 per 60s');
    expect((await app.inject({ method: 'POST', url: ROUTES.challenge, remoteAddress: '192.0.2.9' })).statusCode).toBe(200);
  });

  it('authenticated groups do not spend an identity budget on requests without a principal', async () => {
    const app = await track(appWith(limitsOf({ rate: { admin: { perIp: 100, perIdentity: 1 }, release: { perIp: 100, perIdentity: 1 } } })));
    for (let i = 0; i < 3; i++) {
      expect((await app.inject({ method: 'GET', url: ROUTES.adminKeys })).statusCode).toBe(200);
      expect((await app.inject({ method: 'POST', url: '/v1/keys/k1/release', payload: {} })).statusCode).toBe(200);
    }
  });

  it('enforceIdentityLimit counts a handler-authenticated request under its principal', async () => {
    const app = await track(appWith(limitsOf({ rate: { release: { perIp: 100, perIdentity: 2 } } })));
    const rel = (who: string) =>
      app.inject({ method: 'POST', url: '/v1/keys/k1/release', payload: {}, headers: { 'x-test-principal': who } });
    expect((await rel('t1')).statusCode).toBe(200);
    expect((await rel('t1')).statusCode).toBe(200);
    expectProblem(await rel('t1'), 429, 'ERR_KMS_RATE_LIMITED');
    expect((await rel('t2')).statusCode).toBe(200);
  });

  it('refuses hostile or out-of-range limit settings in the config', () => {
    expect(() => limitsOf({ rate: { attest: { perIp: 0 } } } as never)).toThrow();
    expect(() => limitsOf({ rate: { bogus: 1 } } as never)).toThrow();
    expect(() => limitsOf({ timeouts: { headersTimeoutMs: 20_000, requestTimeoutMs: 10_000 } })).toThrow();
    expect(() => limitsOf({ maxEvidenceBytes: 100 })).toThrow();
  });
});

describe('overload', () => {
  it('sheds with 429 ERR_KMS_OVERLOADED and Retry-After under pressure; health still answers', async () => {
    const obs = recorder();
    // Any vitest worker uses more than 1 MiB of heap: always "under pressure".
    const app = await track(
      appWith(limitsOf({ overload: { maxEventLoopDelayMs: 0, maxHeapUsedBytes: 1024 * 1024, sampleIntervalMs: 100, retryAfterSeconds: 7 } }), obs),
    );
    await new Promise((r) => setTimeout(r, 250));
    const res = await app.inject({ method: 'POST', url: ROUTES.challenge });
    const p = expectProblem(res, 429, 'ERR_KMS_OVERLOADED');
    expect(res.headers['retry-after']).toBe('7');
    expect(p.detail).toBe('heap');
    expect((await app.inject({ method: 'GET', url: ROUTES.health })).statusCode).toBe(200);
    expect(obs.events).toEqual(['overload:heap']);
  });

  it('does not shed with the default thresholds', async () => {
    const app = await track(appWith(limitsOf({ overload: { sampleIntervalMs: 100 } })));
    await new Promise((r) => setTimeout(r, 250));
    expect((await app.inject({ method: 'POST', url: ROUTES.challenge })).statusCode).toBe(200);
  });
});

describe('evidence size', () => {
  const maxEvidenceBytes = 8192;
  const limit = maxEvidenceBytes + ATTEST_ENVELOPE_BYTES;
  const body = (n: number) => {
    // A JSON body of exactly n bytes.
    const head = '{"evidence":{"report":"';
    const tail = '"}}';
    return head + 'A'.repeat(n - head.length - tail.length) + tail;
  };

  it('refuses an attest body over maxEvidenceBytes + envelope by Content-Length with 413, before parsing', async () => {
    const app = await track(appWith(limitsOf({ maxEvidenceBytes })));
    const ok = await app.inject({ method: 'POST', url: ROUTES.attest, headers: { 'content-type': 'application/json' }, payload: body(limit) });
    expect(ok.statusCode).toBe(200);
    const big = await app.inject({ method: 'POST', url: ROUTES.attest, headers: { 'content-type': 'application/json' }, payload: body(limit + 1) });
    const p = expectProblem(big, 413, 'ERR_KMS_EVIDENCE_TOO_LARGE');
    expect(p.detail).toBe(`limit ${maxEvidenceBytes} bytes of evidence`);
    // Other routes keep the general bodyLimit.
    expect((await app.inject({ method: 'POST', url: ROUTES.challenge, headers: { 'content-type': 'application/json' }, payload: body(limit * 4) })).statusCode).toBe(200);
  });

  it('counts the bytes of a chunked body: accepted iff at most the limit, however it is split', async () => {
    const app = await track(appWith(limitsOf({ maxEvidenceBytes })));
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: limit - 64, max: limit + 64 }), fc.array(fc.integer({ min: 1, max: 4096 }), { maxLength: 8 }), async (n, cuts) => {
        const bytes = Buffer.from(body(n));
        const chunks: Buffer[] = [];
        let at = 0;
        for (const c of cuts) {
          if (at >= bytes.length) break;
          chunks.push(bytes.subarray(at, at + c));
          at += c;
        }
        if (at < bytes.length) chunks.push(bytes.subarray(at));
        const res = await app.inject({ method: 'POST', url: ROUTES.attest, headers: { 'content-type': 'application/json' }, payload: Readable.from(chunks) });
        if (n <= limit) expect(res.statusCode).toBe(200);
        else expectProblem(res, 413, 'ERR_KMS_EVIDENCE_TOO_LARGE');
      }),
      { numRuns: 40 },
    );
  });

  it('defaults to a limit that fits a 64 KiB TDX quote in base64', () => {
    expect(limitsOf().maxEvidenceBytes).toBeGreaterThanOrEqual(Math.ceil((64 * 1024) / 3) * 4 + 64);
  });
});

describe('server timeouts (real HTTP)', () => {
  async function listening(timeouts: Partial<LimitsConfig['timeouts']>): Promise<{ app: FastifyInstance; port: number }> {
    const app = await track(appWith(limitsOf({ timeouts: { checkIntervalMs: 50, ...timeouts } })));
    await app.listen({ host: '127.0.0.1', port: 0 });
    const addr = app.server.address();
    return { app, port: typeof addr === 'object' && addr ? addr.port : 0 };
  }

  /** Writes `parts` one every `everyMs` until the server closes the socket; resolves with what it answered. */
  function trickle(port: number, parts: string[], everyMs: number): Promise<{ closedEarly: boolean; answer: string }> {
    return new Promise((resolve, reject) => {
      const s: Socket = connect(port, '127.0.0.1');
      let answer = '';
      let i = 0;
      let timer: NodeJS.Timeout | undefined;
      s.on('data', (d) => (answer += d.toString('latin1')));
      s.on('error', () => undefined);
      s.on('close', () => {
        clearInterval(timer);
        resolve({ closedEarly: i < parts.length, answer });
      });
      s.on('connect', () => {
        timer = setInterval(() => {
          if (i >= parts.length) {
            clearInterval(timer);
            s.end();
            return;
          }
          s.write(parts[i++]!);
        }, everyMs);
      });
      setTimeout(() => reject(new Error('never cut off')), 30_000).unref();
    });
  }

  it('cuts off a client that trickles its headers (slowloris) with 408', async () => {
    const { port } = await listening({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    // 200 header lines, one every 50 ms: 10 s if the server waited for all of them.
    const parts = ['POST /v1/attest/challenge HTTP/1.1\r\nHost: x\r\n', ...Array.from({ length: 200 }, (_, i) => `X-Slow-${i}: 1\r\n`)];
    const r = await trickle(port, parts, 50);
    expect(r.closedEarly).toBe(true);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('cuts off a client that trickles its body', async () => {
    const { port } = await listening({ headersTimeoutMs: 300, requestTimeoutMs: 600 });
    const parts = [
      `POST ${ROUTES.attest} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 400\r\n\r\n`,
      ...Array.from({ length: 200 }, () => ' '),
    ];
    const r = await trickle(port, parts, 50);
    expect(r.closedEarly).toBe(true);
    expect(r.answer).toMatch(/^HTTP\/1\.1 408 /);
  });

  it('sets the node server timeouts from the configuration', async () => {
    const { app } = await listening({ headersTimeoutMs: 1234, requestTimeoutMs: 5678, keepAliveTimeoutMs: 4321, idleTimeoutMs: 9999, maxRequestsPerSocket: 7, maxConnections: 11 });
    const s = app.server;
    expect([s.headersTimeout, s.requestTimeout, s.keepAliveTimeout, s.timeout, s.maxRequestsPerSocket, s.maxConnections]).toEqual([1234, 5678, 4321, 9999, 7, 11]);
  });
});

describe('limitVerifier', () => {
  interface Pending {
    evidence: unknown;
    resolve: (c: BrokerClaims) => void;
    reject: (e: unknown) => void;
  }
  function controllable() {
    const pending: Pending[] = [];
    let active = 0;
    let maxActive = 0;
    return {
      pending,
      get maxActive() {
        return maxActive;
      },
      verify(evidence: unknown): Promise<BrokerClaims> {
        active++;
        maxActive = Math.max(maxActive, active);
        return new Promise<BrokerClaims>((resolve, reject) => {
          pending.push({
            evidence,
            resolve: (c) => {
              active--;
              resolve(c);
            },
            reject: (e) => {
              active--;
              reject(e);
            },
          });
        });
      },
    };
  }
  const o = { now: new Date(0), expectedReportData: new Uint8Array(64) };
  const tick = () => new Promise((r) => setImmediate(r));

  it('runs at most maxConcurrent, queues maxQueued in order, refuses the rest with ERR_KMS_VERIFIER_BUSY', async () => {
    const inner = controllable();
    const obs = recorder();
    const gate = limitVerifier(inner, { maxConcurrent: 1, maxQueued: 1, maxQueueWaitMs: 60_000, retryAfterSeconds: 3, observer: obs });
    const a = gate.verify('a', o);
    const b = gate.verify('b', o);
    await tick();
    expect(gate.stats()).toEqual({ running: 1, queued: 1 });
    const c = gate.verify('c', o);
    await expect(c).rejects.toMatchObject({ code: 'ERR_KMS_VERIFIER_BUSY', category: 'overload', details: { retryAfterSeconds: 3 } });
    expect(inner.pending.map((p) => p.evidence)).toEqual(['a']);
    inner.pending[0]!.resolve(makeClaims());
    await expect(a).resolves.toMatchObject({ tee: 'sev-snp' });
    await tick();
    expect(inner.pending.map((p) => p.evidence)).toEqual(['a', 'b']);
    inner.pending[1]!.reject(new CirError('ERR_ATT_X', { category: 'verification', message: 'x' }));
    await expect(b).rejects.toMatchObject({ code: 'ERR_ATT_X' });
    expect(gate.stats()).toEqual({ running: 0, queued: 0 });
    expect(obs.events).toEqual(['overload:verifier-queue-full']);
  });

  it('refuses a waiter after maxQueueWaitMs without ever running it', async () => {
    const inner = controllable();
    const gate = limitVerifier(inner, { maxConcurrent: 1, maxQueued: 4, maxQueueWaitMs: 20 });
    const a = gate.verify('a', o);
    const b = gate.verify('b', o);
    await expect(b).rejects.toMatchObject({ code: 'ERR_KMS_VERIFIER_BUSY', detail: 'waited 20 ms' });
    expect(gate.stats()).toEqual({ running: 1, queued: 0 });
    inner.pending[0]!.resolve(makeClaims());
    await a;
    await tick();
    expect(inner.pending.map((p) => p.evidence)).toEqual(['a']);
    expect(gate.stats()).toEqual({ running: 0, queued: 0 });
  });

  it('maxQueued 0 refuses whatever finds every slot taken', async () => {
    const inner = controllable();
    const gate = limitVerifier(inner, { maxConcurrent: 2, maxQueued: 0, maxQueueWaitMs: 1000 });
    void gate.verify(1, o);
    void gate.verify(2, o);
    await expect(gate.verify(3, o)).rejects.toBeInstanceOf(KmsError);
    for (const p of inner.pending) p.resolve(makeClaims());
  });

  it('never exceeds maxConcurrent or maxQueued, and every call settles (random schedules)', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 1, max: 4 }),
        fc.integer({ min: 0, max: 6 }),
        fc.array(fc.oneof(fc.constant('call' as const), fc.constant('ok' as const), fc.constant('fail' as const)), { maxLength: 60 }),
        async (maxConcurrent, maxQueued, steps) => {
          const inner = controllable();
          const gate = limitVerifier(inner, { maxConcurrent, maxQueued, maxQueueWaitMs: 60_000 });
          const calls: Promise<unknown>[] = [];
          let done = 0;
          for (const s of steps) {
            if (s === 'call') calls.push(gate.verify(calls.length, o).then(() => done++, () => done++));
            else {
              const p = inner.pending.find((x) => !(x as { settled?: boolean }).settled);
              if (p) {
                (p as { settled?: boolean }).settled = true;
                if (s === 'ok') p.resolve(makeClaims());
                else p.reject(new Error('boom'));
              }
            }
            await tick();
            const st = gate.stats();
            expect(st.running).toBeLessThanOrEqual(maxConcurrent);
            expect(st.queued).toBeLessThanOrEqual(maxQueued);
          }
          // Drain: finish everything still pending, including what the queue hands over.
          for (let guard = 0; guard < 200 && done < calls.length; guard++) {
            for (const p of inner.pending) {
              if (!(p as { settled?: boolean }).settled) {
                (p as { settled?: boolean }).settled = true;
                p.resolve(makeClaims());
              }
            }
            await tick();
          }
          expect(done).toBe(calls.length);
          expect(inner.maxActive).toBeLessThanOrEqual(maxConcurrent);
          expect(gate.stats()).toEqual({ running: 0, queued: 0 });
        },
      ),
      { numRuns: 60 },
    );
  });
});
