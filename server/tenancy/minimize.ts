/**
 * Output minimization (extraction / membership-inference defense): on selected FP32
 * outputs whose last axis holds class scores, keep only the top-k scores per row (the
 * others become 0), round scores to N decimals, or replace each row by the INT64 index
 * of its largest score (labels only; shape [..., 1]).
 *
 * Off by default: the client decides what the model returns unless the operator
 * configures a model's `minimize`. What it does NOT do: change non-FP32 outputs, or add
 * noise (rounding is deterministic, so repeated queries learn nothing more).
 */
import type { ModelInferResponse } from '../proto-types.js';
import type { MinimizeConfig } from './config.js';

function rowLength(shape: readonly unknown[]): number {
  const last = shape.length ? Number(shape[shape.length - 1]) : 1;
  return Number.isInteger(last) && last > 0 ? last : 1;
}

function minimizeRows(data: Float32Array, row: number, cfg: MinimizeConfig): Float32Array | BigInt64Array {
  const rows = Math.floor(data.length / row);
  if (cfg.labelsOnly) {
    const out = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) {
      let best = 0;
      for (let c = 1; c < row; c++) if (data[r * row + c]! > data[r * row + best]!) best = c;
      out[r] = BigInt(best);
    }
    return out;
  }
  const out = Float32Array.from(data);
  if (cfg.topK !== undefined && cfg.topK < row) {
    const idx = new Array<number>(row);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < row; c++) idx[c] = c;
      idx.sort((a, b) => out[r * row + b]! - out[r * row + a]!);
      for (let c = cfg.topK; c < row; c++) out[r * row + idx[c]!] = 0;
    }
  }
  if (cfg.decimals !== undefined) {
    const f = 10 ** cfg.decimals;
    for (let i = 0; i < out.length; i++) out[i] = Math.round(out[i]! * f) / f;
  }
  return out;
}

/**
 * Applies `cfg` to `res` in place and returns it. Outputs not selected, or not FP32, are
 * untouched. Handles raw (`raw_output_contents`) and typed (`contents.fp32_contents`) forms.
 */
export function minimizeOutputs(res: ModelInferResponse, cfg: MinimizeConfig): ModelInferResponse {
  const wanted = cfg.outputs ? new Set(cfg.outputs) : undefined;
  for (let i = 0; i < res.outputs.length; i++) {
    const o = res.outputs[i]!;
    if (o.datatype !== 'FP32' || (wanted && !wanted.has(o.name))) continue;
    const row = rowLength(o.shape);
    const raw = res.raw_output_contents[i];
    let data: Float32Array;
    if (raw !== undefined && res.raw_output_contents.length === res.outputs.length) {
      data = new Float32Array(Uint8Array.from(raw).buffer, 0, Math.floor(raw.length / 4));
    } else if (o.contents && Array.isArray(o.contents.fp32_contents)) {
      data = Float32Array.from(o.contents.fp32_contents as number[]);
    } else {
      continue;
    }
    const out = minimizeRows(data, row, cfg);
    if (out instanceof BigInt64Array) {
      o.datatype = 'INT64';
      o.shape = [...o.shape.slice(0, -1), 1];
    }
    if (raw !== undefined && res.raw_output_contents.length === res.outputs.length) {
      res.raw_output_contents[i] = Buffer.from(out.buffer, out.byteOffset, out.byteLength);
    } else if (out instanceof BigInt64Array) {
      o.contents = { int64_contents: Array.from(out, (v) => v.toString()) };
    } else {
      o.contents = { fp32_contents: Array.from(out) };
    }
  }
  return res;
}
