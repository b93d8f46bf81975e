import { readFile } from 'node:fs/promises';
import type { Command } from 'commander';
import { createLogger } from '../common/logger.js';
import { overlay, readConfigFile } from '../common/config.js';
import { fromBase64Url } from '../common/bytes.js';
import { loadBrokerConfig, isProduction, type BrokerConfig } from '../kms-broker/config.js';
import { startBroker } from '../kms-broker/main.js';
import { openKeyStore } from '../kms-broker/keystore.js';
import { createKey, listKeys, setKeyPolicy, showKey, generateDek } from '../kms-broker/admin.js';
import { ClientError } from '../client/codes.js';
import { AdminClient, readAdminToken } from './admin-client.js';
import { parseListen } from './listen.js';

interface BrokerFlags {
  config?: string;
  listen?: string;
  stateDir?: string;
  simulatedRoot?: string;
  allowSimulated?: boolean;
  tdxCollateral?: string;
  tdxAllowMissingCrls?: boolean;
  adminTokenFile?: string;
  masterKeyFile?: string;
}

async function brokerConfigFrom(f: BrokerFlags): Promise<BrokerConfig> {
  const file = f.config ? await readConfigFile(f.config) : {};
  const listen = f.listen ? parseListen(f.listen) : undefined;
  return loadBrokerConfig(
    overlay(file, {
      'listen.host': listen?.host,
      'listen.port': listen?.port,
      stateDir: f.stateDir ?? (file && typeof file === 'object' && 'stateDir' in file ? undefined : '.cir-state/broker'),
      'attestation.simulatedRootFile': f.simulatedRoot,
      'attestation.allowSimulated': f.allowSimulated,
      'attestation.tdxCollateral': f.tdxCollateral,
      'attestation.tdxAllowMissingCrls': f.tdxAllowMissingCrls,
      adminTokenFile: f.adminTokenFile,
      masterKeyFile: f.masterKeyFile,
    }),
  );
}

function addBrokerConfigOptions(cmd: Command): Command {
  return cmd
    .option('--config <file>', 'broker config (YAML or JSON); flags override it')
    .option('--state-dir <dir>', 'state directory: keys, master key, token signing key (default .cir-state/broker)')
    .option('--master-key-file <file>', 'master key file (base64, 32 bytes; generated 0600 if absent); $CIR_KMS_MASTER_KEY wins')
    .option('--admin-token-file <file>', 'admin API bearer token file; $CIR_KMS_ADMIN_TOKEN wins; no token = admin API off');
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

interface KeysFlags extends BrokerFlags {
  broker?: string;
}

/** Runs a key-management action online (admin HTTP API) or offline (the state directory). */
async function withKeys<T>(
  f: KeysFlags,
  online: (c: AdminClient) => Promise<T>,
  offline: (store: Awaited<ReturnType<typeof openKeyStore>>, production: boolean) => Promise<T>,
): Promise<T> {
  if (f.broker) return online(new AdminClient(f.broker, await readAdminToken(f.adminTokenFile)));
  const config = await brokerConfigFrom(f);
  const logger = createLogger({ level: 'warn', name: 'cir-broker-keys' });
  return offline(await openKeyStore(config, { logger }), isProduction(process.env));
}

export function registerBrokerCommands(program: Command): void {
  const broker = addBrokerConfigOptions(
    program
      .command('broker')
      .description('run the key broker: challenge → attest → release of model keys to attested servers')
      .option('--listen <host:port>', 'listen address (default 127.0.0.1:8443)')
      .option('--simulated-root <file>', 'PEM of the simulated TEE ARK to trust (development only)')
      .option('--allow-simulated', 'trust the simulated TEE root (refused when NODE_ENV=production)')
      .option('--tdx-collateral <dir|file>', 'Intel collateral to verify TDX evidence (bundle directory or JSON file); without it TDX evidence is refused')
      .option('--tdx-allow-missing-crls', 'TDX: accept collateral without PCK/root CRLs covering the time (relaxation)'),
  )
    .enablePositionalOptions()
    .action(async (f: BrokerFlags) => {
    const config = await brokerConfigFrom(f);
    const logger = createLogger({ level: (program.opts() as { logLevel: string }).logLevel, name: 'cir-broker' });
    const running = await startBroker(config, { logger, handleSignals: true });
    process.stdout.write(`${JSON.stringify({ broker: running.url })}\n`);
    await new Promise<void>((resolve) => running.app.server.once('close', () => resolve()));
  });

  const keys = broker
    .command('keys')
    .description('manage keys and release policies: online with --broker URL (admin API), or offline on --state-dir');
  const keyCmd = (name: string, desc: string) =>
    addBrokerConfigOptions(keys.command(name).description(desc)).option('--broker <url>', 'broker base URL (use the admin HTTP API)');

  keyCmd('create', 'create a key with a release policy; the DEK is generated unless --dek-file is given')
    .requiredOption('--key-id <id>', 'key id')
    .requiredOption('--policy <file>', 'release policy (YAML or JSON)')
    .option('--dek-file <file>', 'base64url file with a 32-byte DEK to import')
    .action(async (f: KeysFlags & { keyId: string; policy: string; dekFile?: string }) => {
      const policy = await readConfigFile(f.policy);
      let dek: Buffer;
      if (f.dekFile) {
        const d = fromBase64Url((await readFile(f.dekFile, 'utf8')).trim());
        if (!d || d.length !== 32) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--dek-file must hold 32 bytes, base64url' });
        dek = d;
      } else {
        dek = generateDek();
      }
      try {
        printJson(
          await withKeys(
            f,
            (c) => c.createKey(f.keyId, dek, policy),
            (s, production) => createKey(s, { keyId: f.keyId, dek, policy }, { production }),
          ),
        );
      } finally {
        dek.fill(0);
      }
    });

  keyCmd('list', 'list keys (metadata only; never key material)').action(async (f: KeysFlags) => {
    printJson(await withKeys(f, (c) => c.listKeys(), (s) => listKeys(s)));
  });

  keyCmd('show', 'show one key (metadata only)')
    .argument('<key-id>')
    .action(async (keyId: string, f: KeysFlags) => {
      printJson(await withKeys(f, (c) => c.getKey(keyId), (s) => showKey(s, keyId)));
    });

  keyCmd('set-policy', "replace a key's release policy")
    .argument('<key-id>')
    .requiredOption('--policy <file>', 'release policy (YAML or JSON)')
    .action(async (keyId: string, f: KeysFlags & { policy: string }) => {
      const policy = await readConfigFile(f.policy);
      printJson(await withKeys(f, (c) => c.setPolicy(keyId, policy), (s, production) => setKeyPolicy(s, keyId, policy, { production })));
    });
}
