/**
 * `cir keys issue|list|rotate|revoke --store FILE`: the inference server's API keys
 * (server/tenancy). The store holds hashes only; a new token is printed once (or written
 * to `--out FILE`, mode 0600) and cannot be recovered. A running server picks up changes
 * without a restart.
 */
import type { Command } from 'commander';
import { writeFileAtomic } from '../common/atomic-file.js';
import { ClientError } from '../client/codes.js';
import { OPERATIONS, type NewKey, type Operation } from '../server/tenancy/api-keys.js';
import { issueKey, listKeys, revokeKey, rotateKey } from '../server/tenancy/key-admin.js';

function parseOps(v: string): Operation[] {
  const ops = v.split(',').map((x) => x.trim()).filter(Boolean);
  for (const o of ops) {
    if (!(OPERATIONS as readonly string[]).includes(o)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--ops: each of ${OPERATIONS.join(', ')}` });
  }
  if (ops.length === 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--ops: at least one operation' });
  return ops as Operation[];
}

function parseModels(v: string): '*' | string[] {
  if (v.trim() === '*') return '*';
  const m = v.split(',').map((x) => x.trim()).filter(Boolean);
  if (m.length === 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: "--models: a comma-separated list, or '*'" });
  return m;
}

function parseTime(v: string | undefined, flag: string): Date | undefined {
  if (v === undefined) return undefined;
  const d = new Date(v);
  if (Number.isNaN(d.getTime())) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `${flag} must be an ISO 8601 time` });
  return d;
}

function parseHours(v: string | undefined, flag: string, now: Date): Date | undefined {
  if (v === undefined) return undefined;
  const h = Number(v);
  if (!Number.isFinite(h) || h < 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `${flag} must be a number of hours >= 0` });
  return new Date(now.getTime() + h * 3_600_000);
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

/** Prints the record and the token once, or writes the token to `out` (0600) and prints only the record. */
async function emitNew(k: NewKey, out: string | undefined, json: boolean | undefined): Promise<void> {
  const { secretSha256: _h, ...record } = k.record;
  if (out) {
    // SECURITY: the token goes to a 0600 file, never to the terminal.
    await writeFileAtomic(out, `${k.token}\n`, 0o600);
    process.stdout.write(json ? `${JSON.stringify({ ...record, tokenFile: out })}\n` : `issued ${record.keyId} (tenant ${record.tenant}); token written to ${out}\n`);
    return;
  }
  if (json) process.stdout.write(`${JSON.stringify({ ...record, token: k.token })}\n`);
  else process.stdout.write(`issued ${record.keyId} (tenant ${record.tenant}); token (shown once):\n${k.token}\n`);
}

export function registerKeysCommand(program: Command): void {
  const keys = program.command('keys').description('manage the inference server API keys (store file holds hashes only; changes reach a running server)');

  keys
    .command('issue')
    .description('issue a key for a tenant, scoped to operations and models; prints the token once')
    .requiredOption('--store <file>', 'API key store (created 0600 if missing)')
    .requiredOption('--tenant <name>', 'tenant the key belongs to')
    .requiredOption('--owner <who>', 'workload or team that holds the key')
    .option('--env <name>', 'environment (e.g. prod, staging)', 'prod')
    .option('--ops <list>', `operations: ${OPERATIONS.join(',')}`, 'infer,metadata')
    .option('--models <list>', "model names, or '*' for every model of the tenant", '*')
    .option('--expires <iso-time>', 'expiry time')
    .option('--ttl-hours <n>', 'expiry in hours from now')
    .option('--cert-sha256 <hex>', 'map an mTLS client certificate (SHA-256 of its DER) to this key (repeatable)', collect)
    .option('--out <file>', 'write the token to this file (0600) instead of stdout')
    .option('--json', 'print one JSON object')
    .action(async (f: { store: string; tenant: string; owner: string; env: string; ops: string; models: string; expires?: string; ttlHours?: string; certSha256?: string[]; out?: string; json?: boolean }) => {
      const now = new Date();
      if (f.expires && f.ttlHours) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--expires and --ttl-hours are exclusive' });
      const expiresAt = parseTime(f.expires, '--expires') ?? parseHours(f.ttlHours, '--ttl-hours', now);
      const k = await issueKey(f.store, {
        tenant: f.tenant,
        owner: f.owner,
        environment: f.env,
        operations: parseOps(f.ops),
        models: parseModels(f.models),
        now,
        ...(expiresAt ? { expiresAt } : {}),
        ...(f.certSha256 ? { certSha256: f.certSha256.map((c) => c.toLowerCase()) } : {}),
      });
      await emitNew(k, f.out, f.json);
    });

  keys
    .command('list')
    .description('list keys (id, tenant, owner, environment, scopes, times, state); never secrets')
    .requiredOption('--store <file>', 'API key store')
    .option('--json', 'print a JSON array')
    .action(async (f: { store: string; json?: boolean }) => {
      const rows = await listKeys(f.store, new Date());
      if (f.json) {
        process.stdout.write(`${JSON.stringify(rows)}\n`);
        return;
      }
      for (const r of rows) {
        const models = r.scopes.models === '*' ? '*' : r.scopes.models.join(',');
        process.stdout.write(
          `${r.keyId}  ${r.state.padEnd(7)}  tenant=${r.tenant} owner=${r.owner} env=${r.environment} ops=${r.scopes.operations.join(',')} models=${models}${r.expiresAt ? ` expires=${r.expiresAt}` : ''}${r.revokedAt ? ` revoked=${r.revokedAt}` : ''}\n`,
        );
      }
    });

  keys
    .command('rotate')
    .description('issue a replacement with the same tenant, owner and scopes; optionally let the old key expire later (both work meanwhile)')
    .requiredOption('--store <file>', 'API key store')
    .requiredOption('--key-id <id>', 'key to rotate')
    .option('--old-expires-in-hours <n>', 'the old key expires this many hours from now')
    .option('--expires <iso-time>', 'expiry of the new key')
    .option('--out <file>', 'write the new token to this file (0600) instead of stdout')
    .option('--json', 'print one JSON object')
    .action(async (f: { store: string; keyId: string; oldExpiresInHours?: string; expires?: string; out?: string; json?: boolean }) => {
      const now = new Date();
      const oldExpiresAt = parseHours(f.oldExpiresInHours, '--old-expires-in-hours', now);
      const expiresAt = parseTime(f.expires, '--expires');
      const k = await rotateKey(f.store, f.keyId, { now, ...(oldExpiresAt ? { oldExpiresAt } : {}), ...(expiresAt ? { expiresAt } : {}) });
      await emitNew(k, f.out, f.json);
    });

  keys
    .command('revoke')
    .description('revoke a key now (a running server refuses it once it reloads the store)')
    .requiredOption('--store <file>', 'API key store')
    .requiredOption('--key-id <id>', 'key to revoke')
    .action(async (f: { store: string; keyId: string }) => {
      const r = await revokeKey(f.store, f.keyId, new Date());
      process.stdout.write(`revoked ${r.keyId} at ${r.revokedAt}\n`);
    });
}
