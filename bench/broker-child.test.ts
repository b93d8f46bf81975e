/**
 * The bench's broker process (bench/broker-child.ts): it serves once ready, and it exits
 * when its stdin closes, which is what happens when its parent dies. Needs dist/ (`npm test`
 * builds first).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';

const entry = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bench', 'broker-child.js');
const dirs: string[] = [];

/** Starts the broker process with the config `makeConfig` builds in a fresh directory. */
async function start(makeConfig: (dir: string) => unknown) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cir-broker-child-'));
  dirs.push(dir);
  const file = path.join(dir, 'broker.json');
  await writeFile(file, JSON.stringify(makeConfig(dir)));
  const child = spawn(process.execPath, [entry, file], {
    env: { ...process.env, NODE_ENV: 'development', CIR_KMS_ADMIN_TOKEN: 'x'.repeat(43), CIR_LOG_LEVEL: 'silent' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const first = await new Promise<Record<string, unknown>>((resolve) => createInterface({ input: child.stdout }).once('line', (l) => resolve(JSON.parse(l) as Record<string, unknown>)));
  return { child, exited, first };
}

afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

describe('bench broker process', () => {
  it('serves once ready and exits 0 when its stdin closes', async () => {
    expect(existsSync(entry), 'run `npm run build` first').toBe(true);
    const { child, exited, first } = await start((dir) => ({ listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(dir, 'state') }));
    expect(first.type).toBe('ready');
    const res = await fetch(new URL('/.well-known/jwks.json', String(first.url)));
    expect(res.status).toBe(200);
    expect(((await res.json()) as { keys: unknown[] }).keys.length).toBeGreaterThan(0);
    child.stdin.end(); // as when the parent exits or is killed
    expect(await exited).toBe(0);
  });

  it('reports a broken config as an error line and exits 1', async () => {
    const { exited, first } = await start(() => ({ listen: { host: '127.0.0.1', port: 0 }, stateDir: 42 }));
    expect(first.type).toBe('error');
    expect(String(first.message)).toContain('ERR_KMS_CONFIG_INVALID');
    expect(await exited).toBe(1);
  });
});
