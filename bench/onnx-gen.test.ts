import { describe, expect, it } from 'vitest';
import * as ort from '../common/ort.js';
import onnxPkg from 'onnx-proto';
import { convNetModel, convNetWeightBytes, convStages, CONVNET_SMALL, mlpForSize, mlpModel, mlpWeightBytes } from './onnx-gen.js';
import { cnnWorkload, inputSizeWorkload, makeTensor, ortFeeds, parseInputSizeName, parseInputSpec, requestBytes } from './workloads.js';

const { onnx } = onnxPkg;

describe('generated ONNX models', () => {
  it('an MLP loads in onnxruntime, has L·(D²+D)·4 bytes of weights and maps [N, D] to [N, D]', async () => {
    const shape = { layers: 3, dim: 96 };
    const bytes = mlpModel(shape);
    const weights = mlpWeightBytes(shape);
    expect(weights).toBe(3 * (96 * 96 + 96) * 4);
    expect(bytes.length).toBeGreaterThan(weights);
    expect(bytes.length).toBeLessThan(weights * 1.01 + 4096);
    const s = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1 });
    try {
      expect(s.inputNames).toEqual(['x']);
      expect(s.outputNames).toEqual(['y']);
      const out = await s.run({ x: new ort.Tensor('float32', new Float32Array(5 * 96).fill(0.5), [5, 96]) });
      expect(out['y']!.dims).toEqual([5, 96]);
      const y = out['y']!.data as Float32Array;
      expect(y.every((v) => Number.isFinite(v) && v >= 0)).toBe(true); // Relu output
      expect(y.some((v) => v > 0)).toBe(true);
    } finally {
      await s.release();
    }
  });

  it('the input-size workloads: a request of exactly N bytes, averaged by a one-node model', async () => {
    for (const [name, bytes] of [['input-64b', 64], ['input-16kb', 16 * 1024], ['input-1mb', 2 ** 20]] as const) {
      expect(parseInputSizeName(name)).toBe(bytes);
      const w = inputSizeWorkload(bytes, name);
      expect(w.name).toBe(name);
      expect(requestBytes(w)).toBe(bytes);
      const s = await ort.InferenceSession.create(w.onnx, { intraOpNumThreads: 1 });
      try {
        const out = await s.run(ortFeeds(w));
        expect(out['y']!.dims).toEqual([1, 1]);
        const x = w.inputs[0]!.data as Float32Array;
        let sum = 0;
        for (const v of x) sum += v;
        expect((out['y']!.data as Float32Array)[0]).toBeCloseTo(sum / x.length, 4);
      } finally {
        await s.release();
      }
    }
    for (const name of ['input-', 'input-1gb', 'input-16KB', 'inputs-4b', 'input-4b-x']) expect(parseInputSizeName(name), name).toBeUndefined();
    for (const bytes of [0, 2, 6, 64 * 2 ** 20 + 4, 1.5]) {
      expect(() => inputSizeWorkload(bytes), String(bytes)).toThrow(/must be a multiple of 4 from 4 bytes to 64 MiB/);
    }
    expect(inputSizeWorkload(64 * 2 ** 20).inputs[0]!.shape).toEqual([1, 16 * 2 ** 20]);
  });

  it('is deterministic for a seed and sized by mlpForSize', () => {
    expect(Buffer.from(mlpModel({ layers: 1, dim: 8, seed: 2 })).equals(Buffer.from(mlpModel({ layers: 1, dim: 8, seed: 2 })))).toBe(true);
    expect(Buffer.from(mlpModel({ layers: 1, dim: 8, seed: 2 })).equals(Buffer.from(mlpModel({ layers: 1, dim: 8, seed: 3 })))).toBe(false);
    expect(mlpForSize(100)).toEqual({ layers: 25, dim: 1024 });
    expect(mlpWeightBytes(mlpForSize(100)) / 2 ** 20).toBeCloseTo(100, 0);
    expect(() => mlpModel({ layers: 0, dim: 8 })).toThrow(RangeError);
  });

  it('the conv net loads and maps [N, 3, 32, 32] to [N, 10]', async () => {
    const s = await ort.InferenceSession.create(convNetModel(), { intraOpNumThreads: 1 });
    try {
      const out = await s.run({ x: new ort.Tensor('float32', new Float32Array(2 * 3 * 32 * 32).fill(0.1), [2, 3, 32, 32]) });
      expect(out['y']!.dims).toEqual([2, 10]);
    } finally {
      await s.release();
    }
  });
});

