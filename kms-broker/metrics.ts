/**
 * Prometheus metrics of the key broker (`prom-client`), in a registry of their own (never
 * the global default one), served in the text exposition format on a separate port by
 * `startMetricsServer` so that scraping never competes with, or is reachable through, the
 * broker's own listener.
 *
 * SECURITY: every label value comes from a fixed set or a route template registered by
 * the app (never a raw URL, never client text): no tenant secret, token, key material,
 * principal, address or key id can reach a label, and label cardinality is bounded.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from 'prom-client';
import { isCirError } from '../common/errors.js';
import type { Logger } from '../common/logger.js';
import type { EvidenceVerifier } from './app.js';
import type { BrokerConfig } from './config.js';
import { routeGroupOf, type GatedVerifier, type LimitObserver, type LimitScope, type OverloadReason, type RouteGroup } from './limits.js';
import type { BrokerClaims } from './policy.js';
import { ROUTES } from './protocol.js';

export const DECISION_ACTIONS = ['attest', 'release', 'renew', 'admin'] as const;
export type DecisionAction = (typeof DECISION_ACTIONS)[number];
export const DECISION_OUTCOMES = ['allow', 'deny', 'limited', 'error'] as const;
export type DecisionOutcome = (typeof DECISION_OUTCOMES)[number];
/** TEE label values; anything else is recorded as `unknown`. */
export const METRIC_TEES = ['sev-snp', 'tdx'] as const;

/** What a route decided, for `cir_broker_decisions_total`; set by the route, recorded on response. */
export interface RequestDecision {
  readonly action: DecisionAction;
  readonly outcome: DecisionOutcome;
  /** `sev-snp` or `tdx`; anything else (or absent) is recorded as `unknown`. */
  readonly tee?: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The decision this request made (set by the attest, release, renew and admin routes).
     * When absent, the metrics derive one from the route and the status code (see
     * `decisionOf`), with tee `unknown` unless the route is attest.
     */
    decision?: RequestDecision;
  }
}

/** Verification outcomes for `cir_broker_verification_seconds`, from the error category. */
export type VerificationOutcome = 'ok' | 'rejected' | 'malformed' | 'unavailable' | 'error';

const HTTP_METHODS = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']);
const UNMATCHED_ROUTE = '(unmatched)';

export interface BrokerMetricsOptions {
  /** Also collect node's process metrics (CPU, heap, event-loop lag) as `cir_broker_process_*` and `cir_broker_nodejs_*`; default true. */
  readonly processMetrics?: boolean;
}

/**
 * The broker's metrics. Implements `LimitObserver`, so `brokerLimits` and `limitVerifier`
 * report refusals to it directly.
 *
 * | metric | type | labels |
 * |---|---|---|
 * | `cir_broker_decisions_total` | counter | `action` (attest, release, renew, admin), `outcome` (allow, deny, limited, error), `tee` (sev-snp, tdx, unknown) |
 * | `cir_broker_verification_seconds` | histogram | `tee`, `outcome` (ok, rejected, malformed, unavailable, error) |
 * | `cir_broker_rate_limited_total` | counter | `group` (attest, release, admin, other), `scope` (ip, identity) |
 * | `cir_broker_overload_rejections_total` | counter | `reason` (`OverloadReason`) |
 * | `cir_broker_http_requests_total` | counter | `route` (template), `method`, `status_class` (2xx..5xx) |
 * | `cir_broker_http_request_seconds` | histogram | `group` (attest, release, admin, other, health) |
 * | `cir_broker_verifications` | gauge | `state` (running, queued) |
 */
export class BrokerMetrics implements LimitObserver {
  readonly registry: Registry;
  readonly #decisions: Counter<'action' | 'outcome' | 'tee'>;
  readonly #verification: Histogram<'tee' | 'outcome'>;
  readonly #rateLimited: Counter<'group' | 'scope'>;
  readonly #overload: Counter<'reason'>;
  readonly #http: Counter<'route' | 'method' | 'status_class'>;
  readonly #httpSeconds: Histogram<'group'>;
  #gate: GatedVerifier | undefined;

