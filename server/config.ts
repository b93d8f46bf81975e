/**
 * Server configuration: one zod strictObject, parsed once at start-up, then frozen and
 * passed down. Unknown keys are errors (a typo must not silently fall back to a default).
 * Errors name the field and the rule, never the value.
 */
import { z } from 'zod';
import { TenantIdSchema } from '../kms-broker/protocol.js';
import { deepFreeze, issuesDetail } from '../common/config.js';
import { TSM_REPORT_ROOT } from '../attestation/tsm/configfs.js';
import { ServerError } from './codes.js';
import { MAX_IDLE_POLL_US } from './idle-poll.js';
import {
  AuthConfigSchema,
  LimitsConfigSchema,
  ModelDefenseSchema,
  ObservabilityConfigSchema,
  TenantNameSchema,
} from './tenancy/config.js';

const MODEL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const MiB = 1 << 20;
/** Concurrent ModelInfer calls a server admits unless `maxConcurrentInfers` says otherwise. */
export const DEFAULT_MAX_CONCURRENT_INFERS = 64;
/** The most sessions (worker threads) per model: `workers`. */
export const MAX_WORKERS_PER_MODEL = 64;

export const ModelEntrySchema = z.strictObject({
  name: z.string().regex(MODEL_NAME_RE, 'must be 1-128 chars of [A-Za-z0-9._-], starting alphanumeric'),
  /** Sealed model file (plain ONNX only with `plaintext: true` and `allowPlaintextModels`). */
  path: z.string().min(1),
  version: z.string().regex(MODEL_NAME_RE, 'must be 1-128 chars of [A-Za-z0-9._-]').optional(),
  plaintext: z.boolean().default(false),
  /** The tenant that owns this model: only its keys can see it (server/tenancy). */
  tenant: TenantNameSchema.default('default'),
  /** Extraction defenses for this model (output minimization, query budget, detector); none by default. */
  defenses: ModelDefenseSchema.optional(),
});

