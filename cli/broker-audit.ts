/**
 * `cir broker audit verify|export`: check the broker's hash-chained audit log offline and
 * cut evidence packages for auditors.
 *
 *   cir broker audit verify --dir DIR [--jwks FILE] [--require-signed | --allow-unsigned] [--json]
 *   cir broker audit export --dir DIR --since ISO --until ISO --out DIR [--jwks FILE] [--json]
 *
 * `--dir` is the broker state directory (holding `audit/`), the audit directory itself, or
 * (verify only) an evidence package written by `export` (recognised by its manifest.json).
 *
 * Exit codes (the project-wide mapping): 0 intact / exported; 1 the log or package failed
 * verification (the first bad entry is named: line, seq, reason); 2 usage errors and
 * unreadable or missing files (including a signed head with no JWKS to check it); 3
 * anything else (a bug). With `--json`, stdout holds exactly one JSON object in every case
 * the command itself handles.
 *
 * The audit module is imported only when a subcommand runs.
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import { exitCodeFor, isCirError } from '../common/errors.js';
import { ClientError } from '../client/codes.js';
import { mark } from './output.js';

interface VerifyFlags {
  readonly dir: string;
  readonly jwks?: string;
  readonly requireSigned?: boolean;
  readonly allowUnsigned?: boolean;
  readonly json?: boolean;
}

interface ExportFlags {
  readonly dir: string;
  readonly since: string;
  readonly until: string;
  readonly out: string;
  readonly jwks?: string;
  readonly json?: boolean;
}

const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;

/** Parses an ISO-8601 time (a date alone is midnight UTC); ERR_CLI_BAD_ARGUMENT otherwise. */
export function parseIsoTime(flag: string, s: string): Date {
  const t = ISO_8601.test(s) ? Date.parse(s) : Number.NaN;
  if (!Number.isFinite(t)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `${flag} must be an ISO-8601 time` });
  return new Date(t);
}

/** What a handled run prints and returns. */
interface Outcome {
  readonly exitCode: number;
  readonly json: unknown;
  readonly text: string;
  /** Text goes to stderr (errors) rather than stdout (results). */
  readonly toStderr?: boolean;
}

function errorOutcome(e: unknown): Outcome {
  if (isCirError(e)) {
    return {
      exitCode: exitCodeFor(e.category),
      json: { ok: false, code: e.code, detail: e.detail ?? e.message },
      text: `error [${e.code}]: ${e.message}\n`,
      toStderr: true,
    };
  }
  if (process.env['CIR_DEBUG'] === '1') process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  // SECURITY: an untyped error is a bug; its message is not shown (it may quote input).
  return { exitCode: 3, json: { ok: false, code: 'ERR_INTERNAL', detail: 'unexpected internal error' }, text: 'error [ERR_INTERNAL]: unexpected internal error (set CIR_DEBUG=1 for details)\n', toStderr: true };
}

function emit(o: Outcome, json: boolean | undefined): void {
  if (json) process.stdout.write(`${JSON.stringify(o.json)}\n`);
  else (o.toStderr ? process.stderr : process.stdout).write(o.text);
  process.exitCode = o.exitCode;
}

const REASONS: Readonly<Record<string, string>> = {
  'line-too-long': 'line longer than the maximum entry size',
  'not-utf8': 'not UTF-8',
  'not-json': 'not JSON (edited, or a torn line the head covers)',
  'too-deep': 'JSON nested too deeply',
  schema: 'not an audit entry (schema)',
  'not-canonical': 'not in canonical form (edited)',
  hash: 'hash does not match the content (edited)',
  torn: 'incomplete line that the head covers',
  seq: 'sequence number out of order (entry deleted, duplicated or reordered)',
  prev: 'does not link to the previous entry (entry deleted or reordered)',
  truncated: 'log ends before the entry the signed head names (truncated)',
  'head-missing': 'audit.head.json is missing',
  'head-malformed': 'head file is malformed',
  'head-signature': 'head signature does not verify against the JWKS',
  'head-payload': 'head fields differ from what was signed',
  'head-mismatch': 'entry named by the head has another hash (history rewritten)',
  'head-unsigned': 'head is unsigned but a signed one is required',
  'manifest-malformed': 'manifest.json is malformed',
  'file-hash': 'file differs from its SHA-256 in manifest.json',
  range: 'first/last seq or hash differ from manifest.json',
  'policy-hash': 'policy document does not match its hash',
};

