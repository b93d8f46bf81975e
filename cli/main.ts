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
 */
import { Command, Option } from 'commander';
import { readFileSync, realpathSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { printError } from './output.js';
import { registerBrokerCommands } from './broker.js';
import { registerServeCommand } from './serve.js';
import { registerSealCommand } from './seal.js';
import { registerClientCommands } from './client.js';
import { registerDemoCommand } from './demo-command.js';
import { registerSimCommand } from './sim.js';
import { registerAttestCommand } from './attest.js';
import { registerBenchCommand } from './bench.js';
import { errorTableMarkdown, errorCatalog } from './error-catalog.js';

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

export function buildProgram(): Command {
  const program = new Command('cir')
    .description('cir, the confidential inference runtime: attested ONNX model serving with attestation-gated key release')
    .version(version())
    .showHelpAfterError('(run with --help for usage)')
    .addOption(new Option('--log-level <level>', 'log level for service logs (stderr)').choices(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'))
    // Set before subcommands are added so they inherit it: usage errors throw to main().
    .exitOverride()
    // Options after a subcommand belong to it (`broker` and `broker keys create` share flags).
    .enablePositionalOptions();
  registerBrokerCommands(program);
  registerServeCommand(program);
  registerSealCommand(program);
  registerClientCommands(program);
  registerDemoCommand(program);
  registerSimCommand(program);
  registerAttestCommand(program);
  registerBenchCommand(program);
  program
    .command('errors')
    .description('list every error code with its category, HTTP status, gRPC status and CLI exit code')
    .option('--markdown', 'print the Markdown table used in the README')
    .action((f: { markdown?: boolean }) => {
      process.stdout.write(f.markdown ? `${errorTableMarkdown()}\n` : `${JSON.stringify(errorCatalog(), null, 2)}\n`);
    });
  return program;
}

export async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
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
