/**
 * `cir bench` as a user runs it (compiled entry point, child process): bad arguments and
 * unwritable outputs fail at once with a typed error and exit 2, before any run; a model
 * that rejects its inputs stops at the trial request; a clean run writes its report
 * atomically and exits 0. `npm test` builds first.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultSimStateDir } from '../bench/harness.js';
import { mlpWorkload } from '../bench/workloads.js';
import { cir, CLI, REPO_ROOT, STACK_TRACE } from './helpers/cli.js';

let dir: string;
let model: string;
const FAST = ['--concurrency', '1', '--warmup', '0', '--duration', '0.2', '--reps', '1', '--rates', 'none', '--boot-model-mb', '0', '--seal-mb', '0', '--no-progress'];

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/cli/main.js missing: run `npm run build` (npm test does)');
  dir = await mkdtemp(path.join(tmpdir(), 'cir-bench-cli-'));
  model = path.join(dir, 'tiny.onnx');
  await writeFile(model, mlpWorkload({ layers: 2, dim: 32, batch: 1 }).onnx);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** One line "error [CODE]: message", exit 2, no stack trace. */
function expectUsageError(r: { code: number | null; stderr: string }, code: string, message: RegExp): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr).toMatch(new RegExp(`^error \\[${code}\\]: `, 'm'));
  expect(r.stderr).toMatch(message);
  expect(r.stderr).not.toMatch(/invalid argument: invalid argument/);
  expect(r.stderr).not.toMatch(STACK_TRACE);
}

