import { createHpkeSealer } from '../common/hpke-sealer.js';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from '../common/logger.js';
import { loadAdminToken } from './admin.js';
import { buildApp, type EvidenceVerifier } from './app.js';
import { KmsError } from './codes.js';
import { assertAdminTransport, jwksPath, type BrokerConfig } from './config.js';
import { loadMasterKey, openKeyStore } from './keystore.js';
import { deriveRevocationKey, RevocationStore, REVOCATIONS_FILE } from './revocations.js';
import { TokenService } from './tokens.js';
import { JWKS_ARCHIVE_FILE, publishRingJwks } from './signing-keys.js';
import { limitVerifier } from './limits.js';
import { BrokerMetrics, startMetricsServer, type MetricsServer } from './metrics.js';
import { createDefaultVerifier } from './verifier.js';
import { AuditLog } from './audit/index.js';
import { acquireStateLock, type StateLock } from './state-lock.js';
import { openIdentityStore, statePaths } from './state.js';

export interface StartBrokerOptions {
  readonly logger: Logger;
  /** Environment for NODE_ENV, the master key and the admin token; defaults to `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Evidence verifier; by default built from `config.attestation` (see verifier.ts). */
  readonly verifier?: EvidenceVerifier;
  readonly now?: () => Date;
  /** Close on SIGINT/SIGTERM (for the CLI); off by default so tests and embedders keep control. */
  readonly handleSignals?: boolean;
}

export interface RunningBroker {
  /** Base URL, e.g. `http://127.0.0.1:41234`. */
  readonly url: string;
  readonly app: FastifyInstance;
  /** The metrics endpoint, e.g. `http://127.0.0.1:9464/metrics`, when `config.metrics` is set. */
  readonly metricsUrl?: string;
  /** Stops listening and waits for in-flight requests. Idempotent. */
  close(): Promise<void>;
}

/**
 * Starts the broker: opens the key store (loading or generating the master key), the token
 * signing key, the admin token and the verifier, publishes the public JWKS to
 * `<stateDir>/BROKER_JWKS_FILE`, builds the app and listens on `config.listen` (https when
 * `config.tls` is set).
 * Throws `ERR_KMS_CONFIG_INVALID` when the admin API would be served over plain HTTP on a
 * non-loopback host without `allowInsecureAdmin` (see `assertAdminTransport`).
 */
