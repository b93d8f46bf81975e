import fc from 'fast-check';
import * as ort from '../common/ort.js';
import { describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { ServerError } from './codes.js';
import { loadServiceDefinitions } from './proto.js';
import type { ModelInferRequestIn } from './proto-types.js';
import { mlpModel } from '../bench/onnx-gen.js';
import {
  DATATYPES,
  decodeInferRequest,
  decodeInferResponse,
  encodeOutputs,
  isZeroCopy,
  rawView,
  toRawBytes,
  toTypedContents,
  type Datatype,
  type ModelSignature,
} from './tensors.js';

const defs = loadServiceDefinitions();
const inferMethod = defs.inference['ModelInfer']!;

/** Real protobuf round trip with the server's loader options. */
function wireRequest(req: ModelInferRequestIn): unknown {
  return inferMethod.requestDeserialize(inferMethod.requestSerialize(req));
}
function wireResponse(res: unknown): unknown {
  return inferMethod.responseDeserialize(inferMethod.responseSerialize(res));
}

const LIMITS = { maxTensorElements: 1 << 20 };

const SAMPLES: Record<Datatype, ArrayBufferView> = {
  BOOL: new Uint8Array([1, 0, 1, 1, 0, 0]),
  UINT8: new Uint8Array([0, 255, 7, 128, 1, 2]),
  UINT16: new Uint16Array([0, 65535, 300, 1, 2, 3]),
  UINT32: new Uint32Array([0, 4294967295, 1, 65536, 7, 9]),
  UINT64: new BigUint64Array([0n, 2n ** 64n - 1n, 5n, 2n ** 53n + 1n, 1n, 2n]),
  INT8: new Int8Array([-128, 127, 0, -1, 5, 6]),
  INT16: new Int16Array([-32768, 32767, -1, 0, 1, 2]),
  INT32: new Int32Array([-(2 ** 31), 2 ** 31 - 1, 0, -5, 5, 6]),
  INT64: new BigInt64Array([-(2n ** 63n), 2n ** 63n - 1n, 0n, -(2n ** 53n) - 1n, 1n, 2n]),
  FP32: new Float32Array([1.5, -0, Number.POSITIVE_INFINITY, 3.4e38, 1e-45, Number.NaN]),
  FP64: new Float64Array([Math.PI, -1e308, 5e-324, -0, Number.NEGATIVE_INFINITY, Number.NaN]),
};

function signature(dt: Datatype): ModelSignature {
  return {
    inputs: [{ name: 'x', datatype: dt, dims: ['batch', 3] }],
    outputs: [{ name: 'y', datatype: dt, dims: ['batch', 3] }],
  };
}

function bytesOf(v: ArrayBufferView): Buffer {
  return Buffer.from(v.buffer, v.byteOffset, v.byteLength);
}

/** The same bytes at an odd offset, as grpc may deliver them. */
function unaligned(b: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([0xee]), b]).subarray(1);
}

function expectCode(fn: () => unknown, code: string): ServerError {
  try {
    fn();
  } catch (e) {
    expect(isCirError(e) ? e.code : e).toBe(code);
    return e as ServerError;
  }
  throw new Error(`expected ${code}, nothing thrown`);
}

