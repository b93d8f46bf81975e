/**
 * Model-extraction detector: per (key, model) sliding windows of a few statistics of each
 * request's largest input tensor, and of one statistic of its class-score output, judged
 * against fixed thresholds.
 *
 * Per request it computes, and keeps, only:
 *   - a 32-bit SimHash over up to 128 strided sample values (random-hyperplane LSH with a
 *     fixed seed): two inputs that are close give signatures a small Hamming distance apart;
 *   - 8 block hashes (32-bit, non-cryptographic) of the tensor bytes, to see whether
 *     consecutive requests differ in exactly one block (a coordinate sweep);
 *   - the normalized entropy of a 16-bin histogram of the samples (1.0 = flat/uniform);
 *   - after the model ran, for models with a class-score output: the fraction of the
 *     output's rows whose top-1 minus top-2 score (after softmax for logits) is below
 *     `boundaryMargin` (`boundaryStatistic`). The detector itself reads only that number.
 * No tensor value is kept: the window holds signatures, hashes and two numbers per request.
 *
 * Signals over a full window (at least `minRequests`):
 *   - near-duplicates: share of requests whose SimHash is within Hamming distance 2 of an
 *     earlier one in the window (constant inputs, e.g. silence, are not counted);
 *   - sweep: share of consecutive pairs that differ in exactly one block;
 *   - uniform: mean normalized entropy (uniform-random probing sits near 1; natural
 *     signals are peaked);
 *   - boundary (opt-in, `boundary: true`): mean near-boundary fraction (decision-boundary
 *     extraction, e.g. Papernot et al.'s Jacobian augmentation, Tramer et al.'s line
 *     search, the queries PRADA looks for, lands near the boundary far more often than
 *     natural traffic). It has its own ring (outputs arrive after inputs, and failed
 *     requests have none). Each request counts once whatever its row count, so confident
 *     rows padded into each batch, or small confident requests between large probing
 *     batches, dilute it.
 * A signal at or over its threshold raises one alert, then the window (the boundary ring,
 * for 'boundary') must refill before that key and model can alert again. What it does NOT
 * do: see boundary probing on models without class scores, or attacks that avoid the
 * boundary (random or natural queries, label-only transfer sets); correlate across keys
 * (a Sybil attacker with many keys is bounded by the tenant quotas instead).
 */
import type { DetectorConfig, ModelDefense } from './config.js';

export const SAMPLES = 128;
const SIG_BITS = 32;
const BLOCKS = 8;
const BINS = 16;
/** Above this many 32-bit words, block hashes read every k-th word (stride) to bound cost. */
const MAX_HASHED_WORDS = 16_384;
/** Above this many scores in an output, the boundary statistic reads every k-th row. */
const MAX_SCORE_VALUES = 1 << 18;
/** Auto-detected probabilities: every value in [0, 1] and each row summing to 1 within this. */
const PROB_TOLERANCE = 1e-3;

export interface InputFeatures {
  readonly sig: number;
  readonly blocks: Uint32Array;
  readonly entropy: number;
  /** All samples equal (e.g. silence): excluded from the near-duplicate signal. */
  readonly constant: boolean;
}

// Fixed pseudo-random hyperplanes (xorshift32, seed constant): ±1 per (bit, sample).
const PLANES: Int8Array = (() => {
  const p = new Int8Array(SIG_BITS * SAMPLES);
  let x = 0x9e3779b9 | 0;
  for (let i = 0; i < p.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    p[i] = x & 1 ? 1 : -1;
  }
  return p;
})();

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null;
}

/**
 * Picks the largest input of a ModelInfer request (raw bytes, or typed fp32/int contents)
 * and computes its features. Never throws on hostile input: returns undefined when there
 * is nothing numeric to read.
 */
