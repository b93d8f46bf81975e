import { open, rename, mkdir, unlink } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import path from 'node:path';

/**
 * Writes `data` to `file` so that a crash (even `kill -9`) at any moment leaves either
 * the old file or the new one, never a half-written file: write a temp file in the same
 * directory, fsync it, rename it over the target, then fsync the directory so the rename
 * itself is durable.
 */
export async function writeFileAtomic(
  file: string,
  data: Uint8Array | string,
  mode = 0o600,
  opts: {
    /**
     * fsync the directory after the rename (default true). Without it, a power loss may
     * bring back the previous file (never a half-written one): for callers to whom an older
     * version is safe, such as the audit head on every commit after the first.
     */
    readonly syncDir?: boolean;
  } = {},
): Promise<void> {
  const dir = path.dirname(file);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = path.join(dir, `.${path.basename(file)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.writeFile(data);
    await fh.chmod(mode); // umask may have narrowed or widened the create mode
    await fh.sync();
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => undefined);
    throw e;
  }
  if (opts.syncDir !== false) await fsyncDir(dir);
}

/** fsyncs a directory so a rename or link in it is durable; a no-op where the filesystem refuses. */
export async function fsyncDir(dir: string): Promise<void> {
  let dh;
  try {
    dh = await open(dir, 'r');
    await dh.sync();
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  } finally {
    await dh?.close().catch(() => undefined);
  }
}
