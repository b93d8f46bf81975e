import { BlockList, isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from '../common/logger.js';
import { deepFreeze, issuesDetail } from '../common/config.js';
import { KmsError } from './codes.js';
import { BROKER_TEES, policyTee, ReleasePolicySchema, type ReleasePolicy } from './policy.js';
import { BROKER_JWKS_FILE } from './protocol.js';
import { WORKLOAD_CLIENT_CERT_MODES } from './workload-mtls.js';

/**
 * Broker configuration. Parsed once at start-up, then frozen and passed down explicitly.
 *
 * SECURITY: the configuration never holds a secret itself, only where to find one
 * (`masterKeyFile` / `masterKeyEnv`, `adminTokenFile` / `adminTokenEnv`), so a config
 * error or a logged config can never leak one.
 */
export const MAX_CHALLENGE_TTL_SECONDS = 60;
export const MAX_TOKEN_TTL_SECONDS = 300;
export const DEFAULT_MASTER_KEY_ENV = 'CIR_KMS_MASTER_KEY';
export const DEFAULT_ADMIN_TOKEN_ENV = 'CIR_KMS_ADMIN_TOKEN';
export const DEFAULT_ISSUER = 'cir-kms-broker';
export const DEFAULT_MAX_CHALLENGES_PER_CLIENT = 16;
// leases
export const MIN_LEASE_TTL_SECONDS = 2;
export const MAX_LEASE_TTL_SECONDS = 86_400;
export const DEFAULT_LEASE_TTL_SECONDS = 600;

const FilePath = z.string().min(1).max(4096);
const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name');

/**
 * `attestation.policy`: one policy document (see policy.ts), or a list of them with at most
 * one per TEE. Dispatched by hand rather than with `z.union`, so that an error names the
 * field inside the policy instead of "invalid union".
 */
const AttestationPolicySchema = z.unknown().transform((input, ctx): ReleasePolicy | readonly ReleasePolicy[] => {
  if (!Array.isArray(input)) {
    const r = ReleasePolicySchema.safeParse(input);
    if (r.success) return r.data;
    for (const i of r.error.issues) ctx.addIssue({ code: 'custom', message: i.message, path: [...i.path], input });
    return z.NEVER;
  }
  const r = ReleasePolicySchema.array().min(1).max(BROKER_TEES.length).safeParse(input);
  if (!r.success) {
    for (const i of r.error.issues) ctx.addIssue({ code: 'custom', message: i.message, path: [...i.path], input });
    return z.NEVER;
  }
  const tees = r.data.map(policyTee);
  if (new Set(tees).size !== tees.length) {
    ctx.addIssue({ code: 'custom', message: 'at most one policy per TEE', path: [], input });
    return z.NEVER;
  }
  return r.data;
});

// --- Abuse limits and metrics (kms-broker/limits.ts, kms-broker/metrics.ts) ------------

/** Requests per `windowSeconds` for one route group: per client address, and per identity. */
const RateLimitSchema = (perIp: number, perIdentity: number) =>
  z
    .strictObject({
      /** Per client address (IPv4, or IPv6 /64): counted before body parsing and authentication. */
      perIp: z.number().int().min(1).max(10_000_000).default(perIp),
      /** Per authenticated identity (`request.principal`), else per client address: counted after authentication. */
      perIdentity: z.number().int().min(1).max(10_000_000).default(perIdentity),
    })
    .prefault({});

/** `limits`: rate limits per route group, overload shedding, server timeouts, evidence size, verification concurrency. */
export const LimitsConfigSchema = z
  .strictObject({
    rate: z
      .strictObject({
        windowSeconds: z.number().int().min(1).max(3600).default(60),
        /** `POST /v1/attest/challenge` and `POST /v1/attest`. */
        attest: RateLimitSchema(300, 300),
        /** Key release and lease renewal. */
        release: RateLimitSchema(600, 120),
        /** Every route with an `admin` path segment. */
        admin: RateLimitSchema(300, 120),
        /** Everything else (JWKS, unknown routes); the health route is never limited. */
        other: RateLimitSchema(1200, 1200),
        /** Clients tracked per limiter (LRU); bounds the limiter's memory. */
        maxTrackedClients: z.number().int().min(100).max(1_000_000).default(10_000),
      })
      .prefault({}),
    overload: z
      .strictObject({
        /** Mean event-loop delay (ms) over a sample interval above which requests are shed; 0 = off. */
        maxEventLoopDelayMs: z.number().int().min(0).max(60_000).default(1000),
        /** Heap in use above which requests are shed; default 90% of V8's heap limit. */
        maxHeapUsedBytes: z.number().int().min(1024 * 1024).optional(),
        /** Resident set size above which requests are shed; off unless set. */
        maxRssBytes: z.number().int().min(1024 * 1024).optional(),
        /** Event-loop utilisation (0..1) above which requests are shed; off unless set. */
        maxEventLoopUtilization: z.number().gt(0).max(1).optional(),
        sampleIntervalMs: z.number().int().min(100).max(60_000).default(1000),
        /** `Retry-After` of an overload answer. */
        retryAfterSeconds: z.number().int().min(1).max(3600).default(2),
      })
      .prefault({}),
    timeouts: z
      .strictObject({
        /** Whole request, headers and body (node `server.requestTimeout`). */
        requestTimeoutMs: z.number().int().min(100).max(600_000).default(10_000),
        /** Request headers (node `server.headersTimeout`); at most `requestTimeoutMs`. */
        headersTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
        /** Socket inactivity (fastify `connectionTimeout`). */
        idleTimeoutMs: z.number().int().min(100).max(600_000).default(15_000),
        /** Idle keep-alive connection (fastify `keepAliveTimeout`). */
        keepAliveTimeoutMs: z.number().int().min(100).max(600_000).default(5_000),
        /** How often node checks the request and header timeouts (node `connectionsCheckingInterval`). */
        checkIntervalMs: z.number().int().min(10).max(30_000).default(1_000),
        /** Requests per keep-alive connection; 0 = unlimited. */
        maxRequestsPerSocket: z.number().int().min(0).max(1_000_000).default(1_000),
        /** Open connections at once (node `server.maxConnections`); further ones are dropped. */
        maxConnections: z.number().int().min(1).max(1_000_000).default(4_096),
      })
      .refine((t) => t.headersTimeoutMs <= t.requestTimeoutMs, { path: ['headersTimeoutMs'], message: 'must be at most requestTimeoutMs' })
      .prefault({}),
    /**
     * Largest evidence accepted, bytes of JSON: the `POST /v1/attest` body may be this plus
     * `ATTEST_ENVELOPE_BYTES`. The default fits a 64 KiB TDX quote in base64 and SEV-SNP
     * evidence with a full certificate chain and table, several times over.
     */
    maxEvidenceBytes: z.number().int().min(4096).max(4 * 1024 * 1024).default(128 * 1024),
    verification: z
      .strictObject({
        /** Evidence verifications running at once. */
        maxConcurrent: z.number().int().min(1).max(1024).default(4),
        /** Verifications waiting for a slot; beyond it, 429 `ERR_KMS_VERIFIER_BUSY`. */
        maxQueued: z.number().int().min(0).max(100_000).default(256),
        /** Longest wait for a slot before 429 `ERR_KMS_VERIFIER_BUSY`. */
        maxQueueWaitMs: z.number().int().min(1).max(600_000).default(5_000),
      })
      .prefault({}),
  })
  .prefault({});

/** `metrics`: Prometheus text exposition on its own port (GET /metrics). Absent: off. */
export const MetricsConfigSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(0).max(65535).default(9464),
});