  constructor(opts: BrokerMetricsOptions = {}) {
    const registry = new Registry();
    this.registry = registry;
    this.#decisions = new Counter({
      name: 'cir_broker_decisions_total',
      help: 'Attestation, release, renewal and admin decisions by outcome and TEE.',
      labelNames: ['action', 'outcome', 'tee'],
      registers: [registry],
    });
    this.#verification = new Histogram({
      name: 'cir_broker_verification_seconds',
      help: 'Time to verify TEE evidence (after the concurrency gate), by TEE and outcome.',
      labelNames: ['tee', 'outcome'],
      buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    });
    this.#rateLimited = new Counter({
      name: 'cir_broker_rate_limited_total',
      help: 'Requests refused by a rate limit, by route group and limiter scope.',
      labelNames: ['group', 'scope'],
      registers: [registry],
    });
    this.#overload = new Counter({
      name: 'cir_broker_overload_rejections_total',
      help: 'Requests shed under load (429 ERR_KMS_OVERLOADED or ERR_KMS_VERIFIER_BUSY), by reason.',
      labelNames: ['reason'],
      registers: [registry],
    });
    this.#http = new Counter({
      name: 'cir_broker_http_requests_total',
      help: 'HTTP requests by route template, method and status class.',
      labelNames: ['route', 'method', 'status_class'],
      registers: [registry],
    });
    this.#httpSeconds = new Histogram({
      name: 'cir_broker_http_request_seconds',
      help: 'HTTP request duration by route group.',
      labelNames: ['group'],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
      registers: [registry],
    });
    const gate = () => this.#gate;
    new Gauge({
      name: 'cir_broker_verifications',
      help: 'Evidence verifications running and waiting for a slot.',
      labelNames: ['state'],
      registers: [registry],
      collect() {
        const s = gate()?.stats() ?? { running: 0, queued: 0 };
        this.set({ state: 'running' }, s.running);
        this.set({ state: 'queued' }, s.queued);
      },
    });
    if (opts.processMetrics ?? true) collectDefaultMetrics({ register: registry, prefix: 'cir_broker_' });
  }

  rateLimited(group: RouteGroup, scope: LimitScope): void {
    this.#rateLimited.inc({ group, scope });
  }

  overloaded(reason: OverloadReason): void {
    this.#overload.inc({ reason });
  }

  /** Records one decision; values outside the fixed sets become `unknown` (tee) or are dropped. */
  recordDecision(d: RequestDecision): void {
    if (!(DECISION_ACTIONS as readonly string[]).includes(d.action) || !(DECISION_OUTCOMES as readonly string[]).includes(d.outcome)) return;
    this.#decisions.inc({ action: d.action, outcome: d.outcome, tee: teeLabel(d.tee) });
  }

  /** Reports the gate's running and queued verifications as `cir_broker_verifications`. */
  watchVerifierGate(gate: GatedVerifier): void {
    this.#gate = gate;
  }

  /**
   * Wraps `verifier` to time every verification into `cir_broker_verification_seconds`.
   * The TEE label is the claims' on success; on failure the one the evidence's `tee` field
   * selects, exactly as the default verifier dispatches (`tdx`, else `sev-snp`).
   */
  instrumentVerifier(verifier: EvidenceVerifier): EvidenceVerifier {
    const h = this.#verification;
    return {
      async verify(evidence: unknown, opts: { now: Date; expectedReportData: Uint8Array }): Promise<BrokerClaims> {
        const end = h.startTimer();
        try {
          const claims = await verifier.verify(evidence, opts);
          end({ tee: teeLabel((claims as { tee?: unknown } | null)?.tee), outcome: 'ok' });
          return claims;
        } catch (e) {
          end({ tee: teeOfEvidence(evidence), outcome: verificationOutcome(e) });
          throw e;
        }
      },
    };
  }

  /** Records one finished request (the `onResponse` hook of `brokerMetricsPlugin`). */
  recordResponse(request: FastifyRequest, reply: FastifyReply): void {
    const route = request.routeOptions.url;
    const status = reply.statusCode;
    const method = HTTP_METHODS.has(request.method) ? request.method : 'OTHER';
    this.#http.inc({ route: route ?? UNMATCHED_ROUTE, method, status_class: statusClass(status) });
    this.#httpSeconds.observe({ group: routeGroupOf(route) }, reply.elapsedTime / 1000);
    const d = request.decision ?? decisionOf(route, status, request.body);
    if (d) this.recordDecision(d);
  }
}

/**
 * The decision a request made, when its route did not say (`request.decision` unset):
 * `POST /v1/attest` -> attest, a route ending in `/release` -> release, `/renew` -> renew,
 * any `admin` route -> admin; other routes (challenge, JWKS, health) decide nothing.
 * Outcome from the status: < 400 allow, 429 limited, >= 500 error, else deny. The TEE is
 * `unknown`, except on attest, where it is the one the evidence's `tee` field selects.
 */