export function inputFeatures(request: unknown): InputFeatures | undefined {
  if (!isRecord(request)) return undefined;
  const raw = request['raw_input_contents'];
  const inputs = request['inputs'];
  if (Array.isArray(raw) && raw.length > 0) {
    let best: Uint8Array | undefined;
    let bestIdx = -1;
    for (let i = 0; i < raw.length && i < 64; i++) {
      const r: unknown = raw[i];
      if (r instanceof Uint8Array && (!best || r.length > best.length)) {
        best = r;
        bestIdx = i;
      }
    }
    if (!best || best.length === 0) return undefined;
    const dt = Array.isArray(inputs) && isRecord(inputs[bestIdx]) ? inputs[bestIdx]['datatype'] : undefined;
    return featuresOfBytes(best, dt === 'FP32');
  }
  if (Array.isArray(inputs)) {
    let best: unknown[] | undefined;
    for (let i = 0; i < inputs.length && i < 64; i++) {
      const t: unknown = inputs[i];
      const c = isRecord(t) && isRecord(t['contents']) ? t['contents'] : undefined;
      if (!c) continue;
      for (const f of ['fp32_contents', 'fp64_contents', 'int_contents', 'uint_contents']) {
        const v = c[f];
        if (Array.isArray(v) && (!best || v.length > best.length)) best = v;
      }
    }
    if (!best || best.length === 0) return undefined;
    const arr = new Float32Array(best.length);
    for (let i = 0; i < best.length; i++) {
      const n = Number(best[i]);
      arr[i] = Number.isFinite(n) ? n : 0;
    }
    return featuresOfBytes(new Uint8Array(arr.buffer), true);
  }
  return undefined;
}

