import { describe, expect, it } from 'vitest';
import { ChallengeStore } from './challenges.js';
import { Clock, makeHarness } from './testdata/harness.js';

describe('ChallengeStore', () => {
  it('issues 32 random bytes that expire after the TTL', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 10, now: clock.now });
    const c = s.issue();
    expect(c.nonce).toHaveLength(32);
    expect(c.expiresAt.getTime() - clock.now().getTime()).toBe(60_000);
    expect(s.issue().nonce.equals(c.nonce)).toBe(false);
  });

  it('accepts a nonce once only', () => {
    const s = new ChallengeStore({ ttlMs: 60_000, max: 10, now: () => new Date(0) });
    const { nonce } = s.issue();
    s.consume(nonce);
    expect(() => s.consume(nonce)).toThrow(expect.objectContaining({ code: 'ERR_KMS_NONCE_INVALID' }));
  });

  it('accepts just before expiry, refuses at expiry (and forgets the nonce)', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 10, now: clock.now });
    const a = s.issue();
    const b = s.issue();
    clock.advance(59.999);
    s.consume(a.nonce);
    clock.advance(0.001);
    expect(() => s.consume(b.nonce)).toThrow(expect.objectContaining({ code: 'ERR_KMS_NONCE_INVALID', detail: 'expired' }));
    expect(s.size).toBe(0);
  });

  it('refuses unknown nonces', () => {
    const s = new ChallengeStore({ ttlMs: 60_000, max: 10, now: () => new Date(0) });
    expect(() => s.consume(Buffer.alloc(32))).toThrow(expect.objectContaining({ code: 'ERR_KMS_NONCE_INVALID' }));
  });

  it('is bounded: refuses when full of live nonces, never evicting one', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 3, now: clock.now });
    const first = s.issue();
    s.issue();
    s.issue();
    expect(() => s.issue()).toThrow(expect.objectContaining({ code: 'ERR_KMS_CHALLENGES_EXHAUSTED', category: 'overload' }));
    s.consume(first.nonce); // still valid: nothing was evicted
    expect(s.issue().nonce).toHaveLength(32);
  });

  it('drops expired nonces to make room', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 2, now: clock.now });
    s.issue();
    s.issue();
    clock.advance(60);
    expect(() => s.issue()).not.toThrow();
    expect(s.size).toBe(1);
  });

  it('makes room even after the clock steps back (expiry out of insertion order)', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 2, now: clock.now });
    s.issue(); // expires T0+60
    clock.advance(-30);
    s.issue(); // expires T0+30: behind the first in insertion order
    clock.advance(65); // now T0+35: the second has expired, the first is live
    expect(() => s.issue()).not.toThrow();
  });
});

describe('POST /v1/attest/challenge', () => {
  it('answers 429 with a problem document when the bound is hit', async () => {
    const h = await makeHarness({ config: { maxOutstandingChallenges: 2 } });
    try {
      for (let i = 0; i < 2; i++) expect((await h.app.inject({ method: 'POST', url: '/v1/attest/challenge' })).statusCode).toBe(200);
      const res = await h.app.inject({ method: 'POST', url: '/v1/attest/challenge' });
      expect(res.statusCode).toBe(429);
      expect(res.headers['retry-after']).toBeDefined();
      expect(res.json()).toMatchObject({ code: 'ERR_KMS_CHALLENGES_EXHAUSTED', status: 429 });
      h.clock.advance(60);
      expect((await h.app.inject({ method: 'POST', url: '/v1/attest/challenge' })).statusCode).toBe(200);
    } finally {
      await h.close();
    }
  });
});
