import { randomBytes } from 'node:crypto';
import { NONCE_LENGTH } from '../attestation/binding.js';
import { KmsError } from './codes.js';

export interface ChallengeStoreOptions {
  /** Lifetime of a nonce, milliseconds. */
  readonly ttlMs: number;
  /** Most nonces outstanding at once. */
  readonly max: number;
  readonly now: () => Date;
  /** Randomness source, for tests; defaults to `crypto.randomBytes`. */
  readonly random?: (n: number) => Buffer;
}

export interface Challenge {
  /** 32 random bytes. */
  readonly nonce: Buffer;
  readonly expiresAt: Date;
}

/**
 * In-memory, bounded store of single-use attestation nonces.
 *
 * Checks: a nonce is accepted at most once (consuming it deletes it, whatever the outcome
 * of the attestation that follows), only before it expires, and only if this store issued
 * it. When `max` nonces are outstanding, expired ones are dropped first; if none are
 * expired a new challenge is refused (`ERR_KMS_CHALLENGES_EXHAUSTED`) rather than evicting
 * a live one, so a flood cannot push a legitimate attester's nonce out.
 * Does not: survive a restart (outstanding nonces are lost, which only fails closed), or
 * rate-limit per client.
 */
export class ChallengeStore {
  // Insertion order equals expiry order (constant TTL), so expired entries sit at the front.
  readonly #pending = new Map<string, number>();
  readonly #opts: ChallengeStoreOptions;

  constructor(opts: ChallengeStoreOptions) {
    if (!(opts.ttlMs > 0) || !(opts.max >= 1)) throw new RangeError('ttlMs and max must be positive');
    this.#opts = opts;
  }

  get size(): number {
    return this.#pending.size;
  }

  issue(): Challenge {
    const now = this.#opts.now().getTime();
    this.#sweep(now, false);
    // The clock may have stepped back, breaking expiry order: look at everything before refusing.
    if (this.#pending.size >= this.#opts.max) this.#sweep(now, true);
    if (this.#pending.size >= this.#opts.max) {
      throw new KmsError('ERR_KMS_CHALLENGES_EXHAUSTED', { detail: `limit ${this.#opts.max}` });
    }
    const nonce = (this.#opts.random ?? randomBytes)(NONCE_LENGTH);
    if (nonce.length !== NONCE_LENGTH) throw new RangeError('random source returned the wrong length');
    const expiresAt = now + this.#opts.ttlMs;
    const id = nonce.toString('hex');
    // SECURITY: a 256-bit random nonce cannot collide in practice; refuse rather than overwrite if it ever did.
    if (this.#pending.has(id)) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'nonce collision' });
    this.#pending.set(id, expiresAt);
    return { nonce: Buffer.from(nonce), expiresAt: new Date(expiresAt) };
  }

  /**
   * Consumes `nonce`. Throws `ERR_KMS_NONCE_INVALID` when it is unknown, already used or
   * expired. A nonce is deleted on first presentation even when it has expired.
   */
  consume(nonce: Uint8Array): void {
    const id = Buffer.from(nonce).toString('hex');
    const expiresAt = this.#pending.get(id);
    if (expiresAt === undefined) {
      throw new KmsError('ERR_KMS_NONCE_INVALID', { detail: 'unknown or already used' });
    }
    this.#pending.delete(id);
    if (this.#opts.now().getTime() >= expiresAt) {
      throw new KmsError('ERR_KMS_NONCE_INVALID', { detail: 'expired' });
    }
  }

  #sweep(now: number, full: boolean): void {
    for (const [id, expiresAt] of this.#pending) {
      if (expiresAt > now) {
        if (full) continue;
        break;
      }
      this.#pending.delete(id);
    }
  }
}
