import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { createInferenceHandlers } from './inference-service.js';
import { ModelRegistry, type InferenceSessionLike, type LoadedModel } from './registry.js';
import { toRawBytes, type ModelSignature } from './tensors.js';

const SIG: ModelSignature = {
  inputs: [{ name: 'x', datatype: 'FP32', dims: [2] }],
  outputs: [{ name: 'y', datatype: 'FP32', dims: [2] }],
};

/** A fake session: run() waits for `gate` (when set), doubles x; counts releases. */
class FakeSession implements InferenceSessionLike {
  readonly inputNames = ['x'];
  readonly outputNames = ['y'];
  readonly inputMetadata = [];
  readonly outputMetadata = [];
  releases = 0;
  runs = 0;
  gate: Promise<void> | undefined;
  async run(feeds: Record<string, { data: unknown }>): Promise<never> {
    this.runs++;
    if (this.releases > 0) throw new Error('run on a released session');
    await this.gate;
    if (this.releases > 0) throw new Error('session released during run');
    const x = feeds['x']!.data as Float32Array;
    return { y: { type: 'float32', dims: [2], data: x.map((v) => v * 2) } } as never;
  }
  async release(): Promise<void> {
    this.releases++;
  }
}

function model(name: string, session = new FakeSession(), plaintext?: Uint8Array): LoadedModel & { session: FakeSession } {
  return { name, version: '1', session, signature: SIG, sealed: true, sha256: '00'.repeat(32), ...(plaintext ? { plaintext } : {}) };
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

function handlers(registry: ModelRegistry, maxConcurrentInfers = 8) {
  return createInferenceHandlers({
    registry,
    serverName: 'cir',
    serverVersion: '0',
    maxTensorElements: 1 << 20,
    maxConcurrentInfers,
    logger: pino({ level: 'silent' }),
  });
}

const inferReq = (name = 'a'): unknown => ({
  model_name: name,
  inputs: [{ name: 'x', datatype: 'FP32', shape: ['2'] }],
  raw_input_contents: [toRawBytes(new Float32Array([1, 2]))],
});

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isCirError(e) ? e.code : String(e);
  }
  return 'resolved';
}

describe('ModelRegistry publish / acquire', () => {
  it('serves nothing before publish, everything after', () => {
    const r = new ModelRegistry(['a', 'b']);
    expect(r.ready).toBe(false);
    expect(() => r.acquire('a')).toThrow(expect.objectContaining({ code: 'ERR_SRV_NOT_READY' }));
    r.publish([model('a')]);
    expect(r.ready).toBe(false); // b missing
    expect(r.get('a')).toBeUndefined();
    r.publish([model('b')]);
    expect(r.ready).toBe(true);
    expect(r.state('a')).toBe('serving');
    expect(r.acquire('zz')).toBeUndefined();
    expect(() => r.publish([model('c')])).toThrow(/not configured/);
  });
});

