import { randomBytes } from 'node:crypto';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { kmsReportData } from '../attestation/binding.js';
import { sha256 } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../common/hpke.js';
import { LEASE_JWS_TYPE, type Lease, type LeasePayload } from '../kms-broker/protocol.js';
import { ServerError } from './codes.js';
import {
  isDefinitiveRefusal,
  jwksLeaseVerifier,
  LeaseKeeper,
  UNSIGNED_LEASES_ALLOWED,
  type LeaseEvent,
  type LeaseVerifier,
  type ReleasedLease,
} from './lease.js';
import type { LoadedModel } from './registry.js';
import { FakeBroker, RecordingEvidenceProvider } from './testing.js';

const brokerError = (status: number, brokerCode: string) =>
  new ServerError(status >= 500 || status === 429 ? 'ERR_SRV_BROKER_UNAVAILABLE' : 'ERR_SRV_BROKER_DENIED', {
    detail: `renew: HTTP ${status} ${brokerCode}`,
    details: { status, brokerCode },
  });
const REVOKED = () => brokerError(403, 'ERR_KMS_LEASE_REVOKED');

describe('isDefinitiveRefusal', () => {
  it.each([
    [brokerError(403, 'ERR_KMS_LEASE_REVOKED'), true],
    [brokerError(403, 'ERR_KMS_POLICY_DENIED'), true],
    [brokerError(404, 'ERR_KMS_KEY_NOT_FOUND'), true],
    [brokerError(410, 'ERR_KMS_LEASE_EXPIRED'), true],
    [brokerError(403, 'ERR_KMS_NONCE_INVALID'), false],
    [brokerError(503, 'ERR_KMS_INTERNAL'), false],
    [brokerError(429, 'ERR_KMS_CHALLENGES_EXHAUSTED'), false],
    [new ServerError('ERR_SRV_BROKER_UNAVAILABLE', { detail: 'renew: request failed' }), false],
    [new ServerError('ERR_SRV_LEASE_INVALID'), false],
    [new Error('boom'), false],
  ])('%s -> %s', (e, want) => {
    expect(isDefinitiveRefusal(e)).toBe(want);
  });
});

