import { randomBytes } from 'node:crypto';
import { isIPv4, isIPv6 } from 'node:net';
import { NONCE_LENGTH } from '../attestation/binding.js';
import { KmsError } from './codes.js';

export interface ChallengeStoreOptions {
  /** Lifetime of a nonce, milliseconds. */
  readonly ttlMs: number;
  /** Most nonces outstanding at once, all clients together. */
  readonly max: number;
  /** Most nonces outstanding at once for one client (see `challengeClientKey`); no per-client bound when absent. */
  readonly maxPerClient?: number;
  readonly now: () => Date;
  /** Randomness source, for tests; defaults to `crypto.randomBytes`. */
  readonly random?: (n: number) => Buffer;
}

export interface Challenge {
  /** 32 random bytes. */
  readonly nonce: Buffer;
  readonly expiresAt: Date;
}

interface Pending {
  readonly expiresAt: number;
  readonly client: string;
}

/** Client key of `issue()` calls that name no client. */
const ANONYMOUS = '';

/**
 * In-memory, bounded store of single-use attestation nonces.
 *
 * Checks: a nonce is accepted at most once (consuming it deletes it, whatever the outcome
 * of the attestation that follows), only before it expires, and only if this store issued
 * it. Two bounds, and expired nonces are always dropped before either refuses:
 * - per client, `maxPerClient` live nonces (`ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED`), so one
 *   client flooding the unauthenticated challenge route fills its own quota, not the store;
 * - overall, `max` live nonces (`ERR_KMS_CHALLENGES_EXHAUSTED`). A new challenge is refused
 *   rather than evicting a live one, so a flood cannot push a legitimate attester's nonce out.
 * Both errors carry `details.retryAfterSeconds`: when the oldest relevant nonce expires.
 * Does not: survive a restart (outstanding nonces are lost, which only fails closed), or
 * stop a flood from many addresses (that is what `max` bounds); who counts as one client
 * is the caller's choice (the app uses `challengeClientKey(request.ip)`).
 */
export class ChallengeStore {
  // Insertion order equals expiry order (constant TTL), so expired entries sit at the front.
  readonly #pending = new Map<string, Pending>();
  /** Nonce ids per client; every set is non-empty and at most `maxPerClient` large. */
  readonly #byClient = new Map<string, Set<string>>();
  readonly #opts: ChallengeStoreOptions;
  readonly #maxPerClient: number;

  constructor(opts: ChallengeStoreOptions) {
    if (!(opts.ttlMs > 0) || !(opts.max >= 1)) throw new RangeError('ttlMs and max must be positive');
    if (opts.maxPerClient !== undefined && !(opts.maxPerClient >= 1)) throw new RangeError('maxPerClient must be positive');
    this.#opts = opts;
    this.#maxPerClient = opts.maxPerClient ?? Number.POSITIVE_INFINITY;
  }

  get size(): number {
    return this.#pending.size;
  }

  /** Live-or-not-yet-swept nonces of `client`. */
  outstandingFor(client: string): number {
    return this.#byClient.get(client)?.size ?? 0;
  }

