import type { Command } from 'commander';
import { createLogger } from '../common/logger.js';
import { overlay, readConfigFile } from '../common/config.js';
import { loadServerConfig } from '../server/config.js';
import { startServer } from '../server/main.js';
import { selectEvidenceProvider } from '../server/provider-select.js';
import { ClientError } from '../client/codes.js';
import { parseListen } from './listen.js';

interface ServeFlags {
  config?: string;
  listen?: string;
  model?: string[];
  broker?: string;
  brokerJwks?: string;
  brokerTenant?: string;
  apiKeys?: string;
  simState?: string;
  measurement?: string;
  tee?: string;
  tsmRoot?: string;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function registerServeCommand(program: Command): void {
  program
    .command('serve')
    .description('run the attested gRPC model server (KServe v2 + cir.attestation.v1); NOT_READY until key release and model load succeed')
    .option('--config <file>', 'server config (YAML or JSON); flags override it')
    .option('--listen <host:port>', 'listen address (default 127.0.0.1:8443)')
    .option('--model <name=path>', 'a sealed model to serve (repeatable)', collect)
    .option('--broker <url>', 'key broker base URL')
    .option('--api-keys <file>', 'API-key store (cir keys issue --store FILE); every inference call must carry one of its keys. Without it and without `auth` in --config, inference is refused (fail closed)')
    .option('--broker-tenant <tenant>', 'the broker tenant whose keys the sealed models name (default: default)')
    .option('--broker-jwks <file>', "the broker's public JWKS to pin (it writes <state-dir>/jwks.json); key releases must be signed by it")
    .option('--tee <mode>', "evidence provider: auto (configfs-tsm if it reports sev_guest or tdx_guest, else the simulator when configured), sev-snp, tdx, simulated (default auto)")
    .option('--tsm-root <dir>', 'configfs-tsm report directory (default /sys/kernel/config/tsm/report)')
    .option('--sim-state <dir>', 'simulated TEE state directory (development)')
    .option('--measurement <hex>', 'simulated launch measurement, 96 hex chars (development)')
    .action(async (f: ServeFlags) => {
      const file = f.config ? await readConfigFile(f.config) : {};
      const listen = f.listen ? parseListen(f.listen) : undefined;
      const models = f.model?.map((m) => {
        const i = m.indexOf('=');
        if (i <= 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--model must be NAME=PATH' });
        return { name: m.slice(0, i), path: m.slice(i + 1) };
      });
      const config = loadServerConfig(
        overlay(file, {
          'listen.host': listen?.host,
          'listen.port': listen?.port,
          models,
          'broker.url': f.broker,
          'broker.jwksFile': f.brokerJwks,
          'broker.tenant': f.brokerTenant,
          'auth.mode': f.apiKeys ? 'api-keys' : undefined,
          'auth.storeFile': f.apiKeys,
          'simulated.stateDir': f.simState,
          'simulated.measurement': f.measurement,
          'tee.mode': f.tee,
          'tee.tsmRoot': f.tsmRoot,
        }),
      );
      const logger = createLogger({ level: (program.opts() as { logLevel: string }).logLevel, name: 'cir-server' });
      // Real SEV-SNP or TDX (configfs-tsm) or the simulator; never a silent fallback from a real TEE.
      const { provider } = await selectEvidenceProvider(config, { logger });
      const { server, port } = await startServer(config, { provider, logger });
      process.stdout.write(`${JSON.stringify({ server: `${config.listen.host}:${port}`, tlsSpkiSha256: Buffer.from(server.tlsSpkiSha256).toString('hex') })}\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', () => resolve());
        process.once('SIGTERM', () => resolve());
      });
    });
}
