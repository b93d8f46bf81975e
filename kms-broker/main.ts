import { readFile } from 'node:fs/promises';
import type { FastifyInstance } from 'fastify';
import { writeFileAtomic } from '../common/atomic-file.js';
import type { Logger } from '../common/logger.js';
import { loadAdminToken } from './admin.js';
import { buildApp, type EvidenceVerifier } from './app.js';
import { KmsError } from './codes.js';
import { assertAdminTransport, jwksPath, signingKeyPath, type BrokerConfig } from './config.js';
import { openKeyStore } from './keystore.js';
import { TokenService } from './tokens.js';
import { createDefaultVerifier } from './verifier.js';

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
  const env = opts.env ?? process.env;
  const logger = opts.logger;
  const keyStore = await openKeyStore(config, { env, logger });
  const tokens = await TokenService.open(signingKeyPath(config), {
    issuer: config.issuer,
    ttlSeconds: config.tokenTtlSeconds,
    logger,
  });
  const adminToken = await loadAdminToken(config, env);
  // Before anything listens: no admin token over plain HTTP to a reachable address.
  assertAdminTransport(config, { adminEnabled: adminToken !== undefined, tls: config.tls !== undefined, logger });
  const verifier = opts.verifier ?? (await createDefaultVerifier(config, { env }));
  const https = config.tls ? await readTls(config.tls) : undefined;

  const jwksFile = await publishJwks(config, tokens);
  logger.info({ file: jwksFile, kid: tokens.kid }, 'published the broker JWKS for pinning');

  const app = buildApp(config, {
    logger,
    verifier,
    keyStore,
    tokens,
    adminToken,
    env,
    ...(opts.now ? { now: opts.now } : {}),
    ...(https ? { https } : {}),
  });
  try {
    await app.listen({ host: config.listen.host, port: config.listen.port });
  } catch (e) {
    await app.close().catch(() => undefined);
    throw e;
  }
  const addr = app.server.address();
  const port = typeof addr === 'object' && addr !== null ? addr.port : config.listen.port;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  const url = `${https ? 'https' : 'http'}://${host}:${port}`;
  logger.info(
    {
      url,
      adminApi: adminToken !== undefined,
      kid: tokens.kid,
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
      await app.close();
    })();
    return closing;
  };
  if (opts.handleSignals) {
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
  }
  return { url, app, close };
}

/**
 * Writes the public JWKS (what `GET ROUTES.jwks` serves) to `<stateDir>/BROKER_JWKS_FILE`,
 * atomically and 0644 (it holds public keys only), replacing whatever was there so a stale
 * or edited copy never outlives a start. Servers pin this file to verify release signatures.
 */
async function publishJwks(config: BrokerConfig, tokens: TokenService): Promise<string> {
  const file = jwksPath(config);
  try {
    await writeFileAtomic(file, `${JSON.stringify(tokens.jwks(), null, 2)}\n`, 0o644);
  } catch (cause) {
    throw new KmsError('ERR_KMS_STORE_IO', { detail: `${file}: cannot write the JWKS`, cause });
  }
  return file;
}

async function readTls(tls: { certFile: string; keyFile: string }): Promise<{ cert: Buffer; key: Buffer }> {
  try {
    return { cert: await readFile(tls.certFile), key: await readFile(tls.keyFile) };
  } catch (cause) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `tls: cannot read certFile or keyFile`, cause });
  }
}
