/**
 * Configuration of the multi-tenant controls (issue 7), as zod schemas that
 * server/config.ts embeds in `ServerConfigSchema`. Everything here is data: auth mode and
 * key store, per-key and per-tenant limits, hard request limits, load shedding, per-model
 * extraction defenses, metrics and the security event stream.
 *
 * SECURITY: fail closed. Without an `auth` section the server refuses every inference RPC
 * (GetEvidence stays open, rate-limited); `auth: { mode: 'none' }` is the explicit,
 * logged relaxation. Every extraction defense is off unless configured for a model.
 */
import { z } from 'zod';

const posInt = (max: number) => z.number().int().min(1).max(max);
const TENANT_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

export const TenantNameSchema = z.string().regex(TENANT_RE, 'must be 1-64 chars of [A-Za-z0-9._-], starting alphanumeric');

export const AuthConfigSchema = z.discriminatedUnion('mode', [
  z.strictObject({
    mode: z.literal('api-keys'),
    /** The API-key store (`cir keys ...`): JSON, mode 0600, hashes only. */
    storeFile: z.string().min(1),
    /** mtime poll interval backing fs.watch (reloads without restart). */
    pollMs: z.number().int().min(100).max(600_000).default(2_000),
    /**
     * mTLS client identities: the server requests a client certificate verified against
     * this CA (PEM) and maps its SHA-256 (DER) fingerprint to a key record's `certSha256`.
     */
    mtlsCaFile: z.string().min(1).optional(),
  }),
  z.strictObject({ mode: z.literal('none') }),
]);

/** Limits for one principal (a key or a tenant). Absent = unlimited for that dimension. */
export const PrincipalLimitsSchema = z.strictObject({
  /** Token bucket: sustained requests per second and burst size. */
  ratePerSec: z.number().positive().max(1e6).optional(),
  burst: posInt(1e6).optional(),
  /** Concurrent ModelInfer calls. */
  maxConcurrent: posInt(65_536).optional(),
  /** Per UTC day. */
  dailyRequests: posInt(1e12).optional(),
  /** Input tensor bytes per UTC day. */
  dailyTensorBytes: posInt(Number.MAX_SAFE_INTEGER).optional(),
});
export type PrincipalLimits = z.output<typeof PrincipalLimitsSchema>;

export const LimitsConfigSchema = z
  .strictObject({
    /** Defaults for every API key. */
    perKey: PrincipalLimitsSchema.prefault({}),
    /** Defaults for every tenant (all its keys together). */
    perTenant: PrincipalLimitsSchema.prefault({}),
    /** Overrides by tenant name. */
    tenants: z.record(TenantNameSchema, z.strictObject({ perKey: PrincipalLimitsSchema.optional(), perTenant: PrincipalLimitsSchema.optional() })).default({}),
    /** Hard limits on one ModelInfer request (message size itself is `maxMessageBytes`). */
    maxBatch: posInt(1 << 20).optional(),
    maxRequestElements: posInt(2 ** 31 - 1).optional(),
    maxRequestBytes: posInt(1 << 30).optional(),
    /** Server-side time limit of one ModelInfer call, whatever deadline the client set. */
    maxRequestMs: posInt(3_600_000).default(30_000),
    /**
     * Global load shedding over ModelInfer calls in flight: at `shedAt` or more, a tenant
     * already holding its fair share (maxInflight / tenants in flight) is refused; at
     * `maxInflight` everyone is. Defaults: maxInflight = maxConcurrentInfers, shedAt = 3/4 of it.
     */
    shedding: z.strictObject({ maxInflight: posInt(65_536).optional(), shedAt: posInt(65_536).optional() }).prefault({}),
    /** GetEvidence without a key: token bucket per peer address, and one for all peers. */
    evidence: z
      .strictObject({
        perPeerRatePerSec: z.number().positive().max(1e6).default(5),
        perPeerBurst: posInt(1e6).default(10),
        globalRatePerSec: z.number().positive().max(1e6).default(50),
        globalBurst: posInt(1e6).default(100),
      })
      .prefault({}),
    /** Daily counters survive a restart only with a state file (flushed every flushMs and on stop). */
    quotaStateFile: z.string().min(1).optional(),
    quotaFlushMs: z.number().int().min(100).max(600_000).default(5_000),
  })
  .prefault({});
export type LimitsConfig = z.output<typeof LimitsConfigSchema>;

