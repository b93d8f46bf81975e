/**
 * Load generation: a closed loop (N workers, each sends its next request when the previous
 * one completes; measures capacity) and an open loop (Poisson arrivals at a target rate;
 * measures latency at a load the server does not choose).
 *
 * Coordinated omission (research/anchors-performance-reliability.md §3.4): a closed-loop
 * client stops sending while the server stalls, so the stall is never recorded. The open
 * loop here follows wrk2: every request has an intended send time from a seeded schedule
 * fixed before the run, and its latency is measured from that intended time, not from
 * when the client actually got round to sending it. A late client (event-loop stall,
 * in-flight cap reached) therefore shows up as latency, as it would for a real caller.
 * The lateness itself is recorded separately (`sendLag`) so a saturated load generator is
 * visible in the report instead of silently inflating the server's figures.
 *
 * The clock is injected so tests can drive both loops in virtual time.
 */
import { LatencyRecorder, type LatencySummary } from './stats.js';

/** One request; rejects with an error whose `status` names the failure (a gRPC status name, ...). */
export type Invoke = () => Promise<unknown>;

export interface Clock {
  /** Milliseconds on a monotonic clock. */
  now(): number;
  /** Resolves at (or after) `t` on the same clock. */
  sleepUntil(t: number): Promise<void>;
}

/**
 * performance.now() and setTimeout: timers may fire up to ~1 ms early or late, so the
 * sleep wakes ~1 ms before `t` and yields (setImmediate) until `t` has passed. Never
 * returns early, so no request is sent before its intended time.
 */
export const realClock: Clock = {
  now: () => performance.now(),
  async sleepUntil(t) {
    for (;;) {
      const d = t - performance.now();
      if (d <= 0) return;
      await new Promise<void>((resolve) => (d > 2 ? setTimeout(resolve, d - 1) : setImmediate(resolve)));
    }
  },
};

/** mulberry32: a small, fast, seeded PRNG with uniform output in [0, 1). */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * Intended send times (ms from the start) of a Poisson process with `ratePerSec` arrivals
 * per second over `[0, durationMs)`: exponential inter-arrival gaps with mean 1000/rate,
 * drawn from `random` (seed it for a schedule that repeats across runs and machines).
 */
export function poissonSchedule(ratePerSec: number, durationMs: number, random: () => number): number[] {
  if (!(ratePerSec > 0) || !(durationMs >= 0)) throw new RangeError('rate must be > 0 and duration >= 0');
  const mean = 1000 / ratePerSec;
  const out: number[] = [];
  let t = 0;
  for (;;) {
    // 1 - U is in (0, 1], so the log is finite.
    t += -Math.log(1 - random()) * mean;
    if (t >= durationMs) return out;
    out.push(t);
  }
}

/** The outcome of one measured window. */
export interface WindowResult {
  readonly latency: LatencySummary;
  /** Requests that completed successfully and were counted (sent or intended in the window). */
  readonly completed: number;
  /** Failures by status name (gRPC status, `ORT_ERROR`, `DRAIN_TIMEOUT`, ...). */
  readonly errors: Readonly<Record<string, number>>;
  readonly errorCount: number;
  /** Successful requests per second over the window. */
  readonly throughput: number;
  readonly windowMs: number;
  /** Open loop only. */
  readonly offeredRate?: number;
  /** Open loop only: how late requests were actually sent relative to their intended time. */
  readonly sendLag?: LatencySummary;
  /** Compressed HdrHistogram of the latencies (base64), for re-analysis. */
  readonly histogram: string;
}

function statusOf(e: unknown): string {
  const s = (e as { status?: unknown } | null)?.status;
  return typeof s === 'string' && s.length > 0 ? s : 'ERROR';
}

