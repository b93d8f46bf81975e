import { describe, expect, it } from 'vitest';
import { poissonSchedule, runClosedLoop, runInterleaved, runOpenLoop, seededRandom, type Clock } from './load.js';

/** Discrete-event virtual time: sleepers wake in time order, after all pending microtasks settle. */
class FakeClock implements Clock {
  t = 0;
  private timers: { at: number; seq: number; resolve: () => void }[] = [];
  private seq = 0;
  now(): number {
    return this.t;
  }
  sleepUntil(at: number): Promise<void> {
    return new Promise((resolve) => this.timers.push({ at: Math.max(at, this.t), seq: this.seq++, resolve }));
  }
  async run<T>(p: Promise<T>): Promise<T> {
    let done = false;
    void p.finally(() => (done = true)).catch(() => undefined);
    for (;;) {
      await new Promise((r) => setImmediate(r));
      if (done) return p;
      this.timers.sort((a, b) => a.at - b.at || a.seq - b.seq);
      const next = this.timers.shift();
      if (!next) throw new Error('deadlock: nothing scheduled');
      this.t = next.at;
      next.resolve();
    }
  }
}

describe('seeded random and the Poisson schedule', () => {
  it('repeats for the same seed and differs for another', () => {
    const a = poissonSchedule(100, 1000, seededRandom(42));
    expect(poissonSchedule(100, 1000, seededRandom(42))).toEqual(a);
    expect(poissonSchedule(100, 1000, seededRandom(43))).not.toEqual(a);
  });

  it('has the target rate and exponential gaps (mean = sd = 1/rate)', () => {
    const rate = 1000;
    const s = poissonSchedule(rate, 100_000, seededRandom(7));
    expect(s.length / 100).toBeGreaterThan(rate * 0.98);
    expect(s.length / 100).toBeLessThan(rate * 1.02);
    const gaps = s.slice(1).map((t, i) => t - s[i]!);
    const mean = gaps.reduce((a, b) => a + b, 0) / gaps.length;
    const sd = Math.sqrt(gaps.reduce((a, g) => a + (g - mean) ** 2, 0) / gaps.length);
    expect(mean).toBeCloseTo(1, 1);
    expect(sd / mean).toBeGreaterThan(0.97);
    expect(sd / mean).toBeLessThan(1.03);
    // P(gap > mean) = e^-1 for an exponential distribution.
    expect(gaps.filter((g) => g > mean).length / gaps.length).toBeCloseTo(Math.exp(-1), 1);
    expect(s.every((t, i) => t >= 0 && t < 100_000 && (i === 0 || t > s[i - 1]!))).toBe(true);
  });

  it('rejects a non-positive rate', () => {
    expect(() => poissonSchedule(0, 10, seededRandom(1))).toThrow(RangeError);
  });
});

describe('open loop: coordinated-omission correction', () => {
  it('measures latency from the intended send time when the client is held back', async () => {
    // One request at a time, 50 ms each, arrivals ~every 10 ms: a queue builds up. A closed
    // loop (or a send-time measurement) would report 50 ms for every request.
    const clock = new FakeClock();
    const service = 50;
    const opts = { ratePerSec: 100, warmupMs: 0, durationMs: 1000, seed: 3, maxInFlight: 1, drainMs: 1e9 };
    const res = await clock.run(
      runOpenLoop({ ...opts, clock, invoke: () => clock.sleepUntil(clock.now() + service) }),
    );
    // Expected, from the same schedule: start_i = max(intended_i, finish_{i-1}).
    const schedule = poissonSchedule(opts.ratePerSec, opts.durationMs, seededRandom(opts.seed));
    let finish = 0;
    const expected = schedule.map((t) => {
      finish = Math.max(t, finish) + service;
      return finish - t;
    });
    expect(res.completed).toBe(schedule.length);
    expect(res.errorCount).toBe(0);
    expect(res.latency.maxMs).toBeCloseTo(Math.max(...expected), 0);
    expect(res.latency.minMs).toBeGreaterThanOrEqual(service * 0.999);
    expect(res.latency.p99Ms).toBeGreaterThan(10 * service);
    // The lag between intended and actual send is reported separately.
    expect(res.sendLag!.maxMs).toBeCloseTo(Math.max(...expected) - service, 0);
  });

  it('reports the service time exactly and the offered rate when the server keeps up', async () => {
    const clock = new FakeClock();
    const res = await clock.run(
      runOpenLoop({ clock, invoke: () => clock.sleepUntil(clock.now() + 5), ratePerSec: 200, warmupMs: 500, durationMs: 2000, seed: 9, maxInFlight: 100, drainMs: 1000 }),
    );
    expect(res.latency.p50Ms).toBeCloseTo(5, 2);
    expect(res.latency.maxMs).toBeCloseTo(5, 2);
    expect(res.sendLag!.maxMs).toBeLessThan(0.01);
    expect(res.throughput).toBeGreaterThan(180);
    expect(res.throughput).toBeLessThan(220);
    expect(res.offeredRate).toBe(200);
  });

  it('counts failures by status and unfinished requests as DRAIN_TIMEOUT', async () => {
    const clock = new FakeClock();
    let n = 0;
    const invoke = (): Promise<void> => {
      n++;
      if (n % 2 === 0) return Promise.reject(Object.assign(new Error('x'), { status: 'UNAVAILABLE' }));
      return n > 15 ? new Promise<void>(() => undefined) : clock.sleepUntil(clock.now() + 1);
    };
    const res = await clock.run(runOpenLoop({ clock, invoke, ratePerSec: 200, warmupMs: 0, durationMs: 200, seed: 1, maxInFlight: 100, drainMs: 100 }));
    expect(res.errors['UNAVAILABLE']).toBeGreaterThan(0);
    expect(res.errors['DRAIN_TIMEOUT']).toBeGreaterThan(0);
    expect(res.completed + res.errorCount).toBe(poissonSchedule(200, 200, seededRandom(1)).length);
  });
});