export const BrokerConfigSchema = z.strictObject({
  listen: z
    .strictObject({
      host: z.string().min(1).default('127.0.0.1'),
      port: z.number().int().min(0).max(65535).default(8443),
    })
    .prefault({}),
  /** Holds keys/, master.key (when generated), token-signing-key.pem. Created 0700. */
  stateDir: FilePath,
  /** Base64 file holding the 32-byte master key; default `<stateDir>/master.key`. Generated 0600 when absent. */
  masterKeyFile: FilePath.optional(),
  /** Environment variable holding the master key (base64). Wins over the file when set. */
  masterKeyEnv: EnvName.default(DEFAULT_MASTER_KEY_ENV),
  /** File holding the admin bearer token. Without a token from file or env, the admin API is off. */
  adminTokenFile: FilePath.optional(),
  adminTokenEnv: EnvName.default(DEFAULT_ADMIN_TOKEN_ENV),
  /** `iss` of issued attestation-result tokens. */
  issuer: z.string().min(1).max(256).default(DEFAULT_ISSUER),
  maxOutstandingChallenges: z.number().int().min(1).max(1_000_000).default(10_000),
  /**
   * Most outstanding challenges per client (IPv4 address or IPv6 /64), so one client cannot
   * fill `maxOutstandingChallenges` and lock everyone else out.
   */
  maxOutstandingChallengesPerClient: z.number().int().min(1).max(1_000_000).default(DEFAULT_MAX_CHALLENGES_PER_CLIENT),
  challengeTtlSeconds: z.number().int().min(1).max(MAX_CHALLENGE_TTL_SECONDS).default(MAX_CHALLENGE_TTL_SECONDS),
  tokenTtlSeconds: z.number().int().min(1).max(MAX_TOKEN_TTL_SECONDS).default(MAX_TOKEN_TTL_SECONDS),
  /** Key leases (kms-broker/leases.ts): lifetime of a lease, and when (as a fraction of it) servers renew. */
  leases: z
    .strictObject({
      ttlSeconds: z.number().int().min(MIN_LEASE_TTL_SECONDS).max(MAX_LEASE_TTL_SECONDS).default(DEFAULT_LEASE_TTL_SECONDS),
      renewFraction: z.number().min(0.1).max(0.9).default(0.5),
    })
    .prefault({}),
  attestation: z
    .strictObject({
      /** PEM file with the simulated TEE's ARK; only read when `allowSimulated`. */
      simulatedRootFile: FilePath.optional(),
      /** Trust the simulated TEE root at all. Refused when NODE_ENV=production. */
      allowSimulated: z.boolean().default(false),
      /**
       * Policy every attestation must pass before a token is issued (per-key release policies
       * come on top): one policy (SEV-SNP, or TDX with `tee: "tdx"`), or a list with at most
       * one per TEE. Evidence of a TEE the configured policies do not cover is denied (`tee`).
       * Absent: each TEE's default (`defaultAttestationPolicy`).
       */
      policy: AttestationPolicySchema.optional(),
      /**
       * Intel TDX collateral (no network): a layout-(a) directory (`tcb_info.json`, ...), a
       * dcap-qvl style JSON file, or an offline bundle root (one directory per FMSPC).
       * Without it the broker refuses TDX evidence (`ERR_KMS_TEE_NOT_CONFIGURED`).
       */
      tdxCollateral: FilePath.optional(),
      /**
       * Relaxation: accept TDX collateral without a PCK CRL and/or root CA CRL (recorded in
       * claims and tokens as `pck-crl-unchecked` / `root-ca-crl-unchecked`). Needs `tdxCollateral`.
       */
      tdxAllowMissingCrls: z.boolean().default(false),
    })
    .superRefine((a, ctx) => {
      if (a.tdxAllowMissingCrls && a.tdxCollateral === undefined) {
        ctx.addIssue({ code: 'custom', path: ['tdxAllowMissingCrls'], message: 'requires tdxCollateral' });
      }
    })
    .prefault({}),
  /** Largest accepted request body, bytes. */
  bodyLimit: z.number().int().min(1024).max(16 * 1024 * 1024).default(1024 * 1024),
  tls: z
    .strictObject({
      certFile: FilePath,
      keyFile: FilePath,
      /**
       * PEM CA bundle for mTLS client certificates. When set, the broker asks clients for a
       * certificate; one that chains to this CA and whose SHA-256 is registered to an admin
       * identity (`cir broker identities create --cert-sha256`) authenticates as it. Clients
       * without a certificate still connect (servers attest; bearer tokens still work).
       */
      clientCaFile: FilePath.optional(),
      /**
       * Client certificates of workloads (cir servers) on the attest, release and renewal
       * routes (kms-broker/workload-mtls.ts, RFC 8705-style binding). `off` (default): not
       * looked at. `bind`: a workload that presents a certificate chaining to `clientCaFile`
       * gets a token bound to it (`cnf.x5t#S256`), and the token and its lease are then
       * accepted only over a connection presenting that certificate; a certificate that does
       * not chain is refused. `require`: as `bind`, and every workload route refuses a
       * connection without one. Both need `clientCaFile`.
       */
      workloadClientCerts: z.enum(WORKLOAD_CLIENT_CERT_MODES).default('off'),
    })
    .superRefine((t, ctx) => {
      if (t.workloadClientCerts !== 'off' && t.clientCaFile === undefined) {
        ctx.addIssue({ code: 'custom', path: ['workloadClientCerts'], message: 'bind and require need clientCaFile' });
      }
    })
    .optional(),
  /**
   * Serve the admin API over plain HTTP on a non-loopback `listen.host`. Off by default: the
   * admin bearer token (and DEKs on create) would cross the network in clear. Logged as a
   * warning when used.
   */
  allowInsecureAdmin: z.boolean().default(false),
  /** Abuse limits: see `LimitsConfigSchema` and kms-broker/README.md, "Limits and overload". */
  limits: LimitsConfigSchema,
  /** Prometheus metrics on a separate port; off when absent. See kms-broker/README.md, "Metrics". */
  metrics: MetricsConfigSchema.optional(),
});