function finish(rec: LatencyRecorder, errors: Map<string, number>, windowMs: number, extra: Partial<WindowResult> = {}): WindowResult {
  const latency = rec.summary();
  const errs = Object.fromEntries([...errors.entries()].sort());
  const result: WindowResult = {
    latency,
    completed: latency.count,
    errors: errs,
    errorCount: [...errors.values()].reduce((a, b) => a + b, 0),
    throughput: windowMs > 0 ? (latency.count * 1000) / windowMs : 0,
    windowMs,
    histogram: rec.encode(),
    ...extra,
  };
  rec.destroy();
  return result;
}

export interface ClosedLoopOptions {
  readonly invoke: Invoke;
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly clock?: Clock;
  /** Called about every 100 ms of virtual or real time with the fraction done (0..1). */
  readonly onProgress?: (fraction: number) => void;
  /** Called once, just before the first request of the measured window is sent. */
  readonly onMeasureStart?: () => void;
}

/**
 * Closed loop: `concurrency` workers each send, wait, send again. Requests sent during the
 * warm-up are not recorded; requests sent inside the measurement window are recorded when
 * they complete (the loop waits for them). Throughput = completions of requests sent in
 * the window / window length. Latency is send-to-response; by construction this loop
 * under-reports stalls (coordinated omission), so use it for capacity, not SLOs.
 */
export async function runClosedLoop(opts: ClosedLoopOptions): Promise<WindowResult> {
  const [only] = await cycleLoop([opts.invoke], opts);
  return only!;
}

/**
 * The closed loop over one or more targets: `concurrency` workers, worker n starting at
 * target n mod k and moving to the next target after each request. Per target: recorded
 * latencies (requests sent inside the window) and failures.
 */
async function cycleLoop(
  invokes: readonly Invoke[],
  opts: Pick<ClosedLoopOptions, 'concurrency' | 'warmupMs' | 'durationMs' | 'clock' | 'onProgress' | 'onMeasureStart'>,
): Promise<WindowResult[]> {
  const clock = opts.clock ?? realClock;
  const recs = invokes.map(() => new LatencyRecorder());
  const errors = invokes.map(() => new Map<string, number>());
  const t0 = clock.now();
  const measureStart = t0 + opts.warmupMs;
  const measureEnd = measureStart + opts.durationMs;
  const total = opts.warmupMs + opts.durationMs;
  let lastProgress = -Infinity;
  let measuring = false;

  const worker = async (n: number): Promise<void> => {
    for (let i = n % invokes.length; ; i = (i + 1) % invokes.length) {
      const start = clock.now();
      if (start >= measureEnd) return;
      if (opts.onProgress && start - lastProgress >= 100) {
        lastProgress = start;
        opts.onProgress(Math.min(1, (start - t0) / total));
      }
      const measured = start >= measureStart;
      if (measured && !measuring) {
        measuring = true;
        opts.onMeasureStart?.();
      }
      try {
        await invokes[i]!();
        if (measured) recs[i]!.recordMs(clock.now() - start);
      } catch (e) {
        if (measured) errors[i]!.set(statusOf(e), (errors[i]!.get(statusOf(e)) ?? 0) + 1);
        // Do not spin on a failing target: yield to the event loop.
        await clock.sleepUntil(clock.now());
      }
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency }, (_, n) => worker(n)));
  return recs.map((rec, i) => finish(rec, errors[i]!, opts.durationMs));
}

export interface InterleavedOptions {
  /** The two targets; every worker alternates between them, request by request. */
  readonly invokeA: Invoke;
  readonly invokeB: Invoke;
  /** Workers; each keeps one request outstanding (half start with A, half with B). */
  readonly concurrency: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly clock?: Clock;
  readonly onProgress?: (fraction: number) => void;
  readonly onMeasureStart?: () => void;
}

/**
 * A closed loop that alternates two targets request by request, recording each target's
 * latencies separately. Both see the same moments of the machine (load from elsewhere, CPU
 * frequency, cache state), so the difference of their percentiles is a paired measurement:
 * far less noisy than comparing two windows measured one after the other, which on a shared
 * VM drift by more than the effect being measured (hundreds of microseconds). Throughput of
 * each is its successes over the whole window (each gets about half the requests).
 */
