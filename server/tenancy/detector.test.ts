import { seededRandom } from '../../bench/load.js';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DetectorConfigSchema, ModelDefenseSchema } from './config.js';
import { ExtractionDetector, boundaryStatistic, inputFeatures, scoreSource, type ScoreSource } from './detector.js';

const cfg = DetectorConfigSchema.parse({});

/** Deterministic PRNG (mulberry32, the bench's) so the figures are reproducible. */
const rng = seededRandom;

function gauss(r: () => number): number {
  return Math.sqrt(-2 * Math.log(r() + 1e-12)) * Math.cos(2 * Math.PI * r());
}

function request(data: Float32Array): unknown {
  return { model_name: 'm', inputs: [{ name: 'input', datatype: 'FP32', shape: [1, data.length] }], raw_input_contents: [Buffer.from(data.buffer, data.byteOffset, data.byteLength)] };
}

/** A normal traffic mix: voiced frames, background noise, silence, music, tabular vectors, and 3% retries. */
function normalStream(seed: number, n: number): Float32Array[] {
  const r = rng(seed);
  const out: Float32Array[] = [];
  let prev: Float32Array | undefined;
  for (let k = 0; k < n; k++) {
    if (prev && r() < 0.03) {
      out.push(prev);
      continue;
    }
    const kind = r();
    let x: Float32Array;
    if (kind < 0.45) {
      x = new Float32Array(1536);
      const f = [80 + r() * 200, 300 + r() * 900, 1000 + r() * 2000];
      const amp = 0.05 + r() * 0.5;
      const ph = r() * 6.28;
      for (let i = 0; i < x.length; i++) {
        const env = Math.sin((Math.PI * i) / x.length) ** 2;
        x[i] = amp * env * (Math.sin(ph + (2 * Math.PI * f[0]! * i) / 16000) + 0.5 * Math.sin((2 * Math.PI * f[1]! * i) / 16000) + 0.2 * Math.sin((2 * Math.PI * f[2]! * i) / 16000)) + 0.01 * gauss(r);
      }
    } else if (kind < 0.65) {
      x = Float32Array.from({ length: 1536 }, () => (0.001 + r() * 0.02) * gauss(r));
    } else if (kind < 0.75) {
      x = new Float32Array(1536);
    } else if (kind < 0.85) {
      x = new Float32Array(1536);
      const f0 = 220 * 2 ** Math.floor(r() * 24 / 12);
      for (let i = 0; i < x.length; i++) x[i] = 0.3 * Math.sign(Math.sin((2 * Math.PI * f0 * i) / 16000)) * (1 - i / x.length) + 0.02 * gauss(r);
    } else {
      x = Float32Array.from({ length: 32 }, () => gauss(r) * (1 + r()));
    }
    out.push(x);
    prev = x;
  }
  return out;
}

