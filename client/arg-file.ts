/**
 * Reading a file the user named on the command line. An fs failure becomes
 * ERR_CLI_FILE_UNREADABLE naming the flag, the path (the user's own) and why in words, so
 * the CLI prints it instead of "unexpected internal error". Never echoes the content.
 */
import { readFile } from 'node:fs/promises';
import { ClientError } from './codes.js';

export async function readArgFile(flag: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (typeof code !== 'string') throw e;
    const why =
      code === 'ENOENT' ? 'no such file'
      : code === 'EACCES' || code === 'EPERM' ? 'permission denied'
      : code === 'EISDIR' ? 'is a directory, not a file'
      : code === 'ERR_FS_FILE_TOO_LARGE' ? 'larger than 2 GiB, more than can be read at once'
      : `cannot be read (${code})`;
    throw new ClientError('ERR_CLI_FILE_UNREADABLE', { detail: `${flag} ${file}: ${why}`, cause: e });
  }
}

/** readArgFile as UTF-8 text. */
export async function readArgText(flag: string, file: string): Promise<string> {
  return (await readArgFile(flag, file)).toString('utf8');
}