export async function startBroker(config: BrokerConfig, opts: StartBrokerOptions): Promise<RunningBroker> {
  // One writer per state directory: the audit chain and key records never have two.
  const lock = await acquireStateLock(config.stateDir, 'broker');
  try {
    return await startLocked(config, opts, lock);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function startLocked(config: BrokerConfig, opts: StartBrokerOptions, lock: StateLock): Promise<RunningBroker> {
  const env = opts.env ?? process.env;
  const logger = opts.logger;
  const keyStore = await openKeyStore(config, { env, logger });
  const revocations = await openRevocations(config, env);
  // The signing-key ring (<stateDir>/signing-keys/); a pre-ring token-signing-key.pem is
  // imported as its first active key. Ring changes made by `cir broker signing-keys` are
  // picked up within a second and re-published to jwks.json / jwks-archive.json.
  const tokens = await TokenService.openRing(config.stateDir, {
    issuer: config.issuer,
    ttlSeconds: config.tokenTtlSeconds,
    logger,
    onRingChange: async (svc) => {
      await publishJwks(config, svc);
    },
  });
  const adminToken = await loadAdminToken(config, env);
  const identities = await openIdentityStore(config, { env, ...(opts.now ? { now: opts.now } : {}) });
  const adminEnabled = adminToken !== undefined || (await identities.list()).length > 0;
  // Before anything listens: no admin credential over plain HTTP to a reachable address.
  assertAdminTransport(config, { adminEnabled, tls: config.tls !== undefined, logger });
  // The hash-chained audit trail, its heads signed by the active signing key.
  const audit = await AuditLog.open({ dir: statePaths(config).audit, signer: tokens.checkpointSigner(), logger, ...(opts.now ? { now: opts.now } : {}) });
  // limits: verification behind a concurrency gate (limits.verification); metrics time what passes it.
  const metrics = config.metrics ? new BrokerMetrics() : undefined;
  const baseVerifier = opts.verifier ?? (await createDefaultVerifier(config, { env }));
  const verifier = limitVerifier(metrics ? metrics.instrumentVerifier(baseVerifier) : baseVerifier, {
    ...config.limits.verification,
    ...(metrics ? { observer: metrics } : {}),
  });
  metrics?.watchVerifierGate(verifier);
  const https = config.tls ? await readTls(config.tls) : undefined;

  const jwksFile = await publishJwks(config, tokens);
  logger.info({ file: jwksFile, kid: tokens.kid }, 'published the broker JWKS for pinning');

  // HPKE sealing of released keys on a worker thread, off the event loop (common/hpke-sealer.ts).
  const sealer = createHpkeSealer();
  const app = buildApp(config, {
    logger,
    hpkeSeal: sealer.seal,
    verifier,
    keyStore,
    // Admin identities only when the admin API is on (they cannot appear while the broker
    // runs: the offline CLI that creates them needs the state lock).
    ...(adminEnabled ? { identities } : {}),
    audit,
    tokens,
    adminToken,
    env,
    revocations,
    ...(metrics ? { metrics } : {}),
    ...(opts.now ? { now: opts.now } : {}),
    ...(https ? { https } : {}),
  });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (e) {
    await app.close().catch(() => undefined);
    await audit.close().catch(() => undefined);
    await sealer.close();
    tokens.close();
    throw e;
  }
  // metrics: on their own port, only when configured.
  let metricsServer: MetricsServer | undefined;
  if (metrics && config.metrics) {
    try {
      metricsServer = await startMetricsServer(metrics, config.metrics, logger);
    } catch (cause) {
      await app.close().catch(() => undefined);
      await audit.close().catch(() => undefined); // writes deferred entries of requests already served
      await sealer.close();
      tokens.close();
      throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'metrics: cannot listen on metrics.host:metrics.port', cause });
    }
    logger.info({ url: metricsServer.url }, 'kms broker metrics listening');
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `${https ? 'https' : 'http'}://${host}:${port}`;
  logger.info(
    {
      url,
      adminApi: adminEnabled,
      bootstrapAdminToken: adminToken !== undefined,
      kid: tokens.kid,
      hpkeWorker: sealer.onWorker,
      allowSimulated: config.attestation.allowSimulated,
      tdx: config.attestation.tdxCollateral !== undefined,
      ...(config.attestation.tdxAllowMissingCrls ? { tdxAllowMissingCrls: true } : {}),
    },
    'kms broker listening',
  );

  let closing: Promise<void> | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'kms broker shutting down');
    void close();
  };
  const close = (): Promise<void> => {
    closing ??= (async () => {
      if (opts.handleSignals) {
        process.off('SIGINT', onSignal);
        process.off('SIGTERM', onSignal);
      }
      try {
        await app.close();
        await metricsServer?.close();
        await audit.close();
        await sealer.close();
        tokens.close();
      } finally {
        await lock.release();
      }
    })();
    return closing;
  };
  if (opts.handleSignals) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  return { url, app, close, ...(metricsServer ? { metricsUrl: metricsServer.url } : {}) };
}

/**
 * Writes the public JWKS (what `GET ROUTES.jwks` serves: next, active and verify-only ring
 * keys) to `<stateDir>/BROKER_JWKS_FILE`, and every key ever in the ring to
 * `<stateDir>/jwks-archive.json` (merged, never shrinks), atomically and 0644 (public keys
 * only), replacing whatever jwks.json was there so a stale or edited copy never outlives a
 * start or a ring change. Servers pin jwks.json to verify release signatures; auditors
 * verify audit checkpoints with the archive.
 */
async function publishJwks(config: BrokerConfig, tokens: TokenService): Promise<string> {
  const file = jwksPath(config);
  await publishRingJwks(tokens.ring, { jwksFile: file, archiveFile: path.join(config.stateDir, JWKS_ARCHIVE_FILE) });
  return file;
}

/** leases: the persistent kill-switch store, `<stateDir>/revocations.json`, MAC'd under a master-key subkey. */
async function openRevocations(config: BrokerConfig, env: Readonly<Record<string, string | undefined>>): Promise<RevocationStore> {
  const { key } = await loadMasterKey(config, { env });
  const macKey = deriveRevocationKey(key);
  key.fill(0);
  try {
    return await RevocationStore.open({ file: path.join(config.stateDir, REVOCATIONS_FILE), macKey });
  } finally {
    macKey.fill(0);
  }
}

async function readTls(tls: { certFile: string; keyFile: string; clientCaFile?: string | undefined }): Promise<{ cert: Buffer; key: Buffer; clientCa?: Buffer }> {
  try {
    return {
      cert: await readFile(tls.certFile),
      key: await readFile(tls.keyFile),
      ...(tls.clientCaFile !== undefined ? { clientCa: await readFile(tls.clientCaFile) } : {}),
    };
  } catch (cause) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `tls: cannot read certFile, keyFile or clientCaFile`, cause });
  }
}