export type BrokerConfigInput = z.input<typeof BrokerConfigSchema>;
export type BrokerConfig = DeepReadonly<z.output<typeof BrokerConfigSchema>>;

type DeepReadonly<T> = T extends (infer E)[]
  ? readonly DeepReadonly<E>[]
  : T extends object
    ? { readonly [K in keyof T]: DeepReadonly<T[K]> }
    : T;

export interface LoadConfigOptions {
  /** Environment to read NODE_ENV from; defaults to `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
}

export function isProduction(env: Readonly<Record<string, string | undefined>>): boolean {
  return env.NODE_ENV === 'production';
}

/**
 * Validates and freezes a broker configuration.
 *
 * Throws `KmsError('ERR_KMS_CONFIG_INVALID')` whose detail names every bad field and why.
 * SECURITY: the detail never echoes input values (zod messages here describe types and
 * bounds, and `reportInput` is never enabled). In production (NODE_ENV=production) a
 * configuration that trusts the simulated TEE is refused.
 * Does not check that files exist; the components that read them do.
 */
export function loadBrokerConfig(input: unknown, options: LoadConfigOptions = {}): BrokerConfig {
  const env = options.env ?? process.env;
  const parsed = BrokerConfigSchema.safeParse(input);
  if (!parsed.success) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: issuesDetail(parsed.error.issues) });
  }
  const cfg = parsed.data;
  if (isProduction(env)) {
    // SECURITY: the simulated TEE proves nothing; a production broker must never trust it.
    const bad: string[] = [];
    if (cfg.attestation.allowSimulated) bad.push('attestation.allowSimulated');
    const policies = cfg.attestation.policy === undefined ? [] : [cfg.attestation.policy].flat();
    if (policies.some(policyAllowsSimulated)) bad.push('attestation.policy.allowSimulated');
    if (bad.length > 0) {
      throw new KmsError('ERR_KMS_CONFIG_INVALID', {
        detail: `${bad.join(', ')}: the simulated TEE is refused when NODE_ENV=production`,
      });
    }
  }
  return deepFreeze(cfg) as BrokerConfig;
}

