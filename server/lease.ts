/**
 * Key leases on the server side: every released key comes with a lease (kms-broker/leases.ts)
 * that must be renewed, with a fresh attestation, before it expires. `LeaseKeeper` holds one
 * lease per released (keyId, version) and the models loaded under that key, and:
 *
 *   - renews at the lease's `renewAfter` (minus up to `jitter` of the interval, so a fleet
 *     does not renew in lockstep): challenge -> evidence -> attest -> renew;
 *   - on a definitive refusal (HTTP 403, 404 or 410 from the broker: revoked, policy denied,
 *     key disabled or gone, lease expired) withdraws the models at once
 *     (`registry.withdraw`): a revocation stops serving within one renewal interval;
 *   - on a transient failure (broker unreachable, 5xx, 429, evidence or lease-check
 *     failure, anything else) retries with backoff, and withdraws when the lease expires;
 *   - once withdrawn, keeps trying a full release in the background (`rerelease`, with
 *     backoff) and republishes the models when the broker releases the key again (a
 *     revocation was lifted, a policy fixed).
 *
 * Time: lease durations come from the signed payload (`renewAfter - iat`, `exp - iat`) and
 * run on the local monotonic clock from when the request that obtained the lease was
 * *sent*, so neither clock skew nor network delay extends a lease. A renewed lease must
 * carry the nonce of the attestation this server just made (checked by `LeaseVerifier`),
 * so a replayed older renewal cannot keep a revoked model alive.
 *
 * Zeroization: the server holds no DEK after loading (boot.ts zero-fills each DEK once the
 * model is decrypted, and the decrypted ONNX bytes once onnxruntime has built its session).
 * Withdrawal drops the onnxruntime session (`session.release()`) and any plaintext buffers
 * the registry holds. onnxruntime's own internal copy of the weights is freed back to its
 * allocator by `release()`, NOT overwritten: those pages are unreachable from JavaScript but
 * may keep the weights until reused. The key itself is gone long before that.
 *
 * Every timer is cancelled by `close()`; nothing is scheduled after it. Logs carry the
 * lease id prefix, key id, version and decision or error code; never tokens or keys.
 */
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import type { Logger } from 'pino';
import type { EvidenceProvider } from '../attestation/types.js';
import { kmsReportData } from '../attestation/binding.js';
import { constantTimeEqual, fromBase64Url, sha256 } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import type { HpkeKeyPair } from '../common/hpke.js';
import { LEASE_JWS_TYPE, LeasePayloadSchema, MAX_LEASE_JWS_LENGTH, type Lease, type LeasePayload } from '../kms-broker/protocol.js';
import { backoffDelay, type RetryPolicy } from './boot.js';
import type { BrokerClient } from './broker-client.js';
import { readPinnedJwks } from './release-verify.js';
import { ServerError } from './codes.js';
import type { LoadedModel } from './registry.js';

// ---------------------------------------------------------------------------------------
// Verifying leases
// ---------------------------------------------------------------------------------------

/** A lease whose signature and binding were checked, with its JWS for the next renewal. */
export interface VerifiedLease extends LeasePayload {
  readonly token: string;
}

/** What a lease must be about. */
export interface LeaseExpectation {
  readonly keyId: string;
  readonly version: number;
  /** This server's raw HPKE public key; the lease's keyHash must be its SHA-256. */
  readonly hpkePublicKey: Uint8Array;
  /** base64url nonce of the attestation the release or renewal was requested with. */
  readonly nonce: string;
  /** On renewal: the lease id must stay the same. */
  readonly lid?: string;
}

export interface LeaseVerifier {
  /**
   * Checks a lease from a release or renewal: compact JWS, ES256 only, signed by a pinned
   * broker key, `typ` LEASE_JWS_TYPE, payload schema, `id` = `lid`, key id and version,
   * keyHash = SHA-256(our HPKE key) and nonce = the one we attested with (both constant
   * time). Throws `ERR_SRV_LEASE_INVALID`. Does not check expiry against a wall clock
   * (the keeper runs durations on the monotonic clock).
   */
  verify(lease: Lease, expect: LeaseExpectation): Promise<VerifiedLease>;
  /** True only for the development relaxation that skips the signature. */
  readonly unsigned: boolean;
}

function invalid(detail: string, cause?: unknown): ServerError {
  return new ServerError('ERR_SRV_LEASE_INVALID', { detail, ...(cause ? { cause } : {}) });
}

