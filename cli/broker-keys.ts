/**
 * `cir broker keys|identities|tenants ...`: key lifecycle, release policies, admin
 * identities and tenant settings.
 *
 * Keys run online (`--broker URL`, the admin HTTP API with an identity token) or offline on
 * the state directory. Offline is the break-glass path: it needs the master key, takes the
 * state lock (refused while a broker runs), acts with every role in `--tenant`, skips the
 * two-person rule, and is audited as actor type `cli` in the same hash-chained log.
 * Identities and tenant settings are offline only: whoever holds the state directory and
 * master key is the platform operator.
 */
import { MAX_SMALL_FILE_BYTES, readArgText } from '../client/arg-file.js';
import os from 'node:os';
import type { Command } from 'commander';
import { readConfigFile } from '../common/config.js';
import { fromBase64Url } from '../common/bytes.js';
import { createLogger } from '../common/logger.js';
import { ClientError } from '../client/codes.js';
import {
  approveKeyPolicy,
  createKey,
  destroyKey,
  generateDek,
  listKeys,
  policyHistory,
  rotateKey,
  setDryRunPolicy,
  setKeyPolicy,
  setKeyState,
  showKey,
  type AdminContext,
} from '../kms-broker/admin.js';
import { isProduction, type BrokerConfig } from '../kms-broker/config.js';
import { parseTtl, ROLES, type Principal, type Role } from '../kms-broker/identities.js';
import { DEFAULT_TENANT } from '../kms-broker/keystore.js';
import { openOfflineState, type OfflineState } from '../kms-broker/state.js';
import { AdminClient, readAdminToken } from './admin-client.js';

type ConfigFrom = (f: Record<string, unknown>) => Promise<BrokerConfig>;

interface KeysFlags {
  broker?: string;
  adminTokenFile?: string;
  tenant?: string;
  [k: string]: unknown;
}

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

function cliPrincipal(tenant: string): Principal {
  let user = 'unknown';
  try {
    user = os.userInfo().username;
  } catch {
    // no passwd entry (containers): keep 'unknown'
  }
  return Object.freeze({ id: 'cli', tenant, subject: `cli:${user}`, roles: ROLES, via: 'cli' });
}

async function withOffline<T>(configFrom: ConfigFrom, f: KeysFlags, run: (s: OfflineState, production: boolean) => Promise<T>): Promise<T> {
  const config = await configFrom(f);
  const logger = createLogger({ level: 'warn', name: 'cir-broker-cli' });
  const state = await openOfflineState(config, { logger });
  try {
    return await run(state, isProduction(process.env));
  } finally {
    await state.close();
  }
}

/** Runs a key action online (admin HTTP API) or offline (the state directory, break-glass). */
async function withKeys<T>(
  configFrom: ConfigFrom,
  f: KeysFlags,
  online: (c: AdminClient) => Promise<T>,
  offline: (ctx: AdminContext, p: Principal) => Promise<T>,
): Promise<T> {
  if (f.broker) {
    if (f.tenant !== undefined) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--tenant is offline only; online, the identity token decides the tenant' });
    return online(new AdminClient(f.broker, await readAdminToken(f.adminTokenFile)));
  }
  return withOffline(configFrom, f, (s, production) =>
    offline({ store: s.store, policy: { production }, audit: s.audit }, cliPrincipal(f.tenant ?? DEFAULT_TENANT)),
  );
}

async function readDek(file: string | undefined): Promise<Buffer> {
  if (!file) return generateDek();
  const d = fromBase64Url((await readArgText('--dek-file', file, { max: MAX_SMALL_FILE_BYTES })).trim());
  if (!d || d.length !== 32) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--dek-file must hold 32 bytes, base64url' });
  return d;
}

function parseVersion(v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^[1-9]\d{0,8}$/.test(v)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--version must be a positive integer' });
  return Number(v);
}