export const MinimizeSchema = z
  .strictObject({
    /** Output tensors to minimize; all FP32 outputs when absent. The last axis holds the classes. */
    outputs: z.array(z.string().min(1)).optional(),
    topK: posInt(1 << 20).optional(),
    decimals: z.number().int().min(0).max(8).optional(),
    /** Replace each row by the INT64 index of its largest value. */
    labelsOnly: z.boolean().default(false),
  })
  .refine((m) => m.topK !== undefined || m.decimals !== undefined || m.labelsOnly, 'set topK, decimals or labelsOnly');
export type MinimizeConfig = z.output<typeof MinimizeSchema>;

export const DetectorConfigSchema = z.strictObject({
  /** Requests per key and model in the sliding window. */
  window: z.number().int().min(8).max(4096).default(64),
  /** A window is judged only once it holds this many requests. */
  minRequests: z.number().int().min(4).max(4096).default(32),
  nearDuplicateRate: z.number().min(0).max(1).default(0.6),
  sweepRate: z.number().min(0).max(1).default(0.5),
  /** Mean normalized input-histogram entropy at or above which inputs count as near-uniform. */
  uniformEntropy: z.number().min(0).max(1).default(0.975),
  /**
   * Boundary probing, from the class-score output (computed only when the model has one:
   * `boundaryOutput`, else minimize's `outputs`, else an FP32 output whose rows are
   * probability distributions). Opt-in: on a model with many classes a top-1/top-2 margin
   * under 0.1 is common in ordinary traffic, and the false-positive evidence so far covers
   * a binary model and synthetic traffic only. false (default): not computed.
   */
  boundary: z.boolean().default(false),
  /** The output whose last axis holds the class scores (one column: a binary score). */
  boundaryOutput: z.string().min(1).optional(),
  /** 'logits': softmax (one column: sigmoid) before the margin; 'probabilities': as given. */
  boundaryScores: z.enum(['probabilities', 'logits']).default('probabilities'),
  /** A row is near the boundary when its top-1 minus top-2 probability is below this. */
  boundaryMargin: z.number().gt(0).max(1).default(0.1),
  /** Mean share of near-boundary rows per request at or above which a key is flagged. */
  boundaryFraction: z.number().gt(0).max(1).default(0.5),
  /** alert: security event only; throttle: also rate-limit the key on this model; block: refuse it. */
  action: z.enum(['alert', 'throttle', 'block']).default('alert'),
  throttleRatePerSec: z.number().positive().max(1e6).default(1),
  /** How long throttle/block lasts after the last alert. */
  penaltyMs: z.number().int().min(1).max(30 * 86_400_000).default(3_600_000),
});
export type DetectorConfig = z.output<typeof DetectorConfigSchema>;

export const ModelDefenseSchema = z
  .strictObject({
    minimize: MinimizeSchema.optional(),
    /** ModelInfer calls per key on this model per UTC day. */
    queryBudgetPerDay: posInt(1e12).optional(),
    detector: DetectorConfigSchema.optional(),
  })
  .superRefine((m, ctx) => {
    // Logits cannot be recognized from their values, unlike probabilities: name the output.
    const d = m.detector;
    if (d?.boundary && d.boundaryScores === 'logits' && d.boundaryOutput === undefined && m.minimize?.outputs === undefined) {
      ctx.addIssue({ code: 'custom', path: ['detector', 'boundaryOutput'], message: "required with boundaryScores 'logits' (or minimize.outputs)" });
    }
    // The boundary signal is opt-in: a score output or score kind configured without it would
    // silently judge nothing (and did judge, when the signal was on by default).
    if (d && !d.boundary && (d.boundaryOutput !== undefined || d.boundaryScores === 'logits')) {
      ctx.addIssue({ code: 'custom', path: ['detector', 'boundary'], message: 'set boundary: true to use boundaryOutput or boundaryScores (the boundary signal is opt-in)' });
    }
  });
export type ModelDefense = z.output<typeof ModelDefenseSchema>;

export const ObservabilityConfigSchema = z
  .strictObject({
    /** Prometheus text exposition on its own port (GET /metrics); off when absent. */
    metrics: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(9464),
      })
      .optional(),
    /** Security events as JSON lines: 'stdout', a file (appended, mode 0600), or 'off'. */
    securityEvents: z.union([z.enum(['stdout', 'off']), z.strictObject({ file: z.string().min(1) })]).default('off'),
    /** One log line per RPC (ids, sizes, status, latency; never content). */
    accessLog: z.enum(['all', 'errors', 'off']).default('all'),
  })
  .prefault({});
export type ObservabilityConfig = z.output<typeof ObservabilityConfigSchema>;

export type AuthConfig = z.output<typeof AuthConfigSchema>;
