/**
 * The idle poller: polls only while nothing is in flight, only for its window after the
 * last call ends, never after stop(); off costs nothing (the handler is returned as is).
 * A fake clock and turn queue make every step deterministic; one test runs on the real
 * event loop.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createIdlePoller, MAX_IDLE_POLL_US, type IdlePoller } from './idle-poll.js';

/** A clock in ms and a queue of scheduled turns that the test runs by hand. */
function fakeLoop(): { now: () => number; advance(ms: number): void; schedule(t: () => void): void; pending(): number; runTurn(): void } {
  let t = 0;
  const queue: (() => void)[] = [];
  return {
    now: () => t,
    advance(ms) {
      t += ms;
    },
    schedule(turn) {
      queue.push(turn);
    },
    pending: () => queue.length,
    runTurn() {
      const turn = queue.shift();
      if (!turn) throw new Error('no turn scheduled');
      turn();
    },
  };
}

/** A handler whose calls the test ends by hand. */
function gate(): { fn: (x: number) => Promise<number>; finish(ok?: boolean): Promise<void> } {
  const open: { resolve: (v: number) => void; reject: (e: Error) => void }[] = [];
  return {
    fn: (x) => new Promise<number>((resolve, reject) => open.push({ resolve: () => resolve(x), reject })),
    async finish(ok = true) {
      const c = open.shift()!;
      if (ok) c.resolve(0);
      else c.reject(new Error('handler failed'));
      // Let the tracked wrapper's finally run.
      await new Promise((r) => setImmediate(r));
    },
  };
}

/** A 1000 µs poller on a fake loop, after one call has come and gone (so it is polling). */
async function afterOneCall(): Promise<{ loop: ReturnType<typeof fakeLoop>; p: IdlePoller; g: ReturnType<typeof gate>; run: (x: number) => Promise<number> }> {
  const loop = fakeLoop();
  const p = createIdlePoller(1000, loop);
  const g = gate();
  const run = p.track(g.fn);
  const first = run(1);
  await g.finish();
  await first;
  return { loop, p, g, run };
}

describe('idle poller', () => {
  it('off (0) returns the handler itself and never schedules', async () => {
    const loop = fakeLoop();
    const p = createIdlePoller(0, loop);
    const fn = async (x: number) => x + 1;
    expect(p.track(fn)).toBe(fn);
    expect(p.polling).toBe(false);
    expect(loop.pending()).toBe(0);
  });

  it.each([-1, 1.5, MAX_IDLE_POLL_US + 1, Number.NaN])('refuses a window of %s µs', (us) => {
    expect(() => createIdlePoller(us)).toThrow(RangeError);
  });

  it('polls after the last call until the window has passed, then stops', async () => {
    const loop = fakeLoop();
    const p = createIdlePoller(1000, loop);
    const g = gate();
    const run = p.track(g.fn);
    const done = run(7);
    expect(loop.pending()).toBe(0);
    await g.finish();
    expect(await done).toBe(7);
    expect(p.polling).toBe(true);
    // Turns keep coming while the clock is inside the window.
    for (let i = 0; i < 5; i++) {
      loop.advance(0.1);
      loop.runTurn();
      expect(loop.pending()).toBe(1);
    }
    loop.advance(0.5); // 1.0 ms after the call ended
    loop.runTurn();
    expect(loop.pending()).toBe(0);
    expect(p.polling).toBe(false);
  });

  it('stops at the next turn once a call is in flight, and polls again when the last one ends', async () => {
    const { loop, p, g, run } = await afterOneCall();
    expect(p.polling).toBe(true);
    const a = run(2);
    const b = run(3);
    loop.runTurn();
    expect(p.polling).toBe(false);
    expect(loop.pending()).toBe(0);
    await g.finish();
    await a;
    expect(p.polling).toBe(false); // b is still in flight
    expect(loop.pending()).toBe(0);
    loop.advance(5); // long after the first window
    await g.finish();
    await b;
    expect(p.polling).toBe(true); // a fresh window from b's end
    loop.advance(0.9);
    loop.runTurn();
    expect(loop.pending()).toBe(1);
  });

  it('a failed call leaves too, and its error reaches the caller', async () => {
    const loop = fakeLoop();
    const p = createIdlePoller(1000, loop);
    const g = gate();
    const done = p.track(g.fn)(1);
    const failed = expect(done).rejects.toThrow('handler failed');
    await g.finish(false);
    await failed;
    expect(p.polling).toBe(true);
  });

  it('stop() ends the chain at its next turn and no call starts it again', async () => {
    const { loop, p, g, run } = await afterOneCall();
    p.stop();
    loop.runTurn();
    expect(p.polling).toBe(false);
    const second = run(2);
    await g.finish();
    expect(await second).toBe(2);
    expect(loop.pending()).toBe(0);
  });

  it('holds its invariants under any sequence of calls, turns and time', async () => {
    type Op = { kind: 'start' } | { kind: 'end' } | { kind: 'turn' } | { kind: 'advance'; ms: number };
    const op = fc.oneof(
      fc.constant<Op>({ kind: 'start' }),
      fc.constant<Op>({ kind: 'end' }),
      fc.constant<Op>({ kind: 'turn' }),
      fc.double({ min: 0, max: 2, noNaN: true }).map((ms): Op => ({ kind: 'advance', ms })),
    );
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: MAX_IDLE_POLL_US }), fc.array(op, { maxLength: 60 }), async (us, ops) => {
        const loop = fakeLoop();
        const p: IdlePoller = createIdlePoller(us, loop);
        const g = gate();
        const run = p.track(g.fn);
        let inFlight = 0;
        let lastEnd = Number.NEGATIVE_INFINITY;
        for (const o of ops) {
          if (o.kind === 'start') {
            inFlight++;
            void run(0);
          } else if (o.kind === 'end' && inFlight > 0) {
            inFlight--;
            await g.finish();
            if (inFlight === 0) lastEnd = loop.now();
          } else if (o.kind === 'turn' && loop.pending() > 0) {
            loop.runTurn();
            // A turn that polled (scheduled the next) happened with nothing in flight, inside the window.
            if (loop.pending() === 1) {
              expect(inFlight).toBe(0);
              expect(loop.now() - lastEnd).toBeLessThan(us / 1000);
            }
          } else if (o.kind === 'advance') {
            loop.advance(o.ms);
          }
          // One chain at most, and `polling` says whether it is scheduled.
          expect(loop.pending()).toBeLessThanOrEqual(1);
          expect(p.polling).toBe(loop.pending() === 1);
        }
        while (inFlight > 0) {
          inFlight--;
          await g.finish();
        }
      }),
      { numRuns: 200 },
    );
  });

  it('on the real event loop, polls right after a call and has stopped once the window is past', async () => {
    const p = createIdlePoller(1000);
    const run = p.track(async (x: number) => x);
    expect(await run(5)).toBe(5);
    expect(p.polling).toBe(true);
    await new Promise((r) => setTimeout(r, 30));
    expect(p.polling).toBe(false);
  });
});
