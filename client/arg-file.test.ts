/** readArgFile: an fs failure is a typed error naming the flag, the path and why; content is returned as is. */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readArgFile, readArgText } from './arg-file.js';

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
});
