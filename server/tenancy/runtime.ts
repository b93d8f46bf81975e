/**
 * Start-up and shutdown of the tenancy controls for buildServer: loads and watches the
 * API-key store, opens the security event sink, starts the metrics port, restores and
 * periodically flushes persisted daily counters, and logs which auth mode is in force.
 *
 * SECURITY: fail closed. No `auth` section: every RPC except GetEvidence is refused
 * (logged at error level at start-up). `auth.mode: none` is the explicit relaxation
 * (logged at warn level). An api-keys store that is missing or invalid at start-up stops
 * the start; one that becomes invalid later keeps the previous keys and raises an event.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import { ServerError } from '../codes.js';
import type { KeyIndex } from './api-keys.js';
import type { AuthConfig, LimitsConfig, ModelDefense, ObservabilityConfig } from './config.js';
import { fileSink, jsonLinesSink, NULL_SINK, type SecurityEventSink } from './events.js';
import { createMetrics, serveMetrics, type TenancyMetrics } from './metrics.js';
import { watchKeyStore, type StoreWatcher } from './store-watcher.js';
import { createTenancy, DEFAULT_TENANT, type Tenancy } from './tenancy.js';

export interface TenancyRuntimeConfig {
  readonly auth?: AuthConfig | undefined;
  readonly limits: LimitsConfig;
  readonly observability: ObservabilityConfig;
  readonly models: readonly { readonly name: string; readonly tenant?: string | undefined; readonly defenses?: ModelDefense | undefined }[];
  readonly maxConcurrentInfers: number;
}

export interface TenancyRuntimeDeps {
  readonly logger: Logger;
  readonly isReady: () => boolean;
  /** Overrides the configured sink (tests). */
  readonly events?: SecurityEventSink;
  readonly now?: () => number;
}

export interface TenancyRuntime {
  readonly tenancy: Tenancy;
  readonly metrics: TenancyMetrics;
  /** PEM CA for client certificates when mTLS identities are configured. */
  readonly mtlsCa: Buffer | undefined;
  readonly metricsPort: number | undefined;
  stop(): Promise<void>;
}

export async function startTenancyRuntime(config: TenancyRuntimeConfig, deps: TenancyRuntimeDeps): Promise<TenancyRuntime> {
  const logger = deps.logger;
  const now = deps.now ?? Date.now;
  const closers: (() => Promise<void> | void)[] = [];
  try {
    const obs = config.observability;
    const events: SecurityEventSink =
      deps.events ??
      (obs.securityEvents === 'off'
        ? NULL_SINK
        : obs.securityEvents === 'stdout'
          ? jsonLinesSink((l) => process.stdout.write(l), now)
          : fileSink(obs.securityEvents.file, now));
    closers.push(() => events.close());
    const metrics = createMetrics();

    let watcher: StoreWatcher | undefined;
    let mtlsCa: Buffer | undefined;
    const auth = config.auth;
    if (auth === undefined) {
      logger.error('no auth configured: every RPC except GetEvidence is refused (configure auth.storeFile, or auth.mode none to relax)');
    } else if (auth.mode === 'none') {
      logger.warn({ relaxation: 'auth.mode=none' }, 'auth disabled by configuration: any caller may use every model (relaxation)');
    } else {
      watcher = await watchKeyStore({
        file: auth.storeFile,
        pollMs: auth.pollMs,
        onReload: (index: KeyIndex) => {
          metrics.keyStoreReload('ok');
          logger.info({ keys: index.size }, 'API key store reloaded');
          events.emit({ type: 'key_store_reloaded', keys: index.size });
        },
        onInvalid: (detail) => {
          metrics.keyStoreReload('invalid');
          logger.error({ detail }, 'API key store change rejected; keeping the previous keys');
          events.emit({ type: 'key_store_invalid', reason: detail.slice(0, 200) });
        },
      });
      const w = watcher;
      closers.push(() => w.close());
      if (auth.mtlsCaFile !== undefined) {
        try {
          mtlsCa = await readFile(auth.mtlsCaFile);
        } catch (cause) {
          throw new ServerError('ERR_SRV_CONFIG', { detail: 'auth.mtlsCaFile could not be read', cause });
        }
      }
      logger.info({ keys: w.index.size, mtls: mtlsCa !== undefined }, 'API key authentication on');
    }

    const tenancy = createTenancy({
      auth,
      limits: config.limits,
      observability: obs,
      models: config.models.map((m) => ({ name: m.name, tenant: m.tenant ?? DEFAULT_TENANT, defenses: m.defenses })),
      maxConcurrentInfers: config.maxConcurrentInfers,
      logger,
      keys: () => watcher?.index,
      isReady: deps.isReady,
      events,
      metrics,
      ...(deps.now ? { now: deps.now } : {}),
    });
    await tenancy.load();
    if (config.limits.quotaStateFile !== undefined) {
      const timer = setInterval(() => {
        tenancy.flush().catch((e: unknown) => logger.error({ err: e }, 'quota state flush failed'));
      }, config.limits.quotaFlushMs);
      timer.unref();
      closers.push(async () => {
        clearInterval(timer);
        await tenancy.flush().catch((e: unknown) => logger.error({ err: e }, 'quota state flush failed'));
      });
    }

    let metricsPort: number | undefined;
    if (obs.metrics) {
      const m = await serveMetrics(metrics.registry, obs.metrics.host, obs.metrics.port);
      metricsPort = m.port;
      closers.push(() => m.close());
      logger.info({ host: obs.metrics.host, port: m.port }, 'metrics listening');
    }

    return {
      tenancy,
      metrics,
      mtlsCa,
      metricsPort,
      async stop() {
        for (const c of closers.splice(0).reverse()) await c();
      },
    };
  } catch (e) {
    for (const c of closers.splice(0).reverse()) await Promise.resolve(c()).catch(() => undefined);
    throw e;
  }
}
