/**
 * Thin entry point: validate config, build, listen, stop on SIGINT/SIGTERM. The CLI
 * (cli/) reads the config file and constructs the evidence provider (real SEV-SNP or the
 * simulated TEE from `config.simulated`), then calls `startServer`.
 */
import type { Logger } from 'pino';
import type { EvidenceProvider } from '../attestation/types.js';
import { createLogger } from '../common/logger.js';
import { buildServer, type CirServer, type ServerDeps } from './app.js';
import type { BrokerClient } from './broker-client.js';
import { loadServerConfig } from './config.js';

export interface StartServerOptions {
  readonly provider: EvidenceProvider;
  readonly logger?: Logger;
  readonly brokerClient?: BrokerClient;
  /** Stop the server on SIGINT/SIGTERM (default true). */
  readonly handleSignals?: boolean;
}

export interface StartedServer {
  readonly server: CirServer;
  readonly port: number;
}

/**
 * Parses `config` (throws ERR_SRV_CONFIG naming the field), builds the server and starts
 * it. Resolves once the port is bound; boot continues in the background
 * (`server.whenReady()`, `server.events.on('step', ...)`).
 */
export async function startServer(config: unknown, opts: StartServerOptions): Promise<StartedServer> {
  const cfg = loadServerConfig(config);
  const logger = opts.logger ?? createLogger({ name: 'cir-server' });
  const deps: ServerDeps = {
    provider: opts.provider,
    logger,
    ...(opts.brokerClient ? { brokerClient: opts.brokerClient } : {}),
  };
  const server = buildServer(cfg, deps);
  const { port } = await server.start();
  if (opts.handleSignals ?? true) {
    const onSignal = (sig: NodeJS.Signals): void => {
      logger.info({ signal: sig }, 'stopping');
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      server.stop().then(
        () => logger.info('stopped'),
        (e: unknown) => logger.error({ err: e }, 'stop failed'),
      );
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
  }
  return { server, port };
}