function featuresOfBytes(bytes: Uint8Array, fp32: boolean): InputFeatures {
  // Aligned copy only when needed (a Buffer slice may start at any offset).
  const words = Math.floor(bytes.length / 4);
  let view: Uint32Array | undefined;
  if (words > 0) {
    // Note: Buffer#slice is a view (not a copy), hence Uint8Array.from for the copy.
    view = bytes.byteOffset % 4 === 0 ? new Uint32Array(bytes.buffer, bytes.byteOffset, words) : new Uint32Array(Uint8Array.from(bytes.subarray(0, words * 4)).buffer);
  }
  // Samples.
  const n = fp32 && view ? words : bytes.length;
  const count = Math.min(SAMPLES, n);
  const samples = new Float64Array(count);
  const f32 = fp32 && view ? new Float32Array(view.buffer, view.byteOffset, words) : undefined;
  const step = n / count;
  let min = Infinity;
  let max = -Infinity;
  let sum = 0;
  for (let i = 0; i < count; i++) {
    const j = Math.floor(i * step);
    let v = f32 ? f32[j]! : bytes[j]!;
    if (!Number.isFinite(v)) v = 0;
    samples[i] = v;
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  const constant = !(max > min);
  const mean = sum / count;
  // SimHash.
  let sig = 0;
  for (let b = 0; b < SIG_BITS; b++) {
    let acc = 0;
    const base = b * SAMPLES;
    for (let i = 0; i < count; i++) acc += PLANES[base + i]! * (samples[i]! - mean);
    if (acc > 0) sig |= 1 << b;
  }
  // Histogram entropy.
  let entropy = 0;
  if (!constant) {
    const hist = new Uint32Array(BINS);
    const scale = BINS / (max - min);
    for (let i = 0; i < count; i++) hist[Math.min(BINS - 1, Math.floor((samples[i]! - min) * scale))]!++;
    for (let k = 0; k < BINS; k++) {
      const p = hist[k]! / count;
      if (p > 0) entropy -= p * Math.log(p);
    }
    entropy /= Math.log(BINS);
  }
  // Block hashes (FNV-style multiply-xor over 32-bit words; bytes when shorter than a word).
  const blocks = new Uint32Array(BLOCKS);
  if (view) {
    const stride = Math.max(1, Math.ceil(words / MAX_HASHED_WORDS));
    for (let k = 0; k < BLOCKS; k++) {
      const lo = Math.floor((k * words) / BLOCKS);
      const hi = Math.floor(((k + 1) * words) / BLOCKS);
      let h = 0x811c9dc5 ^ k;
      for (let i = lo; i < hi; i += stride) h = Math.imul(h ^ view[i]!, 0x01000193);
      blocks[k] = h >>> 0;
    }
  } else {
    let h = 0x811c9dc5;
    for (let i = 0; i < bytes.length; i++) h = Math.imul(h ^ bytes[i]!, 0x01000193);
    blocks[0] = h >>> 0;
  }
  return { sig, blocks, entropy, constant };
}

/** Which output holds class scores, and how to read them (from the model's defenses). */
export interface ScoreSource {
  /**
   * Outputs holding class scores on their last axis, first present one wins; undefined:
   * the first FP32 output whose rows are probability distributions (>= 2 classes).
   */
  readonly outputs: readonly string[] | undefined;
  /** Softmax first (sigmoid for a single column). */
  readonly logits: boolean;
  readonly margin: number;
}

/**
 * The score source of a model, or undefined when the boundary signal is off for it: no
 * detector, `boundary: false`, or logits without a named output (the config refuses that).
 * An explicit `boundaryOutput` wins; else the outputs `minimize` treats as class scores;
 * else auto-detected probabilities.
 */
export function scoreSource(defenses: ModelDefense | undefined): ScoreSource | undefined {
  const d = defenses?.detector;
  if (!d?.boundary) return undefined;
  const outputs = d.boundaryOutput !== undefined ? [d.boundaryOutput] : defenses?.minimize?.outputs;
  const logits = d.boundaryScores === 'logits';
  if (logits && !outputs) return undefined;
  return { outputs, logits, margin: d.boundaryMargin };
}

/**
 * Top-1 minus top-2 probability of one row, or NaN when the row cannot be judged
 * (non-finite scores; for auto-detection, a row that is not a probability distribution).
 * One column is a binary score p: the margin is |p - (1 - p)|.
 */
function rowMargin(d: ArrayLike<number>, off: number, n: number, logits: boolean, requireProb: boolean): number {
  if (n === 1) {
    const v = Number(d[off]);
    if (!Number.isFinite(v)) return NaN;
    return logits ? Math.tanh(Math.abs(v) / 2) : Math.abs(2 * v - 1);
  }
  let t1 = -Infinity;
  let t2 = -Infinity;
  let sum = 0;
  let lo = Infinity;
  for (let c = 0; c < n; c++) {
    const v = Number(d[off + c]);
    if (v > t1) {
      t2 = t1;
      t1 = v;
    } else if (v > t2) {
      t2 = v;
    }
    sum += v;
    if (v < lo) lo = v;
  }
  // NaN anywhere makes the sum NaN; an infinite top score has no meaningful margin.
  if (Number.isNaN(sum) || !Number.isFinite(t1) || !Number.isFinite(t2)) return NaN;
  if (requireProb && (lo < -PROB_TOLERANCE || t1 > 1 + PROB_TOLERANCE || Math.abs(sum - 1) > PROB_TOLERANCE)) return NaN;
  if (!logits) return t1 - t2;
  // Softmax margin without overflow: (e^t1 - e^t2) / sum e^z, all scaled by e^-t1.
  let z = 0;
  for (let c = 0; c < n; c++) z += Math.exp(Number(d[off + c]) - t1);
  return (1 - Math.exp(t2 - t1)) / z;
}

/** FP32 values of one output (raw or typed form), without a copy when the raw bytes are aligned. */
function outputValues(o: Record<string, unknown>, raw: unknown): ArrayLike<number> | undefined {
  if (raw instanceof Uint8Array) {
    const n = Math.floor(raw.length / 4);
    return raw.byteOffset % 4 === 0 ? new Float32Array(raw.buffer, raw.byteOffset, n) : new Float32Array(Uint8Array.from(raw.subarray(0, n * 4)).buffer);
  }
  const c = o['contents'];
  const v = isRecord(c) ? c['fp32_contents'] : undefined;
  return Array.isArray(v) ? (v as number[]) : undefined;
}

/** `outputStatistic`: this output is not the score output; look at the next candidate. */
const NOT_SCORES = Symbol('not scores');

/**
 * The near-boundary fraction of one output `o` (raw bytes `raw`, when the response has
 * them), undefined when it is the score output but no row could be judged, or NOT_SCORES.
 */
function outputStatistic(o: unknown, raw: unknown, src: ScoreSource, auto: boolean): number | undefined | typeof NOT_SCORES {
  if (!isRecord(o) || o['datatype'] !== 'FP32') return NOT_SCORES;
  const shape = o['shape'];
  const last = Array.isArray(shape) && shape.length ? Number(shape[shape.length - 1]) : 1;
  const n = Number.isInteger(last) && last > 0 ? last : 1;
  if (auto && n < 2) return NOT_SCORES;
  const d = outputValues(o, raw);
  const rows = d ? Math.floor(d.length / n) : 0;
  if (!d || rows === 0) return NOT_SCORES;
  const count = Math.min(rows, Math.max(1, Math.floor(MAX_SCORE_VALUES / n)));
  const step = rows / count;
  let judged = 0;
  let near = 0;
  for (let k = 0; k < count; k++) {
    const m = rowMargin(d, Math.floor(k * step) * n, n, src.logits, auto);
    if (Number.isNaN(m)) {
      // Auto-detection: one row that is not a distribution disqualifies the output.
      if (auto) return NOT_SCORES;
      continue;
    }
    judged++;
    if (m < src.margin) near++;
  }
  return judged ? near / judged : undefined;
}

/**
 * The one statistic the boundary signal reads: of a ModelInfer response's score output,
 * the fraction of rows (strided above MAX_SCORE_VALUES scores) whose top-1 minus top-2
 * score is below `src.margin`. Rows are the last axis, as in minimize.ts. The score output
 * is the first of `src.outputs`, in configuration order, that the response carries as FP32
 * with rows (never the response's order, which the client's request can choose); when
 * auto-detecting, the first output in the response whose rows are probabilities. Undefined
 * when there is no such output (not requested, not FP32, or, auto-detecting, not
 * probabilities). One number per request, whatever its row count. Reads the response,
 * keeps nothing, never throws.
 */
export function boundaryStatistic(response: unknown, src: ScoreSource): number | undefined {
  if (!isRecord(response)) return undefined;
  const outs = response['outputs'];
  const raws = response['raw_output_contents'];
  if (!Array.isArray(outs)) return undefined;
  const useRaw = Array.isArray(raws) && raws.length === outs.length;
  const max = Math.min(outs.length, 64);
  if (src.outputs === undefined) {
    for (let i = 0; i < max; i++) {
      const v = outputStatistic(outs[i], useRaw ? raws[i] : undefined, src, true);
      if (v !== NOT_SCORES) return v;
    }
    return undefined;
  }
  for (const name of src.outputs) {
    for (let i = 0; i < max; i++) {
      const o: unknown = outs[i];
      if (!isRecord(o) || String(o['name']) !== name) continue;
      const v = outputStatistic(o, useRaw ? raws[i] : undefined, src, false);
      if (v !== NOT_SCORES) return v;
      break;
    }
  }
  return undefined;
}

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export type Signal = 'near-duplicates' | 'sweep' | 'uniform' | 'boundary';

export interface Verdict {
  readonly signal: Signal;
  /** The observed rate or mean that crossed its threshold. */
  readonly value: number;
  readonly window: number;
}

class Window {
  readonly sigs: Int32Array;
  readonly dup: Uint8Array;
  readonly sweep: Uint8Array;
  readonly ent: Float64Array;
  readonly valid: Uint8Array;
  next = 0;
  filled = 0;
  sinceAlert = Infinity;
  prevBlocks: Uint32Array | undefined;
  sumDup = 0;
  sumSweep = 0;
  sumEnt = 0;
  /** Boundary ring: near-boundary fractions, allocated on the first one. */
  bnd: Float64Array | undefined;
  bNext = 0;
  bFilled = 0;
  bSum = 0;
  bSinceAlert = Infinity;
  constructor(readonly size: number) {
    this.sigs = new Int32Array(size);
    this.dup = new Uint8Array(size);
    this.sweep = new Uint8Array(size);
    this.ent = new Float64Array(size);
    this.valid = new Uint8Array(size);
  }
}

/**
 * Sliding-window detector for one model's configuration. `observe(key, features)` records
 * a request and returns a verdict when a signal crosses its threshold (at most one alert
 * per window refill). Memory: O(window) numbers per (key, model) seen, bounded by
 * `maxKeys` (oldest dropped).
 */
export class ExtractionDetector {
  readonly #w = new Map<string, Window>();
  constructor(
    readonly config: DetectorConfig,
    readonly maxKeys = 10_000,
  ) {}

  /** Number of (key, model) windows held. */
  get size(): number {
    return this.#w.size;
  }

  #window(key: string): Window {
    let w = this.#w.get(key);
    if (!w) {
      if (this.#w.size >= this.maxKeys) this.#w.delete(this.#w.keys().next().value!);
      w = new Window(this.config.window);
      this.#w.set(key, w);
    }
    return w;
  }

  observe(key: string, f: InputFeatures): Verdict | undefined {
    const cfg = this.config;
    const w = this.#window(key);
    const i = w.next;
    // Near-duplicate against the window's earlier entries.
    let dup = 0;
    if (!f.constant) {
      for (let j = 0; j < w.size; j++) {
        if (w.valid[j] && j !== i && popcount((w.sigs[j]! ^ f.sig) >>> 0) <= 2) {
          dup = 1;
          break;
        }
      }
    }
    let sweep = 0;
    if (w.prevBlocks) {
      let changed = 0;
      for (let k = 0; k < f.blocks.length; k++) if (w.prevBlocks[k] !== f.blocks[k]) changed++;
      sweep = changed === 1 ? 1 : 0;
    }
    w.prevBlocks = f.blocks;
    // Replace the oldest entry; constant inputs take a slot but are not judged.
    if (w.valid[i]) {
      w.sumDup -= w.dup[i]!;
      w.sumSweep -= w.sweep[i]!;
      w.sumEnt -= w.ent[i]!;
      w.filled--;
    }
    w.sigs[i] = f.sig;
    if (f.constant) {
      w.valid[i] = 0;
    } else {
      w.valid[i] = 1;
      w.dup[i] = dup;
      w.sweep[i] = sweep;
      w.ent[i] = f.entropy;
      w.sumDup += dup;
      w.sumSweep += sweep;
      w.sumEnt += f.entropy;
      w.filled++;
    }
    w.next = (i + 1) % w.size;
    w.sinceAlert++;
    if (w.filled < cfg.minRequests || w.sinceAlert < w.size) return undefined;
    const n = w.filled;
    let verdict: Verdict | undefined;
    if (w.sumSweep / n >= cfg.sweepRate) verdict = { signal: 'sweep', value: w.sumSweep / n, window: n };
    else if (w.sumDup / n >= cfg.nearDuplicateRate) verdict = { signal: 'near-duplicates', value: w.sumDup / n, window: n };
    else if (w.sumEnt / n >= cfg.uniformEntropy) verdict = { signal: 'uniform', value: w.sumEnt / n, window: n };
    if (verdict) w.sinceAlert = 0;
    return verdict;
  }

  /**
   * Records one request's near-boundary fraction (`boundaryStatistic`, in [0, 1]; nothing
   * else about the outputs reaches the detector) and returns a 'boundary' verdict when the
   * ring's mean, over at least `minRequests` requests, is at or over `boundaryFraction`.
   */
  observeBoundary(key: string, nearBoundary: number): Verdict | undefined {
    const cfg = this.config;
    if (!cfg.boundary || !(nearBoundary >= 0 && nearBoundary <= 1)) return undefined;
    const w = this.#window(key);
    const ring = (w.bnd ??= new Float64Array(w.size));
    const i = w.bNext;
    if (w.bFilled === w.size) w.bSum -= ring[i]!;
    else w.bFilled++;
    ring[i] = nearBoundary;
    w.bSum += nearBoundary;
    w.bNext = (i + 1) % w.size;
    w.bSinceAlert++;
    if (w.bFilled < cfg.minRequests || w.bSinceAlert < w.size) return undefined;
    const mean = w.bSum / w.bFilled;
    if (mean < cfg.boundaryFraction) return undefined;
    w.bSinceAlert = 0;
    return { signal: 'boundary', value: mean, window: w.bFilled };
  }
}
