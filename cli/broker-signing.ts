/**
 * `cir broker signing-keys list|add|activate|retire|rotate --state-dir DIR`: operations on
 * the broker's signing-key ring (kms-broker/signing-keys.ts), offline on the state
 * directory. A running broker on the same directory picks each change up within a second
 * and re-publishes `jwks.json` and `jwks-archive.json`.
 *
 * Output is JSON on stdout: public data only (kids, states, dates, public JWKs).
 */
import type { Command } from 'commander';
import type { BrokerConfig } from '../kms-broker/config.js';
import {
  activateSigningKey,
  addSigningKey,
  listSigningKeys,
  openRing,
  retireSigningKey,
  rotateSigningKey,
  type RingEntry,
} from '../kms-broker/signing-keys.js';

type ConfigFrom = (flags: Record<string, unknown>) => Promise<BrokerConfig>;

function printJson(v: unknown): void {
  process.stdout.write(`${JSON.stringify(v, null, 2)}\n`);
}

/** A ring entry as printed: every field but the public JWK's coordinates. */
function view(e: RingEntry): Record<string, unknown> {
  const { publicJwk: _jwk, ...rest } = e;
  return rest;
}

/**
 * Registers the `signing-keys` group under `broker`. `addConfigOptions` and `configFrom` are
 * the broker command's own (`--config`, `--state-dir`...), so the ring is found exactly where
 * the broker keeps it; `retire` takes the token TTL from the same config.
 */
export function registerSigningKeyCommands(broker: Command, addConfigOptions: (c: Command) => Command, configFrom: ConfigFrom): void {
  const group = broker
    .command('signing-keys')
    .description('manage the ES256 keys that sign attestation tokens, releases and audit checkpoints (offline, on --state-dir)');
  const cmd = (name: string, desc: string) => addConfigOptions(group.command(name).description(desc));

  /** Opens (creating or migrating) the ring first, so every operation works on a fresh state dir too. */
  const ringOf = async (f: Record<string, unknown>): Promise<BrokerConfig> => {
    const config = await configFrom(f);
    await openRing(config.stateDir);
    return config;
  };

  cmd('list', 'list the ring: kid, state (next | active | verify-only | retired) and dates').action(async (f: Record<string, unknown>) => {
    const config = await ringOf(f);
    printJson({ keys: (await listSigningKeys(config.stateDir)).map(view) });
  });

  cmd('add', 'add a key in state next: published in the JWKS, not yet signing (let servers refresh their pinned JWKS, then activate)').action(
    async (f: Record<string, unknown>) => {
      const config = await ringOf(f);
      printJson(view(await addSigningKey(config.stateDir)));
    },
  );

  cmd('activate', 'make <kid> the signing key; the previous active key becomes verify-only')
    .argument('<kid>')
    .action(async (kid: string, f: Record<string, unknown>) => {
      const config = await ringOf(f);
      printJson({ keys: (await activateSigningKey(config.stateDir, kid)).map(view) });
    });

  cmd('rotate', 'add a key and activate it at once (servers must already accept it: prefer add, refresh, activate)').action(
    async (f: Record<string, unknown>) => {
      const config = await ringOf(f);
      printJson(view(await rotateSigningKey(config.stateDir)));
    },
  );

  cmd('retire', 'remove a verify-only or next key from the JWKS and delete its private key (refused for the active key, and within the token TTL of its deactivation)')
    .argument('<kid>')
    .option('--force', 'retire even though tokens it signed may still be in flight')
    .action(async (kid: string, f: Record<string, unknown> & { force?: boolean }) => {
      const config = await ringOf(f);
      // Tokens and leases it signed must have expired first: leases are verified with the same ring.
      printJson(view(await retireSigningKey(config.stateDir, kid, { ttlSeconds: Math.max(config.tokenTtlSeconds, config.leases.ttlSeconds), force: f.force === true })));
    });
}