describe('LeaseVerifier', () => {
  let hpke: HpkeKeyPair;
  let sign: (p: Partial<LeasePayload>, typ?: string) => Promise<Lease>;
  let verifier: LeaseVerifier;
  const nonce = randomBytes(32).toString('base64url');
  const lid = randomBytes(16).toString('base64url');

  beforeEach(async () => {
    hpke = await generateHpkeKeyPair();
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    verifier = jwksLeaseVerifier({ keys: [{ ...(await exportJWK(publicKey)), alg: 'ES256', kid: 'k' }] }, 'broker');
    sign = async (p, typ = LEASE_JWS_TYPE) => {
      const payload: LeasePayload = {
        iss: 'broker',
        lid,
        tenant: 'default',
        keyId: 'k1',
        version: 1,
        measurement: 'ab'.repeat(48),
        keyHash: sha256(hpke.publicKey).toString('base64url'),
        nonce,
        iat: 1000,
        exp: 1010,
        renewAfter: 1005,
        ...p,
      };
      const token = await new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256', kid: 'k', typ }).sign(privateKey);
      return { id: payload.lid, expiresAt: 'x', renewAfter: 'y', token };
    };
  });

  const expectation = () => ({ keyId: 'k1', version: 1, hpkePublicKey: hpke.publicKey, nonce });

  it('accepts a lease signed by the pinned key for our key, this key id/version and our nonce', async () => {
    const v = await verifier.verify(await sign({}), expectation());
    expect(v).toMatchObject({ lid, keyId: 'k1', version: 1, exp: 1010 });
  });

  it.each([
    ['another nonce (a replayed lease)', { nonce: randomBytes(32).toString('base64url') }],
    ['another HPKE key', { keyHash: sha256(randomBytes(32)).toString('base64url') }],
    ['another key id', { keyId: 'k2' }],
    ['another version', { version: 2 }],
    ['another issuer', { iss: 'mallory' }],
    ['renewAfter after exp', { renewAfter: 2000 }],
  ] as const)('refuses %s', async (_n, p) => {
    const err = await verifier.verify(await sign(p), expectation()).catch((e: unknown) => e);
    expect(isCirError(err) && err.code).toBe('ERR_SRV_LEASE_INVALID');
  });

  it('refuses another typ, another signer, a tampered payload, a changed lease id', async () => {
    const codeOf = async (l: Lease, e = expectation()) => {
      const err = await verifier.verify(l, e).catch((x: unknown) => x);
      return isCirError(err) ? err.code : 'accepted';
    };
    expect(await codeOf(await sign({}, 'cir-key-release+jws'))).toBe('ERR_SRV_LEASE_INVALID');
    const { privateKey } = await generateKeyPair('ES256');
    const good = await sign({});
    const [h, p] = good.token.split('.');
    const foreign = await new CompactSign(Buffer.from(p!, 'base64url')).setProtectedHeader({ alg: 'ES256', kid: 'k', typ: LEASE_JWS_TYPE }).sign(privateKey);
    expect(await codeOf({ ...good, token: foreign })).toBe('ERR_SRV_LEASE_INVALID');
    const body = JSON.parse(Buffer.from(p!, 'base64url').toString()) as LeasePayload;
    const tampered = `${h}.${Buffer.from(JSON.stringify({ ...body, exp: 99999 })).toString('base64url')}.${good.token.split('.')[2]}`;
    expect(await codeOf({ ...good, token: tampered })).toBe('ERR_SRV_LEASE_INVALID');
    expect(await codeOf({ ...good, id: randomBytes(16).toString('base64url') })).toBe('ERR_SRV_LEASE_INVALID');
    expect(await codeOf(good, { ...expectation(), lid: randomBytes(16).toString('base64url') } as never)).toBe('ERR_SRV_LEASE_INVALID');
    // The development relaxation skips the signature, not the binding.
    expect((await UNSIGNED_LEASES_ALLOWED.verify({ ...good, token: foreign }, expectation())).lid).toBe(lid);
    const other = await sign({ nonce: randomBytes(32).toString('base64url') });
    expect(await UNSIGNED_LEASES_ALLOWED.verify(other, expectation()).catch((e: unknown) => (isCirError(e) ? e.code : 'x'))).toBe('ERR_SRV_LEASE_INVALID');
  });
});