describe('codec round trips for every datatype', () => {
  for (const dt of Object.keys(DATATYPES) as Datatype[]) {
    const sample = SAMPLES[dt];
    it(`${dt} via raw_input_contents (unaligned) and raw outputs`, () => {
      const req = wireRequest({
        model_name: 'm',
        inputs: [{ name: 'x', datatype: dt, shape: [2, 3] }],
        raw_input_contents: [unaligned(bytesOf(sample))],
      });
      const d = decodeInferRequest(req, signature(dt), LIMITS);
      const t = d.feeds['x']!;
      expect(t.type).toBe(DATATYPES[dt].ort);
      expect(t.dims).toEqual([2, 3]);
      expect(bytesOf(t.data as ArrayBufferView).equals(bytesOf(sample))).toBe(true);
      expect((t.data as ArrayBufferView).byteOffset % DATATYPES[dt].bytes).toBe(0);
      expect(d.outputs).toEqual(['y']);
      expect(d.rawOutputs).toBe(true);

      const res = wireResponse({ model_name: 'm', ...encodeOutputs({ y: t }, d) });
      const [out] = decodeInferResponse(res, LIMITS);
      expect(out!.datatype).toBe(dt);
      expect(out!.shape).toEqual([2, 3]);
      expect(bytesOf(out!.data).equals(bytesOf(sample))).toBe(true);
    });

    it(`${dt} via typed contents and typed outputs`, () => {
      const req = wireRequest({
        model_name: 'm',
        inputs: [{ name: 'x', datatype: dt, shape: ['2', 3], contents: toTypedContents(dt, sample) }],
        outputs: [{ name: 'y', parameters: { binary_data_output: { bool_param: false } } }],
      });
      const d = decodeInferRequest(req, signature(dt), LIMITS);
      const t = d.feeds['x']!;
      expect(bytesOf(t.data as ArrayBufferView).equals(bytesOf(sample))).toBe(true);
      expect(d.rawOutputs).toBe(false);

      const enc = encodeOutputs({ y: t }, d);
      expect(enc.raw_output_contents).toEqual([]);
      const res = wireResponse({ model_name: 'm', ...enc });
      const [out] = decodeInferResponse(res, LIMITS);
      expect(bytesOf(out!.data).equals(bytesOf(sample))).toBe(true);
    });
  }

  it('request-level binary_data_output=false selects typed outputs', () => {
    const dt = 'FP32';
    const req = wireRequest({
      model_name: 'm',
      parameters: { binary_data_output: { bool_param: false } },
      inputs: [{ name: 'x', datatype: dt, shape: [2, 3], contents: toTypedContents(dt, SAMPLES[dt]) }],
    });
    expect(decodeInferRequest(req, signature(dt), LIMITS).rawOutputs).toBe(false);
  });

  it('zero-element tensors are allowed', () => {
    const req = wireRequest({ model_name: 'm', inputs: [{ name: 'x', datatype: 'FP32', shape: [0, 3] }] });
    const d = decodeInferRequest(req, signature('FP32'), LIMITS);
    expect(d.feeds['x']!.dims).toEqual([0, 3]);
  });
});

const VAD_SIG: ModelSignature = {
  inputs: [
    { name: 'input', datatype: 'FP32', dims: ['batch', 'sequence'] },
    { name: 'sr', datatype: 'INT64', dims: [] },
    { name: 'h', datatype: 'FP32', dims: [2, 'batch', 64] },
  ],
  outputs: [
    { name: 'output', datatype: 'FP32', dims: ['batch', 1] },
    { name: 'hn', datatype: 'FP32', dims: [2, 'batch', 64] },
  ],
};

function goodRaw(): ModelInferRequestIn {
  return {
    model_name: 'vad',
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 4] },
      { name: 'sr', datatype: 'INT64', shape: [] },
      { name: 'h', datatype: 'FP32', shape: [2, 1, 64] },
    ],
    raw_input_contents: [
      toRawBytes(new Float32Array([0.25, 0.5, 0.75, 1])),
      toRawBytes(new BigInt64Array([16000n])),
      toRawBytes(new Float32Array(128)),
    ],
  };
}

