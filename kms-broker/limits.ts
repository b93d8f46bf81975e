/**
 * Abuse limits of the key broker: per-IP and per-identity rate limits per route group
 * (`@fastify/rate-limit`), load shedding (`@fastify/under-pressure`), server timeouts
 * against slow clients, a bound on evidence size, and a concurrency gate in front of the
 * evidence verifier.
 *
 * Every refusal is a typed `KmsError` of category `overload` (429 with `Retry-After`) or
 * `ERR_KMS_EVIDENCE_TOO_LARGE` (413), so the app's problem handler turns it into an
 * RFC 7807 document like any other error.
 */
import type { Server } from 'node:http';
import { Transform, type TransformCallback } from 'node:stream';
import { getHeapStatistics } from 'node:v8';
import fastifyRateLimit from '@fastify/rate-limit';
import fastifyUnderPressure from '@fastify/under-pressure';
import type { FastifyInstance, FastifyPluginAsync, FastifyRequest } from 'fastify';
import type { EvidenceVerifier } from './app.js';
import { challengeClientKey } from './challenges.js';
import { KmsError } from './codes.js';
import type { BrokerConfig } from './config.js';
import { ROUTES } from './protocol.js';
import type { BrokerClaims } from './policy.js';

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * Who is calling, once authenticated: e.g. `admin:<identityId>` or `token:<keyHash prefix>`.
     * Set by the authentication step of a route (an `onRequest` hook, or the handler before
     * it calls `enforceIdentityLimit`). The per-identity rate limit keys on it when present,
     * on the client address otherwise. Never a secret: it becomes a rate-limiter key.
     */
    principal?: string;
  }
}

export type LimitsConfig = BrokerConfig['limits'];

/** Route groups with their own rate limits. `health` is never limited nor shed. */
export type RouteGroup = 'attest' | 'release' | 'admin' | 'other';
export const ROUTE_GROUPS: readonly RouteGroup[] = ['attest', 'release', 'admin', 'other'];

/** Which limiter refused: the per-address one or the per-identity one. */
export type LimitScope = 'ip' | 'identity';

/** Why a request was shed: an under-pressure measure, or the verifier gate. */
export type OverloadReason =
  | 'event-loop-delay'
  | 'heap'
  | 'rss'
  | 'event-loop-utilization'
  | 'unhealthy'
  | 'verifier-queue-full'
  | 'verifier-queue-timeout';

/** Told about every refusal, e.g. by the metrics (metrics.ts `BrokerMetrics`). */
export interface LimitObserver {
  rateLimited(group: RouteGroup, scope: LimitScope): void;
  overloaded(reason: OverloadReason): void;
}

/** Route groups whose routes authenticate their caller (so have a `principal`). */
const AUTHENTICATED_GROUPS: ReadonlySet<RouteGroup> = new Set(['release', 'admin']);

/** Bytes of an attest body allowed on top of `maxEvidenceBytes`: nonce, publicKey, tenant, JSON punctuation. */
export const ATTEST_ENVELOPE_BYTES = 1024;

/**
 * The rate-limit group of a route, from its template (`request.routeOptions.url`, never the
 * raw URL): any `admin` path segment -> admin; `/v1/attest...` -> attest; a last segment
 * `release` or `renew`, or a `leases` segment -> release; `ROUTES.health` -> health;
 * anything else, unmatched routes included (undefined) -> other.
 */
export function routeGroupOf(routeUrl: string | undefined): RouteGroup | 'health' {
  if (routeUrl === undefined) return 'other';
  if (routeUrl === ROUTES.health) return 'health';
  const segments = routeUrl.split('/');
  if (segments.includes('admin')) return 'admin';
  if (segments[1] === 'v1' && segments[2] === 'attest') return 'attest';
  const last = segments[segments.length - 1];
  if (last === 'release' || last === 'renew' || segments.includes('leases')) return 'release';
  return 'other';
}

export interface BrokerLimitsOptions {
  readonly limits: LimitsConfig;
  readonly observer?: LimitObserver;
}

type Limiter = ReturnType<FastifyInstance['createRateLimit']>;

/** Per-request state of the identity limit: the key it was last counted under. */
const kIdentityKey = Symbol('cir.identityLimitKey');
type LimitedRequest = FastifyRequest & { [kIdentityKey]?: string; [kGroup]?: RouteGroup | 'health' };
const kGroup = Symbol('cir.routeGroup');
/** The identity limiter, per app, for `enforceIdentityLimit`. */
const kLimiters = Symbol('cir.identityLimiters');