function checkPayload(lease: Lease, payloadBytes: Uint8Array, expect: LeaseExpectation): VerifiedLease {
  let p: LeasePayload;
  try {
    p = LeasePayloadSchema.parse(JSON.parse(Buffer.from(payloadBytes).toString('utf8')));
  } catch (cause) {
    throw invalid('signed payload is malformed', cause);
  }
  if (p.lid !== lease.id || (expect.lid !== undefined && p.lid !== expect.lid)) throw invalid('lease id differs');
  if (p.keyId !== expect.keyId || p.version !== expect.version) throw invalid('lease is for another key or version');
  const keyHash = fromBase64Url(p.keyHash);
  const nonce = fromBase64Url(p.nonce);
  const wantNonce = fromBase64Url(expect.nonce);
  const okKey = keyHash !== undefined && constantTimeEqual(keyHash, sha256(expect.hpkePublicKey));
  const okNonce = nonce !== undefined && wantNonce !== undefined && constantTimeEqual(nonce, wantNonce);
  if (!okKey) throw invalid('lease is bound to another key');
  // SECURITY: a lease granted on an older attestation (a replayed renewal) is refused.
  if (!okNonce) throw invalid('lease does not carry our attestation nonce');
  return Object.freeze({ ...p, token: lease.token });
}

/** A verifier pinned to the broker's JWKS (the file the broker writes as `<stateDir>/jwks.json`). */
export function jwksLeaseVerifier(jwks: JSONWebKeySet, expectedIssuer?: string): LeaseVerifier {
  const keySet = createLocalJWKSet(jwks);
  return {
    unsigned: false,
    async verify(lease, expect) {
      if (lease.token.length > MAX_LEASE_JWS_LENGTH) throw invalid('too long');
      let payload: Uint8Array;
      try {
        const r = await compactVerify(lease.token, keySet, { algorithms: ['ES256'] });
        if (r.protectedHeader.typ !== LEASE_JWS_TYPE) throw invalid('unexpected JWS typ');
        payload = r.payload;
      } catch (e) {
        if (e instanceof ServerError) throw e;
        throw invalid('signature does not verify with the pinned broker keys', e);
      }
      const v = checkPayload(lease, payload, expect);
      if (expectedIssuer !== undefined && v.iss !== expectedIssuer) throw invalid('issuer differs');
      return v;
    },
  };
}

/**
 * SECURITY: development relaxation (goes with `broker.allowUnsignedRelease`): the lease's
 * signature is not checked; its payload still is. Refused when NODE_ENV=production (app.ts).
 */
export const UNSIGNED_LEASES_ALLOWED: LeaseVerifier = Object.freeze({
  unsigned: true,
  async verify(lease: Lease, expect: LeaseExpectation): Promise<VerifiedLease> {
    const parts = lease.token.split('.');
    if (parts.length !== 3 || lease.token.length > MAX_LEASE_JWS_LENGTH) throw invalid('not a compact JWS');
    try {
      if (decodeProtectedHeader(lease.token).typ !== LEASE_JWS_TYPE) throw invalid('unexpected JWS typ');
    } catch (e) {
      if (e instanceof ServerError) throw e;
      throw invalid('malformed header', e);
    }
    return checkPayload(lease, Buffer.from(parts[1]!, 'base64url'), expect);
  },
});

/** Reads the pinned JWKS file (`broker.jwksFile`). Throws `ERR_SRV_CONFIG`. */
export async function loadLeaseVerifier(file: string, expectedIssuer?: string): Promise<LeaseVerifier> {
  return jwksLeaseVerifier(await readPinnedJwks(file), expectedIssuer);
}

// ---------------------------------------------------------------------------------------
// Keeping leases
// ---------------------------------------------------------------------------------------

/** A lease obtained by a release, with the models loaded under its key. */
export interface ReleasedLease {
  readonly keyId: string;
  readonly version: number;
  /** Names of the models decrypted with this key. */
  readonly models: readonly string[];
  readonly lease: VerifiedLease;
  /** Monotonic time (ms, the keeper's `now`) when the request that obtained it was sent. */
  readonly obtainedAt: number;
}

