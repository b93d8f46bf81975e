import { BlockList, isIP } from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import type { Logger } from '../common/logger.js';
import { deepFreeze, issuesDetail } from '../common/config.js';
import { KmsError } from './codes.js';
import { BROKER_TEES, policyTee, ReleasePolicySchema, type ReleasePolicy } from './policy.js';
import { BROKER_JWKS_FILE } from './protocol.js';

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
  tls: z.strictObject({ certFile: FilePath, keyFile: FilePath }).optional(),
  /**
   * Serve the admin API over plain HTTP on a non-loopback `listen.host`. Off by default: the
   * admin bearer token (and DEKs on create) would cross the network in clear. Logged as a
   * warning when used.
   */
  allowInsecureAdmin: z.boolean().default(false),
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

