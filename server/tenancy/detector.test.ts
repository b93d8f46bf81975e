import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DetectorConfigSchema } from './config.js';
import { ExtractionDetector, inputFeatures } from './detector.js';

const cfg = DetectorConfigSchema.parse({});

/** Deterministic PRNG (mulberry32) so the figures are reproducible. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

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
});
