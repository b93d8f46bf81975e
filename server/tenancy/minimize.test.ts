import { describe, expect, it } from 'vitest';
import type { ModelInferResponse } from '../proto-types.js';
import { MinimizeSchema } from './config.js';
import { minimizeOutputs } from './minimize.js';

function raw(values: number[], shape: number[]): ModelInferResponse {
  const f = Float32Array.from(values);
  return {
    model_name: 'm',
    model_version: '1',
    id: '',
    parameters: {},
    outputs: [{ name: 'probs', datatype: 'FP32', shape, parameters: {}, contents: null }],
    raw_output_contents: [Buffer.from(f.buffer)],
  };
}

const floats = (b: Uint8Array) => Array.from(new Float32Array(Uint8Array.from(b).buffer));

describe('output minimization', () => {
  const probs = [0.1, 0.6, 0.05, 0.25, 0.7, 0.1, 0.1, 0.1];

  it('top-k keeps the k largest scores per row and zeroes the rest', () => {
    const r = minimizeOutputs(raw(probs, [2, 4]), MinimizeSchema.parse({ topK: 2 }));
    expect(floats(r.raw_output_contents[0]!)).toEqual([0, Math.fround(0.6), 0, Math.fround(0.25), Math.fround(0.7), expect.any(Number), 0, 0]);
    expect(floats(r.raw_output_contents[0]!).slice(4).filter((v) => v !== 0)).toHaveLength(2);
  });

  it('rounds to N decimals', () => {
    const r = minimizeOutputs(raw([0.123456, 0.876544], [1, 2]), MinimizeSchema.parse({ decimals: 2 }));
    expect(floats(r.raw_output_contents[0]!)).toEqual([Math.fround(0.12), Math.fround(0.88)]);
  });

  it('labels only: INT64 argmax per row, shape [..., 1]; typed contents too', () => {
    const r = minimizeOutputs(raw(probs, [2, 4]), MinimizeSchema.parse({ labelsOnly: true }));
    expect(r.outputs[0]).toMatchObject({ datatype: 'INT64', shape: [2, 1] });
    expect(Array.from(new BigInt64Array(Uint8Array.from(r.raw_output_contents[0]!).buffer))).toEqual([1n, 0n]);

    const typed: ModelInferResponse = { ...raw(probs, [2, 4]), raw_output_contents: [] };
    typed.outputs[0]!.contents = { fp32_contents: probs };
    const t = minimizeOutputs(typed, MinimizeSchema.parse({ labelsOnly: true }));
    expect(t.outputs[0]!.contents).toEqual({ int64_contents: ['1', '0'] });
  });

  it('leaves unselected outputs alone and requires at least one setting', () => {
    const before = raw(probs, [2, 4]);
    const copy = Buffer.from(before.raw_output_contents[0]!);
    minimizeOutputs(before, MinimizeSchema.parse({ topK: 1, outputs: ['other'] }));
    expect(Buffer.from(before.raw_output_contents[0]!)).toEqual(copy);
    expect(MinimizeSchema.safeParse({}).success).toBe(false);
  });
});
