/**
 * Statistics for the serving benchmark: an HdrHistogram wrapper that records latencies in
 * microseconds and reports milliseconds, the median across repetitions, overhead ratios
 * against the in-process baseline, and SLO sizing ("highest sustained throughput whose p99
 * met the SLO", "servers needed for R req/s").
 *
 * Pure functions and one small class; no clock, no I/O. What this does not do: decide
 * whether a run was long enough for a percentile to be meaningful (the report carries the
 * sample count next to every percentile so a reader can judge; p99.9 from 1,000 samples is
 * the single worst request).
 */
import * as hdr from 'hdr-histogram-js';

/** Percentiles reported for every latency distribution, in milliseconds. */
export interface LatencySummary {
  readonly count: number;
  readonly minMs: number;
  readonly meanMs: number;
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
}

/** Latencies below 1 µs are recorded as 1 µs; the histogram resizes for any upper value. */
const LOWEST_US = 1;
/** 3 significant digits: 0.1% value resolution at every magnitude. */
const SIGNIFICANT_DIGITS = 3;

/**
 * A latency recorder over an HdrHistogram (hdr-histogram-js, pure-JS packed buckets).
 * Values are recorded in whole microseconds (0.1% relative error from the histogram, plus
 * up to 0.5 µs from rounding).
 */
export class LatencyRecorder {
  readonly #h: hdr.Histogram;

  constructor() {
    this.#h = hdr.build({
      lowestDiscernibleValue: LOWEST_US,
      highestTrackableValue: 60_000_000,
      numberOfSignificantValueDigits: SIGNIFICANT_DIGITS,
      bitBucketSize: 'packed',
      autoResize: true,
      useWebAssembly: false,
    });
  }

  /** Records one latency given in milliseconds (negative and NaN values are rejected). */
  recordMs(ms: number): void {
    if (!(ms >= 0)) throw new RangeError(`latency must be a non-negative number, got ${ms}`);
    this.#h.recordValue(Math.max(LOWEST_US, Math.round(ms * 1000)));
  }

  get count(): number {
    return this.#h.totalCount;
  }

  /** Value at percentile `p` (0-100) in milliseconds; 0 when nothing was recorded. */
  percentileMs(p: number): number {
    return this.#h.totalCount === 0 ? 0 : this.#h.getValueAtPercentile(p) / 1000;
  }

  /** Adds every value of `other` into this recorder. */
  add(other: LatencyRecorder): void {
    this.#h.add(other.#h);
  }

  summary(): LatencySummary {
    const h = this.#h;
    if (h.totalCount === 0) return { count: 0, minMs: 0, meanMs: 0, p50Ms: 0, p90Ms: 0, p99Ms: 0, p999Ms: 0, maxMs: 0 };
    return {
      count: h.totalCount,
      minMs: h.minNonZeroValue / 1000,
      meanMs: h.mean / 1000,
      p50Ms: h.getValueAtPercentile(50) / 1000,
      p90Ms: h.getValueAtPercentile(90) / 1000,
      p99Ms: h.getValueAtPercentile(99) / 1000,
      p999Ms: h.getValueAtPercentile(99.9) / 1000,
      maxMs: h.maxValue / 1000,
    };
  }

  /** The whole histogram, compressed (HdrHistogram's base64 format), for the JSON report. */
  encode(): string {
    return hdr.encodeIntoCompressedBase64(this.#h);
  }

  /** Frees the histogram's buffers (only matters for the WebAssembly flavour; harmless here). */
  destroy(): void {
    this.#h.destroy();
  }
}

/** Median of a list; the mean of the two middle values for an even length. NaN when empty. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 === 1 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

/** Ratios of a mode's figures to the in-process baseline at the same load level. */
export interface OverheadRatios {
  /** mode p50 / inproc p50 (1.0 = no overhead). */
  readonly p50: number | null;
  readonly p99: number | null;
  /** mode throughput / inproc throughput (1.0 = no loss). */
  readonly throughput: number | null;
}

function ratio(a: number, b: number): number | null {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? a / b : null;
}

/** Overhead ratios of `mode` against `baseline`; null where the baseline figure is 0 or missing. */
export function overheadRatios(
  mode: { p50Ms: number; p99Ms: number; throughput: number },
  baseline: { p50Ms: number; p99Ms: number; throughput: number },
): OverheadRatios {
  return {
    p50: ratio(mode.p50Ms, baseline.p50Ms),
    p99: ratio(mode.p99Ms, baseline.p99Ms),
    throughput: ratio(mode.throughput, baseline.throughput),
  };
}

/** One measured load level, as SLO sizing sees it. */
export interface SizingPoint {
  readonly throughput: number;
  readonly p99Ms: number;
  readonly errors: number;
  /** Open loop only: the offered rate; a point that completed < 95% of it did not sustain it. */
  readonly offeredRate?: number;
}

/** Fraction of the offered rate an open-loop point must complete to count as sustained. */
export const SUSTAINED_FRACTION = 0.95;

/**
 * Highest throughput among points that met the SLO: p99 <= sloP99Ms, no errors, and (open
 * loop) at least SUSTAINED_FRACTION of the offered rate completed. Null when none did.
 */
export function maxThroughputUnderSlo(points: readonly SizingPoint[], sloP99Ms: number): number | null {
  let best: number | null = null;
  for (const p of points) {
    if (p.errors > 0 || !(p.p99Ms <= sloP99Ms)) continue;
    if (p.offeredRate !== undefined && p.throughput < SUSTAINED_FRACTION * p.offeredRate) continue;
    if (best === null || p.throughput > best) best = p.throughput;
  }
  return best;
}

/** Servers needed to carry `targetRps` when each sustains `perServerRps` (null when unknown). */
export function serversNeeded(targetRps: number, perServerRps: number | null): number | null {
  if (perServerRps === null || !(perServerRps > 0) || !(targetRps >= 0)) return null;
  return Math.max(1, Math.ceil(targetRps / perServerRps - 1e-9));
}