export type LeaseEvent =
  | { readonly type: 'renewed'; readonly keyId: string; readonly version: number; readonly lease: string }
  | { readonly type: 'renew-failed'; readonly keyId: string; readonly version: number; readonly code: string; readonly definitive: boolean; readonly attempt: number }
  | { readonly type: 'withdrawn'; readonly keyId: string; readonly version: number; readonly models: readonly string[]; readonly reason: 'refused' | 'expired'; readonly code?: string }
  | { readonly type: 'rerelease-failed'; readonly keyId: string; readonly version: number; readonly code: string; readonly attempt: number }
  | { readonly type: 'republished'; readonly keyId: string; readonly version: number; readonly models: readonly string[]; readonly lease: string };

/** What the keeper needs of the registry (server/registry.ts). */
export interface LeaseRegistry {
  /** Stops serving `name` at once, releases its session and zeroes its plaintext buffers. */
  withdraw(name: string): Promise<void> | void;
  /** Serves a freshly loaded model again. */
  republish(model: LoadedModel): void;
}

/** A full release of one key and a reload of its models (boot.ts `releaseAndLoad`). */
export type Rerelease = (keyId: string, version: number, signal: AbortSignal) => Promise<{ models: LoadedModel[]; lease: ReleasedLease }>;

export interface LeaseKeeperOptions {
  readonly broker: Pick<BrokerClient, 'challenge' | 'attest' | 'renew'>;
  readonly provider: EvidenceProvider;
  readonly hpke: HpkeKeyPair;
  readonly verifier: LeaseVerifier;
  readonly registry: LeaseRegistry;
  readonly rerelease: Rerelease;
  /** Backoff of renewal retries and of background re-releases (`maxAttempts` is ignored). */
  readonly retry: RetryPolicy;
  /** Renew up to this fraction of the renewal interval early (default 0.1). */
  readonly jitter?: number;
  readonly logger?: Logger;
  readonly onEvent?: (e: LeaseEvent) => void;
  // Injected for tests.
  readonly random?: () => number;
  /** Monotonic milliseconds; defaults to `performance.now()`. */
  readonly now?: () => number;
}

/** HTTP statuses from the broker that are a final answer: stop serving now. */
const DEFINITIVE_STATUSES: ReadonlySet<number> = new Set([403, 404, 410]);

/** Whether a renewal failure is a definitive refusal (see the module comment). */
export function isDefinitiveRefusal(e: unknown): boolean {
  if (!isCirError(e)) return false;
  const status = e.details?.['status'];
  if (typeof status !== 'number' || !DEFINITIVE_STATUSES.has(status)) return false;
  // A used or expired nonce says nothing about the key: try again.
  return e.details?.['brokerCode'] !== 'ERR_KMS_NONCE_INVALID';
}

function codeOf(e: unknown): string {
  if (!isCirError(e)) return 'ERR_UNEXPECTED';
  const broker = e.details?.['brokerCode'];
  return typeof broker === 'string' ? `${e.code}/${broker}` : e.code;
}

interface Entry {
  readonly keyId: string;
  readonly version: number;
  models: readonly string[];
  lease: VerifiedLease | undefined;
  obtainedAt: number;
  phase: 'held' | 'withdrawn';
  attempt: number;
  renewTimer: NodeJS.Timeout | undefined;
  expiryTimer: NodeJS.Timeout | undefined;
  inflight: AbortController | undefined;
  /** Bumped on every state change; a stale async result is dropped. */
  generation: number;
}

/**
 * Keeps leases alive, withdraws and republishes models (see the module comment).
 * `add` each lease from boot; `close` on shutdown.
 */
export class LeaseKeeper {
  readonly #opts: LeaseKeeperOptions;
  readonly #entries = new Map<string, Entry>();
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #pending = new Set<Promise<unknown>>();
  #closed = false;

  constructor(opts: LeaseKeeperOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? (() => performance.now());
    this.#random = opts.random ?? Math.random;
  }

