import path from 'node:path';
import type { Logger } from '../common/logger.js';
import { AuditLog } from './audit/index.js';
import type { AuditSink } from './audit-sink.js';
import { jwksPath, type BrokerConfig } from './config.js';
import { JWKS_ARCHIVE_FILE, publishRingJwks } from './signing-keys.js';
import { FileIdentityStore } from './identities.js';
import { loadMasterKey, openKeyStore, type FileKeyStore } from './keystore.js';
import { acquireStateLock, type StateLock } from './state-lock.js';
import { TokenService } from './tokens.js';

/** Where each part of a broker's state lives under `stateDir`. */
export function statePaths(config: BrokerConfig): { identities: string; audit: string } {
  return { identities: path.join(config.stateDir, 'identities.json'), audit: path.join(config.stateDir, 'audit') };
}

export async function openIdentityStore(
  config: BrokerConfig,
  opts: { env?: Readonly<Record<string, string | undefined>>; now?: () => Date } = {},
): Promise<FileIdentityStore> {
  const { key } = await loadMasterKey(config, opts.env ? { env: opts.env } : {});
  try {
    return new FileIdentityStore({ file: statePaths(config).identities, masterKey: key, ...(opts.now ? { now: opts.now } : {}) });
  } finally {
    key.fill(0);
  }
}

/**
 * The state directory opened for the offline CLI (`cir broker keys|identities|tenants ...`
 * without `--broker`): the single-writer lock (refused while a broker runs; use the admin
 * API then), the key store, the identities, and the audit log with heads signed by the
 * broker's active signing key, so offline (break-glass) changes land in the same
 * hash-chained trail as the broker's own. `close()` flushes the log and releases the lock.
 */
export interface OfflineState {
  readonly store: FileKeyStore;
  readonly identities: FileIdentityStore;
  readonly audit: AuditSink;
  close(): Promise<void>;
}

export async function openOfflineState(
  config: BrokerConfig,
  opts: { env?: Readonly<Record<string, string | undefined>>; logger: Logger },
): Promise<OfflineState> {
  const lock: StateLock = await acquireStateLock(config.stateDir, 'cli');
  try {
    const env = opts.env ?? process.env;
    const store = await openKeyStore(config, { env, logger: opts.logger });
    const identities = await openIdentityStore(config, { env });
    const tokens = await TokenService.openRing(config.stateDir, {
      issuer: config.issuer,
      ttlSeconds: config.tokenTtlSeconds,
      logger: opts.logger,
      watch: false,
    });
    // The audit heads are signed with the ring's active key: make sure its public key is in
    // the published JWKS and the archive, so `cir broker audit verify` can check them.
    await publishRingJwks(tokens.ring, { jwksFile: jwksPath(config), archiveFile: path.join(config.stateDir, JWKS_ARCHIVE_FILE) });
    const log = await AuditLog.open({ dir: statePaths(config).audit, signer: tokens.checkpointSigner(), logger: opts.logger });
    return {
      store,
      identities,
      audit: log,
      close: async () => {
        try {
          await log.close();
          tokens.close?.();
        } finally {
          await lock.release();
        }
      },
    };
  } catch (e) {
    await lock.release();
    throw e;
  }
}