describe('bad input table', () => {
  const SECRET = 0.123456789;
  type Case = { name: string; mutate: (r: ModelInferRequestIn) => void; code: string; mentions?: string };
  const cases: Case[] = [
    {
      name: 'unknown input',
      mutate: (r) => r.inputs.push({ name: 'bogus', datatype: 'FP32', shape: [1] }),
      code: 'ERR_SRV_TENSOR_CONTENTS', // raw count no longer matches inputs
    },
    {
      name: 'unknown input (typed)',
      mutate: (r) => {
        r.raw_input_contents = [];
        r.inputs = [{ name: 'bogus', datatype: 'FP32', shape: [1], contents: { fp32_contents: [SECRET] } }];
      },
      code: 'ERR_SRV_TENSOR_UNKNOWN_INPUT',
      mentions: 'bogus',
    },
    {
      name: 'missing input',
      mutate: (r) => {
        r.inputs.pop();
        r.raw_input_contents!.pop();
      },
      code: 'ERR_SRV_TENSOR_MISSING_INPUT',
      mentions: '"h"',
    },
    {
      name: 'duplicate input',
      mutate: (r) => {
        r.inputs[2] = { ...r.inputs[1]!, shape: [] };
        r.raw_input_contents![2] = r.raw_input_contents![1]!;
      },
      code: 'ERR_SRV_TENSOR_DUPLICATE',
      mentions: '"sr"',
    },
    { name: 'wrong datatype', mutate: (r) => (r.inputs[0]!.datatype = 'FP64'), code: 'ERR_SRV_TENSOR_DATATYPE', mentions: '"input"' },
    { name: 'unsupported datatype', mutate: (r) => (r.inputs[0]!.datatype = 'BYTES'), code: 'ERR_SRV_TENSOR_DATATYPE' },
    { name: 'wrong rank', mutate: (r) => (r.inputs[0]!.shape = [4]), code: 'ERR_SRV_TENSOR_SHAPE', mentions: '"input"' },
    { name: 'fixed dim mismatch', mutate: (r) => (r.inputs[2]!.shape = [3, 1, 64]), code: 'ERR_SRV_TENSOR_SHAPE', mentions: '"h"' },
    { name: 'negative dim', mutate: (r) => (r.inputs[0]!.shape = [-1, 4]), code: 'ERR_SRV_TENSOR_SHAPE', mentions: '"input"' },
    {
      name: 'inconsistent symbolic dim',
      mutate: (r) => {
        r.inputs[2]!.shape = [2, 2, 64];
        r.raw_input_contents![2] = toRawBytes(new Float32Array(256));
      },
      code: 'ERR_SRV_TENSOR_SHAPE',
      mentions: 'batch',
    },
    { name: 'huge dim', mutate: (r) => (r.inputs[0]!.shape = ['9223372036854775807', 0]), code: 'ERR_SRV_TENSOR_TOO_LARGE' },
    { name: 'too many elements', mutate: (r) => (r.inputs[0]!.shape = [1024, 1025]), code: 'ERR_SRV_TENSOR_TOO_LARGE' },
    {
      name: 'byte length mismatch',
      mutate: (r) => (r.raw_input_contents![0] = Buffer.alloc(15)),
      code: 'ERR_SRV_TENSOR_SIZE',
      mentions: '"input"',
    },
    {
      name: 'raw for some inputs only',
      mutate: (r) => r.raw_input_contents!.pop(),
      code: 'ERR_SRV_TENSOR_CONTENTS',
    },
    {
      name: 'raw and contents mixed',
      mutate: (r) => (r.inputs[1]!.contents = { int64_contents: ['16000'] }),
      code: 'ERR_SRV_TENSOR_CONTENTS',
      mentions: '"sr"',
    },
    {
      name: 'typed contents in the wrong field',
      mutate: (r) => {
        r.raw_input_contents = [];
        r.inputs[0]!.contents = { fp64_contents: [SECRET, 0, 0, 0] };
      },
      code: 'ERR_SRV_TENSOR_CONTENTS',
      mentions: '"input"',
    },
    {
      name: 'typed contents count mismatch',
      mutate: (r) => {
        r.raw_input_contents = [];
        r.inputs[0]!.contents = { fp32_contents: [SECRET, 0, 0] };
      },
      code: 'ERR_SRV_TENSOR_SIZE',
      mentions: '"input"',
    },
    {
      name: 'unknown output',
      mutate: (r) => (r.outputs = [{ name: 'nope' }]),
      code: 'ERR_SRV_TENSOR_UNKNOWN_OUTPUT',
      mentions: 'nope',
    },
    {
      name: 'duplicate output',
      mutate: (r) => (r.outputs = [{ name: 'hn' }, { name: 'hn' }]),
      code: 'ERR_SRV_TENSOR_DUPLICATE',
    },
    {
      name: 'raw and typed outputs mixed',
      mutate: (r) =>
        (r.outputs = [{ name: 'hn', parameters: { binary_data_output: { bool_param: false } } }, { name: 'output' }]),
      code: 'ERR_SRV_BAD_REQUEST',
    },
    {
      name: 'non-bool binary_data_output',
      mutate: (r) => (r.parameters = { binary_data_output: { string_param: 'no' } }),
      code: 'ERR_SRV_BAD_REQUEST',
    },
  ];

  it('the good request decodes', () => {
    const d = decodeInferRequest(wireRequest(goodRaw()), VAD_SIG, LIMITS);
    expect(Object.keys(d.feeds).sort()).toEqual(['h', 'input', 'sr']);
    expect(d.feeds['sr']!.dims).toEqual([]);
    expect(d.outputs).toEqual(['output', 'hn']);
  });

  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, () => {
      const r = goodRaw();
      c.mutate(r);
      const e = expectCode(() => decodeInferRequest(wireRequest(r), VAD_SIG, LIMITS), c.code);
      expect(e.category).toBe('bad-input');
      if (c.mentions) expect(e.message).toContain(c.mentions);
      // SECURITY: never echo tensor values.
      expect(e.message).not.toContain('0.123');
      expect(e.message).not.toContain('16000');
    });
  }

  it('typed values out of range for the datatype are rejected', () => {
    const sig = signature('INT8');
    const bad = [[128], [-129], [1.5]];
    for (const v of bad) {
      const r = { model_name: 'm', inputs: [{ name: 'x', datatype: 'INT8', shape: [1, 1], contents: { int_contents: v } }] };
      expectCode(() => decodeInferRequest(r, { ...sig, inputs: [{ ...sig.inputs[0]!, dims: [1, 1] }] }, LIMITS), 'ERR_SRV_TENSOR_VALUE');
    }
    const big = { model_name: 'm', inputs: [{ name: 'x', datatype: 'UINT64', shape: [1, 1], contents: { uint64_contents: ['-1'] } }] };
    expectCode(
      () => decodeInferRequest(big, { inputs: [{ name: 'x', datatype: 'UINT64', dims: [1, 1] }], outputs: [] }, LIMITS),
      'ERR_SRV_TENSOR_VALUE',
    );
  });

  it('raw BOOL bytes other than 0/1 are rejected', () => {
    const r = { model_name: 'm', inputs: [{ name: 'x', datatype: 'BOOL', shape: [1, 3] }], raw_input_contents: [Buffer.from([0, 1, 2])] };
    expectCode(() => decodeInferRequest(r, signature('BOOL'), LIMITS), 'ERR_SRV_TENSOR_VALUE');
  });

  it('total elements over the limit across inputs are rejected', () => {
    const r = goodRaw();
    r.inputs[0]!.shape = [1, 900];
    r.raw_input_contents![0] = Buffer.alloc(3600);
    expectCode(() => decodeInferRequest(wireRequest(r), VAD_SIG, { maxTensorElements: 1000 }), 'ERR_SRV_TENSOR_TOO_LARGE');
  });

  it('a long hostile tensor name is quoted and truncated', () => {
    const r = goodRaw();
    r.raw_input_contents = [];
    r.inputs = [{ name: `${'A'.repeat(500)}\n\u0000`, datatype: 'FP32', shape: [1] }];
    const e = expectCode(() => decodeInferRequest(wireRequest(r), VAD_SIG, LIMITS), 'ERR_SRV_TENSOR_UNKNOWN_INPUT');
    expect(e.message.length).toBeLessThan(200);
    expect(e.message).not.toContain('\n');
  });
});

