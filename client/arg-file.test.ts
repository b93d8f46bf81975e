/** readArgFile: an fs failure is a typed error naming the flag, the path and why; content is returned as is. */
import { execFileSync, spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArgFile, readArgText, type ArgFileOptions } from './arg-file.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-arg-file-'));
  await writeFile(path.join(dir, 'a.txt'), 'hello\n');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('readArgFile', () => {
  it('returns the bytes of a readable file', async () => {
    expect((await readArgFile('--x', path.join(dir, 'a.txt'))).toString()).toBe('hello\n');
    expect(await readArgText('--x', path.join(dir, 'a.txt'))).toBe('hello\n');
  });

  it.each([
    ['missing', 'no such file'],
    ['', 'is a directory, not a file'],
  ])('a %s path is ERR_CLI_FILE_UNREADABLE saying why', async (name, why) => {
    const file = path.join(dir, name);
    const e = (await readArgFile('--in', file).catch((x: unknown) => x)) as Error & { code?: string; category?: string };
    expect(e.code).toBe('ERR_CLI_FILE_UNREADABLE');
    expect(e.category).toBe('bad-input');
    expect(e.message).toBe(`a file named on the command line cannot be read: --in ${file}: ${why}`);
  });

  const why = async (file: string, o: ArgFileOptions): Promise<string> => {
    const e = (await readArgFile('--f', file, o).catch((x: unknown) => x)) as Error & { code?: string };
    expect(e.code).toBe('ERR_CLI_FILE_UNREADABLE');
    return e.message.slice(e.message.indexOf(`--f ${file}: `) + `--f ${file}: `.length);
  };

  it('with max: returns a file of exactly max bytes, refuses one byte more, a file or a device', async () => {
    const f = path.join(dir, 'ten');
    await writeFile(f, '0123456789');
    expect((await readArgFile('--f', f, { max: 10 })).toString()).toBe('0123456789');
    const r = await readArgFile('--f', f, { max: 10 });
    expect(r.buffer.byteLength).toBe(10);
    expect(await why(f, { max: 9 })).toBe('larger than 9 bytes');
    // A device reports size 0 and never ends: read stops at max + 1.
    expect(await why('/dev/zero', { max: 1000 })).toBe('larger than 1000 bytes');
    expect((await readArgFile('--f', '/dev/null', { max: 10 })).length).toBe(0);
  });

  it('with regularFile: refuses a directory, a device and a FIFO without waiting for a writer', async () => {
    expect(await why(dir, { regularFile: true })).toBe('is a directory, not a file');
    expect(await why('/dev/null', { regularFile: true })).toBe('not a regular file');
    const fifo = path.join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    expect(await why(fifo, { regularFile: true, max: 100 })).toBe('not a regular file');
  });

  it('without regularFile: reads a pipe to its end (a secret passed as <(...)), within max', async () => {
    const fifo = path.join(dir, 'pipe');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', `printf 'secret-token' > '${fifo}'`]);
    const written = new Promise((r) => writer.once('exit', r));
    expect(await readArgText('--f', fifo, { max: 100 })).toBe('secret-token');
    await written;
    const big = spawn('sh', ['-c', `head -c 5000 /dev/zero > '${fifo}'`]);
    expect(await why(fifo, { max: 100 })).toBe('larger than 100 bytes');
    big.kill();
  });
});
