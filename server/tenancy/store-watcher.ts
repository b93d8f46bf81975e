/**
 * Keeps a KeyIndex in step with the key store file while the server runs: fs.watch on the
 * file's directory (an atomic rename replaces the inode, so watching the file itself
 * would go deaf), backed by an mtime/size/inode poll for filesystems where watch events
 * are unreliable. A change that does not parse keeps the previous index and is reported
 * through `onInvalid` (fail safe for availability; the old keys stay exactly as they were).
 */
import { watch, type FSWatcher } from 'node:fs';
import { stat } from 'node:fs/promises';
import path from 'node:path';
import { KeyIndex, readKeyStore } from './api-keys.js';
import { isCirError } from '../../common/errors.js';

export interface StoreWatcherOptions {
  readonly file: string;
  readonly pollMs: number;
  readonly onReload: (index: KeyIndex) => void;
  readonly onInvalid: (detail: string) => void;
}

export interface StoreWatcher {
  readonly index: KeyIndex;
  /** Re-reads now if the file changed (also called by the watch and the poll). */
  check(): Promise<void>;
  close(): void;
}

function signature(s: { mtimeMs: number; size: number; ino: number }): string {
  return `${s.mtimeMs}:${s.size}:${s.ino}`;
}

/** Loads the store (throws ERR_SRV_KEY_STORE if it is missing or invalid) and starts watching. */
export async function watchKeyStore(o: StoreWatcherOptions): Promise<StoreWatcher> {
  let sig = signature(await stat(o.file).catch(() => ({ mtimeMs: 0, size: 0, ino: 0 })));
  let index = new KeyIndex(await readKeyStore(o.file));
  let running: Promise<void> | undefined;
  let closed = false;

  const check = (): Promise<void> => {
    running ??= (async () => {
      try {
        const s = await stat(o.file).catch(() => undefined);
        const next = s ? signature(s) : 'missing';
        if (next === sig) return;
        sig = next;
        try {
          index = new KeyIndex(await readKeyStore(o.file));
          o.onReload(index);
        } catch (e) {
          o.onInvalid(isCirError(e) ? (e.detail ?? e.code) : 'unreadable');
        }
      } finally {
        running = undefined;
      }
    })();
    return running;
  };

  let watcher: FSWatcher | undefined;
  try {
    const base = path.basename(o.file);
    watcher = watch(path.dirname(o.file), { persistent: false }, (_ev, name) => {
      if (!closed && (name === null || name === base)) void check();
    });
    watcher.on('error', () => undefined);
  } catch {
    // Poll only.
  }
  const timer = setInterval(() => void check(), o.pollMs);
  timer.unref();

  return {
    get index() {
      return index;
    },
    check,
    close() {
      closed = true;
      clearInterval(timer);
      watcher?.close();
    },
  };
}