describe('decoder property: any object gives feeds or a typed bad-input error', () => {
  const check = (req: unknown): void => {
    try {
      const d = decodeInferRequest(req, VAD_SIG, { maxTensorElements: 4096 });
      for (const t of Object.values(d.feeds)) expect(t).toBeInstanceOf(ort.Tensor);
    } catch (e) {
      if (!(e instanceof ServerError) || e.category !== 'bad-input') throw e;
    }
  };

  it('fc.anything()', () => {
    fc.assert(fc.property(fc.anything({ withTypedArray: true, withBigInt: true, withNullPrototype: true }), check), {
      numRuns: 2000,
    });
  });

  it('request-shaped objects', () => {
    const dim = fc.oneof(
      fc.integer({ min: -3, max: 70 }),
      fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
      fc.string({ maxLength: 4 }),
      fc.double(),
    );
    const contents = fc.option(
      fc.record(
        {
          fp32_contents: fc.array(fc.oneof(fc.float(), fc.string()), { maxLength: 10 }),
          int64_contents: fc.array(fc.oneof(fc.bigInt().map(String), fc.integer(), fc.constant('x')), { maxLength: 3 }),
          bool_contents: fc.array(fc.boolean(), { maxLength: 3 }),
          int_contents: fc.array(fc.integer(), { maxLength: 3 }),
        },
        { requiredKeys: [] },
      ),
    );
    const tensor = fc.record(
      {
        name: fc.oneof(fc.constantFrom('input', 'sr', 'h', 'c', '__proto__', 'constructor'), fc.string()),
        datatype: fc.oneof(fc.constantFrom(...Object.keys(DATATYPES), 'BYTES', 'FP16'), fc.anything()),
        shape: fc.oneof(fc.array(dim, { maxLength: 4 }), fc.anything()),
        contents,
        parameters: fc.option(fc.dictionary(fc.string(), fc.anything())),
      },
      { requiredKeys: ['name'] },
    );
    const request = fc.record(
      {
        model_name: fc.string(),
        inputs: fc.array(tensor, { maxLength: 5 }),
        raw_input_contents: fc.array(
          fc.oneof(fc.uint8Array({ maxLength: 600 }), fc.uint8Array({ maxLength: 600 }).map(unaligned), fc.constant(Buffer.alloc(512)), fc.anything()),
          { maxLength: 5 },
        ),
        outputs: fc.array(
          fc.record({ name: fc.constantFrom('output', 'hn', 'zz'), parameters: fc.anything() }, { requiredKeys: [] }),
          { maxLength: 3 },
        ),
        parameters: fc.anything(),
      },
      { requiredKeys: [] },
    );
    fc.assert(fc.property(request, check), { numRuns: 3000 });
  });
});

