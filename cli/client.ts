import { MAX_SMALL_FILE_BYTES, readArgText } from '../client/arg-file.js';
import type { Command } from 'commander';
import { verifyServer, type VerifyServerResult } from '../client/verify.js';
import { inferVerified } from '../client/infer.js';
import { ClientError } from '../client/codes.js';
import { loadTdxCollateral, type TdxPolicyInput } from '../attestation/tdx/index.js';
import { mark } from './output.js';

const HEX96 = /^[0-9a-fA-F]{96}$/;

interface VerifyFlags {
  server: string;
  expectMeasurement: string[];
  allowSimulated?: boolean;
  allowImportedTls?: boolean;
  tdxCollateral?: string;
  acceptTcbStatus?: string;
  allowMissingCrls?: boolean;
  simulatedRoot?: string;
  at?: string;
  json?: boolean;
  timeout: string;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

function addVerifyOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--server <host:port>', 'server address')
    .requiredOption('--expect-measurement <hex>', 'accepted launch measurement, 96 hex chars (repeatable)', collect)
    .option('--allow-simulated', 'accept evidence from the simulated TEE (never for production)')
    .option('--simulated-root <file>', 'PEM of the simulated ARK to trust with --allow-simulated', process.env.CIR_SIMULATED_ROOT)
    .option('--allow-imported-tls', 'accept a server TLS key imported from outside the TEE (relaxation)')
    .option('--tdx-collateral <dir|file>', 'Intel collateral (offline bundle directory or JSON file) to verify an Intel TDX server')
    .option('--accept-tcb-status <s,...>', 'TDX: TCB statuses to accept besides UpToDate (relaxation)')
    .option('--allow-missing-crls', 'TDX: accept collateral without a PCK CRL covering the time (relaxation)')
    .option('--at <iso-time>', 'verify as of this time instead of now')
    .option('--timeout <ms>', 'per-call timeout in milliseconds', '10000')
    .option('--json', 'print one JSON object');
}

async function verifyOptions(f: VerifyFlags) {
  for (const m of f.expectMeasurement) {
    if (!HEX96.test(m)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--expect-measurement must be 96 hex characters (48 bytes)' });
  }
  if (f.allowSimulated && !f.simulatedRoot) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--allow-simulated needs --simulated-root FILE (the simulated ARK to trust)' });
  }
  const now = f.at ? new Date(f.at) : new Date();
  if (Number.isNaN(now.getTime())) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--at must be an ISO 8601 time' });
  const timeoutMs = Number(f.timeout);
  if (!Number.isInteger(timeoutMs) || timeoutMs <= 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--timeout must be a positive integer' });
  return {
    server: f.server,
    expectMeasurements: f.expectMeasurement,
    allowSimulated: !!f.allowSimulated,
    allowImportedTls: !!f.allowImportedTls,
    ...(f.tdxCollateral
      ? {
          tdx: {
            collateral: await loadTdxCollateral(f.tdxCollateral),
            ...(f.acceptTcbStatus ? { policy: { acceptedTcbStatuses: f.acceptTcbStatus.split(',').map((x) => x.trim()) as TdxPolicyInput['acceptedTcbStatuses'] } } : {}),
            ...(f.allowMissingCrls ? { allowMissingCrls: true } : {}),
          },
        }
      : {}),
    ...(f.simulatedRoot ? { simulatedRootPem: await readArgText('--simulated-root', f.simulatedRoot, { max: MAX_SMALL_FILE_BYTES }) } : {}),
    now,
    timeoutMs,
  };
}

/**
 * The API key from `--api-key-file` or env CIR_API_KEY (file wins). SECURITY: the key is
 * never echoed; errors name the file, not its content.
 */
async function readApiKey(file: string | undefined): Promise<string | undefined> {
  if (file === undefined) {
    const env = process.env.CIR_API_KEY?.trim();
    return env ? env : undefined;
  }
  const key = (await readArgText('--api-key-file', file, { max: MAX_SMALL_FILE_BYTES })).trim();
  if (key === '' || /\s/.test(key)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--api-key-file ${file} must hold one key` });
  return key;
}

function printChecks(r: VerifyServerResult): void {
  for (const c of r.checks) process.stdout.write(`${mark(c.ok)} ${c.name.padEnd(16)} ${c.detail}\n`);
  process.stdout.write(r.ok ? `verified: ${r.target}\n` : `NOT verified: ${r.target}\n`);
}

export function registerClientCommands(program: Command): void {
  addVerifyOptions(
    program
      .command('verify')
      .description('verify a server: fresh evidence, chain to a pinned root, TLS key binding, measurement and TCB; exits non-zero unless all hold'),
  ).action(async (f: VerifyFlags) => {
    const r = await verifyServer(await verifyOptions(f));
    if (f.json) {
      process.stdout.write(`${JSON.stringify({ ok: r.ok, target: r.target, checks: r.checks, claims: r.claims ?? null })}\n`);
    } else {
      printChecks(r);
    }
    process.exitCode = r.ok ? 0 : 1;
  });

  addVerifyOptions(
    program
      .command('infer')
      .description('verify the server first, then run ModelInfer over TLS pinned to the attested key; sends nothing to an unverified server'),
  )
    .requiredOption('--model <name>', 'model name')
    .requiredOption('--input <file.json>', 'input tensors: {"inputs":[{"name","datatype","shape","data"}]}')
    .option('--api-key-file <file>', 'file holding the API key (cir keys issue --out); default: env CIR_API_KEY')
    .action(async (f: VerifyFlags & { model: string; input: string; apiKeyFile?: string }) => {
      const text = await readArgText('--input', f.input);
      let input: unknown;
      try {
        input = JSON.parse(text);
      } catch (cause) {
        throw new ClientError('ERR_CLI_BAD_INPUT_FILE', { detail: `--input ${f.input}: not valid JSON`, cause });
      }
      try {
        const apiKey = await readApiKey(f.apiKeyFile);
        const r = await inferVerified({ ...(await verifyOptions(f)), model: f.model, input, ...(apiKey !== undefined ? { apiKey } : {}) });
        if (f.json) {
          process.stdout.write(`${JSON.stringify({ ok: true, model: r.model, outputs: r.outputs, checks: r.verification.checks })}\n`);
        } else {
          printChecks(r.verification);
          process.stdout.write(`${JSON.stringify({ model: r.model, outputs: r.outputs }, null, 2)}\n`);
        }
      } catch (e) {
        const checks = (e as ClientError).details?.['checks'];
        if (!f.json && Array.isArray(checks)) printChecks({ ok: false, checks, target: f.server });
        throw e;
      }
    });
}
