/**
 * `buildServer(config, deps)`: the cir inference server as an object that does not
 * listen until `start()`. It serves the Open Inference Protocol v2 (inference.proto) and
 * cir's AttestationService (attestation.proto) over one TLS port.
 *
 * start(): creates the TLS identity (in memory unless the operator gave files) and the
 * HPKE key pair, binds the port, then runs boot (boot.ts) in the background. The server
 * answers ServerLive and GetEvidence at once; ServerReady is false and model RPCs answer
 * UNAVAILABLE until boot has published every model.
 *
 * SECURITY: message sizes are bounded in both directions; TLS is on unless the config
 * says `insecure: true` (dev/bench only; then the evidence binds an all-zero SPKI hash,
 * which no client that expects TLS will accept).
 */
import { EventEmitter } from 'node:events';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import type { EvidenceProvider } from '../attestation/types.js';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../common/hpke.js';
import { createAttestationHandlers } from './attestation-service.js';
import { boot, releaseAndLoad, type BootOptions, type BootStep, type RetryInfo, type SessionFactory } from './boot.js';
import { LeaseKeeper, jwksLeaseVerifier, UNSIGNED_LEASES_ALLOWED, type LeaseEvent, type LeaseVerifier } from './lease.js';
import { HttpBrokerClient, readBrokerTls, type BrokerClient } from './broker-client.js';
import { jwksReleaseVerifier, readPinnedJwks, UNSIGNED_RELEASES_ALLOWED, type ReleaseVerifier } from './release-verify.js';
import { ServerError } from './codes.js';
import type { ServerConfig } from './config.js';
import { createInferenceHandlers } from './inference-service.js';
import { createIdlePoller, type IdlePollDeps } from './idle-poll.js';
import { createSessionFactory, hotPathServerOptions } from './executor.js';
import { sessionsIn } from './session-pool.js';
import type { SecurityEventSink } from './tenancy/events.js';
import { startTenancyRuntime, type TenancyRuntime } from './tenancy/runtime.js';
import { loadServiceDefinitions } from './proto.js';
import { ModelRegistry, type LoadedModel } from './registry.js';
import { createSelfSignedTls, loadTlsFiles, type TlsMaterial } from './tls.js';

export const SERVER_NAME = 'cir';

export interface ServerDeps {
  readonly provider: EvidenceProvider;
  /**
   * Build it with createLogger (common/logger.ts). The per-call access-log line goes through
   * flatLogger, a child whose redaction is FLAT_REDACT_PATHS in place of the parent's: pino
   * replaces a parent's redact settings in a child, so paths added to a logger built some
   * other way do not apply to that line (it holds scalars only, none of them secret).
   */
  readonly logger: Logger;
  /** Defaults to an HttpBrokerClient for `config.broker`. */
  readonly brokerClient?: BrokerClient;
  /** Defaults to one built from `config.broker.jwksFile` (or the dev relaxation). */
  readonly releaseVerifier?: ReleaseVerifier;
  /** Checks key leases; defaults to one built from `config.broker.jwksFile` (or the dev relaxation). */
  readonly leaseVerifier?: LeaseVerifier;
  readonly now?: () => Date;
  /** Called for every boot step (also emitted as the 'step' event). */
  readonly onStep?: (step: BootStep) => void;
  // Injected for tests.
  readonly createSession?: SessionFactory;
  readonly readModelFile?: (path: string) => Promise<Uint8Array>;
  readonly random?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  /** Replaces the configured security event sink (tests). */
  readonly securityEvents?: SecurityEventSink;
  /**
   * grpc-js server interceptors, on every call of every service. grpc-js nests them with the
   * first listed innermost: it is invoked first when a call arrives and sees the response
   * last. They see requests and responses in the clear: pass only code you trust with them
   * (the bench times calls with one, bench/server-timing.ts). None by default.
   */
  readonly grpcInterceptors?: readonly grpc.ServerInterceptor[];
  /** Clock and scheduler of the idle poller (`idlePollUs`, server/idle-poll.ts), for tests. */
  readonly idlePoll?: IdlePollDeps;
}