describe('zero-copy raw inputs and outputs (hot path)', () => {
  const MLP_SIG: ModelSignature = {
    inputs: [{ name: 'x', datatype: 'FP32', dims: ['N', 8] }],
    outputs: [{ name: 'y', datatype: 'FP32', dims: ['N', 8] }],
  };
  const rawReq = (bytes: Uint8Array, rows = 2): unknown => ({
    model_name: 'mlp',
    inputs: [{ name: 'x', datatype: 'FP32', shape: [String(rows), '8'] }],
    raw_input_contents: [bytes],
  });
  const floats = (seed: number, n = 16): Float32Array => Float32Array.from({ length: n }, (_, i) => Math.sin(seed * 7 + i));

  it('an aligned raw input becomes a tensor over the same memory (no copy)', () => {
    const backing = new ArrayBuffer(256);
    const bytes = new Uint8Array(backing, 64, 64);
    bytes.set(new Uint8Array(floats(1).buffer));
    const t = decodeInferRequest(rawReq(bytes), MLP_SIG, LIMITS).feeds['x']!;
    const data = t.data as Float32Array;
    expect(data.buffer).toBe(backing);
    expect(data.byteOffset).toBe(64);
    expect(Array.from(data)).toEqual(Array.from(floats(1)));
  });

  it('an unaligned raw input is copied into its own aligned buffer, with the same values', () => {
    for (const offset of [1, 2, 3, 5]) {
      const backing = new ArrayBuffer(256);
      const bytes = new Uint8Array(backing, offset, 64);
      bytes.set(new Uint8Array(floats(2).buffer));
      const data = decodeInferRequest(rawReq(bytes), MLP_SIG, LIMITS).feeds['x']!.data as Float32Array;
      expect(data.buffer).not.toBe(backing);
      expect(data.byteOffset % 4).toBe(0);
      expect(Array.from(data)).toEqual(Array.from(floats(2)));
      bytes.fill(0xff); // the copy does not follow later changes to the request bytes
      expect(Array.from(data)).toEqual(Array.from(floats(2)));
    }
  });

  it('alignment is decided per element size for every datatype', () => {
    for (const dt of Object.keys(DATATYPES) as Datatype[]) {
      const size = DATATYPES[dt].bytes;
      const backing = new ArrayBuffer(128);
      expect(isZeroCopy(new Uint8Array(backing, 16, 48), size), dt).toBe(true);
      expect(isZeroCopy(new Uint8Array(backing, 1, 48), size), dt).toBe(size === 1);
    }
    expect(isZeroCopy(new Uint8Array(new SharedArrayBuffer(64)), 4)).toBe(false);
  });

  it('a SharedArrayBuffer-backed input is copied, never aliased', () => {
    const shared = new Uint8Array(new SharedArrayBuffer(64));
    shared.set(new Uint8Array(floats(3).buffer));
    const data = decodeInferRequest(rawReq(shared), MLP_SIG, LIMITS).feeds['x']!.data as Float32Array;
    expect(data.buffer).toBeInstanceOf(ArrayBuffer);
    expect(Array.from(data)).toEqual(Array.from(floats(3)));
  });

  it('requests whose inputs share one ArrayBuffer (a Buffer pool) do not see each other in onnxruntime', async () => {
    const session = await ort.InferenceSession.create(mlpModel({ layers: 2, dim: 8, seed: 5 }), { intraOpNumThreads: 1 });
    try {
      const reference = async (x: Float32Array): Promise<number[]> =>
        Array.from((await session.run({ x: new ort.Tensor('float32', Float32Array.from(x), [2, 8]) }))['y']!.data as Float32Array);
      // Two requests side by side in one backing store, both aligned (zero-copy), one unaligned (copied).
      const pool = new ArrayBuffer(1024);
      const a = new Uint8Array(pool, 0, 64);
      const b = new Uint8Array(pool, 64, 64);
      const c = new Uint8Array(pool, 129, 64);
      a.set(new Uint8Array(floats(10).buffer));
      b.set(new Uint8Array(floats(20).buffer));
      c.set(new Uint8Array(floats(30).buffer));
      const da = decodeInferRequest(rawReq(a), MLP_SIG, LIMITS);
      const db = decodeInferRequest(rawReq(b), MLP_SIG, LIMITS);
      const dc = decodeInferRequest(rawReq(c), MLP_SIG, LIMITS);
      expect((da.feeds['x']!.data as Float32Array).buffer).toBe(pool);
      expect((db.feeds['x']!.data as Float32Array).buffer).toBe(pool);
      const [ra, rb, rc] = await Promise.all([da, db, dc].map((d) => session.run(d.feeds, d.outputs as string[])));
      expect(Array.from(ra!['y']!.data as Float32Array)).toEqual(await reference(floats(10)));
      expect(Array.from(rb!['y']!.data as Float32Array)).toEqual(await reference(floats(20)));
      expect(Array.from(rc!['y']!.data as Float32Array)).toEqual(await reference(floats(30)));
      expect(ra!['y']!.data).not.toEqual(rb!['y']!.data);
    } finally {
      await session.release();
    }
  });

  it('onnxruntime returns the outputs of each run in fresh buffers, so raw output views never change later', async () => {
    // encodeOutputs puts views (rawView) of the result buffers into the response; this
    // holds only while onnxruntime-node never reuses an output buffer across runs.
    const session = await ort.InferenceSession.create(mlpModel({ layers: 1, dim: 8, seed: 6 }), { intraOpNumThreads: 1 });
    try {
      const run = async (seed: number) => session.run({ x: new ort.Tensor('float32', floats(seed), [2, 8]) });
      const first = await run(1);
      const enc = encodeOutputs(first, { outputs: ['y'], rawOutputs: true });
      const snapshot = Buffer.from(enc.raw_output_contents[0]!);
      const second = await run(2);
      expect((second['y']!.data as Float32Array).buffer).not.toBe((first['y']!.data as Float32Array).buffer);
      expect(Buffer.from(enc.raw_output_contents[0]!).equals(snapshot)).toBe(true);
      expect(Buffer.from(encodeOutputs(second, { outputs: ['y'], rawOutputs: true }).raw_output_contents[0]!).equals(snapshot)).toBe(false);
      // And the response on the wire carries exactly those bytes.
      const decoded = decodeInferResponse(wireResponse({ model_name: 'mlp', ...enc }), LIMITS);
      expect(Buffer.from(decoded[0]!.data.buffer, decoded[0]!.data.byteOffset, decoded[0]!.data.byteLength).equals(snapshot)).toBe(true);
    } finally {
      await session.release();
    }
  });

  it('rawView shares memory; toRawBytes copies', () => {
    const f = floats(4, 4);
    const view = rawView(f);
    const copy = toRawBytes(f);
    f[0] = 42;
    expect(view.readFloatLE(0)).toBe(42);
    expect(copy.readFloatLE(0)).not.toBe(42);
  });

  it('a request decoded from real gRPC bytes aliases the message buffer when the input is aligned', () => {
    // The server's deserialiser keeps bytes fields as views of the message (no copy), so
    // whether the tensor is zero-copy depends only on the input's offset in the message.
    const wire = inferMethod.requestSerialize({
      model_name: 'mlp',
      inputs: [{ name: 'x', datatype: 'FP32', shape: [2, 8] }],
      raw_input_contents: [toRawBytes(floats(7))],
    });
    for (let shift = 0; shift < 4; shift++) {
      const msg = Buffer.alloc(wire.length + shift + 8).subarray(shift, shift + wire.length);
      wire.copy(msg);
      const req = inferMethod.requestDeserialize(msg) as { raw_input_contents: Buffer[] };
      const raw = req.raw_input_contents[0]!;
      const data = decodeInferRequest(req, MLP_SIG, LIMITS).feeds['x']!.data as Float32Array;
      expect(Array.from(data)).toEqual(Array.from(floats(7)));
      expect(data.buffer === msg.buffer).toBe(raw.byteOffset % 4 === 0);
    }
  });
});
