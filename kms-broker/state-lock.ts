import { open, readFile, unlink } from 'node:fs/promises';
import path from 'node:path';
import { KmsError } from './codes.js';
import { ensurePrivateDir } from './secret-file.js';

/**
 * One writer per broker state directory. The running broker and the offline CLI
 * (`cir broker keys|identities|tenants ...` without `--broker`) both take
 * `<stateDir>/broker.lock` before writing, so the audit chain and the key records never
 * have two writers. The lock file holds the owner's pid; a lock whose pid is no longer
 * alive (the owner was killed with -9) is stale and taken over.
 *
 * Does not: work across machines (the state directory is local by design), or guard
 * against two processes that both skip locking.
 */
export const LOCK_FILE = 'broker.lock';

export interface StateLock {
  readonly file: string;
  release(): Promise<void>;
}

export async function acquireStateLock(stateDir: string, who: 'broker' | 'cli'): Promise<StateLock> {
  await ensurePrivateDir(stateDir);
  const file = path.join(stateDir, LOCK_FILE);
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const fh = await open(file, 'wx', 0o600);
      try {
        await fh.writeFile(`${JSON.stringify({ pid: process.pid, who, since: new Date().toISOString() })}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      let released = false;
      return {
        file,
        release: async () => {
          if (released) return;
          released = true;
          await unlink(file).catch(() => undefined);
        },
      };
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') {
        throw new KmsError('ERR_KMS_STORE_IO', { detail: `${LOCK_FILE}: cannot create (${(e as NodeJS.ErrnoException).code ?? 'error'})`, cause: e });
      }
      const owner = await readOwner(file);
      if (owner && isAlive(owner.pid)) {
        throw new KmsError('ERR_KMS_STATE_LOCKED', {
          detail: `${owner.who ?? 'another process'} (pid ${owner.pid}) holds ${LOCK_FILE}; ${owner.who === 'broker' ? 'use the admin API (--broker URL) while the broker runs' : 'retry when it is done'}`,
        });
      }
      // Stale (owner gone) or unreadable (torn by a crash while being written): take it over.
      await unlink(file).catch(() => undefined);
    }
  }
  throw new KmsError('ERR_KMS_STATE_LOCKED', { detail: `${LOCK_FILE}: could not be taken` });
}

async function readOwner(file: string): Promise<{ pid: number; who?: string } | undefined> {
  try {
    const v = JSON.parse(await readFile(file, 'utf8')) as { pid?: unknown; who?: unknown };
    return typeof v.pid === 'number' && Number.isInteger(v.pid) && v.pid > 0
      ? { pid: v.pid, ...(typeof v.who === 'string' ? { who: v.who } : {}) }
      : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