/**
 * Fastify plugin (not encapsulated: its hooks cover every route of the app, the admin
 * plugin's included, so register it before them) with the broker's abuse limits:
 *
 * - `onRequest`, cheapest first: overload shedding (`limits.overload`, via
 *   `@fastify/under-pressure`; 429 `ERR_KMS_OVERLOADED` with `Retry-After`), then the
 *   per-IP rate limit of the route group (429 `ERR_KMS_RATE_LIMITED`). Both run before the
 *   body is read.
 * - `preParsing` on `POST /v1/attest`: the body may be at most `maxEvidenceBytes +
 *   ATTEST_ENVELOPE_BYTES` (413 `ERR_KMS_EVIDENCE_TOO_LARGE`), by `Content-Length` before
 *   reading and by counting bytes for a chunked body.
 * - `preHandler` (after every `onRequest` hook, so after authentication hooks such as the
 *   admin API's): the per-identity rate limit, keyed on `request.principal` when set. The
 *   unauthenticated groups (attest, other) fall back to the client address; the
 *   authenticated ones (release, admin) do not count a request without a principal here:
 *   a handler that authenticates itself calls `enforceIdentityLimit(request)` once it has
 *   set `principal`, and a request that never authenticates meets the per-IP limit only.
 * - the node server's timeouts (`limits.timeouts`), so a slow client cannot hold a
 *   connection: headers within `headersTimeoutMs`, the whole request within
 *   `requestTimeoutMs`, idle sockets closed after `idleTimeoutMs`.
 *
 * The health route is exempt from shedding and rate limits (it is constant work).
 * Client address: `request.ip` grouped as `challengeClientKey` does (IPv6 by /64).
 * Does not: see through proxies (`trustProxy` is off: behind one, every client shares its
 * address), share counters across broker replicas (in-memory LRU per limiter, at most
 * `rate.maxTrackedClients` clients; a flood of addresses evicts older counters, which
 * bounds memory at the price of resetting those counters), or bound the verifier (see
 * `limitVerifier`).
 */
