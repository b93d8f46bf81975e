// The real-worker tests need dist/server/ort-worker.js: run `npm run build` first (`npm test` does).
import fc from 'fast-check';
import type { InferenceSession } from 'onnxruntime-node';
import { afterEach, describe, expect, it } from 'vitest';
import * as ort from '../common/ort.js';
import { mlpModel } from '../bench/onnx-gen.js';
import { loadServerConfig } from './config.js';
import { createSessionFactory } from './executor.js';
import type { InferenceSessionLike } from './registry.js';
import { createSessionPool } from './session-pool.js';
import { createWorkerSession, OrtWorkerError } from './worker-executor.js';

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** A stand-in session whose runs stay pending until the test settles them. */
class FakeSession implements InferenceSessionLike {
  readonly inputNames = ['x'];
  readonly outputNames = ['y'];
  readonly inputMetadata = [] as unknown as readonly InferenceSession.ValueMetadata[];
  readonly outputMetadata = [] as unknown as readonly InferenceSession.ValueMetadata[];
  readonly runs: { args: unknown[]; resolve: (r: InferenceSession.ReturnType) => void; reject: (e: unknown) => void }[] = [];
  released = 0;
  releaseError: Error | undefined;

  constructor(readonly id: number) {}

  /** Set: the next run throws this at once instead of returning a promise. */
  throwNow: Error | undefined;

  run(...args: unknown[]): Promise<InferenceSession.ReturnType> {
    const e = this.throwNow;
    this.throwNow = undefined;
    if (e) throw e;
    return new Promise((resolve, reject) => this.runs.push({ args, resolve, reject }));
  }

  async release(): Promise<void> {
    this.released++;
    if (this.releaseError) throw this.releaseError;
  }

  /** Settles its oldest pending run. */
  finish(e?: unknown): void {
    const r = this.runs.shift()!;
    if (e === undefined) r.resolve({ y: this.id } as unknown as InferenceSession.ReturnType);
    else r.reject(e);
  }
}

async function fakePool(n: number): Promise<{ pool: InferenceSessionLike & { live: number }; members: FakeSession[] }> {
  const members: FakeSession[] = [];
  const pool = await createSessionPool(n, async () => {
    const s = new FakeSession(members.length);
    members.push(s);
    return s;
  });
  return { pool: pool as InferenceSessionLike & { live: number }, members };
}

const FEEDS = {} as InferenceSession.FeedsType;
const dead = (): OrtWorkerError => new OrtWorkerError('worker-failed', 'onnxruntime worker exited (code 3)');

