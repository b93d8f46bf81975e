/**
 * `cir broker signing-keys ...` through main(): the whole rotation on a state directory.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { main } from './main.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-signing-cli-'));
});
afterEach(async () => rm(dir, { recursive: true, force: true }));

async function cir(...args: string[]): Promise<{ code: number; json: Record<string, unknown> | undefined; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const o = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
    out.push(String(s));
    return true;
  });
  const e = vi.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => {
    err.push(String(s));
    return true;
  });
  const before = process.exitCode;
  try {
    const code = await main(['node', 'cir', 'broker', 'signing-keys', ...args, '--state-dir', dir]);
    const text = out.join('');
    return { code, json: text ? (JSON.parse(text) as Record<string, unknown>) : undefined, err: err.join('') };
  } finally {
    o.mockRestore();
    e.mockRestore();
    process.exitCode = before;
  }
}

type Entry = { kid: string; state: string };

describe('cir broker signing-keys', () => {
  it('list, add, activate, refuses an early retire, rotate; prints public data only', async () => {
    const l0 = await cir('list');
    expect(l0.code).toBe(0);
    const [a] = l0.json!.keys as Entry[];
    expect(a).toMatchObject({ state: 'active' });

    const added = await cir('add');
    expect(added.json).toMatchObject({ state: 'next' });
    const b = (added.json as Entry).kid;

    const act = await cir('activate', b);
    expect((act.json!.keys as Entry[]).map((k) => [k.kid, k.state])).toEqual([
      [a!.kid, 'verify-only'],
      [b, 'active'],
    ]);

    // Within the token TTL of its deactivation: refused (a conflict exits non-zero, naming the code).
    const early = await cir('retire', a!.kid);
    expect(early.code).not.toBe(0);
    expect(early.err).toContain('ERR_KMS_SIGNING_KEY_OP_REFUSED');
    const forced = await cir('retire', a!.kid, '--force');
    expect(forced.json).toMatchObject({ kid: a!.kid, state: 'retired' });

    const rot = await cir('rotate');
    expect(rot.json).toMatchObject({ state: 'active' });
    const l1 = await cir('list');
    expect((l1.json!.keys as Entry[]).map((k) => k.state)).toEqual(['retired', 'verify-only', 'active']);
    expect(JSON.stringify(l1.json)).not.toMatch(/PRIVATE|"d"|"x"/);

    const unknown = await cir('activate', 'nope');
    expect(unknown.code).not.toBe(0);
    expect(unknown.err).toContain('ERR_KMS_SIGNING_KEY_NOT_FOUND');
  });
});