export interface ServerEvents {
  step: [BootStep];
  retry: [RetryInfo];
  ready: [readonly LoadedModel[]];
  'boot-failed': [unknown];
  /** Key lease renewals, refusals, withdrawals and republications (lease.ts). */
  lease: [LeaseEvent];
}

export interface CirServer {
  /** Creates TLS + HPKE keys, binds, starts boot in the background. Resolves once bound. */
  start(): Promise<{ port: number }>;
  /** Cancels boot, stops serving (graceful, then forced after a grace period), releases sessions. */
  stop(): Promise<void>;
  /** True once every model is loaded. */
  readonly ready: boolean;
  /** Resolves when ready; rejects if boot fails or the server stops first. */
  whenReady(): Promise<void>;
  /** Available after start(). */
  readonly tlsSpkiSha256: Buffer;
  /** PEM certificate clients pin; undefined when insecure. Available after start(). */
  readonly certPem: string | undefined;
  /** Raw X25519 HPKE public key. Available after start(). */
  readonly hpkePublicKey: Uint8Array;
  readonly events: EventEmitter<ServerEvents>;
  /** Bound metrics port when `observability.metrics` is configured. Available after start(). */
  readonly metricsPort: number | undefined;
}

let cachedVersion: string | undefined;

/** This package's version from package.json (found from source or dist). */
export function packageVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const rel of ['..', '../..']) {
    const file = path.resolve(here, rel, 'package.json');
    if (!existsSync(file)) continue;
    try {
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'cir' && typeof pkg.version === 'string') return (cachedVersion = pkg.version);
    } catch {
      // fall through to the next candidate
    }
  }
  return (cachedVersion = '0.0.0');
}

function hostPort(host: string, port: number): string {
  return host.includes(':') && !host.startsWith('[') ? `[${host}]:${port}` : `${host}:${port}`;
}

const SHUTDOWN_GRACE_MS = 5_000;

