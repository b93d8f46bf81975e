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
 * Secrets: each argument is copied into an exact-size buffer of its own, which is moved
 * (transferred) to the worker. Never the caller's view itself: structured clone would copy a
 * typed array's WHOLE backing store, and a small Buffer lives in Node's shared 8 KiB pool
 * next to other data (other releases' DEKs). The worker zero-fills its plaintext copy after
 * sealing; the caller still owns, and wipes, its own. Errors never carry plaintext or key
 * bytes.
 *
 * Failure: if the worker dies, sends an unreadable message, or does not answer a seal within
 * `timeoutMs` (default 10 s), every pending seal rejects (the release fails closed, 500),
 * the worker is stopped and the next seal starts a fresh one. After `maxStartFailures`
 * consecutive failures with no successful seal in between, the sealer stops using workers
 * and seals inline (`hpkeSeal`), so a broken worker script cannot turn every busy moment into
 * failed releases; `onWorker` then reads false. `close()` stops it; later seals reject.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { hpkeSeal, type HpkeSealed } from './hpke.js';

/** Same signature as `hpkeSeal`. */
export type HpkeSealFn = typeof hpkeSeal;

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
  readonly timer: NodeJS.Timeout;
}

/** An exact-size copy of `u` in a buffer of its own (safe to transfer; see the header). */
function exactCopy(u: Uint8Array): Uint8Array {
  const c = new Uint8Array(u.byteLength);
  c.set(u);
  return c;
}

export class HpkeSealWorker {
  readonly #entry: string;
  #worker: Worker | undefined;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  #closed = false;
  readonly #timeoutMs: number;
  readonly #maxStartFailures: number;
  #failures = 0;

  /**
   * `entry`: the worker script (default: the built hpke-seal-worker.js); `timeoutMs`: the
   * longest a seal may wait for the worker; `maxStartFailures`: consecutive worker failures
   * before falling back to inline sealing.
   */
  constructor(opts: { entry?: string; timeoutMs?: number; maxStartFailures?: number } = {}) {
    this.#entry = opts.entry ?? hpkeSealWorkerEntry();
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
    this.#maxStartFailures = opts.maxStartFailures ?? 3;
  }

  /** False once the sealer has fallen back to inline sealing (see the header). */
  get onWorker(): boolean {
    return this.#failures < this.#maxStartFailures;
  }

  /** Whether the built worker script exists (callers fall back to `hpkeSeal` when not). */
  static available(entry = hpkeSealWorkerEntry()): boolean {
    return existsSync(entry);
  }

  /** Seals like `hpkeSeal`, on the worker (inline once the worker kept failing). */
  readonly seal: HpkeSealFn = (recipientPublicKey, plaintext, info, aad) => {
    if (this.#closed) return Promise.reject(new HpkeWorkerError('HPKE sealer is closed'));
    if (!this.onWorker) return hpkeSeal(recipientPublicKey, plaintext, info, aad);
    let worker: Worker;
    try {
      worker = this.#ensure();
    } catch (e) {
      this.#failures++;
      return Promise.reject(new HpkeWorkerError(`cannot start the HPKE worker: ${(e as Error).name}`));
    }
    const id = this.#nextId++;
    const msg: SealRequest = { id, recipientPublicKey: exactCopy(recipientPublicKey), plaintext: exactCopy(plaintext), info: exactCopy(info), aad: exactCopy(aad) };
    return new Promise<HpkeSealed>((resolve, reject) => {
      const timer = setTimeout(() => this.#fail(worker, `HPKE worker did not answer within ${this.#timeoutMs} ms`), this.#timeoutMs);
      timer.unref();
      this.#pending.set(id, { resolve, reject, timer });
      if (this.#pending.size === 1) worker.ref();
      try {
        worker.postMessage(msg, [msg.recipientPublicKey.buffer as ArrayBuffer, msg.plaintext.buffer as ArrayBuffer, msg.info.buffer as ArrayBuffer, msg.aad.buffer as ArrayBuffer]);
      } catch (e) {
        msg.plaintext.fill(0);
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
      const p = this.#settle(r?.id);
      if (!p) return;
      this.#failures = 0;
      if ('error' in r) p.reject(new Error(r.error));
      else p.resolve({ enc: r.enc, ciphertext: r.ciphertext });
    });
    w.on('messageerror', () => this.#fail(w, 'HPKE worker sent an unreadable message'));
    w.on('error', (e) => this.#fail(w, `HPKE worker failed: ${e.name}`));
    w.on('exit', (code) => this.#fail(w, `HPKE worker exited with code ${code}`));
    this.#worker = w;
    return w;
  }

  /** Drops worker `w` (if still current): pending seals reject, it is stopped, a failure counts. */
  #fail(w: Worker, why: string): void {
    if (this.#worker !== w) return;
    this.#worker = undefined;
    this.#failures++;
    this.#failAll(why);
    void w.terminate().catch(() => undefined);
  }

  #settle(id: number): Pending | undefined {
    const p = this.#pending.get(id);
    if (!p) return undefined;
    clearTimeout(p.timer);
    this.#pending.delete(id);
    if (this.#pending.size === 0) this.#worker?.unref();
    return p;
  }

  #failAll(why: string): void {
    const all = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of all) {
      clearTimeout(p.timer);
      p.reject(new HpkeWorkerError(why));
    }
  }
}

/** A worker-backed sealer when the built worker exists, else `hpkeSeal` inline (plus `close`). */
export function createHpkeSealer(): { seal: HpkeSealFn; close(): Promise<void>; readonly onWorker: boolean } {
  if (!HpkeSealWorker.available()) return { seal: hpkeSeal, close: async () => undefined, onWorker: false };
  const w = new HpkeSealWorker();
  return {
    seal: w.seal,
    close: () => w.close(),
    get onWorker() {
      return w.onWorker;
    },
  };
}