export function policyAllowsSimulated(policy: unknown): boolean {
  return typeof policy === 'object' && policy !== null && (policy as { allowSimulated?: unknown }).allowSimulated === true;
}

/** Where the master key file lives for this config. */
export function masterKeyPath(config: BrokerConfig): string {
  return config.masterKeyFile ?? path.join(config.stateDir, 'master.key');
}

export function keysDir(config: BrokerConfig): string {
  return path.join(config.stateDir, 'keys');
}

export function signingKeyPath(config: BrokerConfig): string {
  return path.join(config.stateDir, 'token-signing-key.pem');
}

/** Where `startBroker` publishes the public JWKS for servers to pin. */
export function jwksPath(config: BrokerConfig): string {
  return path.join(config.stateDir, BROKER_JWKS_FILE);
}

/**
 * True for a `listen.host` that only this machine can reach: 127.0.0.0/8, ::1 (in any
 * spelling, IPv4-mapped loopback included) and `localhost`.
 */
export function isLoopbackHost(host: string): boolean {
  if (host.toLowerCase() === 'localhost') return true;
  const family = isIP(host);
  if (family === 4) return LOOPBACK.check(host, 'ipv4');
  if (family === 6) return LOOPBACK.check(host, 'ipv6');
  return false;
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');
LOOPBACK.addSubnet('::ffff:127.0.0.0', 104, 'ipv6');

/**
 * Refuses (`ERR_KMS_CONFIG_INVALID`, naming `allowInsecureAdmin`) to serve the admin API
 * over plain HTTP on a host others can reach, unless `allowInsecureAdmin` says so, in which
 * case it warns. A no-op when the admin API is off, TLS is on, or `listen.host` is loopback.
 * Called by `startBroker` as soon as the admin token is known and again by `buildApp`.
 */
export function assertAdminTransport(
  config: BrokerConfig,
  opts: { adminEnabled: boolean; tls: boolean; logger?: Pick<Logger, 'warn'> },
): void {
  if (!opts.adminEnabled || opts.tls || isLoopbackHost(config.listen.host)) return;
  // SECURITY: the admin token and, on create, the DEK itself travel in the request.
  if (!config.allowInsecureAdmin) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', {
      detail:
        'allowInsecureAdmin: the admin API is enabled without tls on a non-loopback listen.host; ' +
        'configure tls, listen on loopback, disable the admin token, or set allowInsecureAdmin: true',
    });
  }
  opts.logger?.warn(
    { listenHost: config.listen.host, allowInsecureAdmin: true },
    'admin API served over plain HTTP on a non-loopback address (allowInsecureAdmin)',
  );
}

