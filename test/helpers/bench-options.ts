/**
 * For tests: the smallest runBench options (no open loop, boot or seal figures, 0.1 s
 * windows), with what a test cares about given and anything else overridable.
 */
import { defaultSimStateDir, type BenchOptions } from '../../bench/harness.js';

export function smallBenchOptions(o: Pick<BenchOptions, 'modes' | 'workloads'> & Partial<BenchOptions>): BenchOptions {
  return {
    concurrency: [1],
    rates: [],
    warmupMs: 0,
    durationMs: 100,
    reps: 1,
    seed: 1,
    intraOpThreads: 1,
    interOpThreads: 0,
    executionProvider: 'cpu',
    requestTimeoutMs: 5000,
    maxInFlight: 8,
    bootModelMb: 0,
    warmBoots: 0,
    sealMb: 0,
    simStateDir: defaultSimStateDir(),
    quick: true,
    ...o,
  };
}