export function decisionOf(route: string | undefined, status: number, body: unknown): RequestDecision | undefined {
  let action: DecisionAction;
  if (route === ROUTES.attest) action = 'attest';
  else if (route === undefined) return undefined;
  else if (route.endsWith('/release')) action = 'release';
  else if (route.endsWith('/renew')) action = 'renew';
  else if (routeGroupOf(route) === 'admin') action = 'admin';
  else return undefined;
  const outcome: DecisionOutcome = status < 400 ? 'allow' : status === 429 ? 'limited' : status >= 500 ? 'error' : 'deny';
  const evidence = action === 'attest' && typeof body === 'object' && body !== null ? (body as { evidence?: unknown }).evidence : undefined;
  return { action, outcome, tee: evidence === undefined ? 'unknown' : teeOfEvidence(evidence) };
}

function teeLabel(tee: unknown): string {
  return typeof tee === 'string' && (METRIC_TEES as readonly string[]).includes(tee) ? tee : 'unknown';
}

function teeOfEvidence(evidence: unknown): string {
  if (typeof evidence !== 'object' || evidence === null) return 'unknown';
  return (evidence as { tee?: unknown }).tee === 'tdx' ? 'tdx' : 'sev-snp';
}

function verificationOutcome(e: unknown): VerificationOutcome {
  if (!isCirError(e)) return 'error';
  switch (e.category) {
    case 'verification':
    case 'policy':
    case 'forbidden':
      return 'rejected';
    case 'bad-input':
      return 'malformed';
    case 'unavailable':
      return 'unavailable';
    default:
      return 'error';
  }
}

function statusClass(status: number): string {
  return status >= 100 && status < 600 ? `${Math.floor(status / 100)}xx` : 'other';
}

export interface BrokerMetricsPluginOptions {
  readonly metrics: BrokerMetrics;
}

/**
 * Fastify plugin (not encapsulated) recording every response into `metrics` from an
 * `onResponse` hook: routes only set `request.decision`.
 */
export const brokerMetricsPlugin: FastifyPluginAsync<BrokerMetricsPluginOptions> = async (app, opts) => {
  if (!app.hasRequestDecorator('decision')) app.decorateRequest('decision', undefined);
  app.addHook('onResponse', async (request, reply) => {
    opts.metrics.recordResponse(request, reply);
  });
};
(brokerMetricsPlugin as unknown as Record<symbol, unknown>)[Symbol.for('skip-override')] = true;
(brokerMetricsPlugin as unknown as Record<symbol, unknown>)[Symbol.for('fastify.display-name')] = 'cir-broker-metrics';

export interface MetricsServer {
  /** e.g. `http://127.0.0.1:9464/metrics`. */
  readonly url: string;
  close(): Promise<void>;
}

/**
 * Serves `metrics.registry` as `GET /metrics` (also HEAD) on `listen`, a plain HTTP server
 * of its own; every other path is 404 and every other method 405, with no body detail.
 * Bind it to loopback or a monitoring network: it has no authentication (it holds no
 * secrets, but shows traffic volumes).
 */
export async function startMetricsServer(
  metrics: BrokerMetrics,
  listen: NonNullable<BrokerConfig['metrics']>,
  logger?: Pick<Logger, 'warn'>,
): Promise<MetricsServer> {
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== '/metrics') return plain(res, 404, 'not found\n');
    if (req.method !== 'GET' && req.method !== 'HEAD') return plain(res, 405, 'method not allowed\n', { allow: 'GET, HEAD' });
    metrics.registry.metrics().then(
      (text) => {
        res.writeHead(200, { 'content-type': metrics.registry.contentType, 'cache-control': 'no-store' });
        res.end(req.method === 'HEAD' ? undefined : text);
      },
      (err: unknown) => {
        logger?.warn({ err: err instanceof Error ? err.name : 'unknown' }, 'metrics collection failed');
        plain(res, 500, 'internal error\n');
      },
    );
  });
  // SECURITY: the same slow-client bounds as the broker's defaults.
  server.headersTimeout = 5_000;
  server.requestTimeout = 10_000;
  server.setTimeout(15_000);
  server.maxConnections = 64;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host: listen.host, port: listen.port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : listen.port;
  const host = listen.host.includes(':') ? `[${listen.host}]` : listen.host;
  let closing: Promise<void> | undefined;
  return {
    url: `http://${host}:${port}/metrics`,
    close: () =>
      (closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeIdleConnections();
      })),
  };
}

function plain(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', ...headers });
  res.end(body);
}