async function runVerify(f: VerifyFlags): Promise<Outcome> {
  try {
    if (f.requireSigned && f.allowUnsigned) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--require-signed and --allow-unsigned exclude each other' });
    const audit = await import('../kms-broker/audit/index.js');
    const requireSigned = f.requireSigned ? true : f.allowUnsigned ? false : undefined;
    const isPackage = await stat(path.join(f.dir, 'manifest.json')).then(() => true, () => false);
    if (isPackage) {
      const r = await audit.verifyAuditExport({ dir: f.dir, ...(requireSigned !== undefined ? { requireSigned } : {}) });
      if (!r.ok) {
        const b = r.firstBad;
        const where = `${b.file}${b.line !== undefined ? ` line ${b.line}` : ''}`;
        return { exitCode: 1, json: { kind: 'package', ...r }, text: `${mark(false)} evidence package: first bad: ${where}: ${b.reason} (${REASONS[b.reason] ?? b.reason})\n` };
      }
      const lines = [
        `${mark(true)} evidence package intact: ${r.entries} entries${r.firstSeq !== null ? ` (seq ${r.firstSeq}..${r.lastSeq})` : ''}, files match the manifest`,
        r.anchoredByHead
          ? '   the signed head names an entry of the package'
          : '   the head is later than the window: its link to these entries is in the full log (verify it with --dir on the log)',
      ];
      if (!r.signed) lines.push('WARNING: the head is unsigned: the package proves only internal consistency');
      return { exitCode: 0, json: { kind: 'package', ...r }, text: `${lines.join('\n')}\n` };
    }
    const r = await audit.verifyAuditLog({ dir: f.dir, ...(f.jwks ? { jwks: f.jwks } : {}), ...(requireSigned !== undefined ? { requireSigned } : {}) });
    if (!r.ok) {
      const b = r.firstBad;
      const where = b.line === 0 ? 'head' : `line ${b.line}${b.seq !== undefined ? ` (seq ${b.seq})` : ''}`;
      return { exitCode: 1, json: { kind: 'log', ...r }, text: `${mark(false)} audit log: first bad entry: ${where}: ${b.reason} (${REASONS[b.reason] ?? b.reason})\n` };
    }
    const lines = [
      `${mark(true)} audit log intact: ${r.entries} entries, head at seq ${r.headSeq}${r.signed ? `, signed${r.kid ? ` (kid ${r.kid})` : ''}` : ', UNSIGNED'}`,
    ];
    if (r.unanchored > 0) lines.push(`   ${r.unanchored} entries after the head (written, never acknowledged; anchored when the broker next opens the log)`);
    if (r.tornTail) lines.push('   torn final line after the head (never acknowledged; cut off when the broker next opens the log)');
    if (!r.signed) lines.push('WARNING: the head is unsigned: the chain proves only internal consistency, not that history was not rewritten');
    return { exitCode: 0, json: { kind: 'log', ...r }, text: `${lines.join('\n')}\n` };
  } catch (e) {
    return errorOutcome(e);
  }
}

async function runExport(f: ExportFlags): Promise<Outcome> {
  try {
    const since = parseIsoTime('--since', f.since);
    const until = parseIsoTime('--until', f.until);
    const audit = await import('../kms-broker/audit/index.js');
    const m = await audit.exportAudit({ dir: f.dir, since, until, out: f.out, ...(f.jwks ? { jwks: f.jwks } : {}) });
    const e = m.entries;
    const text =
      `${mark(true)} exported ${e.count} entries (${e.inWindow} in the window${e.firstSeq !== null ? `, seq ${e.firstSeq}..${e.lastSeq}` : ''}), ` +
      `${m.policies.count} policies${m.policies.missing.length > 0 ? ` (${m.policies.missing.length} referenced but not in the log)` : ''} to ${f.out}\n` +
      `   check it with: cir broker audit verify --dir ${f.out}\n`;
    return { exitCode: 0, json: { ok: true, out: f.out, manifest: m }, text };
  } catch (e) {
    return errorOutcome(e);
  }
}

/** Registers `audit verify` and `audit export` under the `broker` command. */
export function registerBrokerAuditCommands(broker: Command): void {
  const audit = broker.command('audit').description('verify the tamper-evident audit log and export evidence packages for auditors');
  audit
    .command('verify')
    .description(
      'verify every entry, the hash chain and the signed head; or an evidence package (a directory with manifest.json). ' +
        'Exit 0 intact, 1 tampered (first bad entry named), 2 usage or unreadable files, 3 internal error.',
    )
    .requiredOption('--dir <dir>', 'broker state directory, its audit/ directory, or an exported evidence package')
    .option('--jwks <file>', 'JWKS with the public keys that sign heads (default: <state-dir>/jwks-archive.json, else jwks.json)')
    .option('--require-signed', 'fail when the head is unsigned (the default whenever a JWKS is available)')
    .option('--allow-unsigned', 'accept an unsigned head even though a JWKS is available (relaxation; reported as unsigned)')
    .option('--json', 'print exactly one JSON object on stdout')
    .action(async (f: VerifyFlags) => emit(await runVerify(f), f.json));
  audit
    .command('export')
    .description('write an evidence package (entries of the window, policy versions, public keys, head, manifest) to a new directory')
    .requiredOption('--dir <dir>', 'broker state directory or its audit/ directory')
    .requiredOption('--since <iso-time>', 'first time of the window (inclusive)')
    .requiredOption('--until <iso-time>', 'last time of the window (inclusive)')
    .requiredOption('--out <dir>', 'output directory: new or empty; never overwritten')
    .option('--jwks <file>', 'JWKS with the public keys that sign heads (default: <state-dir>/jwks-archive.json, else jwks.json)')
    .option('--json', 'print exactly one JSON object on stdout')
    .action(async (f: ExportFlags) => emit(await runExport(f), f.json));
}
