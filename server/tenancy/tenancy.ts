/**
 * The multi-tenant controls as one gRPC handler wrapper: `tenancy.wrap(method, handler)`
 * authenticates, authorizes, applies limits and the extraction defenses before the
 * handler (and so the model) runs, minimizes outputs after it, and records logs, metrics
 * and security events. inference-service.ts stays unaware of tenants.
 *
 * Order for ModelInfer (each step can refuse; nothing is counted for a refused request
 * except the rate-limit token already taken):
 *   1. identify: `authorization: Bearer cir_...` or an mTLS client certificate -> key record
 *      (UNAUTHENTICATED, fixed message, for missing/malformed/unknown/wrong/expired/revoked)
 *   2. rate: per-key then per-tenant token bucket (RESOURCE_EXHAUSTED + retry-after-ms)
 *   3. visibility: the model exists, belongs to the key's tenant and is in its scope;
 *      otherwise exactly the error of a nonexistent model (NOT_FOUND, or UNAVAILABLE
 *      before boot), so model names of other tenants never leak
 *   4. operation scope (PERMISSION_DENIED), detector penalty (block/throttle)
 *   5. hard limits (batch, elements, bytes), daily quotas and query budget
 *   6. concurrency caps (key, tenant), then fair global load shedding
 *   7. detector observation (statistics only), then the handler, under `maxRequestMs`
 * After the handler: the detector's boundary statistic of the class-score output (one
 * number), then output minimization.
 * ServerLive/ServerReady/ServerMetadata need a valid key (any scope) and say nothing per
 * tenant. GetEvidence needs no key (clients verify before they have one) and is
 * rate-limited per peer address and globally; a key, if sent, must be valid and carry the
 * `evidence` operation.
 *
 * SECURITY: logs, metrics and events carry request id, tenant, key id, configured model
 * names, sizes, status and latency; never a key, token, tensor, prompt or output, and a
 * model name a client typed appears only if it names a configured model.
 */
import { randomBytes, createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { isCirError } from '../../common/errors.js';
import { flatLogger } from '../../common/logger.js';
import { ServerError, type ServerErrorCode } from '../codes.js';
import { toGrpcStatus } from '../grpc-errors.js';
import type { ModelInferResponse } from '../proto-types.js';
import { bearerToken, type AuthFailure, type KeyIndex, type Operation, type Principal } from './api-keys.js';
import type { AuthConfig, LimitsConfig, ModelDefense, ObservabilityConfig, PrincipalLimits } from './config.js';
import { ExtractionDetector, boundaryStatistic, inputFeatures, scoreSource, type ScoreSource, type Verdict } from './detector.js';
import { NULL_SINK, type SecurityEventSink } from './events.js';
import { BucketMap, ConcurrencyMap, DailyCounters, FairShedder, TokenBucket, msToUtcMidnight } from './limits.js';
import type { TenancyMetrics } from './metrics.js';
import { minimizeOutputs } from './minimize.js';

export const RETRY_AFTER_METADATA_KEY = 'retry-after-ms';
export const DEFAULT_TENANT = 'default';
const ANON_TENANT = '_anonymous';
const UNKNOWN_MODEL_LABEL = '_unknown';

export interface TenantModel {
  readonly name: string;
  readonly tenant: string;
  readonly defenses?: ModelDefense | undefined;
}

export interface TenancyOptions {
  /** undefined: no auth configured, every RPC but GetEvidence is refused (fail closed). */
  readonly auth: AuthConfig | undefined;
  readonly limits: LimitsConfig;
  readonly observability: ObservabilityConfig;
  readonly models: readonly TenantModel[];
  readonly maxConcurrentInfers: number;
  readonly logger: Logger;
  /** Current key index (reloaded by the store watcher); unused unless auth.mode is api-keys. */
  readonly keys: () => KeyIndex | undefined;
  /** Whether boot has published the models (for the NOT_FOUND/UNAVAILABLE mimicry). */
  readonly isReady: () => boolean;
  readonly events?: SecurityEventSink;
  readonly metrics?: TenancyMetrics;
  readonly now?: () => number;
}

type Handler = (req: unknown, call: grpc.ServerUnaryCall<unknown, unknown>) => Promise<unknown> | unknown;

/** What admission decided for one request; released exactly once. */
interface Admission {
  readonly principal: Principal | undefined;
  readonly tenant: string;
  readonly modelLabel: string;
  readonly model: TenantModel | undefined;
  readonly inBytes: number;
  release(): void;
}

const NO_RELEASE = (): void => {};

const ANON_PRINCIPAL: Principal = Object.freeze({
  keyId: '-',
  tenant: ANON_TENANT,
  owner: '-',
  environment: '-',
  operations: new Set<Operation>(['infer', 'metadata', 'evidence']),
  models: undefined,
  expiresAtMs: Infinity,
  revokedAtMs: Infinity,
});

function limitError(code: ServerErrorCode, retryAfterMs: number, detail?: string): ServerError {
  return new ServerError(code, { ...(detail ? { detail } : {}), details: { retryAfterMs: Math.max(1, Math.ceil(retryAfterMs)) } });
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null;
}

function str(x: unknown): string {
  return typeof x === 'string' ? x : '';
}

/** Peer IP without port, from grpc-js `getPeer()` ("ipv4:1.2.3.4:5", "ipv6:[::1]:5"). */
export function peerAddress(peer: string): string {
  const p = peer.replace(/^(ipv4|ipv6|unix):/, '');
  const m = /^\[([^\]]+)\](?::\d+)?$/.exec(p) ?? /^([^:]+)(?::\d+)?$/.exec(p);
  return (m?.[1] ?? p).slice(0, 64);
}