export const ServerConfigSchema = z
  .strictObject({
    listen: z
      .strictObject({
        host: z.string().min(1).default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8443),
      })
      .prefault({}),
    models: z.array(ModelEntrySchema).min(1, 'at least one model is required'),
    broker: z
      .strictObject({
        url: z.url({ protocol: /^https?$/ }),
        /** The broker tenant whose keys this server's sealed models name (default `default`). */
        tenant: TenantIdSchema.default('default'),
        timeoutMs: z.number().int().min(100).max(300_000).default(10_000),
        /** PEM CA for an https broker with a private CA. */
        caFile: z.string().min(1).optional(),
        /**
         * mTLS client certificate (PEM) and its key (PEM, mode 0600 or stricter) presented on
         * every broker request, for a broker with `tls.workloadClientCerts` bind or require.
         */
        clientCertFile: z.string().min(1).optional(),
        clientKeyFile: z.string().min(1).optional(),
        /**
         * The broker's public JWKS (it writes `<stateDir>/jwks.json`), pinned: key releases
         * must be signed by one of these keys. Required unless allowUnsignedRelease.
         */
        jwksFile: z.string().min(1).optional(),
        /** Development only: accept unsigned releases. Refused when NODE_ENV=production. */
        allowUnsignedRelease: z.boolean().default(false),
      })
      .optional(),
    tls: z
      .strictObject({
        certFile: z.string().min(1).optional(),
        keyFile: z.string().min(1).optional(),
        /** Lifetime of a generated self-signed certificate. */
        validityDays: z.number().int().min(1).max(397).default(30),
      })
      .prefault({}),
    maxMessageBytes: z
      .number()
      .int()
      .min(64 * 1024)
      .max(1024 * MiB)
      .default(16 * MiB),
    maxTensorElements: z
      .number()
      .int()
      .min(1)
      .max(2 ** 31 - 1)
      .default(1 << 24),
    /** Concurrent ModelInfer calls before RESOURCE_EXHAUSTED. */
    maxConcurrentInfers: z.number().int().min(1).max(65_536).default(DEFAULT_MAX_CONCURRENT_INFERS),
    /** Concurrent GetEvidence calls before RESOURCE_EXHAUSTED. */
    maxConcurrentEvidence: z.number().int().min(1).max(1024).default(8),
    retry: z
      .strictObject({
        initialMs: z.number().int().min(1).max(600_000).default(500),
        maxMs: z.number().int().min(1).max(3_600_000).default(30_000),
        maxAttempts: z.number().int().min(1).optional(),
      })
      .prefault({}),
    /**
     * onnxruntime intra-op threads, counting the calling thread; 0 = cir picks
     * max(1, cores - 1), leaving one core to the event loop (server/executor.ts).
     */
    intraOpThreads: z.number().int().min(0).max(1024).default(0),
    /** onnxruntime inter-op threads (parallel execution mode only); 0 = onnxruntime's default. */
    interOpThreads: z.number().int().min(0).max(1024).default(0),
    /** onnxruntime execution mode: 'parallel' runs independent graph branches concurrently. */
    executionMode: z.enum(['sequential', 'parallel']).default('sequential'),
    /**
     * Let onnxruntime's idle pool threads spin-wait for work (its default). Off by default
     * in the server: spinning threads burn the cores the gRPC event loop and TLS need, which
     * on small machines costs more latency than the wake-up it saves.
     */
    intraOpSpinning: z.boolean().default(false),
    /**
     * Where onnxruntime runs (server/executor.ts). 'inline' (default): on the event loop,
     * so gRPC I/O waits while a model runs; cheapest for models of well under a
     * millisecond, where a thread hop costs more than it hides. 'worker': each model's
     * session in its own worker thread, so gRPC I/O overlaps with compute; pays for models
     * that take milliseconds per run, at one input copy and a message round trip per run.
     */
    executor: z.enum(['inline', 'worker']).default('inline'),
    /**
     * Sessions per model, each in its own worker thread (executor 'worker' only): N
     * requests of one model run at once, at N copies of its weights in memory. 1
     * (default): one request of a model at a time. The default intra-op threads are divided
     * between them (server/executor.ts).
     */
    workers: z.number().int().min(1).max(MAX_WORKERS_PER_MODEL).default(1),
    /**
     * Microseconds the event loop keeps polling after the last call in flight ends, so the
     * next request is read without waking a sleeping thread and vCPU (server/idle-poll.ts).
     * 0 (default): off. Costs up to that much CPU per call that leaves the server idle.
     */
    idlePollUs: z.number().int().min(0).max(MAX_IDLE_POLL_US).default(0),
    /** Dev/bench only: plaintext gRPC without TLS. */
    insecure: z.boolean().default(false),
    /** Dev only: allow models marked `plaintext: true`. */
    allowPlaintextModels: z.boolean().default(false),
    /**
     * Which evidence provider serves this machine (server/provider-select.ts): `auto` uses
     * configfs-tsm when it reports `sev_guest` or `tdx_guest` and otherwise the simulator,
     * only when `simulated` is configured; `sev-snp` requires configfs-tsm reporting
     * `sev_guest`, `tdx` requires it reporting `tdx_guest`; `simulated` requires `simulated`.
     */
    tee: z
      .strictObject({
        mode: z.enum(['auto', 'sev-snp', 'tdx', 'simulated']).default('auto'),
        /** configfs-tsm report directory. */
        tsmRoot: z.string().min(1).default(TSM_REPORT_ROOT),
        /** SEV-SNP VMPL to request reports at (configfs-tsm `privlevel`); the kernel's default when absent. */
        privlevel: z.number().int().min(0).max(3).optional(),
      })
      .prefault({}),
    /**
     * Who may call (server/tenancy). Absent: every RPC except GetEvidence is refused (fail
     * closed). `{ mode: 'api-keys', storeFile }`: keys from `cir keys`. `{ mode: 'none' }`:
     * explicit relaxation, logged at start-up.
     */
    auth: AuthConfigSchema.optional(),
    /** Per-key/per-tenant quotas, hard request limits, load shedding, GetEvidence rate limits. */
    limits: LimitsConfigSchema,
    /** Metrics port, security event stream, access log. */
    observability: ObservabilityConfigSchema,
    /** Settings of the simulated TEE (development; never accepted by a production broker policy). */
    simulated: z
      .strictObject({
        stateDir: z.string().min(1),
        measurement: z.string().regex(/^[0-9a-fA-F]{96}$/, 'must be 96 hex characters (48 bytes)'),
      })
      .optional(),
  })
  .superRefine((c, ctx) => {
    const names = new Set<string>();
    c.models.forEach((m, i) => {
      if (names.has(m.name)) ctx.addIssue({ code: 'custom', path: ['models', i, 'name'], message: 'duplicate model name' });
      names.add(m.name);
      if (m.plaintext && !c.allowPlaintextModels) {
        ctx.addIssue({
          code: 'custom',
          path: ['models', i, 'plaintext'],
          message: 'plaintext models require allowPlaintextModels: true',
        });
      }
    });
    if (c.workers > 1 && c.executor !== 'worker') {
      ctx.addIssue({ code: 'custom', path: ['workers'], message: "more than 1 needs executor: 'worker' (inline sessions all run on the event loop)" });
    }
    if (c.models.some((m) => !m.plaintext) && !c.broker) {
      ctx.addIssue({ code: 'custom', path: ['broker'], message: 'required when any model is sealed' });
    }
    if (c.broker && c.broker.jwksFile === undefined && !c.broker.allowUnsignedRelease) {
      ctx.addIssue({
        code: 'custom',
        path: ['broker', 'jwksFile'],
        message: "required: the broker's pinned JWKS authenticates key releases (or allowUnsignedRelease: true, development only)",
      });
    }
    if (c.broker?.jwksFile !== undefined && c.broker.allowUnsignedRelease) {
      ctx.addIssue({ code: 'custom', path: ['broker', 'allowUnsignedRelease'], message: 'contradicts broker.jwksFile' });
    }
    if (c.broker?.caFile !== undefined && !c.broker.url.startsWith('https:')) {
      ctx.addIssue({ code: 'custom', path: ['broker', 'caFile'], message: 'needs an https broker.url' });
    }
    if (c.broker && (c.broker.clientCertFile === undefined) !== (c.broker.clientKeyFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['broker', 'clientCertFile'], message: 'clientCertFile and clientKeyFile must be given together' });
    }
    if (c.broker?.clientCertFile !== undefined && !c.broker.url.startsWith('https:')) {
      ctx.addIssue({ code: 'custom', path: ['broker', 'clientCertFile'], message: 'needs an https broker.url' });
    }
    if ((c.tls.certFile === undefined) !== (c.tls.keyFile === undefined)) {
      ctx.addIssue({ code: 'custom', path: ['tls'], message: 'certFile and keyFile must be given together' });
    }
    if (c.tee.mode === 'simulated' && !c.simulated) {
      ctx.addIssue({ code: 'custom', path: ['simulated'], message: 'required when tee.mode is simulated (stateDir and measurement)' });
    }
    if (c.auth?.mode === 'api-keys' && c.auth.mtlsCaFile !== undefined && c.insecure) {
      ctx.addIssue({ code: 'custom', path: ['auth', 'mtlsCaFile'], message: 'mTLS client identities need TLS (insecure is set)' });
    }
    const { maxInflight, shedAt } = c.limits.shedding;
    if (maxInflight !== undefined && shedAt !== undefined && shedAt > maxInflight) {
      ctx.addIssue({ code: 'custom', path: ['limits', 'shedding', 'shedAt'], message: 'must be <= limits.shedding.maxInflight' });
    }
    c.models.forEach((m, i) => {
      const d = m.defenses?.detector;
      if (d && d.minRequests > d.window) {
        ctx.addIssue({ code: 'custom', path: ['models', i, 'defenses', 'detector', 'minRequests'], message: 'must be <= window' });
      }
    });
    if (c.retry.maxMs < c.retry.initialMs) {
      ctx.addIssue({ code: 'custom', path: ['retry', 'maxMs'], message: 'must be >= retry.initialMs' });
    }
  });

export type ServerConfig = Readonly<z.output<typeof ServerConfigSchema>>;
export type ServerConfigInput = z.input<typeof ServerConfigSchema>;


/**
 * Parses and freezes a server configuration. Throws ERR_SRV_CONFIG whose detail lists
 * every problem as `path: rule` (e.g. `models.0.name: duplicate model name`); values are
 * never echoed.
 */
export function loadServerConfig(obj: unknown): ServerConfig {
  const r = ServerConfigSchema.safeParse(obj);
  if (!r.success) {
    const detail = issuesDetail(r.error.issues);
    throw new ServerError('ERR_SRV_CONFIG', { detail, details: { fields: r.error.issues.map((i) => i.path.join('.')) } });
  }
  return deepFreeze(r.data);
}