export function registerKeyCommands(broker: Command, addConfigOptions: (c: Command) => Command, configFrom: ConfigFrom): void {
  const keys = broker
    .command('keys')
    .description('manage keys and release policies: online with --broker URL (admin API), or offline (break-glass) on --state-dir');
  const keyCmd = (name: string, desc: string) =>
    addConfigOptions(keys.command(name).description(desc))
      .option('--broker <url>', 'broker base URL (use the admin HTTP API with an identity token)')
      .option('--tenant <tenant>', `offline only: the tenant to act in (default ${DEFAULT_TENANT})`);

  keyCmd('create', 'create a key, optionally with a release policy; the DEK is generated unless --dek-file is given')
    .requiredOption('--key-id <id>', 'key id')
    .option('--policy <file>', 'release policy (YAML or JSON)')
    .option('--dek-file <file>', 'base64url file with a 32-byte DEK to import')
    .action(async (f: KeysFlags & { keyId: string; policy?: string; dekFile?: string }) => {
      const policy = f.policy ? await readConfigFile(f.policy) : undefined;
      const dek = await readDek(f.dekFile);
      try {
        printJson(
          await withKeys(
            configFrom,
            f,
            (c) => c.createKey(f.keyId, dek, policy),
            (ctx, p) => createKey(ctx, p, { keyId: f.keyId, dek, ...(policy !== undefined ? { policy } : {}) }),
          ),
        );
      } finally {
        dek.fill(0);
      }
    });

  keyCmd('list', 'list keys (metadata only; never key material)').action(async (f: KeysFlags) => {
    printJson(await withKeys(configFrom, f, (c) => c.listKeys(), async (ctx, p) => ({ keys: await listKeys(ctx, p) })));
  });

  keyCmd('show', 'show one key (metadata only)')
    .argument('<key-id>')
    .action(async (keyId: string, f: KeysFlags) => {
      printJson(await withKeys(configFrom, f, (c) => c.getKey(keyId), (ctx, p) => showKey(ctx, p, keyId)));
    });

  keyCmd('policies', "a key's policy history: every version, with status and approver")
    .argument('<key-id>')
    .action(async (keyId: string, f: KeysFlags) => {
      printJson(await withKeys(configFrom, f, (c) => c.policyHistory(keyId), async (ctx, p) => ({ policies: await policyHistory(ctx, p, keyId) })));
    });

  keyCmd('rotate', 'add a key version with a new DEK and make it current (earlier versions stay)')
    .argument('<key-id>')
    .option('--dek-file <file>', 'base64url file with a 32-byte DEK to import')
    .action(async (keyId: string, f: KeysFlags & { dekFile?: string }) => {
      const dek = await readDek(f.dekFile);
      try {
        printJson(await withKeys(configFrom, f, (c) => c.rotate(keyId, dek), (ctx, p) => rotateKey(ctx, p, keyId, dek)));
      } finally {
        dek.fill(0);
      }
    });

  for (const [name, state] of [
    ['disable', 'disabled'],
    ['enable', 'enabled'],
  ] as const) {
    keyCmd(name, `${name} a key, or one version with --version`)
      .argument('<key-id>')
      .option('--version <n>', 'only this version')
      .action(async (keyId: string, f: KeysFlags & { version?: string }) => {
        const version = parseVersion(f.version);
        printJson(
          await withKeys(configFrom, f, (c) => c.setState(keyId, state, version), (ctx, p) => setKeyState(ctx, p, keyId, state, version)),
        );
      });
  }

  keyCmd('destroy', 'crypto-shred a key (or one version): the wrapped DEK is overwritten, a tombstone stays. Irreversible')
    .argument('<key-id>')
    .option('--version <n>', 'only this version (not the current one)')
    .requiredOption('--confirm <key-id>', 'repeat the key id to confirm')
    .action(async (keyId: string, f: KeysFlags & { version?: string; confirm: string }) => {
      if (f.confirm !== keyId) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--confirm must repeat the key id' });
      const version = parseVersion(f.version);
      printJson(await withKeys(configFrom, f, (c) => c.destroy(keyId, version), (ctx, p) => destroyKey(ctx, p, keyId, version)));
    });

  keyCmd('set-policy', "propose a key's release policy (active at once, or pending under the tenant's two-person rule)")
    .argument('<key-id>')
    .requiredOption('--policy <file>', 'release policy (YAML or JSON)')
    .action(async (keyId: string, f: KeysFlags & { policy: string }) => {
      const policy = await readConfigFile(f.policy);
      printJson(await withKeys(configFrom, f, (c) => c.setPolicy(keyId, policy), (ctx, p) => setKeyPolicy(ctx, p, keyId, policy)));
    });

  keyCmd('approve-policy', 'approve a pending policy version (two-person rule; a different identity and subject)')
    .argument('<key-id>')
    .requiredOption('--version <n>', 'the pending policy version')
    .action(async (keyId: string, f: KeysFlags & { version: string }) => {
      const version = parseVersion(f.version)!;
      printJson(await withKeys(configFrom, f, (c) => c.approvePolicy(keyId, version), (ctx, p) => approveKeyPolicy(ctx, p, keyId, version)));
    });

  keyCmd('dry-run', 'set (--policy FILE) or clear (--clear) a candidate policy evaluated on live releases without enforcing it')
    .argument('<key-id>')
    .option('--policy <file>', 'candidate release policy (YAML or JSON)')
    .option('--clear', 'remove the candidate')
    .action(async (keyId: string, f: KeysFlags & { policy?: string; clear?: boolean }) => {
      if (!!f.policy === !!f.clear) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: 'give exactly one of --policy FILE or --clear' });
      const policy = f.policy ? await readConfigFile(f.policy) : null;
      printJson(await withKeys(configFrom, f, (c) => c.setDryRun(keyId, policy), (ctx, p) => setDryRunPolicy(ctx, p, keyId, policy)));
    });

  // --- identities (offline) ------------------------------------------------------------
  const ids = broker.command('identities').description('admin identities: scoped to a tenant, with roles, expiry and revocation (offline, on --state-dir)');
  addConfigOptions(ids.command('create').description('create an identity; prints its bearer token ONCE (store it as a secret)'))
    .requiredOption('--tenant <tenant>', 'the tenant it acts in')
    .requiredOption('--subject <name>', 'the person or service behind it (the two-person rule compares subjects)')
    .requiredOption('--role <role...>', `one or more of ${ROLES.join(', ')}`)
    .option('--ttl <duration>', 'lifetime, e.g. 90d, 12h (default 90d)', '90d')
    .option('--cert-sha256 <hex>', 'also accept this mTLS client certificate (SHA-256 of its DER)')
    .option('--no-token', 'no bearer token (mTLS only; needs --cert-sha256)')
    .action(async (f: KeysFlags & { tenant: string; subject: string; role: string[]; ttl: string; certSha256?: string; token: boolean }) => {
      const roles = f.role.flatMap((r) => r.split(',')).map((r) => r.trim()) as Role[];
      const out = await withOffline(configFrom, f, async (s) => {
        const created = await s.identities.create(
          { tenant: f.tenant, subject: f.subject, roles, ttlSeconds: parseTtl(f.ttl), bearer: f.token, ...(f.certSha256 ? { certSha256: f.certSha256 } : {}) },
          cliPrincipal(f.tenant).subject,
        );
        await s.audit.append({
          actor: { type: 'cli', id: 'cli', tenant: f.tenant, via: 'cli' },
          action: 'identity.create',
          tenant: f.tenant,
          target: { identityId: created.identity.id },
          decision: 'allow',
          detail: { roles: created.identity.roles.join(','), subject: created.identity.subject, expiresAt: created.identity.expiresAt, mtls: created.identity.certSha256 !== null },
        });
        return created;
      });
      printJson(out);
    });
  addConfigOptions(ids.command('list').description('list identities (never tokens)'))
    .option('--tenant <tenant>', 'only this tenant')
    .action(async (f: KeysFlags) => {
      printJson({ identities: await withOffline(configFrom, f, (s) => s.identities.list(f.tenant)) });
    });
  addConfigOptions(ids.command('revoke').description('revoke an identity; effective on its next request'))
    .argument('<id>')
    .action(async (id: string, f: KeysFlags) => {
      printJson(
        await withOffline(configFrom, f, async (s) => {
          const revoked = await s.identities.revoke(id);
          await s.audit.append({
            actor: { type: 'cli', id: 'cli', via: 'cli' },
            action: 'identity.revoke',
            tenant: revoked.tenant,
            target: { identityId: revoked.id },
            decision: 'allow',
          });
          return revoked;
        }),
      );
    });

  // --- tenants (offline) ---------------------------------------------------------------
  const tenants = broker.command('tenants').description('tenant settings (offline, on --state-dir)');
  addConfigOptions(tenants.command('set').description("set a tenant's settings"))
    .argument('<tenant>')
    .requiredOption('--two-person-rule <on|off>', 'policy changes need a second approver')
    .action(async (tenant: string, f: KeysFlags & { twoPersonRule: string }) => {
      if (f.twoPersonRule !== 'on' && f.twoPersonRule !== 'off') throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--two-person-rule on|off' });
      printJson(
        await withOffline(configFrom, f, async (s) => {
          const settings = await s.store.setTenantSettings(tenant, { twoPersonRule: f.twoPersonRule === 'on' });
          await s.audit.append({
            actor: { type: 'cli', id: 'cli', tenant, via: 'cli' },
            action: 'tenant.settings',
            tenant,
            decision: 'allow',
            detail: { twoPersonRule: settings.twoPersonRule },
          });
          return settings;
        }),
      );
    });
  addConfigOptions(tenants.command('list').description('tenants that have keys or settings')).action(async (f: KeysFlags) => {
    printJson(
      await withOffline(configFrom, f, async (s) => ({
        tenants: await Promise.all((await s.store.listTenants()).map((t) => s.store.tenantSettings(t))),
      })),
    );
  });
}