interface RequestSize {
  readonly bytes: number;
  readonly elements: number;
  readonly batch: number;
}

/** Sizes from an untrusted request without decoding it; malformed parts count as 0 (decode rejects them later). */
export function requestSize(req: unknown): RequestSize {
  if (!isRecord(req)) return { bytes: 0, elements: 0, batch: 0 };
  let bytes = 0;
  const raw = req['raw_input_contents'];
  if (Array.isArray(raw)) for (const r of raw) if (r instanceof Uint8Array) bytes += r.length;
  let elements = 0;
  let batch = 0;
  const inputs = req['inputs'];
  if (Array.isArray(inputs)) {
    for (const t of inputs.slice(0, 1024)) {
      if (!isRecord(t)) continue;
      const shape = t['shape'];
      if (Array.isArray(shape)) {
        let n = 1;
        for (const d of shape.slice(0, 64)) {
          const v = Number(d);
          n = Math.min(n * (Number.isFinite(v) && v >= 0 ? v : 0), Number.MAX_SAFE_INTEGER);
        }
        elements = Math.min(elements + n, Number.MAX_SAFE_INTEGER);
        const b = Number(shape[0]);
        if (shape.length >= 2 && Number.isFinite(b) && b > 0) batch = Math.max(batch, b);
      }
      const c = t['contents'];
      if (isRecord(c)) for (const v of Object.values(c)) if (Array.isArray(v)) bytes += v.length * 8;
    }
  }
  return { bytes, elements, batch };
}

function merged(base: PrincipalLimits, over: PrincipalLimits | undefined): PrincipalLimits {
  return over ? { ...base, ...over } : base;
}

export interface Tenancy {
  /** Wraps an RPC handler with the controls (a grpc-js unary handler that never throws). */
  wrap(method: string, handler: Handler): grpc.handleUnaryCall<unknown, unknown>;
  /** Flushes persisted daily counters. */
  flush(): Promise<void>;
  /** Loads persisted daily counters (call once before serving). */
  load(): Promise<void>;
}

