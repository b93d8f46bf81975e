/**
 * The bench's server processes as the harness drives them (real child processes, real gRPC
 * on loopback): the access log is written as `cir serve` writes it, a dying server fails a
 * pending stats() instead of hanging it, a model that rejects the inputs stops a run before
 * its sweep, and a failed start leaves no work directory behind. Needs dist/.
 */
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BENCH_MEASUREMENT, defaultSimStateDir, preflight, runBench } from './harness.js';
import { smallBenchOptions } from '../test/helpers/bench-options.js';
import { grpcTarget, ServerChild, type Mode, type Target } from './targets.js';
import { cnnWorkload, makeTensor, mlpWorkload, type Workload } from './workloads.js';
import { runClosedLoop } from './load.js';
import type { ServerSpec } from './server-process.js';

const simStateDir = defaultSimStateDir();
const tiny = mlpWorkload({ layers: 2, dim: 32, batch: 1 }, 'tiny');
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'cir-server-child-test-'));
  await writeFile(path.join(dir, 'tiny.onnx'), tiny.onnx);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function start(name: string, logLevel?: string, more: Partial<ServerSpec> = {}): Promise<ServerChild> {
  return ServerChild.start(
    {
      simStateDir,
      workDir: path.join(dir, name),
      insecure: true,
      measurement: BENCH_MEASUREMENT,
      models: [{ name: 'tiny', file: path.join(dir, 'tiny.onnx'), plaintext: true }],
      intraOpThreads: 1,
      interOpThreads: 0,
      ...(logLevel ? { logLevel } : {}),
      ...more,
    },
    path.join(dir, `${name}.spec.json`),
  );
}

async function callsAndLogLines(server: ServerChild, calls: number): Promise<number> {
  const target = await grpcTarget({ mode: 'grpc', server, requestTimeoutMs: 10_000 });
  try {
    const invoke = target.invoker(tiny);
    await invoke();
    const before = (await server.stats()).logLines!;
    for (let i = 0; i < calls; i++) await invoke();
    return (await server.stats()).logLines! - before;
  } finally {
    await target.close();
  }
}

describe('bench server processes', () => {
  it('write the access-log line of every call at the default level, and none at warn', async () => {
    const info = await start('info');
    const warn = await start('warn', 'warn');
    try {
      const atInfo = await callsAndLogLines(info, 25);
      expect(atInfo).toBeGreaterThanOrEqual(25);
      expect(atInfo).toBeLessThanOrEqual(27);
      expect(await callsAndLogLines(warn, 25)).toBe(0);
    } finally {
      await Promise.all([info.close(), warn.close()]);
    }
  });

  it('admit as many calls at once as the harness asks, no tenant shedding below it', async () => {
    // 64 outstanding calls of a ~12 ms model on the worker executor: the event loop admits
    // them all while the model runs. The tenancy layer's default would shed the bench's one
    // tenant from 48 in flight (3/4 of 64).
    const cnn = cnnWorkload();
    await writeFile(path.join(dir, 'cnn.onnx'), cnn.onnx);
    const server = await start('admit', 'warn', {
      models: [{ name: cnn.name, file: path.join(dir, 'cnn.onnx'), plaintext: true }],
      executor: 'worker',
      maxConcurrentInfers: 64,
    });
    const target = await grpcTarget({ mode: 'grpc', server, requestTimeoutMs: 60_000 });
    try {
      const r = await runClosedLoop({ invoke: target.invoker(cnn), concurrency: 64, warmupMs: 0, durationMs: 1500 });
      expect(r.errors).toEqual({});
      expect(r.completed).toBeGreaterThan(64);
    } finally {
      await target.close();
      await server.close();
    }
  });

  it('fail a pending stats() when the process dies, instead of leaving it waiting', async () => {
    const server = await start('dies');
    try {
      process.kill(server.pid!, 'SIGSTOP');
      const pending = server.stats();
      process.kill(server.pid!, 'SIGKILL');
      await expect(pending).rejects.toThrow(/server process exited \(SIGKILL\)/);
      await expect(server.stats()).rejects.toThrow(/server process exited/);
    } finally {
      await server.close();
    }
  });

  it('stop a run at the trial request when the model rejects the inputs', async () => {
    const server = await start('preflight');
    const target = await grpcTarget({ mode: 'grpc', server, requestTimeoutMs: 10_000 });
    // The tiny MLP's input is `x`; this workload sends `y`.
    const wrong: Workload = { ...tiny, name: 'tiny', inputs: [makeTensor('y', 'FP32', [1, 32])] };
    try {
      const e = (await preflight(['grpc'], [wrong], new Map<Mode, Target>([['grpc', target]])).catch((x: unknown) => x)) as Error & { code?: string };
      expect(e.code).toBe('ERR_CLI_BENCH_PREFLIGHT');
      expect(e.message).toMatch(/grpc, model tiny: INVALID_ARGUMENT: /);
      await preflight(['grpc'], [tiny], new Map<Mode, Target>([['grpc', target]]));
    } finally {
      await target.close();
      await server.close();
    }
  });
});

describe('runBench', () => {
  it('removes its work directory when a server fails to start, and says which', async () => {
    const tmp = await mkdtemp(path.join(os.tmpdir(), 'cir-bench-tmpdir-test-'));
    const saved = process.env['TMPDIR'];
    process.env['TMPDIR'] = tmp;
    const broken: Workload = { ...tiny, name: 'broken', onnx: new Uint8Array(Buffer.from('not an onnx model')) };
    // simStateDir was taken before TMPDIR changed: the shared state, not a fresh one.
    const o = smallBenchOptions({ modes: ['grpc', 'grpc-plain'], workloads: [broken], simStateDir });
    try {
      expect(os.tmpdir()).toBe(tmp);
      const e = (await runBench(o).catch((x: unknown) => x)) as Error & { code?: string };
      expect(e.code).toBe('ERR_CLI_BENCH_SERVER_FAILED');
      expect(e.message).toMatch(/^a benchmark server process failed to start or to answer: grpc(-plain)?: /);
      expect(await readdir(tmp)).toEqual([]);
    } finally {
      if (saved === undefined) delete process.env['TMPDIR'];
      else process.env['TMPDIR'] = saved;
      await rm(tmp, { recursive: true, force: true });
    }
  });
});
