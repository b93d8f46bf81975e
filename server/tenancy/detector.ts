/**
 * Model-extraction detector: per (key, model) sliding windows of a few statistics of each
 * request's largest input tensor, judged against fixed thresholds.
 *
 * Per request it computes, and keeps, only:
 *   - a 32-bit SimHash over up to 128 strided sample values (random-hyperplane LSH with a
 *     fixed seed): two inputs that are close give signatures a small Hamming distance apart;
 *   - 8 block hashes (32-bit, non-cryptographic) of the tensor bytes, to see whether
 *     consecutive requests differ in exactly one block (a coordinate sweep);
 *   - the normalized entropy of a 16-bin histogram of the samples (1.0 = flat/uniform).
 * No tensor value is kept: the window holds signatures, hashes and one number per request.
 *
 * Signals over a full window (at least `minRequests`):
 *   - near-duplicates: share of requests whose SimHash is within Hamming distance 2 of an
 *     earlier one in the window (constant inputs, e.g. silence, are not counted);
 *   - sweep: share of consecutive pairs that differ in exactly one block;
 *   - uniform: mean normalized entropy (uniform-random probing sits near 1; natural
 *     signals are peaked).
 * A signal at or over its threshold raises one alert, then the window must refill before
 * that key and model can alert again. What it does NOT do: look at outputs, detect
 * boundary probing that needs model scores, or correlate across keys (a Sybil attacker
 * with many keys is bounded by the tenant quotas instead).
 */
import type { DetectorConfig } from './config.js';

export const SAMPLES = 128;
const SIG_BITS = 32;
const BLOCKS = 8;
const BINS = 16;
/** Above this many 32-bit words, block hashes read every k-th word (stride) to bound cost. */
const MAX_HASHED_WORDS = 16_384;

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

function popcount(x: number): number {
  x -= (x >>> 1) & 0x55555555;
  x = (x & 0x33333333) + ((x >>> 2) & 0x33333333);
  return (((x + (x >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24;
}

export type Signal = 'near-duplicates' | 'sweep' | 'uniform';

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

  observe(key: string, f: InputFeatures): Verdict | undefined {
    const cfg = this.config;
    let w = this.#w.get(key);
    if (!w) {
      if (this.#w.size >= this.maxKeys) this.#w.delete(this.#w.keys().next().value!);
      w = new Window(cfg.window);
      this.#w.set(key, w);
    }
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
}
