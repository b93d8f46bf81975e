#!/usr/bin/env node
/**
 * `cir`: the command line of the confidential inference runtime.
 *
 *   cir broker   run the key broker (and `cir broker keys ...` to manage keys)
 *   cir serve    run the attested gRPC model server
 *   cir seal     encrypt an .onnx model and register its key with the broker
 *   cir verify   verify a server's attestation
 *   cir infer    verify, then run one inference over the attested channel
 *   cir attest   verify recorded evidence offline (`cir attest verify`)
 *   cir demo     the whole flow on the simulated TEE
 *   cir keys     the inference server's API keys (issue, list, rotate, revoke)
 */
import { Command, Option } from 'commander';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { printError } from './output.js';

type Register = (program: Command) => void;

/**
 * Each top-level command and the module that registers it. Modules are imported only when
 * needed: a command run loads its own module (so `cir attest verify` never loads
 * onnxruntime or gRPC), while root help or an unknown command loads them all.
 */
const COMMAND_MODULES: Readonly<Record<string, () => Promise<Register | Register[]>>> = {
  broker: async () => (await import('./broker.js')).registerBrokerCommands,
  serve: async () => (await import('./serve.js')).registerServeCommand,
  seal: async () => (await import('./seal.js')).registerSealCommand,
  verify: async () => (await import('./client.js')).registerClientCommands,
  infer: async () => (await import('./client.js')).registerClientCommands,
  demo: async () => (await import('./demo-command.js')).registerDemoCommand,
  sim: async () => (await import('./sim.js')).registerSimCommand,
  attest: async () => (await import('./attest.js')).registerAttestCommand,
  bench: async () => (await import('./bench.js')).registerBenchCommand,
  keys: async () => (await import('./keys.js')).registerKeysCommand,
  errors: async () => registerErrorsCommand,
};

function registerErrorsCommand(program: Command): void {
  program
    .command('errors')
    .description('list every error code with its category, HTTP status, gRPC status and CLI exit code')
    .option('--markdown', 'print the Markdown table used in the README')
    .action(async (f: { markdown?: boolean }) => {
      const { errorTableMarkdown, errorCatalog } = await import('./error-catalog.js');
      process.stdout.write(f.markdown ? `${errorTableMarkdown()}\n` : `${JSON.stringify(errorCatalog(), null, 2)}\n`);
    });
}

/** The subcommand named in argv (first argument that is not a root option), if any. */
function requestedCommand(argv: readonly string[]): string | undefined {
  const args = argv.slice(2);
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (a === '--log-level') {
      i++;
      continue;
    }
    if (a.startsWith('-')) continue;
    return a;
  }
  return undefined;
}

function version(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const p of [path.join(here, '..', 'package.json'), path.join(here, '..', '..', 'package.json')]) {
    try {
      const pkg = JSON.parse(readFileSync(p, 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'cir' && pkg.version) return pkg.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0';
}

export async function buildProgram(argv: readonly string[] = process.argv): Promise<Command> {
  const program = new Command('cir')
    .description('cir, the confidential inference runtime: attested ONNX model serving with attestation-gated key release')
    .version(version())
    .showHelpAfterError('(run with --help for usage)')
    .addOption(new Option('--log-level <level>', 'log level for service logs (stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    // Set before subcommands are added so they inherit it: usage errors throw to main().
    .exitOverride()
    // Options after a subcommand belong to it (`broker` and `broker keys create` share flags).
    .enablePositionalOptions();
  const wanted = requestedCommand(argv);
  const loaders = wanted !== undefined && wanted in COMMAND_MODULES ? [COMMAND_MODULES[wanted]!] : [...new Set(Object.values(COMMAND_MODULES))];
  const registered = new Set<Register>();
  for (const load of loaders) {
    const r = await load();
    for (const register of Array.isArray(r) ? r : [r]) {
      if (registered.has(register)) continue; // verify and infer share one module
      registered.add(register);
      register(program);
    }
  }
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = await buildProgram(argv);
  try {
    await program.parseAsync(argv);
    return typeof process.exitCode === 'number' ? process.exitCode : 0;
  } catch (e) {
    const ce = e as { code?: string; exitCode?: number };
    if (typeof ce.code === 'string' && ce.code.startsWith('commander.')) {
      // commander already printed help or the usage error.
      return ce.code === 'commander.helpDisplayed' || ce.code === 'commander.version' || ce.code === 'commander.help' ? 0 : 2;
    }
    return printError(e);
  }
}

function isEntryPoint(): boolean {
  try {
    return !!process.argv[1] && realpathSync(process.argv[1]) === realpathSync(fileURLToPath(import.meta.url));
  } catch {
    return false;
  }
}

const invokedDirectly = isEntryPoint();
if (invokedDirectly) {
  main(process.argv).then(
    (code) => {
      process.exitCode = code;
    },
    (e) => {
      process.exitCode = printError(e);
    },
  );
}