describe('extraction detector', () => {
  it('flags a sweep attacker (one coordinate varied monotonically over a fixed input)', () => {
    const det = new ExtractionDetector(cfg);
    const r = rng(1);
    const baseInput = Float32Array.from({ length: 1536 }, () => 0.2 * gauss(r));
    const verdicts = [];
    for (let k = 0; k < 200; k++) {
      const x = Float32Array.from(baseInput);
      x[(k >> 5) * 97] = -1 + (k % 32) / 16; // sweep coordinate j through [-1, 1), then the next
      const v = det.observe('attacker', inputFeatures(request(x))!);
      if (v) verdicts.push(v);
    }
    expect(verdicts.length).toBeGreaterThan(0);
    expect(verdicts[0]!.signal).toBe('sweep');
  });

  it('flags uniform random probing and near-duplicate harvesting', () => {
    const det = new ExtractionDetector(cfg);
    const r = rng(2);
    let uniform;
    for (let k = 0; k < 100 && !uniform; k++) uniform = det.observe('u', inputFeatures(request(Float32Array.from({ length: 1536 }, () => r() * 2 - 1)))!);
    expect(uniform?.signal).toBe('uniform');

    const seedInput = Float32Array.from({ length: 1536 }, () => 0.3 * gauss(r));
    let dup;
    for (let k = 0; k < 100 && !dup; k++) {
      // Small perturbations everywhere: not a sweep (all blocks change), but near-duplicates.
      dup = det.observe('d', inputFeatures(request(seedInput.map((v) => v + 0.001 * gauss(r))))!);
    }
    expect(dup?.signal).toBe('near-duplicates');
  });

  it('does not flag a normal traffic mix; reports the false-positive rate', () => {
    const det = new ExtractionDetector(cfg);
    const keys = 40;
    const perKey = 100;
    let requests = 0;
    let alerts = 0;
    const flaggedKeys = new Set<string>();
    for (let k = 0; k < keys; k++) {
      for (const x of normalStream(1000 + k, perKey)) {
        requests++;
        if (det.observe(`key-${k}`, inputFeatures(request(x))!)) {
          alerts++;
          flaggedKeys.add(`key-${k}`);
        }
      }
    }
    const windows = keys * Math.floor(perKey / cfg.window + 1);
    console.log(`[detector] normal mix: ${requests} requests, ${keys} keys, ${alerts} alerts, ${flaggedKeys.size} keys flagged; false-positive rate ${(alerts / requests).toFixed(5)} per request, ${(flaggedKeys.size / keys).toFixed(3)} per key (~${windows} windows)`);
    expect(alerts).toBe(0);
  });

  it('inputFeatures never throws on arbitrary requests', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.record({
            inputs: fc.array(fc.record({ datatype: fc.constantFrom('FP32', 'INT8', 'BYTES', 7), contents: fc.anything() }), { maxLength: 3 }),
            raw_input_contents: fc.array(
              fc.oneof(
                fc.uint8Array({ maxLength: 64 }),
                // Buffers at every offset of a shared pool, as grpc-js hands them over.
                fc.tuple(fc.uint8Array({ maxLength: 64 }), fc.nat(7), fc.nat(3)).map(([b, off, pad]) => {
                  const ab = new ArrayBuffer(off + b.length + pad);
                  new Uint8Array(ab, off, b.length).set(b);
                  return Buffer.from(ab, off, b.length);
                }),
                fc.anything(),
              ),
              { maxLength: 3 },
            ),
          }),
        ),
        (req) => {
          const f = inputFeatures(req);
          if (f) {
            expect(f.blocks).toHaveLength(8);
            expect(f.entropy).toBeGreaterThanOrEqual(0);
            expect(f.entropy).toBeLessThanOrEqual(1 + 1e-9);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  it('bounds its memory to maxKeys windows', () => {
    const det = new ExtractionDetector(cfg, 3);
    const f = inputFeatures(request(Float32Array.from({ length: 16 }, (_, i) => i)))!;
    for (let k = 0; k < 10; k++) det.observe(`k${k}`, f);
    expect(det.size).toBe(3);
  });

  /** Share of n-wide rows whose top-1 minus top-2 value is below m, computed independently. */
  function shareBelow(values: readonly number[], n: number, m: number): number {
    let near = 0;
    for (let r = 0; r < values.length / n; r++) {
      const row = values.slice(r * n, r * n + n).sort((a, b) => b - a);
      if (row[0]! - row[1]! < m) near++;
    }
    return near / (values.length / n);
  }

  it('boundaryStatistic: exactly the fraction of rows whose top-1 minus top-2 score is below the margin', () => {
    const src: ScoreSource = { outputs: ['probs'], logits: false, margin: 0.1 };
    // 5 rows x 3 classes; margins 0.05, 0.7, 0.08, 0.1 (not below), 0.25.
    const probs = [0.5, 0.45, 0.05, 0.1, 0.8, 0.1, 0.3, 0.39, 0.31, 0.55, 0.45, 0, 0.25, 0.5, 0.25];
    const expected = shareBelow(Array.from(Float32Array.from(probs)), 3, 0.1);
    expect(expected).toBe(0.4);
    const res = (data: Float32Array, shape = ['5', '3']) => ({
      outputs: [
        { name: 'state', datatype: 'FP32', shape: ['2', '4'] },
        { name: 'probs', datatype: 'FP32', shape },
      ],
      raw_output_contents: [Buffer.from(new Float32Array(8).buffer), Buffer.from(data.buffer)],
    });
    expect(boundaryStatistic(res(Float32Array.from(probs)), src)).toBe(expected);
    // Typed contents (doubles as given), and a raw buffer at an odd offset (as grpc-js may hand it over).
    expect(boundaryStatistic({ outputs: [{ name: 'probs', datatype: 'FP32', shape: [5, 3], contents: { fp32_contents: probs } }], raw_output_contents: [] }, src)).toBe(shareBelow(probs, 3, 0.1));
    const odd = Buffer.alloc(1 + 60);
    Buffer.from(Float32Array.from(probs).buffer).copy(odd, 1);
    expect(boundaryStatistic({ outputs: [{ name: 'probs', datatype: 'FP32', shape: ['5', '3'] }], raw_output_contents: [odd.subarray(1)] }, src)).toBe(expected);
    // Rows are the last axis whatever the rank: [1, 5, 3] is the same 5 rows.
    expect(boundaryStatistic(res(Float32Array.from(probs), ['1', '5', '3']), src)).toBe(expected);
    // Auto-detection finds the probabilities and skips the state output (not distributions).
    expect(boundaryStatistic(res(Float32Array.from(probs)), { ...src, outputs: undefined })).toBe(expected);
    // Logits: softmax first. Row margins after softmax, computed here independently.
    const logits = [2, 1.9, -1, 4, 0, 0, 0.05, 0, -3];
    const soft = [0, 1, 2].map((r) => {
      const z = logits.slice(r * 3, r * 3 + 3).map((v) => Math.exp(Math.fround(v)));
      const sum = z.reduce((a, b) => a + b, 0);
      const p = z.map((v) => v / sum).sort((a, b) => b - a);
      return p[0]! - p[1]!;
    });
    const logitRes = { outputs: [{ name: 'probs', datatype: 'FP32', shape: ['3', '3'] }], raw_output_contents: [Buffer.from(Float32Array.from(logits).buffer)] };
    expect(boundaryStatistic(logitRes, { ...src, logits: true })).toBe(soft.filter((m) => m < 0.1).length / 3);
    expect(soft.filter((m) => m < 0.1).length).toBe(2);
    // Auto-detection does not take logits for probabilities.
    expect(boundaryStatistic(logitRes, { ...src, outputs: undefined })).toBeUndefined();
    // One column: a binary score p, margin |2p - 1| (0.48 and 0.52 are near; 0.9, 0.1 not).
    const bin = { outputs: [{ name: 'probs', datatype: 'FP32', shape: ['4', '1'] }], raw_output_contents: [Buffer.from(Float32Array.of(0.48, 0.9, 0.52, 0.1).buffer)] };
    expect(boundaryStatistic(bin, src)).toBe(0.5);
    expect(boundaryStatistic(bin, { ...src, outputs: undefined })).toBeUndefined();
    // Named outputs are taken in configuration order, never in the response's (which the
    // request can choose): the first listed output the response carries is judged.
    const confident = Float32Array.from({ length: 15 }, (_, i) => (i % 3 === 0 ? 1 : 0));
    const both = {
      outputs: [
        { name: 'aux', datatype: 'FP32', shape: ['5', '3'] },
        { name: 'probs', datatype: 'FP32', shape: ['5', '3'] },
      ],
      raw_output_contents: [Buffer.from(confident.buffer), Buffer.from(Float32Array.from(probs).buffer)],
    };
    expect(boundaryStatistic(both, { ...src, outputs: ['probs', 'aux'] })).toBe(expected);
    expect(boundaryStatistic(both, { ...src, outputs: ['aux', 'probs'] })).toBe(0);
    expect(boundaryStatistic(both, { ...src, outputs: ['missing', 'probs'] })).toBe(expected);
    // Not computed: output absent (not requested), not FP32, nothing numeric.
    expect(boundaryStatistic(res(Float32Array.from(probs)), { ...src, outputs: ['other'] })).toBeUndefined();
    expect(boundaryStatistic({ outputs: [{ name: 'probs', datatype: 'INT64', shape: ['1', '1'] }], raw_output_contents: [Buffer.alloc(8)] }, src)).toBeUndefined();
    expect(boundaryStatistic({ outputs: [{ name: 'probs', datatype: 'FP32', shape: ['1', '3'] }], raw_output_contents: [Buffer.from(Float32Array.of(NaN, 0, 1).buffer)] }, src)).toBeUndefined();
  });

  it('boundaryStatistic never throws and stays in [0, 1] on arbitrary responses', () => {
    const src: ScoreSource = { outputs: undefined, logits: false, margin: 0.1 };
    fc.assert(
      fc.property(
        fc.oneof(
          fc.anything(),
          fc.record({
            outputs: fc.array(fc.record({ name: fc.constantFrom('probs', 'x'), datatype: fc.constantFrom('FP32', 'INT64', 3), shape: fc.array(fc.oneof(fc.integer({ min: -2, max: 6 }), fc.string()), { maxLength: 3 }), contents: fc.anything() }), { maxLength: 3 }),
            raw_output_contents: fc.array(fc.oneof(fc.float32Array({ maxLength: 24 }).map((a) => Buffer.from(a.buffer)), fc.uint8Array({ maxLength: 24 }), fc.anything()), { maxLength: 3 }),
          }),
        ),
        fc.boolean(),
        fc.boolean(),
        (res, logits, named) => {
          const v = boundaryStatistic(res, { ...src, logits, outputs: named || logits ? ['probs'] : undefined });
          if (v !== undefined) {
            expect(v).toBeGreaterThanOrEqual(0);
            expect(v).toBeLessThanOrEqual(1);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  /** One 10-class probability row with top-1 minus top-2 margin m. */
  function probsRow(m: number, r: () => number): number[] {
    const rest = 0.2 * r() * (1 - m); // mass of the 8 minor classes, each below the top two
    const p1 = (1 - rest + m) / 2;
    const p2 = (1 - rest - m) / 2;
    const row = [p1, p2, ...Array.from({ length: 8 }, () => rest / 8)];
    // Shuffle so the top classes sit anywhere.
    for (let i = row.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [row[i], row[j]] = [row[j]!, row[i]!];
    }
    return row;
  }

  function scoresResponse(rows: number[][]): unknown {
    return {
      outputs: [{ name: 'logits_unused', datatype: 'INT64', shape: ['1'] }, { name: 'probs', datatype: 'FP32', shape: [String(rows.length), '10'] }],
      raw_output_contents: [Buffer.alloc(8), Buffer.from(Float32Array.from(rows.flat()).buffer)],
    };
  }

  const scored = ModelDefenseSchema.parse({ detector: { boundary: true } });

  it('flags a boundary-probing attacker (margins uniform in [0, 0.05]) with signal boundary', () => {
    const src = scoreSource(scored)!;
    expect(src).toEqual({ outputs: undefined, logits: false, margin: 0.1 });
    const det = new ExtractionDetector(scored.detector!);
    const r = rng(7);
    let v;
    let k = 0;
    for (; k < 200 && !v; k++) {
      const s = boundaryStatistic(scoresResponse([probsRow(r() * 0.05, r)]), src);
      expect(s).toBe(1);
      v = det.observeBoundary('attacker', s!);
    }
    expect(v).toMatchObject({ signal: 'boundary', value: 1 });
    expect(k).toBe(cfg.minRequests); // as soon as the window may be judged
    // A PRADA-style attacker that mixes in natural queries (70 % near the boundary) too.
    const det2 = new ExtractionDetector(scored.detector!);
    let v2;
    for (let n = 0; n < 200 && !v2; n++) v2 = det2.observeBoundary('mixer', boundaryStatistic(scoresResponse([probsRow(r() < 0.7 ? r() * 0.05 : 0.3 + r() * 0.6, r)]), src)!);
    expect(v2?.signal).toBe('boundary');
  });

  it('does not flag normal traffic with 12.5 % ambiguous predictions; reports the false-positive rate', () => {
    const src = scoreSource(scored)!;
    const det = new ExtractionDetector(scored.detector!);
    const keys = 40;
    const perKey = 200;
    let requests = 0;
    let nearSum = 0;
    let alerts = 0;
    let maxMean = 0;
    const flagged = new Set<number>();
    for (let k = 0; k < keys; k++) {
      const r = rng(5000 + k);
      const ring: number[] = [];
      for (let n = 0; n < perKey; n++) {
        // Batches of 1-4 rows; 12.5 % of rows ambiguous (margin in [0, 0.15)), the rest confident.
        const rows = Array.from({ length: 1 + Math.floor(r() * 4) }, () => probsRow(r() < 0.125 ? r() * 0.15 : 0.3 + r() * 0.65, r));
        const s = boundaryStatistic(scoresResponse(rows), src)!;
        requests++;
        nearSum += s;
        ring.push(s);
        if (ring.length > cfg.window) ring.shift();
        if (ring.length >= cfg.minRequests) maxMean = Math.max(maxMean, ring.reduce((a, b) => a + b, 0) / ring.length);
        if (det.observeBoundary(`key-${k}`, s)) {
          alerts++;
          flagged.add(k);
        }
      }
    }
    console.log(
      `[detector] boundary, normal traffic: ${requests} requests, ${keys} keys, near-boundary share ${(nearSum / requests).toFixed(3)} (highest window mean ${maxMean.toFixed(3)}, threshold ${cfg.boundaryFraction}); ${alerts} alerts, false-positive rate ${(alerts / requests).toFixed(5)} per request, ${(flagged.size / keys).toFixed(3)} per key`,
    );
    expect(nearSum / requests).toBeGreaterThan(0.05); // the ambiguous share is really there
    expect(maxMean).toBeLessThan(cfg.boundaryFraction);
    expect(alerts).toBe(0);
  });

  it('a model without a class-score output never raises boundary; the signal is opt-in', () => {
    // A VAD-like response: one binary score [1, 1] (not auto-detected: one column could be
    // anything in [0, 1]) and recurrent state, which is no probability distribution.
    const vad = ModelDefenseSchema.parse({ detector: { boundary: true } });
    const src = scoreSource(vad)!;
    const det = new ExtractionDetector(vad.detector!);
    const r = rng(9);
    for (let k = 0; k < 200; k++) {
      const res = {
        outputs: [
          { name: 'output', datatype: 'FP32', shape: ['1', '1'] },
          { name: 'hn', datatype: 'FP32', shape: ['2', '1', '64'] },
          { name: 'cn', datatype: 'FP32', shape: ['2', '1', '64'] },
        ],
        raw_output_contents: [Float32Array.of(0.5), Float32Array.from({ length: 128 }, () => r() / 32), Float32Array.from({ length: 128 }, () => r() - 0.5)].map((a) => Buffer.from(a.buffer)),
      };
      const s = boundaryStatistic(res, src);
      expect(s).toBeUndefined();
      // Named, the same score output is judged (0.5 sits on the boundary).
      expect(boundaryStatistic(res, { ...src, outputs: ['output'] })).toBe(1);
    }
    expect(det.size).toBe(0);
    // Off (the default, and boundary: false): no score source, and the detector ignores the
    // statistic even if fed.
    for (const off of [ModelDefenseSchema.parse({ detector: {} }), ModelDefenseSchema.parse({ detector: { boundary: false } })]) {
      expect(scoreSource(off)).toBeUndefined();
      const detOff = new ExtractionDetector(off.detector!);
      for (let k = 0; k < 200; k++) expect(detOff.observeBoundary('k', 1)).toBeUndefined();
    }
    // Minimize's outputs name the score tensor; logits need a named output.
    expect(scoreSource(ModelDefenseSchema.parse({ minimize: { outputs: ['y'], topK: 1 }, detector: { boundary: true, boundaryScores: 'logits' } }))).toEqual({ outputs: ['y'], logits: true, margin: 0.1 });
    expect(ModelDefenseSchema.safeParse({ detector: { boundary: true, boundaryScores: 'logits' } }).success).toBe(false);
    expect(scoreSource(ModelDefenseSchema.parse({ detector: { boundary: true, boundaryOutput: 'output' } }))?.outputs).toEqual(['output']);
  });
});