export function buildServer(config: ServerConfig, deps: ServerDeps): CirServer {
  const logger = deps.logger.child({ component: 'server' });
  const events = new EventEmitter<ServerEvents>();
  const registry = new ModelRegistry(config.models.map((m) => m.name));
  const abort = new AbortController();
  let grpcServer: grpc.Server | undefined;
  let tls: TlsMaterial | undefined;
  let hpke: HpkeKeyPair | undefined;
  let started = false;
  let stopped = false;
  let bootPromise: Promise<readonly LoadedModel[]> | undefined;
  let tenancy: TenancyRuntime | undefined;
  const idlePoll = createIdlePoller(config.idlePollUs, deps.idlePoll);

  let brokerClient = deps.brokerClient;
  let releaseVerifier = deps.releaseVerifier;
  let leaseVerifier = deps.leaseVerifier;
  let leaseKeeper: LeaseKeeper | undefined;

  const emitStep = (s: BootStep): void => {
    const log = s.ok ? logger.info.bind(logger) : logger.warn.bind(logger);
    log({ step: s.name, ok: s.ok, ms: Math.round(s.ms), detail: s.detail, attempt: s.attempt }, 'boot step');
    events.emit('step', s);
    deps.onStep?.(s);
  };

  const need = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`${what} is available only after start()`);
    return v;
  };

  async function start(): Promise<{ port: number }> {
    if (started) throw new Error('server already started');
    started = true;

    // 1. TLS identity.
    const t0 = performance.now();
    try {
      if (config.insecure) {
        logger.warn('insecure: serving plaintext gRPC (dev/bench only)');
      } else if (config.tls.certFile !== undefined && config.tls.keyFile !== undefined) {
        tls = await loadTlsFiles(config.tls.certFile, config.tls.keyFile);
      } else {
        tls = await createSelfSignedTls({
          validityDays: config.tls.validityDays,
          ...(deps.now ? { now: deps.now } : {}),
        });
      }
      emitStep({
        name: 'tls',
        ok: true,
        ms: performance.now() - t0,
        detail: tls ? `spki sha256 ${tls.spkiSha256.toString('hex')}` : 'insecure',
      });
    } catch (e) {
      emitStep({ name: 'tls', ok: false, ms: performance.now() - t0, detail: e instanceof ServerError ? e.code : 'error' });
      throw e;
    }

    if (!brokerClient && config.broker) {
      // The CA and the mTLS client certificate (key file 0600 or stricter) for the broker.
      const { ca, clientCert } = await readBrokerTls(config.broker);
      brokerClient = new HttpBrokerClient({
        url: config.broker.url,
        timeoutMs: config.broker.timeoutMs,
        tenant: config.broker.tenant,
        ...(ca ? { ca } : {}),
        ...(clientCert ? { clientCert } : {}),
      });
    }

    // The pinned JWKS, read once: it verifies both releases and leases.
    const pinned = config.broker?.jwksFile !== undefined && (!releaseVerifier || !leaseVerifier) ? await readPinnedJwks(config.broker.jwksFile) : undefined;
    if (!releaseVerifier && config.broker) {
      if (pinned) {
        releaseVerifier = jwksReleaseVerifier(pinned);
      } else if (config.broker.allowUnsignedRelease) {
        if (process.env.NODE_ENV === 'production') {
          throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.allowUnsignedRelease is refused when NODE_ENV=production' });
        }
        releaseVerifier = UNSIGNED_RELEASES_ALLOWED;
      }
    }
    if (!leaseVerifier && config.broker) {
      if (pinned) leaseVerifier = jwksLeaseVerifier(pinned);
      // Same relaxation, same production refusal (checked just above for releases).
      else if (config.broker.allowUnsignedRelease && process.env.NODE_ENV !== 'production') leaseVerifier = UNSIGNED_LEASES_ALLOWED;
    }

    // 2. HPKE key pair. SECURITY: the private key is a non-extractable CryptoKey.
    hpke = await generateHpkeKeyPair();
    const spki = tls ? tls.spkiSha256 : Buffer.alloc(32);

    // 3. Tenancy: API keys, limits, extraction defenses, metrics, security events (server/tenancy).
    tenancy = await startTenancyRuntime(config, {
      logger,
      isReady: () => registry.ready,
      ...(deps.securityEvents ? { events: deps.securityEvents } : {}),
      ...(deps.now ? { now: () => deps.now!().getTime() } : {}),
    });
    const guard = tenancy.tenancy;

    // 4. gRPC server.
    const defs = loadServiceDefinitions();
    const server = new grpc.Server({
      'grpc.max_receive_message_length': config.maxMessageBytes,
      'grpc.max_send_message_length': config.maxMessageBytes,
      ...hotPathServerOptions(config.maxConcurrentInfers),
      ...(deps.grpcInterceptors?.length ? { interceptors: [...deps.grpcInterceptors] } : {}),
    });
    const inference = createInferenceHandlers({
      registry,
      serverName: SERVER_NAME,
      serverVersion: packageVersion(),
      maxTensorElements: config.maxTensorElements,
      maxConcurrentInfers: config.maxConcurrentInfers,
      logger,
    });
    const attestation = createAttestationHandlers({
      provider: deps.provider,
      tlsSpkiSha256: spki,
      hpkePublicKey: hpke.publicKey,
      maxConcurrentEvidence: config.maxConcurrentEvidence,
      // SECURITY: an operator-supplied key is not TEE-born; say so in the binding.
      tlsKeyOrigin: config.tls.certFile !== undefined ? 'imported' : 'tee',
    });
    const impl: grpc.UntypedServiceImplementation = {};
    for (const [method, fn] of Object.entries(inference) as [string, (r: unknown) => Promise<unknown>][]) {
      impl[method] = guard.wrap(method, idlePoll.track(fn)) as grpc.UntypedHandleCall;
    }
    server.addService(defs.inference, impl);
    server.addService(defs.attestation, {
      GetEvidence: guard.wrap('GetEvidence', attestation.GetEvidence) as grpc.UntypedHandleCall,
    });

    const creds = tls
      ? grpc.ServerCredentials.createSsl(tenancy.mtlsCa ?? null, [
          { private_key: Buffer.from(tls.keyPem), cert_chain: Buffer.from(tls.certPem) },
        ], tenancy.mtlsCa !== undefined)
      : grpc.ServerCredentials.createInsecure();
    const port = await new Promise<number>((resolve, reject) => {
      server.bindAsync(hostPort(config.listen.host, config.listen.port), creds, (err, p) =>
        err ? reject(err) : resolve(p),
      );
    });
    grpcServer = server;
    logger.info({ host: config.listen.host, port, tls: !config.insecure }, 'listening');

    // 4. Boot in the background.
    const bootOptions: BootOptions = {
      models: config.models,
      provider: deps.provider,
      ...(brokerClient ? { broker: brokerClient } : {}),
      ...(releaseVerifier ? { releaseVerifier } : {}),
      ...(leaseVerifier ? { leaseVerifier } : {}),
      onLeases: (leases) => {
        // Key leases (lease.ts): renewed in the background; a refusal or expiry withdraws.
        if (leases.length === 0 || stopped || !brokerClient || !leaseVerifier || !hpke) return;
        leaseKeeper = new LeaseKeeper({
          broker: brokerClient,
          provider: deps.provider,
          hpke,
          verifier: leaseVerifier,
          registry,
          rerelease: (keyId, version, signal) => releaseAndLoad(bootOptions, keyId, version, signal),
          retry: config.retry,
          logger,
          onEvent: (ev) => events.emit('lease', ev),
          ...(deps.random ? { random: deps.random } : {}),
        });
        for (const l of leases) leaseKeeper.add(l);
      },
      hpke,
      registry,
      retry: config.retry,
      allowPlaintextModels: config.allowPlaintextModels,
      intraOpThreads: config.intraOpThreads,
      interOpThreads: config.interOpThreads,
      signal: abort.signal,
      onStep: emitStep,
      onRetry: (info) => events.emit('retry', info),
      logger,
      createSession: deps.createSession ?? createSessionFactory({ ...config, spinning: config.intraOpSpinning }),
      ...(deps.readModelFile ? { readModelFile: deps.readModelFile } : {}),
      ...(deps.random ? { random: deps.random } : {}),
      ...(deps.sleep ? { sleep: deps.sleep } : {}),
    };
    bootPromise = boot(bootOptions);
    bootPromise.then(
      (models) => {
        logger.info({ models: models.map((m) => ({ name: m.name, version: m.version, sha256: m.sha256, sessions: sessionsIn(m.session) })) }, 'ready');
        events.emit('ready', models);
      },
      (e: unknown) => {
        if (stopped) return;
        logger.error({ code: e instanceof ServerError ? e.code : undefined, err: e }, 'boot failed; server stays not ready');
        events.emit('boot-failed', e);
      },
    );
    return { port };
  }

  async function stop(): Promise<void> {
    if (stopped) return;
    stopped = true;
    idlePoll.stop();
    abort.abort();
    await bootPromise?.catch(() => undefined);
    await leaseKeeper?.close();
    const server = grpcServer;
    if (server) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        timer.unref();
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await tenancy?.stop();
    await registry.close();
  }

  function whenReady(): Promise<void> {
    if (!bootPromise) return Promise.reject(new Error('server not started'));
    return bootPromise.then(() => undefined);
  }

  return {
    start,
    stop,
    whenReady,
    get ready() {
      return registry.ready;
    },
    get tlsSpkiSha256() {
      need(hpke, 'tlsSpkiSha256');
      return tls ? Buffer.from(tls.spkiSha256) : Buffer.alloc(32);
    },
    get certPem() {
      need(hpke, 'certPem');
      return tls?.certPem;
    },
    get hpkePublicKey() {
      return need(hpke, 'hpkePublicKey').publicKey;
    },
    events,
    get metricsPort() {
      return tenancy?.metricsPort;
    },
  };
}
