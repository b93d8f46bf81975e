/**
 * Reading a file the user named on the command line (or in an environment variable). An fs
 * failure becomes ERR_CLI_FILE_UNREADABLE naming the flag, the path (the user's own) and why
 * in words, so the CLI prints it instead of "unexpected internal error". Never echoes the
 * content.
 *
 * `max` bounds what is read (a key, a token or a certificate file is small, and a path to a
 * device or a huge file by mistake must not allocate gigabytes); `regularFile` refuses
 * anything but a regular file (evidence, or a key the bench reads twice). Without
 * `regularFile` a pipe is read to its end, so `--api-key-file <(pass show ...)` keeps a
 * secret off the disk.
 */
import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ClientError } from './codes.js';

/** Bound for small files: keys, tokens, certificates. */
export const MAX_SMALL_FILE_BYTES = 256 * 1024;

export interface ArgFileOptions {
  /** Refuse more than this many bytes (read stops at max + 1). Default: the whole file, up to 2 GiB. */
  readonly max?: number;
  /** Refuse anything but a regular file: a directory, pipe or device. Opened non-blocking, so a FIFO cannot hang. */
  readonly regularFile?: boolean;
}

function unreadable(flag: string, file: string, why: string, cause?: unknown): ClientError {
  return new ClientError('ERR_CLI_FILE_UNREADABLE', { detail: `${flag} ${file}: ${why}`, ...(cause !== undefined ? { cause } : {}) });
}

function errnoWords(code: string): string {
  switch (code) {
    case 'ENOENT':
      return 'no such file';
    case 'EACCES':
    case 'EPERM':
      return 'permission denied';
    case 'EISDIR':
      return 'is a directory, not a file';
    case 'ERR_FS_FILE_TOO_LARGE':
      return 'larger than 2 GiB, more than can be read at once';
    default:
      return `cannot be read (${code})`;
  }
}

/** Reads at most `max` + 1 bytes into one buffer, whatever the file claims its size is (a pipe says 0, a file may grow). */
async function readUpTo(fh: FileHandle, max: number): Promise<Buffer> {
  const buf = Buffer.alloc(max + 1);
  let total = 0;
  for (;;) {
    const { bytesRead } = await fh.read(buf, total, buf.length - total, null);
    if (bytesRead === 0) break;
    total += bytesRead;
    if (total === buf.length) break;
  }
  // A buffer of its own size: a parser may look at `.buffer`, which a view would leave max + 1 long.
  const out = Buffer.alloc(total);
  buf.copy(out, 0, 0, total);
  buf.fill(0);
  return out;
}

export async function readArgFile(flag: string, file: string, o: ArgFileOptions = {}): Promise<Buffer> {
  let fh: FileHandle;
  try {
    fh = await open(file, o.regularFile ? constants.O_RDONLY | constants.O_NONBLOCK : constants.O_RDONLY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw e;
    throw unreadable(flag, file, errnoWords(code), e);
  }
  try {
    const st = await fh.stat();
    if (st.isDirectory()) throw unreadable(flag, file, errnoWords('EISDIR'));
    if (o.regularFile && !st.isFile()) throw unreadable(flag, file, 'not a regular file');
    if (o.max !== undefined && st.isFile() && st.size > o.max) throw unreadable(flag, file, `larger than ${o.max} bytes`);
    if (o.max === undefined) return await fh.readFile();
    const b = await readUpTo(fh, o.max);
    if (b.length > o.max) {
      b.fill(0);
      throw unreadable(flag, file, `larger than ${o.max} bytes`);
    }
    return b;
  } catch (e) {
    if (e instanceof ClientError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw e;
    throw unreadable(flag, file, errnoWords(code), e);
  } finally {
    await fh.close();
  }
}

/** readArgFile as UTF-8 text. */
export async function readArgText(flag: string, file: string, o: ArgFileOptions = {}): Promise<string> {
  return (await readArgFile(flag, file, o)).toString('utf8');
}
