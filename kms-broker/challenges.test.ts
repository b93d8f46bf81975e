import { describe, expect, it } from 'vitest';
import { ChallengeStore, challengeClientKey } from './challenges.js';
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

describe('ChallengeStore per-client bound', () => {
  it('one client at its cap does not stop another client', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 100, maxPerClient: 2, now: clock.now });
    s.issue('a');
    s.issue('a');
    expect(() => s.issue('a')).toThrow(expect.objectContaining({ code: 'ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED', category: 'overload' }));
    expect(s.issue('b').nonce).toHaveLength(32);
    expect(s.outstandingFor('a')).toBe(2);
    expect(s.outstandingFor('b')).toBe(1);
  });

  it('frees a slot when a nonce is consumed', () => {
    const s = new ChallengeStore({ ttlMs: 60_000, max: 100, maxPerClient: 1, now: () => new Date(0) });
    const c = s.issue('a');
    expect(() => s.issue('a')).toThrow(expect.objectContaining({ code: 'ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED' }));
    s.consume(c.nonce);
    expect(s.outstandingFor('a')).toBe(0);
    expect(() => s.issue('a')).not.toThrow();
  });

  it('evicts the client\'s expired nonces before refusing, even out of expiry order', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 100, maxPerClient: 2, now: clock.now });
    s.issue('b'); // expires T0+60, live throughout: blocks the in-order sweep
    clock.advance(-30);
    s.issue('a'); // expires T0+30
    s.issue('a');
    expect(() => s.issue('a')).toThrow(expect.objectContaining({ code: 'ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED' }));
    clock.advance(61); // T0+31: a's expired, b's live
    expect(() => s.issue('a')).not.toThrow();
    expect(s.outstandingFor('a')).toBe(1);
  });

  it('says when to retry: when the client\'s oldest nonce expires', () => {
    const clock = new Clock();
    const s = new ChallengeStore({ ttlMs: 60_000, max: 100, maxPerClient: 1, now: clock.now });
    s.issue('a');
    clock.advance(20);
    expect(() => s.issue('a')).toThrow(expect.objectContaining({ details: { retryAfterSeconds: 40 } }));
  });

  it('keeps the global bound across clients', () => {
    const s = new ChallengeStore({ ttlMs: 60_000, max: 3, maxPerClient: 2, now: () => new Date(0) });
    s.issue('a');
    s.issue('a');
    s.issue('b');
    expect(() => s.issue('c')).toThrow(expect.objectContaining({ code: 'ERR_KMS_CHALLENGES_EXHAUSTED' }));
  });
});

describe('challengeClientKey', () => {
  it.each([
    ['192.0.2.7', '192.0.2.7'],
    ['::ffff:192.0.2.7', '192.0.2.7'],
    ['2001:db8:1:2:aaaa::1', '2001:db8:1:2::/64'],
    ['2001:db8:1:2:bbbb:cccc:dddd:eeee', '2001:db8:1:2::/64'],
    ['2001:0db8:0001:0002::', '2001:db8:1:2::/64'],
    ['::1', '0:0:0:0::/64'],
    ['fe80::1%eth0', 'fe80:0:0:0::/64'],
    ['2001:db8::192.0.2.1', '2001:db8:0:0::/64'],
    ['not-an-ip', 'not-an-ip'],
  ])('%s -> %s', (ip, key) => {
    expect(challengeClientKey(ip)).toBe(key);
  });

  it('puts two addresses of one IPv6 /64 in one bucket and another /64 in another', () => {
    expect(challengeClientKey('2001:db8:0:1::a')).toBe(challengeClientKey('2001:db8:0:1:ffff::b'));
    expect(challengeClientKey('2001:db8:0:1::a')).not.toBe(challengeClientKey('2001:db8:0:2::a'));
  });
});

describe('POST /v1/attest/challenge', () => {
  // Bug: the route is unauthenticated and the store is shared, so ~170 req/s from one
  // client filled all 10 000 slots and locked every real server out.
  it('bug: one client at its per-client cap does not stop another client from getting a challenge', async () => {
    const h = await makeHarness({ config: { maxOutstandingChallengesPerClient: 3 } });
    try {
      const from = (remoteAddress: string) => h.app.inject({ method: 'POST', url: '/v1/attest/challenge', remoteAddress });
      for (let i = 0; i < 3; i++) expect((await from('198.51.100.1')).statusCode).toBe(200);
      const refused = await from('198.51.100.1');
      expect(refused.statusCode).toBe(429);
      expect(refused.json()).toMatchObject({ code: 'ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED', status: 429 });
      expect(refused.headers['retry-after']).toBe('60');
      // another address of the same IPv6 /64 counts as the same client
      for (let i = 0; i < 3; i++) expect((await from(`2001:db8:0:1::${i + 1}`)).statusCode).toBe(200);
      expect((await from('2001:db8:0:1::99')).statusCode).toBe(429);
      const other = await from('203.0.113.9');
      expect(other.statusCode).toBe(200);
      expect(Buffer.from(other.json().nonce, 'base64url')).toHaveLength(32);
      // the flooder's nonces expire, then it may ask again
      h.clock.advance(60);
      expect((await from('198.51.100.1')).statusCode).toBe(200);
    } finally {
      await h.close();
    }
  });


  it('answers 429 with a problem document when the bound is hit', async () => {
    const h = await makeHarness({ config: { maxOutstandingChallenges: 2 } });
    expect(h.config.maxOutstandingChallengesPerClient).toBe(16);
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