export const brokerLimits: FastifyPluginAsync<BrokerLimitsOptions> = async (app, opts) => {
  const { limits, observer } = opts;
  if (!app.hasRequestDecorator('principal')) app.decorateRequest('principal', undefined);

  applyServerTimeouts(app, limits.timeouts);

  // --- overload -------------------------------------------------------------------------
  const ov = limits.overload;
  await app.register(fastifyUnderPressure, {
    maxEventLoopDelay: ov.maxEventLoopDelayMs,
    // SECURITY: on by default at 90% of V8's heap limit, so a memory flood sheds load
    // instead of ending in an out-of-memory crash.
    maxHeapUsedBytes: ov.maxHeapUsedBytes ?? Math.floor(getHeapStatistics().heap_size_limit * 0.9),
    ...(ov.maxRssBytes !== undefined ? { maxRssBytes: ov.maxRssBytes } : {}),
    ...(ov.maxEventLoopUtilization !== undefined ? { maxEventLoopUtilization: ov.maxEventLoopUtilization } : {}),
    sampleInterval: ov.sampleIntervalMs,
    retryAfter: ov.retryAfterSeconds,
    pressureHandler: async (request, _reply, type) => {
      if (groupOf(request) === 'health') return;
      const reason = overloadReasonOf(type);
      observer?.overloaded(reason);
      throw new KmsError('ERR_KMS_OVERLOADED', { detail: reason, details: { retryAfterSeconds: ov.retryAfterSeconds } });
    },
  });

  // --- rate limits ----------------------------------------------------------------------
  // `global: false`: the plugin adds no hooks of its own; the limiters below are called
  // from this plugin's hooks so that the answer is the broker's typed problem document.
  await app.register(fastifyRateLimit, { global: false, cache: limits.rate.maxTrackedClients });
  const windowMs = limits.rate.windowSeconds * 1000;
  const make = (max: number, keyGenerator: (r: FastifyRequest) => string): Limiter =>
    app.createRateLimit({ max, timeWindow: windowMs, keyGenerator });
  const ipKey = (r: FastifyRequest) => challengeClientKey(r.ip);
  const identityKey = (r: FastifyRequest) => (r as LimitedRequest)[kIdentityKey] ?? ipKey(r);
  const perIp = new Map<RouteGroup, Limiter>();
  const perIdentity = new Map<RouteGroup, Limiter>();
  for (const g of ROUTE_GROUPS) {
    perIp.set(g, make(limits.rate[g].perIp, ipKey));
    perIdentity.set(g, make(limits.rate[g].perIdentity, identityKey));
  }
  const check = async (request: FastifyRequest, group: RouteGroup, scope: LimitScope, limiter: Limiter, max: number) => {
    const r = await limiter(request);
    if (r.isAllowed || !r.isExceeded) return;
    observer?.rateLimited(group, scope);
    // SECURITY: the detail names the group and the public limit, never the key (an
    // address or principal).
    throw new KmsError('ERR_KMS_RATE_LIMITED', {
      detail: `${group} (${scope}): ${max} per ${limits.rate.windowSeconds}s`,
      details: { retryAfterSeconds: clampRetryAfter(r.ttlInSeconds) },
    });
  };
  const identityCheck = async (request: FastifyRequest): Promise<void> => {
    const group = groupOf(request);
    if (group === 'health') return;
    // Routes of the authenticated groups set a principal (in a hook, or in the handler
    // before `enforceIdentityLimit`); one without a principal yet is left to the per-IP
    // limit rather than counted against its address's identity budget.
    if (request.principal === undefined && AUTHENTICATED_GROUPS.has(group)) return;
    const req = request as LimitedRequest;
    const key = request.principal !== undefined ? `p:${request.principal}` : `a:${ipKey(request)}`;
    if (req[kIdentityKey] === key) return;
    req[kIdentityKey] = key;
    await check(request, group, 'identity', perIdentity.get(group)!, limits.rate[group].perIdentity);
  };
  (app as unknown as Record<symbol, unknown>)[kLimiters] = identityCheck;

  app.addHook('onRequest', async (request) => {
    const group = groupOf(request);
    if (group === 'health') return;
    await check(request, group, 'ip', perIp.get(group)!, limits.rate[group].perIp);
  });
  app.addHook('preHandler', async (request) => identityCheck(request));

  // --- evidence size --------------------------------------------------------------------
  const attestLimit = limits.maxEvidenceBytes + ATTEST_ENVELOPE_BYTES;
  app.addHook('preParsing', async (request, _reply, payload) => {
    if (request.routeOptions.url !== ROUTES.attest) return payload;
    const declared = request.headers['content-length'];
    if (declared !== undefined) {
      // node's parser delivers exactly Content-Length bytes, and fastify checks the count.
      if (Number(declared) > attestLimit) throw evidenceTooLarge(limits.maxEvidenceBytes);
      return payload;
    }
    return payload.pipe(new ByteLimit(attestLimit, () => evidenceTooLarge(limits.maxEvidenceBytes)));
  });
};
// Not encapsulated (what `fastify-plugin` does): the hooks apply to the whole app.
(brokerLimits as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(brokerLimits as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'cir-broker-limits';

/**
 * Counts `request` against its route group's per-identity limit under `request.principal`,
 * for handlers that authenticate inside the handler (after the `preHandler` hook counted
 * the request under its client address). A no-op when already counted under the same key,
 * or when `brokerLimits` is not registered. Throws `ERR_KMS_RATE_LIMITED` over the limit.
 */
export async function enforceIdentityLimit(request: FastifyRequest): Promise<void> {
  const fn = (request.server as unknown as Record<symbol, unknown>)[kLimiters];
  if (typeof fn === 'function') await (fn as (r: FastifyRequest) => Promise<void>)(request);
}

function groupOf(request: FastifyRequest): RouteGroup | 'health' {
  const req = request as LimitedRequest;
  return (req[kGroup] ??= routeGroupOf(request.routeOptions.url));
}

function clampRetryAfter(seconds: number): number {
  return Math.min(3600, Math.max(1, Math.ceil(Number.isFinite(seconds) ? seconds : 1)));
}

function overloadReasonOf(type: string): OverloadReason {
  switch (type) {
    case fastifyUnderPressure.TYPE_EVENT_LOOP_DELAY:
      return 'event-loop-delay';
    case fastifyUnderPressure.TYPE_HEAP_USED_BYTES:
      return 'heap';
    case fastifyUnderPressure.TYPE_RSS_BYTES:
      return 'rss';
    case fastifyUnderPressure.TYPE_EVENT_LOOP_UTILIZATION:
      return 'event-loop-utilization';
    default:
      return 'unhealthy';
  }
}

function evidenceTooLarge(max: number): KmsError {
  return new KmsError('ERR_KMS_EVIDENCE_TOO_LARGE', { detail: `limit ${max} bytes of evidence` });
}

/** Passes bytes through until more than `max` have gone by, then fails with `err()`. */
class ByteLimit extends Transform {
  receivedEncodedLength = 0;
  readonly #max: number;
  readonly #err: () => Error;
  constructor(max: number, err: () => Error) {
    super();
    this.#max = max;
    this.#err = err;
  }
  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    this.receivedEncodedLength += chunk.length;
    if (this.receivedEncodedLength > this.#max) cb(this.#err());
    else cb(null, chunk);
  }
}

/**
 * Sets the node server's timeouts (before `listen`; fastify's own defaults leave the whole
 * request unbounded). SECURITY: a client that trickles headers or a body (slowloris) is cut
 * off after `headersTimeoutMs` / `requestTimeoutMs`, checked every `checkIntervalMs`.
 */
function applyServerTimeouts(app: FastifyInstance, t: LimitsConfig['timeouts']): void {
  const server = app.server as Server & { connectionsCheckingInterval?: number };
  server.requestTimeout = t.requestTimeoutMs;
  server.headersTimeout = t.headersTimeoutMs;
  server.keepAliveTimeout = t.keepAliveTimeoutMs;
  server.setTimeout(t.idleTimeoutMs);
  server.maxRequestsPerSocket = t.maxRequestsPerSocket === 0 ? null : t.maxRequestsPerSocket;
  server.maxConnections = t.maxConnections;
  // Read by node when the server starts listening (the constructor option of the same name).
  server.connectionsCheckingInterval = t.checkIntervalMs;
}

// --- verification gate ------------------------------------------------------------------

export interface VerifierGateOptions {
  /** Verifications running at once. */
  readonly maxConcurrent: number;
  /** Verifications waiting for a slot; one more is refused. */
  readonly maxQueued: number;
  /** Longest wait for a slot; a waiter past it is refused (never run). */
  readonly maxQueueWaitMs: number;
  /** `Retry-After` of a refusal; default 1. */
  readonly retryAfterSeconds?: number;
  readonly observer?: Pick<LimitObserver, 'overloaded'>;
}

export interface GatedVerifier extends EvidenceVerifier {
  /** Verifications running and waiting now. */
  stats(): { running: number; queued: number };
}

interface Waiter {
  resolve: () => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
  done: boolean;
}

/**
 * Wraps `verifier` so that at most `maxConcurrent` verifications run at once and at most
 * `maxQueued` wait (first in, first out). A verification that finds the queue full, or
 * waits longer than `maxQueueWaitMs`, is refused with `ERR_KMS_VERIFIER_BUSY` (429 with
 * `Retry-After`) and never reaches `verifier`: a burst of attestations costs bounded CPU
 * and memory, and answers quickly instead of hanging.
 * Does not: bound the time one verification takes (verifiers do no network I/O: SEV-SNP
 * collateral comes with the evidence, TDX collateral from disk), or give the slot back
 * early when the client has gone away.
 */
export function limitVerifier(verifier: EvidenceVerifier, opts: VerifierGateOptions): GatedVerifier {
  if (!(opts.maxConcurrent >= 1) || !(opts.maxQueued >= 0) || !(opts.maxQueueWaitMs >= 1)) {
    throw new RangeError('maxConcurrent >= 1, maxQueued >= 0, maxQueueWaitMs >= 1');
  }
  const retryAfterSeconds = opts.retryAfterSeconds ?? 1;
  let running = 0;
  let queued = 0;
  // FIFO; entries that timed out stay until they reach the head, `queued` counts live ones.
  const queue: Waiter[] = [];
  let head = 0;

  const busy = (reason: 'verifier-queue-full' | 'verifier-queue-timeout', detail: string) => {
    opts.observer?.overloaded(reason);
    return new KmsError('ERR_KMS_VERIFIER_BUSY', { detail, details: { retryAfterSeconds } });
  };
  const acquire = (): Promise<void> | undefined => {
    if (running < opts.maxConcurrent && queued === 0) {
      running++;
      return undefined;
    }
    if (queued >= opts.maxQueued) throw busy('verifier-queue-full', `${opts.maxQueued} verifications waiting`);
    queued++;
    return new Promise<void>((resolve, reject) => {
      const w: Waiter = {
        resolve,
        reject,
        done: false,
        timer: setTimeout(() => {
          if (w.done) return;
          w.done = true;
          queued--;
          reject(busy('verifier-queue-timeout', `waited ${opts.maxQueueWaitMs} ms`));
        }, opts.maxQueueWaitMs),
      };
      w.timer.unref?.();
      queue.push(w);
    });
  };
  const release = (): void => {
    while (head < queue.length) {
      const w = queue[head]!;
      queue[head++] = undefined as unknown as Waiter;
      if (w.done) continue;
      w.done = true;
      clearTimeout(w.timer);
      queued--;
      w.resolve(); // the slot passes straight to the waiter: `running` is unchanged
      compact();
      return;
    }
    compact();
    running--;
  };
  const compact = () => {
    if (head > 1024 && head * 2 > queue.length) {
      queue.splice(0, head);
      head = 0;
    }
  };

  return {
    async verify(evidence: unknown, o: { now: Date; expectedReportData: Uint8Array }): Promise<BrokerClaims> {
      const wait = acquire();
      if (wait) await wait;
      try {
        return await verifier.verify(evidence, o);
      } finally {
        release();
      }
    },
    stats: () => ({ running, queued }),
  };
}