describe('closed loop', () => {
  it('keeps `concurrency` requests outstanding and records only the window', async () => {
    const clock = new FakeClock();
    const res = await clock.run(
      runClosedLoop({ clock, invoke: () => clock.sleepUntil(clock.now() + 10), concurrency: 4, warmupMs: 100, durationMs: 1000 }),
    );
    expect(res.completed).toBe(400);
    expect(res.throughput).toBe(400);
    expect(res.latency.p50Ms).toBeCloseTo(10, 1);
    expect(res.errorCount).toBe(0);
  });
});

describe('interleaved pair', () => {
  it('alternates the two targets request by request and records each separately', async () => {
    const clock = new FakeClock();
    const calls: string[] = [];
    const res = await clock.run(
      runInterleaved({
        clock,
        invokeA: () => (calls.push('a'), clock.sleepUntil(clock.now() + 1)),
        invokeB: () => (calls.push('b'), clock.sleepUntil(clock.now() + 1.25)),
        concurrency: 1,
        warmupMs: 10,
        durationMs: 900,
      }),
    );
    // One worker: a, b, a, b, ... (2.25 ms per pair: 400 pairs in the 900 ms window).
    expect(calls.slice(0, 6).join('')).toBe('ababab');
    expect(res.a.completed).toBe(400);
    expect(res.b.completed).toBe(400);
    expect(res.a.latency.p50Ms).toBeCloseTo(1, 2);
    expect(res.b.latency.p50Ms).toBeCloseTo(1.25, 2);
  });

  it('starts half the workers on each target and counts errors per target', async () => {
    const clock = new FakeClock();
    const first: string[] = [];
    let n = 0;
    const res = await clock.run(
      runInterleaved({
        clock,
        invokeA: async () => {
          if (n++ < 2) first.push('a');
          await clock.sleepUntil(clock.now() + 1);
        },
        invokeB: async () => {
          if (n++ < 2) first.push('b');
          await clock.sleepUntil(clock.now() + 1);
          throw Object.assign(new Error('x'), { status: 'UNAVAILABLE' });
        },
        concurrency: 2,
        warmupMs: 0,
        durationMs: 100,
      }),
    );
    expect(first.sort()).toEqual(['a', 'b']);
    expect(res.a.errorCount).toBe(0);
    expect(res.b.errors['UNAVAILABLE']).toBeGreaterThan(0);
    expect(res.b.completed).toBe(0);
  });
});

describe('the start of the measured window (onMeasureStart)', () => {
  /** An invoke that logs when each request is sent, and a hook that logs itself in the same list. */
  function traced(clock: FakeClock, ms: number): { events: (number | 'start')[]; invoke: () => Promise<void>; onMeasureStart: () => void } {
    const events: (number | 'start')[] = [];
    return {
      events,
      invoke: () => (events.push(clock.now()), clock.sleepUntil(clock.now() + ms)),
      onMeasureStart: () => void events.push('start'),
    };
  }
  /** Every send before the hook is before `warmupMs`; every send after it is at or after. */
  function splitAt(events: readonly (number | 'start')[], warmupMs: number): void {
    expect(events.filter((e) => e === 'start')).toHaveLength(1);
    const at = events.indexOf('start');
    expect(events.slice(0, at).every((t) => typeof t === 'number' && t < warmupMs)).toBe(true);
    expect(events.slice(at + 1).every((t) => typeof t === 'number' && t >= warmupMs)).toBe(true);
    expect(events.length - at - 1).toBeGreaterThan(0);
  }

  it('closed loop: called once, between the last warm-up request and the first measured one', async () => {
    const clock = new FakeClock();
    const t = traced(clock, 3);
    await clock.run(runClosedLoop({ clock, invoke: t.invoke, concurrency: 3, warmupMs: 50, durationMs: 200, onMeasureStart: t.onMeasureStart }));
    splitAt(t.events, 50);
  });

  it('interleaved pair: called once for both targets', async () => {
    const clock = new FakeClock();
    const t = traced(clock, 2);
    await clock.run(runInterleaved({ clock, invokeA: t.invoke, invokeB: t.invoke, concurrency: 2, warmupMs: 20, durationMs: 100, onMeasureStart: t.onMeasureStart }));
    splitAt(t.events, 20);
  });

  it('open loop: called once, before the first request intended inside the window', async () => {
    const clock = new FakeClock();
    const t = traced(clock, 1);
    await clock.run(
      runOpenLoop({ clock, invoke: t.invoke, ratePerSec: 300, warmupMs: 100, durationMs: 300, seed: 5, maxInFlight: 10, drainMs: 100, onMeasureStart: t.onMeasureStart }),
    );
    splitAt(t.events, 100);
  });

  it('is not called when no request falls in the window', async () => {
    const clock = new FakeClock();
    const t = traced(clock, 1);
    await clock.run(runClosedLoop({ clock, invoke: t.invoke, concurrency: 2, warmupMs: 30, durationMs: 0, onMeasureStart: t.onMeasureStart }));
    await clock.run(runOpenLoop({ clock, invoke: t.invoke, ratePerSec: 500, warmupMs: 30, durationMs: 0, seed: 5, maxInFlight: 10, drainMs: 10, onMeasureStart: t.onMeasureStart }));
    expect(t.events.length).toBeGreaterThan(10);
    expect(t.events).not.toContain('start');
  });
});
