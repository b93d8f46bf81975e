/**
 * The worker executor (`executor: 'worker'` in the server config): each onnxruntime
 * session lives in its own `worker_threads` Worker (server/ort-worker.ts), and the main
 * thread holds a proxy with the InferenceSessionLike interface. onnxruntime-node runs
 * `session.run()` synchronously on the thread that calls it; in a worker that is not the
 * event loop, so gRPC decode, encode and framing on the main thread overlap with compute.
 *
 * Costs: every input is copied once into a fresh buffer that moves to the worker (the
 * caller's tensors may be views into a request buffer it still owns, and copying a view
 * by structured clone would copy its whole backing store); outputs move back without a
 * copy (their buffers are transferred). Each run is a postMessage round trip, tens of
 * microseconds: more than it hides for sub-millisecond models (see config.ts `executor`).
 * A worker runs its session's requests one after another, in arrival order; runs of
 * different models (different workers) proceed in parallel.
 *
 * Failure: if the worker throws, exits or sends something that cannot be read, every
 * pending run rejects with an OrtWorkerError and so does every later run; nothing hangs
 * and the process carries on. `release()` releases the session in the worker, then
 * terminates it; runs still pending reject.
 *
 * Never terminate a worker while onnxruntime runs in it: onnxruntime-node 1.30 then throws
 * a C++ Napi::Error out of the torn-down thread and the whole process aborts. So this
 * module terminates a worker only once it is idle (after its session was released, or
 * when creating the session failed), and the same holds for the process: exiting it
 * (process.exit) while a run is in progress aborts it. The server releases every session
 * on stop, after the calls in them have finished.
 *
 * SECURITY: the model bytes are copied into a private buffer that is transferred to the
 * worker (nothing of it stays on the main thread); the worker zero-fills it as soon as
 * onnxruntime has built its session, or failed to. The worker logs nothing, and error
 * messages carry onnxruntime's own text, which names inputs and dimensions, not values.
 */
import { Worker } from 'node:worker_threads';
import * as ort from '../common/ort.js';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import type { InferenceSessionLike } from './registry.js';

// ---- Protocol with server/ort-worker.ts (structured clone over the worker's port).

/** A tensor crossing the thread boundary. `data` is a typed array (string[] for strings). */
export interface WireTensor {
  readonly name: string;
  readonly type: Tensor.Type;
  readonly dims: readonly number[];
  readonly data: Tensor['data'];
}

export interface WireError {
  readonly name: string;
  readonly message: string;
}

export type ToWorker =
  | { readonly type: 'create'; readonly model: Uint8Array; readonly options: InferenceSession.SessionOptions }
  | {
      readonly type: 'run';
      readonly id: number;
      readonly feeds: readonly WireTensor[];
      readonly fetches?: readonly string[];
      readonly options?: InferenceSession.RunOptions;
    }
  | { readonly type: 'release' };

export type FromWorker =
  | {
      readonly type: 'created';
      readonly inputNames: readonly string[];
      readonly outputNames: readonly string[];
      readonly inputMetadata: readonly InferenceSession.ValueMetadata[];
      readonly outputMetadata: readonly InferenceSession.ValueMetadata[];
      /** The worker's copy of the model, zero-filled, handed back (transferred) for tests to check. */
      readonly model: Uint8Array;
    }
  | { readonly type: 'create-failed'; readonly error: WireError }
  | { readonly type: 'result'; readonly id: number; readonly outputs: readonly WireTensor[] }
  | { readonly type: 'run-failed'; readonly id: number; readonly error: WireError }
  | { readonly type: 'released'; readonly error?: WireError };

// ---- Main thread.