  /**
   * Issues a nonce to `client` (an opaque key; see `challengeClientKey`). Throws
   * `ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED` or `ERR_KMS_CHALLENGES_EXHAUSTED` at the bounds.
   */
  issue(client: string = ANONYMOUS): Challenge {
    const now = this.#opts.now().getTime();
    this.#sweep(now, false);
    if (this.outstandingFor(client) >= this.#maxPerClient) {
      // Expired ones may sit behind live ones after a clock step back; this client's set is small.
      this.#sweepClient(client, now);
      const ids = this.#byClient.get(client);
      if (ids && ids.size >= this.#maxPerClient) {
        const oldest = Math.min(...[...ids].map((id) => this.#pending.get(id)?.expiresAt ?? now));
        throw new KmsError('ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED', {
          detail: `limit ${this.#maxPerClient} per client`,
          details: { retryAfterSeconds: this.#retryAfter(oldest, now) },
        });
      }
    }
    // The clock may have stepped back, breaking expiry order: look at everything before refusing.
    if (this.#pending.size >= this.#opts.max) this.#sweep(now, true);
    if (this.#pending.size >= this.#opts.max) {
      const first = this.#pending.values().next().value;
      throw new KmsError('ERR_KMS_CHALLENGES_EXHAUSTED', {
        detail: `limit ${this.#opts.max}`,
        details: { retryAfterSeconds: this.#retryAfter(first?.expiresAt ?? now, now) },
      });
    }
    const nonce = (this.#opts.random ?? randomBytes)(NONCE_LENGTH);
    if (nonce.length !== NONCE_LENGTH) throw new RangeError('random source returned the wrong length');
    const expiresAt = now + this.#opts.ttlMs;
    const id = nonce.toString('hex');
    // SECURITY: a 256-bit random nonce cannot collide in practice; refuse rather than overwrite if it ever did.
    if (this.#pending.has(id)) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'nonce collision' });
    this.#pending.set(id, { expiresAt, client });
    let ids = this.#byClient.get(client);
    if (!ids) this.#byClient.set(client, (ids = new Set()));
    ids.add(id);
    return { nonce: Buffer.from(nonce), expiresAt: new Date(expiresAt) };
  }

  /**
   * Consumes `nonce`, whichever client asked for it. Throws `ERR_KMS_NONCE_INVALID` when it
   * is unknown, already used or expired. A nonce is deleted on first presentation even when
   * it has expired.
   */
  consume(nonce: Uint8Array): void {
    const id = Buffer.from(nonce).toString('hex');
    const entry = this.#pending.get(id);
    if (entry === undefined) {
      throw new KmsError('ERR_KMS_NONCE_INVALID', { detail: 'unknown or already used' });
    }
    this.#drop(id, entry);
    if (this.#opts.now().getTime() >= entry.expiresAt) {
      throw new KmsError('ERR_KMS_NONCE_INVALID', { detail: 'expired' });
    }
  }

  #drop(id: string, entry: Pending): void {
    this.#pending.delete(id);
    const ids = this.#byClient.get(entry.client);
    if (!ids) return;
    ids.delete(id);
    // Empty sets are removed so the client map stays bounded by `max`.
    if (ids.size === 0) this.#byClient.delete(entry.client);
  }

  #sweep(now: number, full: boolean): void {
    for (const [id, entry] of this.#pending) {
      if (entry.expiresAt > now) {
        if (full) continue;
        break;
      }
      this.#drop(id, entry);
    }
  }

  #sweepClient(client: string, now: number): void {
    const ids = this.#byClient.get(client);
    if (!ids) return;
    for (const id of [...ids]) {
      const entry = this.#pending.get(id);
      if (entry && entry.expiresAt <= now) this.#drop(id, entry);
    }
  }

  #retryAfter(expiresAt: number, now: number): number {
    const max = Math.ceil(this.#opts.ttlMs / 1000);
    return Math.min(max, Math.max(1, Math.ceil((expiresAt - now) / 1000)));
  }
}

/**
 * The client a challenge is counted against: an IPv4 address as is (IPv4-mapped IPv6
 * included), an IPv6 address by its /64 prefix, since one host commonly holds a whole /64
 * and could otherwise rotate through addresses to dodge the per-client bound. Anything
 * else (not an IP literal) is used verbatim.
 * Does not: see through proxies. Behind a reverse proxy every client shares the proxy's
 * address unless fastify's `trustProxy` is configured (it is not).
 */
export function challengeClientKey(ip: string): string {
  const mapped = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i.exec(ip);
  if (mapped?.[1] && isIPv4(mapped[1])) return mapped[1];
  if (!isIPv6(ip)) return ip;
  const hextets = expandIpv6(ip.split('%')[0]!);
  return hextets ? `${hextets.slice(0, 4).map((h) => h.toString(16)).join(':')}::/64` : ip;
}

/** The eight 16-bit groups of an IPv6 literal (already checked by `isIPv6`), or undefined. */
function expandIpv6(addr: string): number[] | undefined {
  const halves = addr.split('::');
  if (halves.length > 2) return undefined;
  const groups = (s: string | undefined): string[] => (s === undefined || s === '' ? [] : s.split(':'));
  const toNums = (parts: string[]): number[] | undefined => {
    const out: number[] = [];
    for (const p of parts) {
      if (p.includes('.')) {
        const o = p.split('.').map(Number);
        if (o.length !== 4) return undefined;
        out.push((o[0]! << 8) | o[1]!, (o[2]! << 8) | o[3]!);
      } else {
        out.push(parseInt(p, 16));
      }
    }
    return out;
  };
  const head = toNums(groups(halves[0]));
  const tail = toNums(groups(halves[1]));
  if (!head || !tail) return undefined;
  if (halves.length === 1) return head.length === 8 ? head : undefined;
  const fill = 8 - head.length - tail.length;
  if (fill < 0) return undefined;
  return [...head, ...new Array<number>(fill).fill(0), ...tail];
}
