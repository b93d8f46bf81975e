import { link, lstat, mkdir, open, readFile, unlink, chmod } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fsyncDir } from '../common/atomic-file.js';

/**
 * Internal helpers for the broker's secret files (master key, token signing key).
 * Not exported from index.ts.
 */

/**
 * Creates `file` with `data` only if it does not exist yet, atomically: the data is written
 * and fsynced under a temp name, then hard-linked into place. `link` fails with EEXIST when
 * another process got there first, so two brokers starting at once never end up with two
 * different generated secrets (a plain rename would let the second silently replace the
 * first). Returns false when the file already existed.
 * SECURITY: first writer wins; nothing is ever overwritten.
 */
export async function createFileExclusive(file: string, data: Uint8Array | string, mode = 0o600): Promise<boolean> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.chmod(mode);
      await fh.sync();
    } finally {
      await fh.close();
    }
    try {
      await link(tmp, file);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
      throw e;
    }
    await fsyncDir(dir);
    return true;
  } finally {
    await unlink(tmp).catch(() => undefined);
  }
}

/**
 * mkdir -p with mode 0700 for a directory the broker owns (state dir, keys dir); an
 * existing one owned by this user is tightened to 0700.
 */
export async function ensurePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const st = await lstat(dir);
  if (st.isDirectory() && (st.mode & 0o077) !== 0 && process.getuid && st.uid === process.getuid()) {
    await chmod(dir, 0o700);
  }
}

export type SecretFileRead =
  | { readonly kind: 'ok'; readonly data: Buffer }
  | { readonly kind: 'missing' }
  | { readonly kind: 'bad'; readonly reason: string };

/**
 * Reads a secret file, refusing anything that is not a regular file or that group or
 * others could read (as ssh does for private keys). Never returns the content in a reason.
 */
export async function readSecretFile(file: string): Promise<SecretFileRead> {
  let st;
  try {
    st = await lstat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { kind: 'missing' };
    return { kind: 'bad', reason: `cannot stat (${(e as NodeJS.ErrnoException).code ?? 'error'})` };
  }
  if (!st.isFile()) return { kind: 'bad', reason: 'not a regular file' };
  // SECURITY: a secret readable by group/others is treated as already leaked.
  if ((st.mode & 0o077) !== 0) {
    return { kind: 'bad', reason: `mode ${(st.mode & 0o777).toString(8)} lets group/others access it; chmod 600` };
  }
  try {
    return { kind: 'ok', data: await readFile(file) };
  } catch (e) {
    return { kind: 'bad', reason: `cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})` };
  }
}

