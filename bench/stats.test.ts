import { describe, expect, it } from 'vitest';
import { LatencyRecorder, maxThroughputUnderSlo, median, overheadRatios, serversNeeded } from './stats.js';

describe('LatencyRecorder (HdrHistogram)', () => {
  it('reports percentiles of 1..1000 ms within the histogram resolution (0.1%)', () => {
    const r = new LatencyRecorder();
    for (let i = 1; i <= 1000; i++) r.recordMs(i);
    const s = r.summary();
    expect(s.count).toBe(1000);
    expect(s.p50Ms).toBeGreaterThanOrEqual(500 * 0.999);
    expect(s.p50Ms).toBeLessThanOrEqual(500 * 1.001);
    expect(s.p90Ms).toBeCloseTo(900, -1);
    expect(s.p99Ms).toBeCloseTo(990, -1);
    expect(s.p999Ms).toBeCloseTo(999, -1);
    expect(s.maxMs).toBeGreaterThanOrEqual(1000 * 0.999);
    expect(s.maxMs).toBeLessThanOrEqual(1000 * 1.001);
    expect(s.meanMs).toBeCloseTo(500.5, -1);
    expect(r.encode()).toMatch(/^[A-Za-z0-9+/=]+$/);
  });

  it('keeps sub-millisecond resolution (microseconds)', () => {
    const r = new LatencyRecorder();
    r.recordMs(0.123);
    r.recordMs(0.0001); // below 1 µs: recorded as 1 µs
    expect(r.percentileMs(100)).toBeCloseTo(0.123, 3);
    expect(r.summary().minMs).toBeCloseTo(0.001, 4);
  });

  it('is all zeros when empty, rejects negative and NaN latencies, and merges', () => {
    const r = new LatencyRecorder();
    expect(r.summary()).toEqual({ count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0 });
    expect(() => r.recordMs(-1)).toThrow(RangeError);
    expect(() => r.recordMs(Number.NaN)).toThrow(RangeError);
    const other = new LatencyRecorder();
    other.recordMs(5);
    other.recordMs(7);
    r.recordMs(1);
    r.add(other);
    expect(r.count).toBe(3);
    expect(r.summary().maxMs).toBeCloseTo(7, 2);
  });

  it('records a 10-minute stall without overflowing (auto-resize)', () => {
    const r = new LatencyRecorder();
    r.recordMs(600_000);
    expect(r.summary().maxMs).toBeCloseTo(600_000, -3);
  });
});

describe('median', () => {
  it.each([
    [[3, 1, 2], 2],
    [[4, 1, 3, 2], 2.5],
    [[7], 7],
  ])('median(%j) = %d', (xs, m) => expect(median(xs)).toBe(m));
  it('is NaN for no values', () => expect(median([])).toBeNaN());
});

describe('overhead ratios', () => {
  it('divides each figure by the in-process baseline', () => {
    expect(overheadRatios({ p50Ms: 3, p99Ms: 10, throughput: 50 }, { p50Ms: 1, p99Ms: 4, throughput: 200 })).toEqual({ p50: 3, p99: 2.5, throughput: 0.25 });
  });
  it('is null where the baseline is zero', () => {
    expect(overheadRatios({ p50Ms: 3, p99Ms: 10, throughput: 50 }, { p50Ms: 0, p99Ms: 4, throughput: 0 })).toEqual({ p50: null, p99: 2.5, throughput: null });
  });
});

describe('SLO sizing', () => {
  const pts = [
    { throughput: 100, p99Ms: 5, errors: 0 },
    { throughput: 400, p99Ms: 9.9, errors: 0 },
    { throughput: 500, p99Ms: 10, errors: 0 }, // on the SLO: counts
    { throughput: 800, p99Ms: 30, errors: 0 }, // over the SLO
    { throughput: 700, p99Ms: 8, errors: 3 }, // errors: never counts
  ];
  it('takes the highest throughput whose p99 met the SLO without errors', () => {
    expect(maxThroughputUnderSlo(pts, 10)).toBe(500);
    expect(maxThroughputUnderSlo(pts, 9.95)).toBe(400);
    expect(maxThroughputUnderSlo(pts, 1)).toBeNull();
  });
  it('ignores open-loop points that did not sustain the offered rate', () => {
    expect(maxThroughputUnderSlo([{ throughput: 960, p99Ms: 2, errors: 0, offeredRate: 1000 }, { throughput: 940, p99Ms: 2, errors: 0, offeredRate: 1200 }], 10)).toBe(960);
  });
  it('computes servers needed, rounding up', () => {
    expect(serversNeeded(1000, 500)).toBe(2);
    expect(serversNeeded(1001, 500)).toBe(3);
    expect(serversNeeded(10, 500)).toBe(1);
    expect(serversNeeded(0, 500)).toBe(1);
    expect(serversNeeded(1000, null)).toBeNull();
    expect(serversNeeded(1000, 0)).toBeNull();
  });
});
