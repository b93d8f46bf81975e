/**
 * HPKE sealing on a worker thread.
 *
 * Why: @hpke/core runs on WebCrypto, and on Node 20 each of the ~19 WebCrypto calls of one
 * seal costs about 45 µs of JavaScript on the calling thread (argument normalisation, key
 * wrapping) before the native work is queued: about 0.86 ms of event-loop time per seal,
 * the largest single cost of a key release (bench/release.ts profile). On a worker thread
 * that time runs beside the broker's event loop instead of inside it. The cryptography is
 * unchanged: the worker calls the same `hpkeSeal` (common/hpke.ts).
 *
 * Secrets: the plaintext (a DEK) is copied to the worker by structured clone and the
 * worker zero-fills its copy after sealing; the caller still owns, and wipes, its own.
 * Errors never carry plaintext or key bytes.
 *
 * Failure: if the worker dies, every pending seal rejects (the release fails closed, 500)
 * and the next seal starts a fresh worker. `close()` stops it; later seals reject.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { hpkeSeal, type HpkeSealed } from './hpke.js';

/** Same signature as `hpkeSeal`. */
export type HpkeSealFn = (recipientPublicKey: Uint8Array, plaintext: Uint8Array, info: Uint8Array, aad: Uint8Array) => Promise<HpkeSealed>;

/** @internal message to the worker */
export interface SealRequest {
  readonly id: number;
  readonly recipientPublicKey: Uint8Array;
  readonly plaintext: Uint8Array;
  readonly info: Uint8Array;
  readonly aad: Uint8Array;
}

/** @internal message from the worker */
export type SealReply = { readonly id: number; readonly enc: Uint8Array; readonly ciphertext: Uint8Array } | { readonly id: number; readonly error: string };

/** The worker entry in dist/ (tests run from source, the worker always from the build). */
export function hpkeSealWorkerEntry(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return import.meta.url.endsWith('.ts') ? path.resolve(here, '..', 'dist', 'common', 'hpke-seal-worker.js') : path.join(here, 'hpke-seal-worker.js');
}

/** An error of the sealing worker itself (not of HPKE): it exited, failed to start, or was closed. */
export class HpkeWorkerError extends Error {
  override readonly name = 'HpkeWorkerError';
}

interface Pending {
  readonly resolve: (s: HpkeSealed) => void;
  readonly reject: (e: Error) => void;
}

export class HpkeSealWorker {
  readonly #entry: string;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;

  /** `entry`: the worker script (default: the built hpke-seal-worker.js). */
  constructor(opts: { entry?: string } = {}) {
    this.#entry = opts.entry ?? hpkeSealWorkerEntry();
  }

  /** Whether the built worker script exists (callers fall back to `hpkeSeal` when not). */
  static available(entry = hpkeSealWorkerEntry()): boolean {
    return existsSync(entry);
  }

  /** Seals like `hpkeSeal`, on the worker. */
  readonly seal: HpkeSealFn = (recipientPublicKey, plaintext, info, aad) => {
    if (this.#closed) return Promise.reject(new HpkeWorkerError('HPKE sealer is closed'));
    const worker = this.#ensure();
    const id = this.#nextId++;
    return new Promise<HpkeSealed>((resolve, reject) => {
      this.#pending.set(id, { resolve, reject });
      if (this.#pending.size === 1) worker.ref();
      const msg: SealRequest = { id, recipientPublicKey, plaintext, info, aad };
      try {
        worker.postMessage(msg);
      } catch (e) {
        this.#settle(id);
        reject(new HpkeWorkerError(`cannot post to the HPKE worker: ${(e as Error).name}`));
      }
    });
  };

  /** Stops the worker; pending and later seals reject. */
  async close(): Promise<void> {
    this.#closed = true;
    const w = this.#worker;
    this.#worker = undefined;
    this.#failAll('HPKE sealer closed');
    if (w) await w.terminate();
  }

  #ensure(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(this.#entry);
    w.unref();
    w.on('message', (r: SealReply) => {
      const p = this.#settle(r.id);
      if (!p) return;
      if ('error' in r) p.reject(new Error(r.error));
      else p.resolve({ enc: r.enc, ciphertext: r.ciphertext });
    });
    const gone = (why: string) => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      this.#failAll(why);
    };
    w.on('error', (e) => gone(`HPKE worker failed: ${e.name}`));
    w.on('exit', (code) => gone(`HPKE worker exited with code ${code}`));
    this.#worker = w;
    return w;
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker?.unref();
    return p;
  }

  #failAll(why: string): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) p.reject(new HpkeWorkerError(why));
  }
}

/** A worker-backed sealer when the built worker exists, else `hpkeSeal` inline (plus `close`). */
export function createHpkeSealer(): { seal: HpkeSealFn; close(): Promise<void>; onWorker: boolean } {
  if (!HpkeSealWorker.available()) return { seal: hpkeSeal, close: async () => undefined, onWorker: false };
  const w = new HpkeSealWorker();
  return { seal: w.seal, close: () => w.close(), onWorker: true };
}