describe('ModelRegistry.withdraw / republish', () => {
  it('withdraw stops serving at once, releases the session, zero-fills held plaintext; republish serves again', async () => {
    const r = new ModelRegistry(['a', 'b']);
    const plaintext = new Uint8Array([1, 2, 3, 4]);
    const a = model('a', new FakeSession(), plaintext);
    const b = model('b');
    r.publish([a, b]);
    await r.withdraw('a');
    expect(r.state('a')).toBe('withdrawn');
    expect(r.ready).toBe(false);
    expect(r.get('a')).toBeUndefined();
    expect(() => r.acquire('a')).toThrow(expect.objectContaining({ code: 'ERR_SRV_MODEL_WITHDRAWN' }));
    expect(a.session.releases).toBe(1);
    expect(Array.from(plaintext)).toEqual([0, 0, 0, 0]);
    // The other model keeps serving.
    expect(r.acquire('b')).toBe(b);
    r.release(b);
    // Withdrawing again is harmless; an unconfigured name is a programming error.
    await r.withdraw('a');
    expect(a.session.releases).toBe(1);
    await expect(r.withdraw('nope')).rejects.toThrow(/not configured/);

    expect(() => r.republish(a)).toThrow(/released/); // its session is gone
    const a2 = model('a');
    r.republish(a2);
    expect(r.ready).toBe(true);
    expect(r.state('a')).toBe('serving');
    expect(r.acquire('a')).toBe(a2);
    r.release(a2);
    expect(() => r.republish(model('c'))).toThrow(/not configured/);
  });

  it('in-flight calls finish on the withdrawn model before its session is released', async () => {
    const r = new ModelRegistry(['a']);
    const a = model('a');
    r.publish([a]);
    const gate = deferred();
    a.session.gate = gate.promise;
    const h = handlers(r);
    const inflight = h.ModelInfer(inferReq());
    await new Promise((res) => setImmediate(res));
    expect(a.session.runs).toBe(1);
    let withdrawn = false;
    const w = r.withdraw('a').then(() => (withdrawn = true));
    await new Promise((res) => setImmediate(res));
    // New calls are refused at once, while the held one is still running.
    expect(await codeOf(h.ModelInfer(inferReq()))).toBe('ERR_SRV_MODEL_WITHDRAWN');
    expect(await codeOf(h.ModelMetadata({ name: 'a', version: '' }))).toBe('ERR_SRV_MODEL_WITHDRAWN');
    expect(await h.ModelReady({ name: 'a', version: '' })).toEqual({ ready: false });
    expect(await h.ServerReady({})).toEqual({ ready: false });
    expect(withdrawn).toBe(false);
    expect(a.session.releases).toBe(0);
    gate.resolve();
    const res = await inflight;
    expect(res.outputs[0]!.name).toBe('y');
    expect(Buffer.from(res.raw_output_contents[0]!).equals(toRawBytes(new Float32Array([2, 4])))).toBe(true);
    await w;
    expect(withdrawn).toBe(true);
    expect(a.session.releases).toBe(1);
  });

  it('republish while an old call still runs: the old session is released after it, the new one serves', async () => {
    const r = new ModelRegistry(['a']);
    const a = model('a');
    r.publish([a]);
    const gate = deferred();
    a.session.gate = gate.promise;
    const h = handlers(r);
    const old = h.ModelInfer(inferReq());
    await new Promise((res) => setImmediate(res));
    const withdrawn = r.withdraw('a'); // resolves only after the old call
    await r.withdraw('a'); // already withdrawn: resolves at once
    const a2 = model('a');
    r.republish(a2);
    expect(await codeOf(h.ModelInfer(inferReq()))).toBe('resolved');
    expect(a2.session.runs).toBe(1);
    expect(a.session.releases).toBe(0);
    gate.resolve();
    await old;
    await withdrawn;
    expect(a.session.releases).toBe(1);
    expect(a2.session.releases).toBe(0);
    await r.close();
    expect(a.session.releases).toBe(1);
    expect(a2.session.releases).toBe(1);
  });

  it('republish replacing a served model retires the old session once idle', async () => {
    const r = new ModelRegistry(['a']);
    const a = model('a', new FakeSession(), new Uint8Array([9, 9]));
    r.publish([a]);
    const a2 = model('a');
    r.republish(a2);
    await new Promise((res) => setImmediate(res));
    expect(a.session.releases).toBe(1);
    expect(Array.from(a.plaintext!)).toEqual([0, 0]);
    expect(r.get('a')).toBe(a2);
  });

  it('close waits for in-flight calls, releases every session and refuses later publishes', async () => {
    const r = new ModelRegistry(['a']);
    const a = model('a');
    r.publish([a]);
    const gate = deferred();
    a.session.gate = gate.promise;
    const h = handlers(r);
    const call = h.ModelInfer(inferReq());
    await new Promise((res) => setImmediate(res));
    const closed = r.close();
    expect(r.ready).toBe(false);
    expect(a.session.releases).toBe(0);
    gate.resolve();
    await call;
    await closed;
    expect(a.session.releases).toBe(1);
    expect(() => r.republish(model('a'))).toThrow(/closed/);
  });
});

describe('ModelInfer concurrency bound', () => {
  it('refuses calls over maxConcurrentInfers with ERR_SRV_OVERLOADED and admits again after', async () => {
    const r = new ModelRegistry(['a']);
    const a = model('a');
    r.publish([a]);
    const gate = deferred();
    a.session.gate = gate.promise;
    const h = handlers(r, 2);
    const first = [h.ModelInfer(inferReq()), h.ModelInfer(inferReq())];
    expect(await codeOf(h.ModelInfer(inferReq()))).toBe('ERR_SRV_OVERLOADED');
    gate.resolve();
    await Promise.all(first);
    a.session.gate = undefined;
    expect(await codeOf(h.ModelInfer(inferReq()))).toBe('resolved');
    // Refused and failed calls do not leak holds: withdraw completes at once.
    expect(await codeOf(h.ModelInfer({ ...(inferReq() as object), model_version: '7' }))).toBe('ERR_SRV_UNKNOWN_MODEL');
    expect(await codeOf(h.ModelInfer({ ...(inferReq() as object), inputs: [] }))).toBe('ERR_SRV_TENSOR_CONTENTS');
    await r.withdraw('a');
    expect(a.session.releases).toBe(1);
  });
});