  /** Starts keeping `r`'s lease. A second lease for the same key and version replaces the first. */
  add(r: ReleasedLease): void {
    if (this.#closed) return;
    const id = `${r.keyId}\0${r.version}`;
    const old = this.#entries.get(id);
    if (old) this.#cancel(old);
    const e: Entry = {
      keyId: r.keyId,
      version: r.version,
      models: Object.freeze([...r.models]),
      lease: r.lease,
      obtainedAt: r.obtainedAt,
      phase: 'held',
      attempt: 0,
      renewTimer: undefined,
      expiryTimer: undefined,
      inflight: undefined,
      generation: 0,
    };
    this.#entries.set(id, e);
    this.#hold(e);
  }

  /** Per key: whether its models are served ('held') or withdrawn, and the lease id prefix. */
  status(): { keyId: string; version: number; phase: 'held' | 'withdrawn'; lease?: string }[] {
    return [...this.#entries.values()].map((e) => ({
      keyId: e.keyId,
      version: e.version,
      phase: e.phase,
      ...(e.lease ? { lease: e.lease.lid.slice(0, 8) } : {}),
    }));
  }

  /** Cancels every timer and in-flight request and waits for them to settle. Idempotent. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const e of this.#entries.values()) this.#cancel(e);
    await this.settled();
  }

  /** Resolves once no renewal, withdrawal or re-release is in progress (for tests and shutdown). */
  async settled(): Promise<void> {
    while (this.#pending.size > 0) await Promise.allSettled([...this.#pending]);
  }

  // --- held: renew at renewAfter, withdraw at exp ---------------------------------------

  #hold(e: Entry): void {
    const lease = e.lease!;
    e.phase = 'held';
    e.attempt = 0;
    const gen = ++e.generation;
    const interval = (lease.renewAfter - lease.iat) * 1000;
    const early = interval * Math.min(0.5, Math.max(0, this.#opts.jitter ?? 0.1)) * this.#random();
    const expiresAt = e.obtainedAt + (lease.exp - lease.iat) * 1000;
    this.#schedule(e, gen, 'renew', e.obtainedAt + interval - early - this.#now());
    this.#schedule(e, gen, 'expiry', expiresAt - this.#now());
  }

  #schedule(e: Entry, gen: number, what: 'renew' | 'expiry' | 'rerelease', delayMs: number): void {
    if (this.#closed) return;
    const t = setTimeout(() => {
      if (this.#closed || e.generation !== gen) return;
      if (what === 'expiry') this.#track(this.#withdraw(e, 'expired'));
      else if (what === 'renew') this.#track(this.#renew(e, gen));
      else this.#track(this.#rerelease(e, gen));
    }, Math.max(0, Math.ceil(delayMs)));
    // Timers never keep the process alive on their own.
    t.unref?.();
    if (what === 'expiry') e.expiryTimer = t;
    else e.renewTimer = t;
  }

  async #renew(e: Entry, gen: number): Promise<void> {
    const lease = e.lease!;
    const ac = new AbortController();
    e.inflight = ac;
    const sentAt = this.#now();
    const log = this.#opts.logger?.child({ component: 'lease', lease: lease.lid.slice(0, 8), keyId: e.keyId, version: e.version });
    try {
      const { broker, hpke } = this.#opts;
      const challenge = await broker.challenge(ac.signal);
      const nonce = Buffer.from(challenge.nonce, 'base64url');
      let evidence;
      try {
        evidence = await this.#opts.provider.collect(kmsReportData(nonce, hpke.publicKey));
      } catch (cause) {
        throw new ServerError('ERR_SRV_EVIDENCE', { cause });
      }
      const publicKey = Buffer.from(hpke.publicKey).toString('base64url');
      const attested = await broker.attest(
        { nonce: challenge.nonce, evidence: evidence as unknown as Record<string, unknown>, publicKey },
        ac.signal,
      );
      const renewed = await broker.renew({ token: attested.token, lease: lease.token, publicKey }, ac.signal);
      const verified = await this.#opts.verifier.verify(renewed.lease, {
        keyId: e.keyId,
        version: e.version,
        hpkePublicKey: hpke.publicKey,
        nonce: challenge.nonce,
        lid: lease.lid,
      });
      if (this.#closed || e.generation !== gen) return;
      e.lease = verified;
      e.obtainedAt = sentAt;
      log?.info({ decision: 'renewed', expiresInS: verified.exp - verified.iat }, 'key lease renewed');
      this.#emit({ type: 'renewed', keyId: e.keyId, version: e.version, lease: verified.lid.slice(0, 8) });
      this.#hold(e);
    } catch (err) {
      if (this.#closed || e.generation !== gen) return;
      const definitive = isDefinitiveRefusal(err);
      e.attempt++;
      const code = codeOf(err);
      this.#emit({ type: 'renew-failed', keyId: e.keyId, version: e.version, code, definitive, attempt: e.attempt });
      if (definitive) {
        log?.warn({ decision: 'refused', code }, 'key lease renewal refused; withdrawing');
        await this.#withdraw(e, 'refused', code);
        return;
      }
      // Transient: retry with backoff; the expiry timer withdraws if this never succeeds.
      const delayMs = backoffDelay(this.#opts.retry, e.attempt, this.#random);
      log?.warn({ decision: 'retry', code, attempt: e.attempt, delayMs }, 'key lease renewal failed; retrying');
      this.#schedule(e, gen, 'renew', delayMs);
    } finally {
      if (e.inflight === ac) e.inflight = undefined;
    }
  }

  // --- withdrawn: release again in the background ---------------------------------------

  async #withdraw(e: Entry, reason: 'refused' | 'expired', code?: string): Promise<void> {
    if (e.phase === 'withdrawn') return;
    this.#cancel(e);
    e.phase = 'withdrawn';
    const lid = e.lease?.lid.slice(0, 8);
    e.lease = undefined;
    const gen = ++e.generation;
    // SECURITY: every model of the key stops serving before anything is awaited.
    const withdrawals = e.models.map((name) => {
      try {
        return Promise.resolve(this.#opts.registry.withdraw(name));
      } catch (err) {
        return Promise.reject(err);
      }
    });
    const results = await Promise.allSettled(withdrawals);
    const failed = results.filter((r) => r.status === 'rejected').length;
    this.#opts.logger?.warn(
      { component: 'lease', lease: lid, keyId: e.keyId, version: e.version, decision: 'withdrawn', reason, code, models: e.models, failed },
      'model(s) withdrawn: key lease not renewed',
    );
    this.#emit({ type: 'withdrawn', keyId: e.keyId, version: e.version, models: e.models, reason, ...(code ? { code } : {}) });
    e.attempt = 0;
    this.#schedule(e, gen, 'rerelease', backoffDelay(this.#opts.retry, 1, this.#random));
  }

  async #rerelease(e: Entry, gen: number): Promise<void> {
    const ac = new AbortController();
    e.inflight = ac;
    try {
      const r = await this.#opts.rerelease(e.keyId, e.version, ac.signal);
      if (this.#closed || e.generation !== gen) {
        // Closed meanwhile: nothing may be served; drop what was loaded.
        await Promise.allSettled(r.models.map((m) => m.session.release()));
        return;
      }
      for (const m of r.models) this.#opts.registry.republish(m);
      e.models = Object.freeze(r.models.map((m) => m.name));
      e.lease = r.lease.lease;
      e.obtainedAt = r.lease.obtainedAt;
      this.#opts.logger?.info(
        { component: 'lease', lease: r.lease.lease.lid.slice(0, 8), keyId: e.keyId, version: e.version, decision: 'republished', models: e.models },
        'key released again; model(s) republished',
      );
      this.#emit({ type: 'republished', keyId: e.keyId, version: e.version, models: e.models, lease: r.lease.lease.lid.slice(0, 8) });
      this.#hold(e);
    } catch (err) {
      if (this.#closed || e.generation !== gen) return;
      e.attempt++;
      const code = codeOf(err);
      const delayMs = backoffDelay(this.#opts.retry, e.attempt + 1, this.#random);
      this.#opts.logger?.info({ component: 'lease', keyId: e.keyId, version: e.version, decision: 'retry', code, attempt: e.attempt, delayMs }, 'key re-release failed; retrying');
      this.#emit({ type: 'rerelease-failed', keyId: e.keyId, version: e.version, code, attempt: e.attempt });
      this.#schedule(e, gen, 'rerelease', delayMs);
    } finally {
      if (e.inflight === ac) e.inflight = undefined;
    }
  }

  // --- helpers ---------------------------------------------------------------------------

  #cancel(e: Entry): void {
    e.generation++;
    if (e.renewTimer) clearTimeout(e.renewTimer);
    if (e.expiryTimer) clearTimeout(e.expiryTimer);
    e.renewTimer = undefined;
    e.expiryTimer = undefined;
    e.inflight?.abort();
    e.inflight = undefined;
  }

  #track(p: Promise<void>): void {
    const tracked = p.catch((err: unknown) => {
      this.#opts.logger?.error({ component: 'lease', code: codeOf(err) }, 'lease keeper error');
    });
    this.#pending.add(tracked);
    void tracked.finally(() => this.#pending.delete(tracked));
  }

  #emit(ev: LeaseEvent): void {
    try {
      this.#opts.onEvent?.(ev);
    } catch {
      // An observer's bug must not stop the keeper.
    }
  }
}