export async function runInterleaved(opts: InterleavedOptions): Promise<{ a: WindowResult; b: WindowResult }> {
  const [a, b] = await cycleLoop([opts.invokeA, opts.invokeB], opts);
  return { a: a!, b: b! };
}

export interface OpenLoopOptions {
  readonly invoke: Invoke;
  /** Target arrival rate, requests per second. */
  readonly ratePerSec: number;
  readonly warmupMs: number;
  readonly durationMs: number;
  /** Seed of the arrival schedule (the same seed gives the same schedule). */
  readonly seed: number;
  /**
   * Most requests outstanding at once. When reached, further requests wait (their latency
   * still counts from their intended time). Protects the client from unbounded memory.
   */
  readonly maxInFlight: number;
  /** After the window, how long to wait for outstanding requests before counting them as DRAIN_TIMEOUT. */
  readonly drainMs: number;
  readonly clock?: Clock;
  readonly onProgress?: (fraction: number) => void;
  /** Called once, just before the first request intended inside the measured window is sent. */
  readonly onMeasureStart?: () => void;
}

/**
 * Open loop with Poisson arrivals. Every request's latency runs from its intended send time
 * (coordinated-omission corrected, as wrk2). Requests intended during the warm-up are sent
 * but not recorded. Throughput = successes among requests intended in the window / window.
 */
export async function runOpenLoop(opts: OpenLoopOptions): Promise<WindowResult> {
  const clock = opts.clock ?? realClock;
  const rec = new LatencyRecorder();
  const lag = new LatencyRecorder();
  const errors = new Map<string, number>();
  const addError = (s: string): void => void errors.set(s, (errors.get(s) ?? 0) + 1);
  const schedule = poissonSchedule(opts.ratePerSec, opts.warmupMs + opts.durationMs, seededRandom(opts.seed));
  const total = opts.warmupMs + opts.durationMs;
  const t0 = clock.now();
  let inFlight = 0;
  let pending = 0; // measured requests not yet finished
  let slotFreed: (() => void) | undefined;
  let lastProgress = -Infinity;
  // Set once the drain wait is over: later completions are counted as DRAIN_TIMEOUT, not recorded.
  let drained = false;
  let measuring = false;

  for (const offset of schedule) {
    const intended = t0 + offset;
    if (clock.now() < intended) await clock.sleepUntil(intended);
    while (inFlight >= opts.maxInFlight) await new Promise<void>((r) => (slotFreed = r));
    const measured = offset >= opts.warmupMs;
    const sentAt = clock.now();
    if (opts.onProgress && sentAt - lastProgress >= 100) {
      lastProgress = sentAt;
      opts.onProgress(Math.min(1, (sentAt - t0) / total));
    }
    if (measured) {
      if (!measuring) {
        measuring = true;
        opts.onMeasureStart?.();
      }
      lag.recordMs(sentAt - intended);
      pending++;
    }
    inFlight++;
    void opts.invoke().then(
      () => {
        if (measured && !drained) rec.recordMs(clock.now() - intended);
      },
      (e: unknown) => {
        if (measured && !drained) addError(statusOf(e));
      },
    ).finally(() => {
      inFlight--;
      const f = slotFreed;
      slotFreed = undefined;
      f?.();
      if (measured && !drained) pending--;
    });
  }
  // Drain: wait for measured requests, up to drainMs past the end of the window.
  // Polled in short steps so no long timer outlives the run.
  const deadline = t0 + total + opts.drainMs;
  while (pending > 0 && clock.now() < deadline) await clock.sleepUntil(Math.min(clock.now() + 20, deadline));
  drained = true;
  if (pending > 0) errors.set('DRAIN_TIMEOUT', (errors.get('DRAIN_TIMEOUT') ?? 0) + pending);
  const sendLag = lag.summary();
  lag.destroy();
  return finish(rec, errors, opts.durationMs, { offeredRate: opts.ratePerSec, sendLag });
}
