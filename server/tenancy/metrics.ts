/**
 * Prometheus metrics of the inference server (prom-client, a private registry), served
 * on their own port so the scrape endpoint is never on the client-facing TLS port.
 *
 * Labels are bounded and public: method (fixed set), model (a configured model name, or
 * `_unknown` for anything a client typed), tenant (from the authenticated key, or
 * `_anonymous`), status/code (fixed tables), limit and signal (fixed sets). SECURITY: no
 * label ever carries a key, token, request id or tensor content.
 */
import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export interface TenancyMetrics {
  readonly registry: Registry;
  request(method: string, model: string, tenant: string, status: string, seconds: number): void;
  error(method: string, model: string, tenant: string, code: string): void;
  rejected(limit: string, model: string, tenant: string): void;
  extractionAlert(model: string, tenant: string, signal: string): void;
  authFailure(method: string, reason: string): void;
  inflight(tenant: string, delta: number): void;
  keyStoreReload(result: 'ok' | 'invalid'): void;
}

export function createMetrics(): TenancyMetrics {
  const registry = new Registry();
  const requests = new Counter({
    name: 'cir_requests_total',
    help: 'RPCs by method, model, tenant and gRPC status name',
    labelNames: ['method', 'model', 'tenant', 'status'] as const,
    registers: [registry],
  });
  const errors = new Counter({
    name: 'cir_errors_total',
    help: 'Failed RPCs by cir error code',
    labelNames: ['method', 'model', 'tenant', 'code'] as const,
    registers: [registry],
  });
  const latency = new Histogram({
    name: 'cir_request_duration_seconds',
    help: 'RPC latency from admission to reply',
    labelNames: ['method', 'model', 'tenant'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [registry],
  });
  const rejected = new Counter({
    name: 'cir_limit_rejections_total',
    help: 'Requests refused by a limit (rate, concurrency, quota, budget, hard limit, shedding, time)',
    labelNames: ['limit', 'model', 'tenant'] as const,
    registers: [registry],
  });
  const alerts = new Counter({
    name: 'cir_extraction_alerts_total',
    help: 'Extraction detector alerts',
    labelNames: ['model', 'tenant', 'signal'] as const,
    registers: [registry],
  });
  const authFailures = new Counter({
    name: 'cir_auth_failures_total',
    help: 'Requests with a missing, malformed, unknown, expired or revoked credential',
    labelNames: ['method', 'reason'] as const,
    registers: [registry],
  });
  const inflight = new Gauge({ name: 'cir_inflight_requests', help: 'ModelInfer calls in flight', labelNames: ['tenant'] as const, registers: [registry] });
  const reloads = new Counter({ name: 'cir_key_store_reloads_total', help: 'API key store reloads', labelNames: ['result'] as const, registers: [registry] });

  // Children cached by label tuple: the per-request cost is a Map lookup and an add.
  const cache = new Map<string, { inc(): void; observe?(v: number): void }>();
  const child = <T>(k: string, make: () => T): T => {
    let c = cache.get(k) as T | undefined;
    if (!c) {
      c = make();
      cache.set(k, c as never);
    }
    return c;
  };
  return {
    registry,
    request(method, model, tenant, status, seconds) {
      child(`r\0${method}\0${model}\0${tenant}\0${status}`, () => requests.labels(method, model, tenant, status)).inc();
      child(`l\0${method}\0${model}\0${tenant}`, () => latency.labels(method, model, tenant)).observe(seconds);
    },
    error(method, model, tenant, code) {
      child(`e\0${method}\0${model}\0${tenant}\0${code}`, () => errors.labels(method, model, tenant, code)).inc();
    },
    rejected(limit, model, tenant) {
      child(`x\0${limit}\0${model}\0${tenant}`, () => rejected.labels(limit, model, tenant)).inc();
    },
    extractionAlert(model, tenant, signal) {
      alerts.labels(model, tenant, signal).inc();
    },
    authFailure(method, reason) {
      child(`a\0${method}\0${reason}`, () => authFailures.labels(method, reason)).inc();
    },
    inflight(tenant, delta) {
      child(`g\0${tenant}`, () => inflight.labels(tenant)).inc(delta);
    },
    keyStoreReload(result) {
      reloads.labels(result).inc();
    },
  };
}

/** Serves `GET /metrics` from `registry` on host:port; resolves with the bound port. */
export async function serveMetrics(registry: Registry, host: string, port: number): Promise<{ port: number; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.method !== 'GET' || (req.url ?? '').split('?')[0] !== '/metrics') {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  const addr = server.address();
  return {
    port: typeof addr === 'object' && addr ? addr.port : port,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