describe('LeaseKeeper', () => {
  const TTL = 10;
  const RENEW_AFTER = 5;
  let hpke: HpkeKeyPair;
  let broker: FakeBroker;
  let provider: RecordingEvidenceProvider;
  let verifier: LeaseVerifier;
  let events: LeaseEvent[];
  let withdrawn: string[];
  let republished: string[];
  let released: string[];
  let keeper: LeaseKeeper | undefined;
  /** While set, the background re-release is refused like a revoked key. */
  let rereleaseRefused: boolean;

  beforeEach(async () => {
    hpke = await generateHpkeKeyPair();
    vi.useFakeTimers({ now: new Date('2030-01-01T00:00:00Z'), toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    broker = new FakeBroker(new Map([['k1', new Map([[1, randomBytes(32)]])]]));
    broker.leaseTtlSeconds = TTL;
    broker.leaseRenewAfterSeconds = RENEW_AFTER;
    provider = new RecordingEvidenceProvider();
    verifier = await broker.leaseVerifier();
    events = [];
    withdrawn = [];
    republished = [];
    released = [];
    rereleaseRefused = true;
  });

  afterEach(async () => {
    await keeper?.close();
    keeper = undefined;
    vi.useRealTimers();
  });

  /** challenge -> attest -> release against the fake broker, as boot does; the lease checked. */
  async function obtain(): Promise<ReleasedLease> {
    const obtainedAt = Date.now();
    const ch = await broker.challenge();
    const evidence = await provider.collect(kmsReportData(Buffer.from(ch.nonce, 'base64url'), hpke.publicKey));
    const publicKey = Buffer.from(hpke.publicKey).toString('base64url');
    const at = await broker.attest({ nonce: ch.nonce, evidence: evidence as unknown as Record<string, unknown>, publicKey });
    const rel = await broker.release('k1', { token: at.token, publicKey, version: 1 });
    const lease = await verifier.verify(rel.lease, { keyId: 'k1', version: 1, hpkePublicKey: hpke.publicKey, nonce: ch.nonce });
    return { keyId: 'k1', version: 1, models: ['vad'], lease, obtainedAt };
  }

  function fakeModel(): LoadedModel {
    return {
      name: 'vad',
      version: '1',
      sealed: true,
      sha256: '00',
      signature: { inputs: [], outputs: [] } as unknown as LoadedModel['signature'],
      session: { release: async () => void released.push('vad') } as unknown as LoadedModel['session'],
    };
  }

  function start(r: ReleasedLease): LeaseKeeper {
    keeper = new LeaseKeeper({
      broker,
      provider,
      hpke,
      verifier,
      registry: {
        withdraw: async (name) => void withdrawn.push(name),
        republish: (m) => void republished.push(m.name),
      },
      rerelease: async () => {
        if (rereleaseRefused) throw brokerError(403, 'ERR_KMS_RELEASE_REVOKED');
        return { models: [fakeModel()], lease: await obtain() };
      },
      retry: { initialMs: 100, maxMs: 1000 },
      jitter: 0.1,
      random: () => 0.5,
      now: () => Date.now(),
      onEvent: (e) => events.push(e),
    });
    keeper.add(r);
    return keeper;
  }

  /** Advances fake time in small steps, letting each step's real async work (WebCrypto) finish. */
  async function advance(ms: number): Promise<void> {
    const step = 50;
    for (let t = 0; t < ms; t += step) {
      await vi.advanceTimersByTimeAsync(Math.min(step, ms - t));
      await keeper?.settled();
    }
  }

  const renewals = () => broker.calls.filter((c) => c.op === 'renew').length;
  const types = () => events.map((e) => e.type);

  it('renews at renewAfter (with jitter, never later) and keeps renewing; nothing is withdrawn', async () => {
    start(await obtain());
    await advance(RENEW_AFTER * 1000 * 0.9);
    expect(renewals()).toBe(0);
    // random 0.5 and jitter 0.1: 5% early.
    await advance(RENEW_AFTER * 1000 * 0.06);
    expect(renewals()).toBe(1);
    expect(events[0]).toMatchObject({ type: 'renewed', keyId: 'k1', version: 1 });
    await advance(60_000);
    expect(renewals()).toBeGreaterThanOrEqual(10);
    expect(withdrawn).toEqual([]);
    expect(keeper!.status()).toEqual([expect.objectContaining({ keyId: 'k1', phase: 'held' })]);
    // Same lease id throughout, each renewal re-attested with a fresh nonce.
    const lids = new Set(broker.leases.map((l) => l.lid));
    expect(lids.size).toBe(1);
    expect(new Set(broker.leases.map((l) => l.nonce)).size).toBe(broker.leases.length);
  });

  it('a revocation withdraws the model at the next renewal, within one renewal interval', async () => {
    start(await obtain());
    await advance(RENEW_AFTER * 1000);
    expect(renewals()).toBe(1);
    broker.always = { op: 'renew', error: REVOKED() };
    await advance(RENEW_AFTER * 1000);
    expect(withdrawn).toEqual(['vad']);
    expect(events).toContainEqual(expect.objectContaining({ type: 'withdrawn', reason: 'refused', code: 'ERR_SRV_BROKER_DENIED/ERR_KMS_LEASE_REVOKED' }));
    expect(keeper!.status()[0]!.phase).toBe('withdrawn');
    // No more renewals after a withdrawal; only re-release attempts.
    const n = renewals();
    await advance(30_000);
    expect(renewals()).toBe(n);
    expect(types()).toContain('rerelease-failed');
    expect(republished).toEqual([]);
  });

  it('a transient failure retries with backoff and withdraws only at expiry', async () => {
    start(await obtain());
    broker.always = { op: 'renew', error: brokerError(503, 'ERR_KMS_INTERNAL') };
    await advance(TTL * 1000 - 50);
    const failures = events.filter((e) => e.type === 'renew-failed');
    expect(failures.length).toBeGreaterThanOrEqual(3);
    expect(failures.every((e) => e.type === 'renew-failed' && !e.definitive)).toBe(true);
    expect(withdrawn).toEqual([]);
    await advance(100);
    expect(withdrawn).toEqual(['vad']);
    expect(events).toContainEqual(expect.objectContaining({ type: 'withdrawn', reason: 'expired' }));
  });

  it('a transient failure followed by success keeps serving', async () => {
    start(await obtain());
    broker.failNext('renew', brokerError(503, 'ERR_KMS_INTERNAL'), 2);
    await advance(RENEW_AFTER * 1000 + 2000);
    expect(types().slice(0, 3)).toEqual(['renew-failed', 'renew-failed', 'renewed']);
    await advance(60_000);
    expect(withdrawn).toEqual([]);
  });

  it('a broker that stops answering (unreachable) withdraws at expiry', async () => {
    start(await obtain());
    broker.always = { op: 'challenge', error: new ServerError('ERR_SRV_BROKER_UNAVAILABLE', { detail: 'challenge: request failed' }) };
    await advance(TTL * 1000 + 10);
    expect(withdrawn).toEqual(['vad']);
  });

  it('lifting the revocation brings the model back: republished, then renewed again', async () => {
    start(await obtain());
    broker.always = { op: 'renew', error: REVOKED() };
    await advance(RENEW_AFTER * 1000);
    expect(withdrawn).toEqual(['vad']);
    await advance(5_000);
    expect(republished).toEqual([]);
    broker.always = undefined;
    rereleaseRefused = false;
    await advance(2_000);
    expect(republished).toEqual(['vad']);
    expect(events).toContainEqual(expect.objectContaining({ type: 'republished', models: ['vad'] }));
    expect(keeper!.status()[0]!.phase).toBe('held');
    const n = renewals();
    await advance(RENEW_AFTER * 1000);
    expect(renewals()).toBe(n + 1);
  });

  it('a renewed lease that does not verify is a transient failure (then expiry)', async () => {
    const r = await obtain();
    start(r);
    // The broker hands back a lease bound to someone else's key.
    const realRenew = broker.renew.bind(broker);
    broker.renew = async (p) => realRenew({ ...p, publicKey: randomBytes(32).toString('base64url') });
    await advance(RENEW_AFTER * 1000);
    expect(events[0]).toMatchObject({ type: 'renew-failed', code: 'ERR_SRV_LEASE_INVALID', definitive: false });
    await advance(TTL * 1000);
    expect(withdrawn).toEqual(['vad']);
  });

  it('close() cancels every timer: nothing runs afterwards', async () => {
    start(await obtain());
    await keeper!.close();
    const calls = broker.calls.length;
    await advance(120_000);
    expect(broker.calls.length).toBe(calls);
    expect(withdrawn).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('a re-release that completes after close() is not published and its session is released', async () => {
    let finish!: () => void;
    keeper = new LeaseKeeper({
      broker,
      provider,
      hpke,
      verifier,
      registry: { withdraw: async (n) => void withdrawn.push(n), republish: (m) => void republished.push(m.name) },
      rerelease: async () => {
        await new Promise<void>((r) => (finish = r));
        return { models: [fakeModel()], lease: await obtain() };
      },
      retry: { initialMs: 100, maxMs: 1000 },
      random: () => 0,
      now: () => Date.now(),
    });
    broker.always = { op: 'renew', error: REVOKED() };
    keeper.add(await obtain());
    await vi.advanceTimersByTimeAsync(RENEW_AFTER * 1000 + 200);
    expect(withdrawn).toEqual(['vad']);
    const closing = keeper.close();
    finish();
    await closing;
    expect(republished).toEqual([]);
    expect(released).toEqual(['vad']);
  });
});