describe('a session pool', () => {
  it('of one is the session itself', async () => {
    const s = new FakeSession(0);
    expect(await createSessionPool(1, async () => s)).toBe(s);
  });

  it('refuses a size that is not a positive whole number', async () => {
    for (const n of [0, -1, 1.5, Number.NaN]) {
      await expect(createSessionPool(n, async () => new FakeSession(0))).rejects.toThrow(RangeError);
    }
  });

  it('spreads calls round the members when idle and sends each to the least busy one', async () => {
    const { pool, members } = await fakePool(3);
    expect(pool.inputNames).toEqual(['x']);
    const first = [pool.run(FEEDS), pool.run(FEEDS), pool.run(FEEDS)];
    expect(members.map((m) => m.runs.length)).toEqual([1, 1, 1]);
    members[1]!.finish();
    await expect(first[1]).resolves.toEqual({ y: 1 });
    // Member 1 is now the only one with nothing in flight.
    void pool.run(FEEDS);
    expect(members.map((m) => m.runs.length)).toEqual([1, 1, 1]);
    // All busy alike: the next goes to the member after the last chosen (1), i.e. 2.
    void pool.run(FEEDS);
    expect(members.map((m) => m.runs.length)).toEqual([1, 1, 2]);
  });

  it('passes feeds, fetches and options through unchanged', async () => {
    const { pool, members } = await fakePool(2);
    const fetches = ['y'];
    const options = { logSeverityLevel: 3 } as const;
    void pool.run(FEEDS, fetches, options);
    expect(members[0]!.runs[0]!.args).toEqual([FEEDS, fetches, options]);
    expect(members[0]!.runs[0]!.args[1]).toBe(fetches);
  });

  it("an onnxruntime error in a run is the caller's and retires no member", async () => {
    const { pool, members } = await fakePool(2);
    const p = pool.run(FEEDS);
    members[0]!.finish(new Error("input 'x' has the wrong shape"));
    await expect(p).rejects.toThrow("input 'x' has the wrong shape");
    expect(pool.live).toBe(2);
  });

  it('a member that throws instead of rejecting: the call rejects, and the member counts nothing in flight', async () => {
    const { pool, members } = await fakePool(2);
    members[0]!.throwNow = new TypeError('feeds must be an object');
    await expect(pool.run(FEEDS)).rejects.toThrow('feeds must be an object');
    void pool.run(FEEDS); // member 1, after the last pick (0)
    void pool.run(FEEDS); // member 0: nothing in flight, so it is the least busy
    expect(members.map((m) => m.runs.length)).toEqual([1, 1]);
  });

  it('retires a member whose worker died, serves on with the others, and rejects once none is left', async () => {
    const { pool, members } = await fakePool(2);
    const a = pool.run(FEEDS);
    const b = pool.run(FEEDS);
    members[0]!.finish(dead());
    await expect(a).rejects.toBeInstanceOf(OrtWorkerError);
    expect(pool.live).toBe(1);
    // Member 1 is busier, but member 0 is retired: every later call goes to member 1.
    const c = pool.run(FEEDS);
    expect(members.map((m) => m.runs.length)).toEqual([0, 2]);
    members[1]!.finish();
    members[1]!.finish(dead());
    await expect(b).resolves.toEqual({ y: 1 });
    await expect(c).rejects.toThrow('onnxruntime worker exited (code 3)');
    expect(pool.live).toBe(0);
    const e = await pool.run(FEEDS).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(OrtWorkerError);
    expect((e as OrtWorkerError).reason).toBe('worker-failed');
    expect(members.map((m) => m.runs.length)).toEqual([0, 0]);
  });

  it('release releases every member once, and later runs reject', async () => {
    const { pool, members } = await fakePool(3);
    await Promise.all([pool.release(), pool.release()]);
    expect(members.map((m) => m.released)).toEqual([1, 1, 1]);
    await expect(pool.run(FEEDS)).rejects.toMatchObject({ name: 'OrtWorkerError', reason: 'released' });
  });

  it('release reports a member that failed to release, after releasing the others', async () => {
    const { pool, members } = await fakePool(3);
    members[1]!.releaseError = new Error('release failed');
    await expect(pool.release()).rejects.toThrow('release failed');
    expect(members.map((m) => m.released)).toEqual([1, 1, 1]);
  });

  it('a member that cannot be created fails the pool and the ones made are released', async () => {
    const made: FakeSession[] = [];
    let n = 0;
    const create = async (): Promise<InferenceSessionLike> => {
      if (n++ === 2) throw new Error('onnxruntime could not load the model');
      const s = new FakeSession(made.length);
      made.push(s);
      return s;
    };
    await expect(createSessionPool(4, create)).rejects.toThrow('onnxruntime could not load the model');
    expect(made).toHaveLength(3);
    expect(made.map((m) => m.released)).toEqual([1, 1, 1]);
  });

  it('property: every run goes to a live member with the fewest runs in flight', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.integer({ min: 2, max: 5 }),
        fc.array(fc.oneof(fc.constant({ op: 'run' as const }), fc.record({ op: fc.constantFrom('ok' as const, 'fail' as const, 'die' as const), m: fc.nat(4) })), {
          maxLength: 60,
        }),
        async (size, ops) => {
          const { pool, members } = await fakePool(size);
          const live = new Set(members.map((_, i) => i));
          for (const step of ops) {
            if (step.op === 'run') {
              const before = members.map((m) => m.runs.length);
              const p = pool.run(FEEDS).catch(() => undefined);
              const chosen = members.findIndex((m, i) => m.runs.length !== before[i]);
              if (live.size === 0) {
                expect(chosen).toBe(-1);
                await p;
                continue;
              }
              expect(live.has(chosen)).toBe(true);
              expect(before[chosen]).toBe(Math.min(...[...live].map((i) => before[i]!)));
              continue;
            }
            const m = members[step.m % size]!;
            if (m.runs.length === 0) continue;
            m.finish(step.op === 'ok' ? undefined : step.op === 'fail' ? new Error('bad input') : dead());
            if (step.op === 'die') live.delete(step.m % size);
            // Let the pool's handlers for the settled run go first.
            await new Promise((r) => setImmediate(r));
          }
          expect(pool.live).toBe(live.size);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('a pool of real worker sessions', () => {
  function input(n: number, dim: number, seed: number): ort.Tensor {
    return new ort.Tensor('float32', Float32Array.from({ length: n * dim }, (_, i) => Math.sin(i * 0.37 + seed)), [n, dim]);
  }

  it('from server config (workers: 2) runs calls in both workers, with the outputs of one inline session', async () => {
    const config = loadServerConfig({ models: [{ name: 'm', path: 'm.onnx', plaintext: true }], allowPlaintextModels: true, executor: 'worker', workers: 2, intraOpThreads: 1 });
    const counts: number[] = [];
    const create = async (m: Uint8Array, o: InferenceSession.SessionOptions): Promise<InferenceSessionLike> => {
      const s = await createWorkerSession(m, o);
      const i = counts.push(0) - 1;
      return {
        inputNames: s.inputNames,
        outputNames: s.outputNames,
        inputMetadata: s.inputMetadata,
        outputMetadata: s.outputMetadata,
        run: ((feeds: InferenceSession.FeedsType) => {
          counts[i]!++;
          return s.run(feeds);
        }) as InferenceSessionLike['run'],
        release: () => s.release(),
      };
    };
    const model = mlpModel({ layers: 4, dim: 64, seed: 5 });
    const pool = await createSessionFactory(config, create)(model, { executionProviders: ['cpu'] });
    cleanups.push(() => pool.release());
    const local = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 1 });
    cleanups.push(() => local.release());

    const feeds = Array.from({ length: 8 }, (_, i) => ({ x: input(4, 64, i) }));
    const outs = await Promise.all(feeds.map((f) => pool.run(f)));
    expect(counts).toEqual([4, 4]);
    for (const [i, f] of feeds.entries()) {
      const want = (await local.run(f))['y']!;
      expect(outs[i]!['y']!.dims).toEqual(want.dims);
      expect(Buffer.from((outs[i]!['y']!.data as Float32Array).buffer)).toEqual(Buffer.from((want.data as Float32Array).buffer));
    }
    await pool.release();
    await expect(pool.run(feeds[0]!)).rejects.toBeInstanceOf(OrtWorkerError);
  });
});

describe('workers in the server config and the session factory', () => {
  const base = { models: [{ name: 'm', path: 'm.onnx', plaintext: true }], allowPlaintextModels: true };

  it('default to 1, and more than 1 needs the worker executor', () => {
    expect(loadServerConfig(base).workers).toBe(1);
    expect(loadServerConfig({ ...base, executor: 'worker', workers: 64 }).workers).toBe(64);
    for (const bad of [{ workers: 2 }, { executor: 'worker', workers: 0 }, { executor: 'worker', workers: 65 }, { executor: 'worker', workers: 1.5 }]) {
      let err: unknown;
      try {
        loadServerConfig({ ...base, ...bad });
      } catch (e) {
        err = e;
      }
      expect(err).toMatchObject({ code: 'ERR_SRV_CONFIG' });
      expect((err as Error).message).toContain('workers');
    }
    expect(() => createSessionFactory({ intraOpThreads: 1, interOpThreads: 0, executionMode: 'sequential', workers: 2 })).toThrow('workers: 2 needs the worker executor');
    expect(() => createSessionFactory({ intraOpThreads: 1, interOpThreads: 0, executionMode: 'sequential', executor: 'worker', workers: 0 })).toThrow(RangeError);
  });

  it('divide the default intra-op threads between the workers', async () => {
    const seen: InferenceSession.SessionOptions[] = [];
    const fake = async (_m: Uint8Array, o: InferenceSession.SessionOptions): Promise<InferenceSessionLike> => {
      seen.push(o);
      return new FakeSession(seen.length);
    };
    const settings = { intraOpThreads: 0, interOpThreads: 0, executionMode: 'sequential', executor: 'worker', workers: 4 } as const;
    await createSessionFactory(settings, fake, 16)(new Uint8Array(1), {});
    expect(seen.map((o) => o.intraOpNumThreads)).toEqual([3, 3, 3, 3]);
    seen.length = 0;
    await createSessionFactory({ ...settings, workers: 8 }, fake, 2)(new Uint8Array(1), {});
    expect(seen.map((o) => o.intraOpNumThreads)).toEqual(Array(8).fill(1));
    seen.length = 0;
    await createSessionFactory({ ...settings, intraOpThreads: 2 }, fake, 16)(new Uint8Array(1), {});
    expect(seen.map((o) => o.intraOpNumThreads)).toEqual([2, 2, 2, 2]);
  });
});