/** Why a worker session cannot run: it was released, or its worker died. */
export class OrtWorkerError extends Error {
  override readonly name = 'OrtWorkerError';
  constructor(
    readonly reason: 'released' | 'worker-failed',
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface WorkerExecutorOptions {
  /** The worker entry; defaults to ortWorkerEntry(). */
  readonly entry?: URL;
  /** Tests: sees each worker once started (to terminate or crash it). */
  readonly onWorker?: (worker: Worker) => void;
  /** Tests: receives the worker's copy of the model bytes after the worker zero-filled it. */
  readonly onModelCleared?: (bytes: Uint8Array) => void;
}

/**
 * The worker entry: ort-worker.js next to this module. Under vitest this module runs from
 * its .ts source, and the worker is taken from dist/ (so tests need `npm run build`, which
 * `npm test` does), as bench/targets.ts does for the bench's server process.
 */
export function ortWorkerEntry(): URL {
  return import.meta.url.endsWith('.ts')
    ? new URL('../dist/server/ort-worker.js', import.meta.url)
    : new URL('./ort-worker.js', import.meta.url);
}

/**
 * Creates an onnxruntime session in a new worker thread. Resolves with the proxy once the
 * worker has built the session; rejects with onnxruntime's error (its message kept) or an
 * OrtWorkerError when the worker could not start. Does not change `model`.
 */
export async function createWorkerSession(
  model: Uint8Array,
  options: InferenceSession.SessionOptions,
  opts: WorkerExecutorOptions = {},
): Promise<InferenceSessionLike> {
  // A private copy of exactly the model's bytes: it moves to the worker, which clears it.
  const copy = new Uint8Array(model);
  let worker: Worker;
  try {
    // stdout stays the parent's (the bench's server process speaks JSON on it): the worker writes nothing.
    worker = new Worker(opts.entry ?? ortWorkerEntry(), { stdin: false });
  } catch (e) {
    copy.fill(0);
    throw new OrtWorkerError('worker-failed', 'could not start the onnxruntime worker', { cause: e });
  }
  opts.onWorker?.(worker);
  return new WorkerSession(worker, opts).start(copy, options);
}

/** A CreateSession (server/executor.ts) that puts every session in its own worker. */
export function workerSessionFactory(
  opts: WorkerExecutorOptions = {},
): (model: Uint8Array, options: InferenceSession.SessionOptions) => Promise<InferenceSessionLike> {
  return (model, options) => createWorkerSession(model, options, opts);
}

interface Pending {
  readonly resolve: (r: InferenceSession.ReturnType) => void;
  readonly reject: (e: unknown) => void;
}

/** onnxruntime's error as the worker reported it: same message, same standard class. */
function fromWire(e: WireError): Error {
  const Ctor = e.name === 'TypeError' ? TypeError : e.name === 'RangeError' ? RangeError : Error;
  return new Ctor(e.message);
}

/**
 * A copy of exactly a typed array's bytes in a fresh buffer of the same element type
 * (a Buffer becomes a Uint8Array). Typed-array `slice` is not used: on a Buffer it
 * returns a view, not a copy.
 */
function exactCopy(d: Exclude<Tensor['data'], readonly string[]>): Exclude<Tensor['data'], readonly string[]> {
  const bytes = new Uint8Array(d.byteLength);
  bytes.set(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  const Ctor = (Buffer.isBuffer(d) ? Uint8Array : d.constructor) as new (b: ArrayBuffer, offset: number, length: number) => typeof d;
  return new Ctor(bytes.buffer, 0, d.length);
}

class WorkerSession implements InferenceSessionLike {
  inputNames: readonly string[] = [];
  outputNames: readonly string[] = [];
  inputMetadata: readonly InferenceSession.ValueMetadata[] = [];
  outputMetadata: readonly InferenceSession.ValueMetadata[] = [];

  readonly #worker: Worker;
  readonly #opts: WorkerExecutorOptions;
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  /** Set once released or failed: every later run rejects with it. */
  #stopped: OrtWorkerError | undefined;
  /** The create in progress. */
  #creating: { resolve: () => void; reject: (e: unknown) => void } | undefined;
  /** The release in progress, waiting for the worker's answer (or its exit). */
  #onReleased: ((error?: WireError) => void) | undefined;
  #release: Promise<void> | undefined;
  #exited = false;

  constructor(worker: Worker, opts: WorkerExecutorOptions) {
    this.#worker = worker;
    this.#opts = opts;
    worker.on('message', (m: FromWorker) => this.#onMessage(m));
    // An uncaught exception in the worker: it is ending ('exit' follows).
    worker.on('error', (e: Error) => this.#fail(`onnxruntime worker failed: ${e.message}`, e));
    worker.on('exit', (code: number) => {
      this.#exited = true;
      this.#fail(`onnxruntime worker exited (code ${code})`);
      this.#onReleased?.();
    });
    worker.on('messageerror', (e: Error) => this.#protocolError('onnxruntime worker sent a message that could not be read', e));
  }

  start(model: Uint8Array, options: InferenceSession.SessionOptions): Promise<InferenceSessionLike> {
    return new Promise<InferenceSessionLike>((resolve, reject) => {
      this.#creating = {
        resolve: () => resolve(this),
        reject: (e) => {
          void this.#worker.terminate();
          reject(e);
        },
      };
      try {
        this.#post({ type: 'create', model, options }, [model.buffer as ArrayBuffer]);
      } catch (e) {
        // e.g. options that cannot be cloned. A transferred buffer is detached: fill is a no-op.
        model.fill(0);
        this.#stopped = new OrtWorkerError('worker-failed', 'could not send the model to the onnxruntime worker', { cause: e });
        this.#creating.reject(e);
        this.#creating = undefined;
      }
    });
  }

  run(feeds: InferenceSession.FeedsType, options?: InferenceSession.RunOptions): Promise<InferenceSession.ReturnType>;
  run(
    feeds: InferenceSession.FeedsType,
    fetches: InferenceSession.FetchesType,
    options?: InferenceSession.RunOptions,
  ): Promise<InferenceSession.ReturnType>;
  run(
    feeds: InferenceSession.FeedsType,
    arg1?: InferenceSession.FetchesType | InferenceSession.RunOptions,
    arg2?: InferenceSession.RunOptions,
  ): Promise<InferenceSession.ReturnType> {
    if (this.#stopped) return Promise.reject(this.#stopped);
    let req: { msg: Extract<ToWorker, { type: 'run' }>; transfer: ArrayBuffer[] };
    try {
      req = this.#request(feeds, arg1, arg2);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<InferenceSession.ReturnType>((resolve, reject) => {
      try {
        this.#post(req.msg, req.transfer);
      } catch (e) {
        reject(e);
        return;
      }
      // Busy sessions keep the process alive; idle ones do not (as inline sessions).
      if (this.#pending.size === 0) this.#worker.ref();
      this.#pending.set(req.msg.id, { resolve, reject });
    });
  }

  /** A run message: the feeds copied into fresh buffers (to transfer), fetches and options. */
  #request(
    feeds: InferenceSession.FeedsType,
    arg1: InferenceSession.FetchesType | InferenceSession.RunOptions | undefined,
    arg2: InferenceSession.RunOptions | undefined,
  ): { msg: Extract<ToWorker, { type: 'run' }>; transfer: ArrayBuffer[] } {
    if (typeof feeds !== 'object' || feeds === null || Array.isArray(feeds)) {
      throw new TypeError("'feeds' must be an object that use input names as keys and OnnxValue as corresponding values.");
    }
    const wire: WireTensor[] = [];
    const transfer: ArrayBuffer[] = [];
    for (const [name, t] of Object.entries(feeds)) {
      if (!(t instanceof ort.Tensor)) throw new TypeError(`feed ${JSON.stringify(name)} is not a Tensor`);
      if (Array.isArray(t.data)) {
        wire.push({ name, type: t.type, dims: [...t.dims], data: [...(t.data as readonly string[])] });
      } else {
        const data = exactCopy(t.data as Exclude<Tensor['data'], readonly string[]>);
        transfer.push(data.buffer as ArrayBuffer);
        wire.push({ name, type: t.type, dims: [...t.dims], data });
      }
    }
    // The two overloads, told apart as onnxruntime-common does: an array is `fetches`; so is
    // an object naming outputs with null (pre-allocated output tensors cannot be written
    // across threads); anything else is run options.
    let fetches: string[] | undefined;
    let options = arg2;
    if (Array.isArray(arg1)) {
      fetches = [...(arg1 as readonly string[])];
    } else if (typeof arg1 === 'object' && arg1 !== null) {
      const rec = arg1 as Record<string, unknown>;
      const named = this.outputNames.filter((n) => Object.hasOwn(rec, n) && (rec[n] === null || rec[n] instanceof ort.Tensor));
      if (named.some((n) => rec[n] !== null)) {
        throw new TypeError('pre-allocated output tensors are not supported by the worker executor');
      }
      if (named.length > 0) fetches = named;
      else options = arg1 as InferenceSession.RunOptions;
    } else if (arg1 !== undefined) {
      options = arg1 as InferenceSession.RunOptions;
    }
    const msg = { type: 'run' as const, id: this.#nextId++, feeds: wire, ...(fetches ? { fetches } : {}), ...(options ? { options } : {}) };
    return { msg, transfer };
  }

  release(): Promise<void> {
    this.#release ??= this.#doRelease();
    return this.#release;
  }

  async #doRelease(): Promise<void> {
    if (!this.#stopped) {
      this.#stopped = new OrtWorkerError('released', 'onnxruntime session was released');
      this.#rejectPending(this.#stopped);
    }
    let error: WireError | undefined;
    if (!this.#exited) {
      this.#worker.ref();
      // The worker finishes the run in progress, releases the session and answers; only
      // then is it idle and safe to terminate (see the header).
      const answered = new Promise<WireError | undefined>((resolve) => {
        this.#onReleased = resolve;
      });
      try {
        this.#post({ type: 'release' });
        error = await answered;
      } catch {
        // The port is closed: the worker is ending on its own.
      }
      this.#onReleased = undefined;
    }
    await this.#worker.terminate();
    if (error) throw fromWire(error);
  }

  #post(msg: ToWorker, transfer: readonly ArrayBuffer[] = []): void {
    this.#worker.postMessage(msg, transfer as ArrayBuffer[]);
  }

  #onMessage(m: FromWorker): void {
    switch (m?.type) {
      case 'created': {
        this.inputNames = Object.freeze([...m.inputNames]);
        this.outputNames = Object.freeze([...m.outputNames]);
        this.inputMetadata = Object.freeze([...m.inputMetadata]);
        this.outputMetadata = Object.freeze([...m.outputMetadata]);
        const c = this.#creating;
        this.#creating = undefined;
        this.#worker.unref();
        this.#opts.onModelCleared?.(m.model);
        c?.resolve();
        return;
      }
      case 'create-failed': {
        this.#stopped = new OrtWorkerError('worker-failed', 'onnxruntime session was not created');
        const c = this.#creating;
        this.#creating = undefined;
        c?.reject(fromWire(m.error));
        return;
      }
      case 'result':
      case 'run-failed': {
        const p = this.#pending.get(m.id);
        if (!p) return;
        this.#pending.delete(m.id);
        if (this.#pending.size === 0 && !this.#release) this.#worker.unref();
        if (m.type === 'run-failed') {
          p.reject(fromWire(m.error));
          return;
        }
        try {
          const out: Record<string, ort.Tensor> = Object.create(null) as Record<string, ort.Tensor>;
          for (const t of m.outputs) out[t.name] = new ort.Tensor(t.type, t.data as never, t.dims);
          p.resolve(out);
        } catch (e) {
          p.reject(e);
        }
        return;
      }
      case 'released':
        this.#onReleased?.(m.error);
        return;
      default:
        this.#protocolError('onnxruntime worker sent an unknown message');
    }
  }

  /** The worker died: every pending and later call rejects. */
  #fail(message: string, cause?: unknown): void {
    const err = new OrtWorkerError('worker-failed', message, cause !== undefined ? { cause } : undefined);
    this.#stopped ??= err;
    this.#rejectPending(err);
    const c = this.#creating;
    this.#creating = undefined;
    c?.reject(err);
  }

  /**
   * The worker is alive but its answers cannot be trusted: fail every call, then release
   * it the graceful way (it may be inside a run; see the header).
   */
  #protocolError(message: string, cause?: unknown): void {
    const creating = this.#creating !== undefined;
    this.#fail(message, cause);
    // While creating, #fail's reject already terminates the idle worker.
    if (!creating) void this.release().catch(() => undefined);
  }

  #rejectPending(err: Error): void {
    const pending = [...this.#pending.values()];
    this.#pending.clear();
    for (const p of pending) p.reject(err);
  }
}
