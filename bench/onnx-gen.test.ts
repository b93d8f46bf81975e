import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { convNetModel, mlpForSize, mlpModel, mlpWeightBytes } from './onnx-gen.js';
import { parseInputSpec, makeTensor } from './workloads.js';

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
