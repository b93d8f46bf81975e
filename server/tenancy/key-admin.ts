/**
 * Store edits behind `cir keys`: issue, rotate, revoke, list. Each is read-modify-write
 * of the store file under an exclusive lock file (`<store>.lock`, created with O_EXCL),
 * written atomically with mode 0600, so a running server's reload sees either the old or
 * the new store, never a partial one. Tokens are returned once and never stored.
 */
import { open, unlink } from 'node:fs/promises';
import { ServerError } from '../codes.js';
import { mintKey, readKeyStore, writeKeyStore, type IssueOptions, type KeyRecord, type KeyStoreFile, type NewKey } from './api-keys.js';

const LOCK_TRIES = 50;
const LOCK_WAIT_MS = 100;

async function withStoreLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const lock = `${file}.lock`;
  for (let i = 0; ; i++) {
    try {
      const fh = await open(lock, 'wx', 0o600);
      await fh.close();
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || i >= LOCK_TRIES) {
        throw new ServerError('ERR_SRV_KEY_STORE', { detail: `cannot lock the store (${(e as NodeJS.ErrnoException).code ?? 'error'}); remove a stale <store>.lock if no other cir keys command runs` });
      }
      await new Promise((r) => setTimeout(r, LOCK_WAIT_MS));
    }
  }
  try {
    return await fn();
  } finally {
    await unlink(lock).catch(() => undefined);
  }
}

async function edit<T>(file: string, missingOk: boolean, fn: (s: KeyStoreFile) => { store: KeyStoreFile; result: T }): Promise<T> {
  return withStoreLock(file, async () => {
    const current = await readKeyStore(file, { missingOk });
    const { store, result } = fn(current);
    await writeKeyStore(file, store);
    return result;
  });
}

/** Adds a new key (creates the store if missing). */
export function issueKey(file: string, o: IssueOptions): Promise<NewKey> {
  return edit(file, true, (s) => {
    const k = mintKey(o, new Set(s.keys.map((r) => r.keyId)));
    return { store: { version: 1, keys: [...s.keys, k.record] }, result: k };
  });
}

function find(s: KeyStoreFile, keyId: string): KeyRecord {
  const r = s.keys.find((k) => k.keyId === keyId);
  if (!r) throw new ServerError('ERR_SRV_KEY_NOT_FOUND', { detail: `key id ${JSON.stringify(keyId.slice(0, 32))}` });
  return r;
}

/**
 * Issues a key with the same tenant, owner, environment and scopes as `keyId`. The old
 * key stays valid until `oldExpiresAt` when given (both work during the rollout; an
 * earlier existing expiry is kept), otherwise until revoked. Certificate mappings stay on
 * the old record (a certificate is rotated by issuing a new certificate, not a key).
 */
export function rotateKey(file: string, keyId: string, o: { now: Date; oldExpiresAt?: Date; expiresAt?: Date }): Promise<NewKey> {
  return edit(file, false, (s) => {
    const old = find(s, keyId);
    if (old.revokedAt !== undefined) throw new ServerError('ERR_SRV_KEY_NOT_FOUND', { detail: 'key is revoked' });
    const k = mintKey(
      {
        tenant: old.tenant,
        owner: old.owner,
        environment: old.environment,
        operations: old.scopes.operations,
        models: old.scopes.models,
        now: o.now,
        ...(o.expiresAt ? { expiresAt: o.expiresAt } : {}),
        rotatedFrom: old.keyId,
      },
      new Set(s.keys.map((r) => r.keyId)),
    );
    const keys = s.keys.map((r) => {
      if (r.keyId !== keyId || !o.oldExpiresAt) return r;
      const earlier = r.expiresAt !== undefined && Date.parse(r.expiresAt) <= o.oldExpiresAt.getTime();
      return earlier ? r : { ...r, expiresAt: o.oldExpiresAt.toISOString() };
    });
    return { store: { version: 1, keys: [...keys, k.record] }, result: k };
  });
}

/** Marks a key revoked at `now` (a running server refuses it on its next reload). */
export function revokeKey(file: string, keyId: string, now: Date): Promise<KeyRecord> {
  return edit(file, false, (s) => {
    const old = find(s, keyId);
    const updated = { ...old, revokedAt: old.revokedAt ?? now.toISOString() };
    return { store: { version: 1, keys: s.keys.map((r) => (r.keyId === keyId ? updated : r)) }, result: updated };
  });
}

/** The store's records (hashes omitted), with their state at `now`. */
export async function listKeys(file: string, now: Date): Promise<(Omit<KeyRecord, 'secretSha256'> & { state: 'active' | 'expired' | 'revoked' })[]> {
  const s = await readKeyStore(file);
  const t = now.getTime();
  return s.keys.map(({ secretSha256: _h, ...r }) => ({
    ...r,
    state: r.revokedAt !== undefined && Date.parse(r.revokedAt) <= t ? 'revoked' : r.expiresAt !== undefined && Date.parse(r.expiresAt) <= t ? 'expired' : 'active',
  }));
}