describe('cir bench arguments', () => {
  it('refuses a mode given twice', async () => {
    expectUsageError(await cir(['bench', '--modes', 'inproc,grpc,grpc', ...FAST]), 'ERR_CLI_BAD_ARGUMENT', /mode "grpc" is given twice in --modes/);
  });

  it('refuses a server idle-poll window outside 0 to 5000 µs', async () => {
    for (const v of ['5001', '-1', '2.5', 'x']) {
      expectUsageError(await cir(['bench', '--modes', 'inproc', ...FAST, '--server-idle-poll-us', v]), 'ERR_CLI_BAD_ARGUMENT', /--server-idle-poll-us must be an integer from 0 to 5000/);
    }
  });

  it('refuses --workers outside 1 to 64, and above 1 without the worker executor', async () => {
    for (const v of ['0', '65', '1.5', 'x']) {
      expectUsageError(await cir(['bench', '--modes', 'inproc', ...FAST, '--executor', 'worker', '--workers', v]), 'ERR_CLI_BAD_ARGUMENT', /--workers must be an integer from 1 to 64/);
    }
    expectUsageError(await cir(['bench', '--modes', 'inproc', ...FAST, '--workers', '2']), 'ERR_CLI_BAD_ARGUMENT', /--workers above 1 needs --executor worker/);
  });

  it('--workers 2 gives every server, grpc-plain too, two sessions per model', async () => {
    const r = await cir(['bench', '--modes', 'grpc-plain,grpc', '--model', model, '--input', 'x:fp32:1x32', '--executor', 'worker', '--workers', '2', '--sim-state', defaultSimStateDir(), '--json', '-', ...FAST]);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { settings: { workers: number }; servers: { mode: string; sessionsPerModel: number }[]; results: { errors: number }[] };
    expect(report.settings.workers).toBe(2);
    expect(report.servers.map((s) => [s.mode, s.sessionsPerModel])).toEqual([
      ['grpc-plain', 2],
      ['grpc', 2],
    ]);
    expect(report.results.map((x) => x.errors)).toEqual([0, 0]);
  });

  it('refuses a level given twice', async () => {
    expectUsageError(await cir(['bench', '--modes', 'inproc', ...FAST, '--concurrency', '1,4,1']), 'ERR_CLI_BAD_ARGUMENT', /--concurrency: 1 is given twice/);
  });

  it('writes the report to stdout for - or /dev/stdout, and nothing else there', async () => {
    for (const target of ['-', '/dev/stdout']) {
      const r = await cir(['bench', '--modes', 'inproc', '--model', model, '--input', 'x:fp32:1x32', '--json', target, ...FAST]);
      expect(r.code, r.stderr).toBe(0);
      expect((JSON.parse(r.stdout) as { schema: string }).schema).toBe('cir.bench.report/v1');
    }
  });

  it('refuses a report path it could not write, before running anything', async () => {
    const missing = path.join(dir, 'no-such-dir', 'r.json');
    expectUsageError(await cir(['bench', '--modes', 'inproc', '--json', missing, ...FAST]), 'ERR_CLI_BAD_ARGUMENT', /--json .*r\.json: the directory .*no-such-dir does not exist or is not writable/);
    expectUsageError(await cir(['bench', '--modes', 'inproc', '--svg', dir, ...FAST]), 'ERR_CLI_BAD_ARGUMENT', /--svg .*: is a directory/);
  });

  it('names the flag of a bad --input, a missing --model and a --dek-file for a plain model', async () => {
    expectUsageError(await cir(['bench', '--model', model, '--input', 'x:fp32:1x', ...FAST]), 'ERR_CLI_BAD_ARGUMENT', /--input "x:fp32:1x": dims "1x"/);
    expectUsageError(await cir(['bench', '--model', path.join(dir, 'gone.onnx'), '--input', 'x:fp32:1x32', ...FAST]), 'ERR_CLI_FILE_UNREADABLE', /--model .*gone\.onnx: no such file/);
    const dek = path.join(dir, 'k.dek');
    await writeFile(dek, Buffer.alloc(32, 7).toString('hex'));
    expectUsageError(await cir(['bench', '--model', model, '--input', 'x:fp32:1x32', '--dek-file', dek, ...FAST]), 'ERR_CLI_BAD_ARGUMENT', /--dek-file given, but --model .* is not sealed/);
  });

  it('stops at the trial request when the model rejects the inputs', async () => {
    expectUsageError(await cir(['bench', '--model', model, '--input', 'y:fp32:1x32', '--modes', 'inproc', ...FAST]), 'ERR_CLI_BENCH_PREFLIGHT', /inproc, model tiny: ORT_ERROR: /);
  });

  it('the standalone bench scripts answer a bad flag with one line and exit 2', async () => {
    for (const [script, args, why] of [
      ['seal', ['--mb', 'abc'], /^bench\/seal: --mb and --reps must be positive numbers\n$/],
      ['verify', ['--bogus'], /^bench\/verify: Unknown option '--bogus'/],
      ['audit', ['--seconds', '0'], /^bench\/audit: --concurrency and --seconds must be positive numbers\n$/],
      ['audit', ['--concurrency', '0.5'], /^bench\/audit: --concurrency must be a whole number of appenders\n$/],
    ] as const) {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve, reject) => {
        execFile(process.execPath, [path.join(REPO_ROOT, 'dist', 'bench', `${script}.js`), ...args], (e, _out, stderr) => {
          if (e && typeof e.code !== 'number') reject(e);
          else resolve({ code: e ? (e.code as number) : 0, stderr });
        });
      });
      expect(r.code, script).toBe(2);
      expect(r.stderr).toMatch(why);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
  });

  it('Ctrl-C stops the servers and removes the work directory', async () => {
    const tmp = await mkdtemp(path.join(tmpdir(), 'cir-bench-sigint-'));
    const child = spawn(process.execPath, [CLI, 'bench', '--modes', 'grpc', '--models', 'convnet', '--concurrency', '1', '--duration', '60', '--rates', 'none', '--boot-model-mb', '0', '--seal-mb', '0', '--no-progress', '--sim-state', defaultSimStateDir()], {
      env: { ...process.env, TMPDIR: tmp },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    try {
      let stderr = '';
      const pid = await new Promise<number>((resolve, reject) => {
        child.stderr.on('data', (d: Buffer) => {
          stderr += d.toString();
          const m = /server processes ready: grpc pid (\d+)/.exec(stderr);
          if (m) resolve(Number(m[1]));
        });
        child.once('exit', () => reject(new Error(`exited before the servers were ready: ${stderr}`)));
      });
      expect((await readdir(tmp)).filter((f) => f.startsWith('cir-bench-'))).toHaveLength(1);
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGINT');
      expect(await exited).toBe(130);
      expect(stderr).toContain('SIGINT: server processes stopped, work directory removed');
      expect(await readdir(tmp)).toEqual([]);
      const alive = (): boolean => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      };
      for (let i = 0; i < 50 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
      expect(alive(), `server pid ${pid}`).toBe(false);
    } finally {
      child.kill('SIGKILL');
      await rm(tmp, { recursive: true, force: true });
    }
  });

  it('a clean run exits 0 and writes its report atomically', async () => {
    const out = path.join(dir, 'out');
    const r = await cir(['bench', '--modes', 'inproc', '--model', model, '--input', 'x:fp32:1x32', '--out-dir', out, ...FAST]);
    expect(r.code, r.stderr).toBe(0);
    expect((await readdir(out)).sort()).toEqual(['bench.json', 'bench.md', 'bench.svg']);
    const report = JSON.parse(await readFile(path.join(out, 'bench.json'), 'utf8')) as { results: { errors: number }[]; settings: { serverLogLevel: string }; failures: unknown[] };
    expect(report.results).toHaveLength(1);
    expect(report.results[0]!.errors).toBe(0);
    expect(report.settings.serverLogLevel).toBe('info');
    expect(report.failures).toEqual([]);
    expect((await stat(path.join(out, 'bench.json'))).mode & 0o777).toBe(0o644);
    expect(r.stdout).toContain('# cir bench');
  });
});
