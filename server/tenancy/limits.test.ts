import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { BucketMap, ConcurrencyMap, DailyCounters, FairShedder, msToUtcMidnight, TokenBucket } from './limits.js';
import { peerAddress, requestSize } from './tenancy.js';

const T0 = Date.parse('2025-06-01T23:59:59.000Z');

describe('TokenBucket', () => {
  it('allows a burst, then gives a retry hint, then refills at the rate', () => {
    const b = new TokenBucket(2, 3, T0);
    expect([b.take(T0), b.take(T0), b.take(T0)]).toEqual([0, 0, 0]);
    const wait = b.take(T0);
    expect(wait).toBe(500);
    expect(b.take(T0 + 499)).toBeGreaterThan(0);
    expect(b.take(T0 + 500)).toBe(0);
  });

  it('BucketMap stays bounded', () => {
    const m = new BucketMap(1, 1, 100);
    for (let i = 0; i < 1000; i++) m.take(`peer-${i}`, T0);
    expect(m.size).toBeLessThanOrEqual(100);
  });
});

describe('DailyCounters', () => {
  it('reset at UTC midnight and survive a restart through the state file', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-quota-'));
    try {
      const file = path.join(dir, 'q.json');
      const c = new DailyCounters(T0);
      c.add('k:a:r', 5, T0);
      await c.flush(file);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const restarted = new DailyCounters(T0);
      await restarted.load(file, T0);
      expect(restarted.get('k:a:r', T0)).toBe(5);
      expect(restarted.get('k:a:r', T0 + 1000)).toBe(0); // next UTC day
      const nextDay = new DailyCounters(T0 + 1000);
      await nextDay.load(file, T0 + 1000);
      expect(nextDay.get('k:a:r', T0 + 1000)).toBe(0);
      expect(msToUtcMidnight(T0)).toBe(1000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe('FairShedder', () => {
  it('caps a flooding tenant at its share once the queue is deep; a light tenant still gets in', () => {
    const s = new FairShedder(8, 4);
    let flood = 0;
    for (let i = 0; i < 100; i++) if (s.tryAcquire('a')) flood++;
    expect(flood).toBe(4); // alone: up to shedAt; the headroom stays free for others
    expect(s.tryAcquire('b')).toBe(true); // 5 in flight, b holds 0 < ceil(4/2)
    expect(s.tryAcquire('b')).toBe(true);
    expect(s.tryAcquire('b')).toBe(false); // b holds its share of 2
    expect(s.tryAcquire('a')).toBe(false);
    s.release('a');
    s.release('a');
    s.release('a');
    expect(s.tryAcquire('a')).toBe(true); // a down to 1 < 2
    expect(s.inflightOf('a')).toBe(2);
    expect(s.inflight).toBe(4);
    for (let i = 0; i < 10; i++) s.tryAcquire('c');
    expect(s.inflight).toBeLessThanOrEqual(8);
  });

  it('ConcurrencyMap enforces a cap and releases', () => {
    const c = new ConcurrencyMap();
    expect([c.tryAcquire('k', 2), c.tryAcquire('k', 2), c.tryAcquire('k', 2)]).toEqual([true, true, false]);
    c.release('k');
    expect(c.tryAcquire('k', 2)).toBe(true);
  });
});

describe('request size and peer parsing of untrusted input', () => {
  it('requestSize never throws and never returns a negative or NaN size', () => {
    fc.assert(
      fc.property(fc.anything(), fc.array(fc.record({ shape: fc.array(fc.oneof(fc.integer(), fc.string(), fc.double())), contents: fc.anything() })), (a, inputs) => {
        for (const req of [a, { inputs, raw_input_contents: [Buffer.alloc(3), 'x'] }]) {
          const s = requestSize(req);
          for (const v of [s.bytes, s.elements, s.batch]) {
            expect(Number.isNaN(v)).toBe(false);
            expect(v).toBeGreaterThanOrEqual(0);
          }
        }
      }),
    );
    expect(requestSize({ inputs: [{ shape: ['4', 3] }, { shape: [] }], raw_input_contents: [Buffer.alloc(48), Buffer.alloc(8)] })).toEqual({ bytes: 56, elements: 13, batch: 4 });
  });

  it('peerAddress strips scheme and port', () => {
    expect(peerAddress('ipv4:127.0.0.1:5555')).toBe('127.0.0.1');
    expect(peerAddress('ipv6:[::1]:5555')).toBe('::1');
    fc.assert(
      fc.property(fc.string(), (s) => {
        expect(peerAddress(s).length).toBeLessThanOrEqual(64);
      }),
    );
  });
});