export function createTenancy(o: TenancyOptions): Tenancy {
  const now = o.now ?? Date.now;
  const logger = o.logger;
  // The access-log line is flat (scalars only): the cheaper top-level censoring is the same there.
  const accessLog = flatLogger(logger);
  const events = o.events ?? NULL_SINK;
  const metrics = o.metrics;
  const lim = o.limits;
  const models = new Map(o.models.map((m) => [m.name, m]));
  const detectors = new Map<string, ExtractionDetector>();
  /** Models whose detector also judges boundary probing, and where their class scores are. */
  const scoreSources = new Map<string, ScoreSource>();
  for (const m of o.models) {
    if (!m.defenses?.detector) continue;
    detectors.set(m.name, new ExtractionDetector(m.defenses.detector));
    const src = scoreSource(m.defenses);
    if (src) scoreSources.set(m.name, src);
  }

  const maxInflight = lim.shedding.maxInflight ?? o.maxConcurrentInfers;
  const shedder = new FairShedder(maxInflight, Math.min(maxInflight, lim.shedding.shedAt ?? Math.max(1, Math.floor((maxInflight * 3) / 4))));
  const conc = new ConcurrencyMap();
  const daily = new DailyCounters(now());
  const keyBuckets = new Map<string, TokenBucket>();
  const tenantBuckets = new Map<string, TokenBucket>();
  const evidencePeers = new BucketMap(lim.evidence.perPeerRatePerSec, lim.evidence.perPeerBurst);
  const evidenceGlobal = new TokenBucket(lim.evidence.globalRatePerSec, lim.evidence.globalBurst, now());
  /** Detector penalties by key id + model. */
  const penalties = new Map<string, { until: number; action: 'throttle' | 'block'; bucket: TokenBucket }>();
  /** EWMA of ModelInfer latency per model (ms), for retry hints. */
  const ewma = new Map<string, number>();
  const tenantLimits = new Map<string, { perKey: PrincipalLimits; perTenant: PrincipalLimits }>();
  const limitsFor = (tenant: string) => {
    let l = tenantLimits.get(tenant);
    if (!l) {
      const t = lim.tenants[tenant];
      l = { perKey: merged(lim.perKey, t?.perKey), perTenant: merged(lim.perTenant, t?.perTenant) };
      tenantLimits.set(tenant, l);
    }
    return l;
  };
  const reqPrefix = randomBytes(4).toString('hex');
  let reqCounter = 0;

  const retryHint = (model: string | undefined): number => Math.max(10, Math.round((model && ewma.get(model)) || 50));

  function reject(code: ServerErrorCode, limit: string, model: string, tenant: string, retryMs: number, detail?: string): never {
    metrics?.rejected(limit, model, tenant);
    throw limitError(code, retryMs, detail);
  }

  function identify(call: grpc.ServerUnaryCall<unknown, unknown>, nowMs: number): Principal | AuthFailure | 'no-auth' {
    if (o.auth === undefined) return 'no-auth';
    if (o.auth.mode === 'none') return ANON_PRINCIPAL;
    const index = o.keys();
    if (!index) return 'unknown';
    const values = call.metadata.get('authorization');
    if (values.length > 1) return 'malformed';
    if (values.length === 1) {
      const token = bearerToken(values[0]);
      return token === undefined ? 'malformed' : index.authenticate(token, nowMs);
    }
    if (o.auth.mtlsCaFile !== undefined) {
      const cert = call.getAuthContext?.()?.sslPeerCertificate;
      if (cert?.raw) return index.byCertificate(createHash('sha256').update(cert.raw).digest('hex'), nowMs);
    }
    return 'missing';
  }

  function authFail(method: string, reason: string, call: grpc.ServerUnaryCall<unknown, unknown>): never {
    metrics?.authFailure(method, reason);
    events.emit({ type: 'auth_failure', method, reason, peer: peerAddress(call.getPeer()) });
    // SECURITY: one fixed message for every reason; the reason goes to the event stream only.
    throw new ServerError('ERR_SRV_UNAUTHENTICATED');
  }

  function rate(p: Principal, nowMs: number, modelLabel: string): void {
    const l = limitsFor(p.tenant);
    if (l.perKey.ratePerSec !== undefined) {
      let b = keyBuckets.get(p.keyId);
      if (!b) keyBuckets.set(p.keyId, (b = new TokenBucket(l.perKey.ratePerSec, l.perKey.burst ?? Math.max(1, Math.ceil(l.perKey.ratePerSec)), nowMs)));
      const wait = b.take(nowMs);
      if (wait) reject('ERR_SRV_RATE_LIMITED', 'key-rate', modelLabel, p.tenant, wait);
    }
    if (l.perTenant.ratePerSec !== undefined) {
      let b = tenantBuckets.get(p.tenant);
      if (!b) tenantBuckets.set(p.tenant, (b = new TokenBucket(l.perTenant.ratePerSec, l.perTenant.burst ?? Math.max(1, Math.ceil(l.perTenant.ratePerSec)), nowMs)));
      const wait = b.take(nowMs);
      if (wait) reject('ERR_SRV_RATE_LIMITED', 'tenant-rate', modelLabel, p.tenant, wait);
    }
  }

  /** The exact error inference-service.ts gives for a model that does not exist. */
  function notFound(method: string, name: string): never {
    if (method === 'ModelReady') {
      throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${JSON.stringify(name.slice(0, 128))}` });
    }
    if (!o.isReady()) throw new ServerError('ERR_SRV_NOT_READY');
    const quoted = JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}...` : name);
    throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoted}` });
  }

  function visibleModel(method: string, p: Principal, name: string): TenantModel {
    const m = models.get(name);
    const relaxed = o.auth?.mode === 'none';
    if (m && (relaxed || (m.tenant === p.tenant && (p.models === undefined || p.models.has(name))))) return m;
    events.emit({
      type: 'model_not_visible',
      method,
      tenant: p.tenant,
      keyId: p.keyId,
      // SECURITY: a name the client made up is not echoed into the event stream.
      model: m ? m.name : UNKNOWN_MODEL_LABEL,
      reason: m ? (m.tenant === p.tenant ? 'out-of-scope' : 'other-tenant') : 'unknown',
    });
    return notFound(method, name);
  }

  function needOp(method: string, p: Principal, op: Operation, model: string): void {
    if (p.operations.has(op)) return;
    events.emit({ type: 'scope_denied', method, tenant: p.tenant, keyId: p.keyId, model, reason: op });
    throw new ServerError('ERR_SRV_SCOPE_DENIED', { detail: `needs operation ${op}` });
  }

  function admitInfer(call: grpc.ServerUnaryCall<unknown, unknown>, p: Principal, nowMs: number, ctx: { modelLabel?: string }): Admission {
    const req = call.request;
    const name = isRecord(req) ? str(req['model_name']) : '';
    const known = models.get(name);
    ctx.modelLabel = known ? name : UNKNOWN_MODEL_LABEL;
    rate(p, nowMs, known ? name : UNKNOWN_MODEL_LABEL);
    const model = visibleModel('ModelInfer', p, name);
    needOp('ModelInfer', p, 'infer', model.name);
    const pkey = `${p.keyId}\0${model.name}`;
    const pen = penalties.get(pkey);
    if (pen && pen.until > nowMs) {
      if (pen.action === 'block') {
        events.emit({ type: 'key_blocked', tenant: p.tenant, keyId: p.keyId, model: model.name });
        metrics?.rejected('extraction-block', model.name, p.tenant);
        throw new ServerError('ERR_SRV_KEY_BLOCKED');
      }
      const wait = pen.bucket.take(nowMs);
      if (wait) reject('ERR_SRV_RATE_LIMITED', 'extraction-throttle', model.name, p.tenant, wait);
    }
    // Hard limits.
    const size = requestSize(req);
    if (lim.maxBatch !== undefined && size.batch > lim.maxBatch) reject('ERR_SRV_REQUEST_LIMIT', 'batch', model.name, p.tenant, retryHint(undefined), `batch ${size.batch} > ${lim.maxBatch}`);
    if (lim.maxRequestElements !== undefined && size.elements > lim.maxRequestElements) {
      reject('ERR_SRV_REQUEST_LIMIT', 'elements', model.name, p.tenant, retryHint(undefined), `elements ${size.elements} > ${lim.maxRequestElements}`);
    }
    if (lim.maxRequestBytes !== undefined && size.bytes > lim.maxRequestBytes) {
      reject('ERR_SRV_REQUEST_LIMIT', 'bytes', model.name, p.tenant, retryHint(undefined), `bytes ${size.bytes} > ${lim.maxRequestBytes}`);
    }
    // Daily quotas and query budget (checked, counted after admission succeeds).
    const l = limitsFor(p.tenant);
    const kR = `k:${p.keyId}:r`, kB = `k:${p.keyId}:b`, tR = `t:${p.tenant}:r`, tB = `t:${p.tenant}:b`, qK = `q:${p.keyId}:${model.name}`;
    const quota = (cap: number | undefined, key: string, add: number, what: string, code: ServerErrorCode = 'ERR_SRV_QUOTA_EXCEEDED') => {
      if (cap !== undefined && daily.get(key, nowMs) + add > cap) {
        events.emit({ type: 'quota_exceeded', tenant: p.tenant, keyId: p.keyId, model: model.name, reason: what });
        reject(code, what, model.name, p.tenant, msToUtcMidnight(nowMs));
      }
    };
    quota(l.perKey.dailyRequests, kR, 1, 'key-daily-requests');
    quota(l.perKey.dailyTensorBytes, kB, size.bytes, 'key-daily-bytes');
    quota(l.perTenant.dailyRequests, tR, 1, 'tenant-daily-requests');
    quota(l.perTenant.dailyTensorBytes, tB, size.bytes, 'tenant-daily-bytes');
    quota(model.defenses?.queryBudgetPerDay, qK, 1, 'query-budget', 'ERR_SRV_QUERY_BUDGET_EXCEEDED');
    // Concurrency, then fair shedding.
    const kc = `k:${p.keyId}`, tc = `t:${p.tenant}`;
    if (!conc.tryAcquire(kc, l.perKey.maxConcurrent ?? Infinity)) reject('ERR_SRV_CONCURRENCY_LIMITED', 'key-concurrency', model.name, p.tenant, retryHint(model.name));
    if (!conc.tryAcquire(tc, l.perTenant.maxConcurrent ?? Infinity)) {
      conc.release(kc);
      reject('ERR_SRV_CONCURRENCY_LIMITED', 'tenant-concurrency', model.name, p.tenant, retryHint(model.name));
    }
    if (!shedder.tryAcquire(p.tenant)) {
      conc.release(kc);
      conc.release(tc);
      reject('ERR_SRV_LOAD_SHED', 'shed', model.name, p.tenant, retryHint(model.name));
    }
    daily.add(kR, 1, nowMs);
    daily.add(tR, 1, nowMs);
    if (size.bytes) {
      daily.add(kB, size.bytes, nowMs);
      daily.add(tB, size.bytes, nowMs);
    }
    if (model.defenses?.queryBudgetPerDay !== undefined) daily.add(qK, 1, nowMs);
    metrics?.inflight(p.tenant, 1);
    // Extraction detector: statistics only.
    const det = detectors.get(model.name);
    if (det) {
      const f = inputFeatures(req);
      const v = f && det.observe(p.keyId, f);
      if (v) extractionAlert(det, p, model.name, v, nowMs);
    }
    let released = false;
    return {
      principal: p,
      tenant: p.tenant,
      modelLabel: model.name,
      model,
      inBytes: size.bytes,
      release() {
        if (released) return;
        released = true;
        conc.release(kc);
        conc.release(tc);
        shedder.release(p.tenant);
        metrics?.inflight(p.tenant, -1);
      },
    };
  }

  function extractionAlert(det: ExtractionDetector, p: Principal, modelName: string, v: Verdict, nowMs: number): void {
    metrics?.extractionAlert(modelName, p.tenant, v.signal);
    const cfg = det.config;
    events.emit({ type: 'extraction_alert', tenant: p.tenant, keyId: p.keyId, model: modelName, signal: v.signal, value: Math.round(v.value * 1000) / 1000, window: v.window, action: cfg.action });
    logger.warn({ tenant: p.tenant, keyId: p.keyId, model: modelName, signal: v.signal, action: cfg.action }, 'extraction alert');
    if (cfg.action !== 'alert') {
      penalties.set(`${p.keyId}\0${modelName}`, { until: nowMs + cfg.penaltyMs, action: cfg.action, bucket: new TokenBucket(cfg.throttleRatePerSec, 1, nowMs) });
    }
  }

  /**
   * Boundary signal: one number from the model's own scores, before minimization (what
   * the key probed is the model's boundary, whatever the reply reveals). Penalizes later
   * requests; this reply goes out as it is, as for the input signals.
   */
  function observeOutputs(adm: Admission, res: Record<string, unknown>): void {
    const src = scoreSources.get(adm.modelLabel);
    const det = src && detectors.get(adm.modelLabel);
    if (!src || !det || !adm.principal) return;
    try {
      const s = boundaryStatistic(res, src);
      const v = s === undefined ? undefined : det.observeBoundary(adm.principal.keyId, s);
      if (v) extractionAlert(det, adm.principal, adm.modelLabel, v, now());
    } catch (e) {
      // Never expected (boundaryStatistic does not throw); the reply must still go out.
      logger.error({ model: adm.modelLabel, err: isCirError(e) ? e.code : 'internal' }, 'boundary statistic failed');
    }
  }

  function admitEvidence(call: grpc.ServerUnaryCall<unknown, unknown>, nowMs: number): Admission {
    const values = call.metadata.get('authorization');
    if (values.length > 0 && o.auth?.mode === 'api-keys') {
      const id = identify(call, nowMs);
      if (typeof id === 'string') return authFail('GetEvidence', id, call);
      needOp('GetEvidence', id, 'evidence', '');
      rate(id, nowMs, '');
      return { principal: id, tenant: id.tenant, modelLabel: '', model: undefined, inBytes: 0, release: NO_RELEASE };
    }
    const peer = peerAddress(call.getPeer());
    const w1 = evidencePeers.take(peer, nowMs);
    if (w1) reject('ERR_SRV_RATE_LIMITED', 'evidence-peer', '', ANON_TENANT, w1);
    const w2 = evidenceGlobal.take(nowMs);
    if (w2) reject('ERR_SRV_RATE_LIMITED', 'evidence-global', '', ANON_TENANT, w2);
    return { principal: undefined, tenant: ANON_TENANT, modelLabel: '', model: undefined, inBytes: 0, release: NO_RELEASE };
  }

  function admit(method: string, call: grpc.ServerUnaryCall<unknown, unknown>, nowMs: number, ctx: Partial<Admission>): Admission {
    if (method === 'GetEvidence') return admitEvidence(call, nowMs);
    const id = identify(call, nowMs);
    if (typeof id === 'string') return authFail(method, id, call);
    (ctx as { principal?: Principal; tenant?: string }).principal = id;
    (ctx as { tenant?: string }).tenant = id.tenant;
    if (method === 'ModelInfer') return admitInfer(call, id, nowMs, ctx as { modelLabel?: string });
    const req = call.request;
    if (method === 'ModelMetadata' || method === 'ModelReady') {
      const name = isRecord(req) ? str(req['name']) : '';
      (ctx as { modelLabel?: string }).modelLabel = models.has(name) ? name : UNKNOWN_MODEL_LABEL;
      rate(id, nowMs, models.has(name) ? name : UNKNOWN_MODEL_LABEL);
      const m = visibleModel(method, id, name);
      needOp(method, id, 'metadata', m.name);
      return { principal: id, tenant: id.tenant, modelLabel: m.name, model: m, inBytes: 0, release: NO_RELEASE };
    }
    // ServerLive, ServerReady, ServerMetadata: any valid key; nothing per tenant.
    rate(id, nowMs, '');
    return { principal: id, tenant: id.tenant, modelLabel: '', model: undefined, inBytes: 0, release: NO_RELEASE };
  }

  function outBytes(res: unknown): number {
    if (!isRecord(res) || !Array.isArray(res['raw_output_contents'])) return 0;
    let n = 0;
    for (const b of res['raw_output_contents']) if (b instanceof Uint8Array) n += b.length;
    return n;
  }

  function record(method: string, adm: Partial<Admission> | undefined, t0: number, reqId: string, status: string, code: string | undefined, res: unknown): void {
    const seconds = (performance.now() - t0) / 1000;
    const tenant = adm?.tenant ?? ANON_TENANT;
    const model = adm?.modelLabel ?? '';
    metrics?.request(method, model, tenant, status, seconds);
    if (code) metrics?.error(method, model, tenant, code);
    const mode = o.observability.accessLog;
    if (mode === 'all' || (mode === 'errors' && code)) {
      accessLog.info(
        {
          reqId,
          method,
          tenant,
          keyId: adm?.principal?.keyId,
          model: model || undefined,
          inBytes: adm?.inBytes,
          outBytes: code ? undefined : outBytes(res),
          status,
          code,
          ms: Math.round(seconds * 1e4) / 10,
        },
        'rpc',
      );
    }
  }

  // Server-side time limit: one sweeper timer for all calls (a timer per request would
  // cost more than the rest of admission); resolution is a tenth of the limit (10-1000 ms).
  const deadlines = new Map<number, { at: number; fail: () => void }>();
  let deadlineSeq = 0;
  let sweeper: NodeJS.Timeout | undefined;
  const sweepEvery = Math.min(1000, Math.max(10, Math.floor(lim.maxRequestMs / 10)));
  function sweep(): void {
    const t = performance.now();
    for (const [id, d] of deadlines) {
      if (d.at <= t) {
        deadlines.delete(id);
        d.fail();
      }
    }
    if (deadlines.size === 0 && sweeper) {
      clearInterval(sweeper);
      sweeper = undefined;
    }
  }
  function withTimeLimit<T>(run: Promise<T>, modelName: string, tenant: string): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const id = ++deadlineSeq;
      deadlines.set(id, {
        at: performance.now() + lim.maxRequestMs,
        fail: () => {
          metrics?.rejected('time', modelName, tenant);
          reject(limitError('ERR_SRV_TIME_LIMIT', retryHint(modelName)));
        },
      });
      if (!sweeper) {
        sweeper = setInterval(sweep, sweepEvery);
        sweeper.unref();
      }
      run.then(
        (v) => {
          deadlines.delete(id);
          resolve(v);
        },
        (e: unknown) => {
          deadlines.delete(id);
          reject(e);
        },
      );
    });
  }

  function wrap(method: string, handler: Handler): grpc.handleUnaryCall<unknown, unknown> {
    const isInfer = method === 'ModelInfer';
    return (call, callback) => {
      const t0 = performance.now();
      const reqId = `${reqPrefix}-${(++reqCounter).toString(36)}`;
      let adm: Admission | undefined;
      const ctx: Partial<Admission> = {};
      let reply: Promise<unknown>;
      try {
        adm = admit(method, call, now(), ctx);
        const run = Promise.resolve(handler(call.request, call));
        const a = adm;
        // Slots are released when the handler really finishes, even after a time-limit reply.
        run.then(
          () => a.release(),
          () => a.release(),
        );
        if (isInfer) {
          const modelName = a.modelLabel;
          reply = withTimeLimit(run, modelName, a.tenant);
          run.then(
            () => {
              const ms = performance.now() - t0;
              const prev = ewma.get(modelName);
              ewma.set(modelName, prev === undefined ? ms : prev * 0.9 + ms * 0.1);
            },
            () => undefined,
          );
        } else {
          reply = run;
        }
      } catch (e) {
        reply = Promise.reject(e);
      }
      reply.then(
        (res) => {
          if (isInfer && adm && isRecord(res)) observeOutputs(adm, res);
          const m = adm?.model?.defenses?.minimize;
          if (isInfer && m && isRecord(res)) minimizeOutputs(res as unknown as ModelInferResponse, m);
          callback(null, res);
          record(method, adm, t0, reqId, 'OK', undefined, res);
        },
        (err: unknown) => {
          const s = toGrpcStatus(err, logger, method, reqId);
          const retry = isCirError(err) ? err.details?.['retryAfterMs'] : undefined;
          if (typeof retry === 'number') s.metadata.set(RETRY_AFTER_METADATA_KEY, String(retry));
          callback({ code: s.code, details: s.details, metadata: s.metadata });
          record(method, adm ?? ctx, t0, reqId, grpc.status[s.code] ?? String(s.code), isCirError(err) ? err.code : 'internal', undefined);
        },
      );
    };
  }

  return {
    wrap,
    async load() {
      if (lim.quotaStateFile !== undefined) await daily.load(lim.quotaStateFile, now());
    },
    async flush() {
      if (lim.quotaStateFile !== undefined) await daily.flush(lim.quotaStateFile);
    },
  };
}
