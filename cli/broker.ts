import type { Command } from 'commander';
import { createLogger } from '../common/logger.js';
import { overlay, readConfigFile } from '../common/config.js';
import { loadBrokerConfig, type BrokerConfig } from '../kms-broker/config.js';
import { startBroker } from '../kms-broker/main.js';
import { registerKeyCommands } from './broker-keys.js';
import { registerBrokerAuditCommands } from './broker-audit.js';
import { registerSigningKeyCommands } from './broker-signing.js';
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

  registerKeyCommands(broker, addBrokerConfigOptions, (f) => brokerConfigFrom(f as BrokerFlags));
  registerBrokerAuditCommands(broker);
  registerSigningKeyCommands(broker, addBrokerConfigOptions, (f) => brokerConfigFrom(f as BrokerFlags));

  // Release policy tools (cli/broker-policy.ts, loaded only when one runs).
  broker
    .command('policy')
    .description('release policy tools (offline, no running broker)')
    .command('test')
    .description(
      'replay recorded evidence against a release policy: each rule pass/fail, expected vs observed, the policy hash and the verdict. ' +
        'Exit 0 allow, 1 deny or evidence failed verification, 2 usage or unreadable/invalid input, 3 internal error.',
    )
    .option('--policy <file>', 'release policy (YAML or JSON): SEV-SNP, TDX or rules (version: 1)')
    .option('--evidence <file>', 'raw SEV-SNP report or TDX quote, or the JSON evidence a server POSTs ({report, certs} / {tee: "tdx", quote})')
    .option('--at <iso-time>', 'verify the evidence as of this time instead of now')
    .option('--tee <type>', 'sev-snp or tdx; detected from the evidence when omitted')
    .option('--cert <file>', 'SEV-SNP: PEM or DER certificate(s), as for cir attest verify (repeatable)', (v: string, prev: string[] = []) => [...prev, v], [])
    .option('--collateral <dir|file>', 'SEV-SNP: offline bundle; TDX (required): collateral directory, JSON file or bundle')
    .option('--allow-simulated', 'SEV-SNP: trust the simulated root from --cert or $CIR_SIMULATED_ROOT (never in production)')
    .option('--allow-missing-crls', 'TDX: accept collateral without PCK/root CRLs (relaxation)')
    .option('--production', 'decide as a production broker (also when NODE_ENV=production)')
    .option('--json', 'print exactly one JSON object on stdout')
    .action(async (f: Record<string, unknown>) => (await import('./broker-policy.js')).policyTestAction(f));
}
