import { describe, expect, it } from 'vitest';
import { controlsCost, type RepFigures, type ResultEntry } from './report.js';
import type { Mode } from './targets.js';

function rep(p50Ms: number, p99Ms: number, serverCpuMs: number | null, count: number): RepFigures {
  return { p50Ms, p90Ms: p50Ms, p99Ms, p999Ms: p99Ms, maxMs: p99Ms, meanMs: p50Ms, count, throughput: count, errors: 0, errorsByStatus: {}, serverCpuMs, clientCpuMs: 0, sendLagP99Ms: null, histogram: '' };
}

function entry(mode: Mode, concurrency: number, perRep: RepFigures[], model = 'vad'): ResultEntry {
  return {
    mode,
    model,
    loop: 'closed',
    concurrency,
    rate: null,
    reps: perRep.length,
    p50Ms: perRep[0]!.p50Ms,
    p90Ms: 0,
    p99Ms: 0,
    p999Ms: 0,
    maxMs: 0,
    meanMs: 0,
    throughput: 0,
    errors: 0,
    errorsByStatus: {},
    count: 0,
    serverCpuMsPerRequest: null,
    serverCpuCores: null,
    serverMaxRssMiB: null,
    clientCpuMsPerRequest: 0,
    sendLagP99Ms: null,
    overhead: null,
    perRep,
  };
}

describe('controlsCost (grpc-controls vs grpc, paired per repetition)', () => {
  it('takes the median of the per-repetition differences, in microseconds', () => {
    const grpc = entry('grpc', 1, [rep(1.0, 3, 1000, 1000), rep(1.3, 4, 1000, 1000), rep(1.1, 3, 1200, 1000)]);
    const ctl = entry('grpc-controls', 1, [rep(1.02, 3.5, 1040, 1000), rep(1.25, 3, 1030, 1000), rep(1.4, 3.1, 1260, 1000)]);
    const [row, ...rest] = controlsCost([grpc, ctl]);
    expect(rest).toHaveLength(0);
    expect(row!.pairs).toBe(3);
    // Pairs: +20, -50, +300 µs -> median +20 (a mean would be +90: one noisy pair dominates).
    expect(row!.p50DeltasUs.map((d) => Math.round(d))).toEqual([20, -50, 300]);
    expect(row!.p50DeltaUs).toBeCloseTo(20, 6);
    expect(row!.p99DeltaUs).toBeCloseTo(100, 6);
    // Server CPU per request: +40, +30, +60 µs -> 40; halved when the CPU covered twice the counted window.
    expect(row!.serverCpuDeltaUs).toBeCloseTo(40, 6);
    expect(controlsCost([grpc, ctl], 2)[0]!.serverCpuDeltaUs).toBeCloseTo(20, 6);
  });

  it('pairs only the same model and level, and is empty without both modes', () => {
    const g1 = entry('grpc', 1, [rep(1, 2, 100, 100)]);
    const g4 = entry('grpc', 4, [rep(2, 4, 100, 100)]);
    const c4 = entry('grpc-controls', 4, [rep(2.5, 4, 100, 100)]);
    const other = entry('grpc-controls', 1, [rep(9, 9, 100, 100)], 'mlp');
    const rows = controlsCost([g1, g4, c4, other]);
    expect(rows.map((r) => [r.model, r.level, Math.round(r.p50DeltaUs)])).toEqual([['vad', 4, 500]]);
    expect(controlsCost([g1, g4])).toEqual([]);
    // No server CPU figures: null, never a made-up zero.
    expect(controlsCost([entry('grpc', 1, [rep(1, 1, null, 1)]), entry('grpc-controls', 1, [rep(1, 1, 5, 1)])])[0]!.serverCpuDeltaUs).toBeNull();
  });
});