describe('generated conv nets', () => {
  it('convStages: stages of 64, 128, 256 channels, stride 2 opening every stage after the first', () => {
    expect(convStages(2, 1, 2)).toEqual([
      { channels: 64, stride: 1 },
      { channels: 64, stride: 1 },
      { channels: 128, stride: 2 },
      { channels: 256, stride: 2 },
      { channels: 256, stride: 1 },
    ]);
    // 3->16, 16->32, 32->64 kernels and biases, then the 64x10 dense layer and its bias.
    expect(convNetWeightBytes(CONVNET_SMALL)).toBe((16 * 3 * 9 + 16 + 32 * 16 * 9 + 32 + 64 * 32 * 9 + 64 + 64 * 10 + 10) * 4);
  });

  it('the cnn workload is a 26-layer net whose file is its weights plus a small graph, mapping 1x3x32x32 to 1x10', async () => {
    const w = cnnWorkload();
    expect(w.name).toBe('cnn26-b1');
    const weights = Number(w.generated!['weightBytes']);
    expect(w.onnx.length).toBeGreaterThan(weights);
    expect(w.onnx.length).toBeLessThan(weights + 16384);
    const s = await ort.InferenceSession.create(w.onnx, { intraOpNumThreads: 1 });
    try {
      expect(s.inputNames).toEqual(['x']);
      const x = w.inputs[0]!;
      const out = await s.run({ x: new ort.Tensor('float32', x.data as Float32Array, [...x.shape]) });
      expect(out['y']!.dims).toEqual([1, 10]);
      expect((out['y']!.data as Float32Array).every(Number.isFinite)).toBe(true);
    } finally {
      await s.release();
    }
  });

  it('emits one Conv per layer with its stride and channel count', () => {
    const layers = convStages(2, 2);
    const model = onnx.ModelProto.decode(convNetModel(1, layers));
    const convs = model.graph!.node!.filter((n) => n.opType === 'Conv');
    expect(convs).toHaveLength(4);
    const strides = convs.map((n) => n.attribute!.find((a) => a.name === 'strides')!.ints!.map(Number));
    expect(strides).toEqual([[1, 1], [1, 1], [2, 2], [1, 1]]);
    const kernels = convs.map((n) => model.graph!.initializer!.find((t) => t.name === n.input![1])!.dims!.map(Number));
    expect(kernels).toEqual([[64, 3, 3, 3], [64, 64, 3, 3], [128, 64, 3, 3], [128, 128, 3, 3]]);
  });

  it('is deterministic per seed and rejects malformed layers', () => {
    const layers = convStages(1, 1);
    expect(Buffer.from(convNetModel(4, layers)).equals(Buffer.from(convNetModel(4, layers)))).toBe(true);
    expect(Buffer.from(convNetModel(4, layers)).equals(Buffer.from(convNetModel(5, layers)))).toBe(false);
    expect(() => convNetModel(1, [])).toThrow(RangeError);
    expect(() => convNetModel(1, [{ channels: 0, stride: 1 }])).toThrow(RangeError);
    expect(() => convNetModel(1, [{ channels: 8, stride: 3 as 1 }])).toThrow(RangeError);
    expect(() => convNetModel(1, [{ channels: 2.5, stride: 1 }])).toThrow(RangeError);
    for (const bad of [[], [0], [2, -1], [1.5], [1, 1, 1, 1, 1, 1]]) expect(() => convStages(...bad)).toThrow(RangeError);
  });
});

describe('--input specs', () => {
  it.each([
    ['x:fp32:1x3x4', 'FP32', [1, 3, 4], 12],
    ['sr:int64:-:16000', 'INT64', [], 1],
    ['ids:INT32:2,5', 'INT32', [2, 5], 10],
    ['m:bool:4', 'BOOL', [4], 4],
  ])('%s', (spec, datatype, shape, count) => {
    const t = parseInputSpec(spec);
    expect(t.datatype).toBe(datatype);
    expect(t.shape).toEqual(shape);
    expect(t.data.length).toBe(count);
  });
  it('fills a constant and rejects malformed specs', () => {
    expect([...(parseInputSpec('sr:int64::16000').data as BigInt64Array)]).toEqual([16000n]);
    for (const bad of ['x', 'x:fp32', 'x:fp16:1', 'x:fp32:1x-2', 'x:fp32:1:abc', ':fp32:1']) expect(() => parseInputSpec(bad)).toThrow();
    expect(makeTensor('a', 'FP32', [3], 1).data).toEqual(makeTensor('a', 'FP32', [3], 1).data);
  });
});
