/**
 * The set of models a server serves. Filled once, by boot, after every model has been
 * released, decrypted and loaded; until then the registry is not ready and serves nothing
 * (the inference service answers UNAVAILABLE).
 *
 * After boot a model can be withdrawn (its key lease ended or was revoked) and later
 * republished (after a successful re-release). A withdrawn model is refused at once
 * (ERR_SRV_MODEL_WITHDRAWN); calls that already hold it (`acquire`) finish, then its
 * session is released. While any model is withdrawn the registry is not `ready`
 * (ServerReady false); the other models keep serving.
 *
 * What it does NOT do: it does not cancel a run in progress (onnxruntime cannot), and it
 * does not fetch keys or load models (boot and the lease code do, then call `republish`).
 */
import type { InferenceSession } from 'onnxruntime-node';
import { ServerError } from './codes.js';
import type { ModelSignature } from './tensors.js';

/** The parts of an onnxruntime InferenceSession the server uses (tests inject fakes). */
export type InferenceSessionLike = Pick<
  InferenceSession,
  'inputNames' | 'outputNames' | 'inputMetadata' | 'outputMetadata' | 'run' | 'release'
>;

export interface LoadedModel {
  readonly name: string;
  readonly version: string;
  readonly session: InferenceSessionLike;
  readonly signature: ModelSignature;
  /** True when the model came from a sealed file via attested key release. */
  readonly sealed: boolean;
  /** Lower-case hex SHA-256 of the plaintext ONNX bytes. */
  readonly sha256: string;
  /**
   * Plaintext model bytes the registry keeps (absent normally: boot zero-fills its copy
   * once the session exists). SECURITY: zero-filled when the model is withdrawn,
   * replaced or the registry closes.
   */
  readonly plaintext?: Uint8Array;
}

/** Where a configured model stands. */
export type ModelState = 'unpublished' | 'serving' | 'withdrawn';

interface Entry {
  readonly model: LoadedModel;
  /** Calls holding this entry (acquire without release yet). */
  inflight: number;
  /** Set once withdrawn: resolves when `inflight` reaches 0. */
  drained?: () => void;
}

export class ModelRegistry {
  readonly #expected: readonly string[];
  readonly #entries = new Map<string, Entry>();
  /** Entries by model object, including withdrawn ones still held by calls. */
  readonly #held = new WeakMap<LoadedModel, Entry>();
  readonly #withdrawn = new Set<string>();
  /** Models whose session was (or is being) released: they can never be served again. */
  readonly #retired = new WeakSet<LoadedModel>();
  /** Sessions being released after a withdrawal (close() waits for them). */
  readonly #releasing = new Set<Promise<void>>();
  #published = false;
  #closed = false;

  /** `expected`: names of every configured model; ready only once all are published. */
  constructor(expected: readonly string[]) {
    this.#expected = Object.freeze([...expected]);
  }

  get expected(): readonly string[] {
    return this.#expected;
  }

  /** Whether every configured model is loaded and servable (false while any is withdrawn). */
  get ready(): boolean {
    return this.#published && this.#withdrawn.size === 0;
  }

  /** Whether boot has published every model (stays true across withdrawals). */
  get published(): boolean {
    return this.#published;
  }

  isConfigured(name: string): boolean {
    return this.#expected.includes(name);
  }

  state(name: string): ModelState {
    if (this.#withdrawn.has(name)) return 'withdrawn';
    return this.#published && this.#entries.has(name) ? 'serving' : 'unpublished';
  }

  /** A model that is being served (published and not withdrawn), else undefined. */
  get(name: string): LoadedModel | undefined {
    return this.#published ? this.#entries.get(name)?.model : undefined;
  }

  /**
   * Takes a model for one call; `release(model)` must follow (in a finally). Throws
   * ERR_SRV_NOT_READY before boot has published, ERR_SRV_MODEL_WITHDRAWN for a withdrawn
   * model, and returns undefined for a name that is not served (the caller decides how
   * to report an unknown model). A model withdrawn while held stays usable by the holder.
   */
  acquire(name: string): LoadedModel | undefined {
    if (!this.#published) throw new ServerError('ERR_SRV_NOT_READY');
    if (this.#withdrawn.has(name)) throw new ServerError('ERR_SRV_MODEL_WITHDRAWN');
    const e = this.#entries.get(name);
    if (!e) return undefined;
    e.inflight++;
    return e.model;
  }

  /** Ends a call started by `acquire`. Extra calls are ignored. */
  release(model: LoadedModel): void {
    const e = this.#held.get(model);
    if (!e || e.inflight === 0) return;
    e.inflight--;
    if (e.inflight === 0) e.drained?.();
  }

  /** Publishes all models at once; ready when they cover every expected name. */
  publish(models: readonly LoadedModel[]): void {
    if (this.#closed) throw new Error('registry is closed');
    for (const m of models) {
      if (!this.#expected.includes(m.name)) throw new Error(`model ${JSON.stringify(m.name)} was not configured`);
    }
    for (const m of models) this.#put(m);
    this.#published = this.#expected.every((n) => this.#entries.has(n));
  }

  #put(m: LoadedModel): void {
    const old = this.#entries.get(m.name);
    if (old && old.model !== m) this.#retire(old);
    const e: Entry = { model: m, inflight: 0 };
    this.#entries.set(m.name, e);
    this.#held.set(m, e);
    this.#withdrawn.delete(m.name);
  }

  /**
   * Stops serving `name` at once: new calls get ERR_SRV_MODEL_WITHDRAWN and the registry
   * is not ready. Resolves once calls that held the model have finished and its session
   * is released (release failures are swallowed: the session is unusable either way).
   * SECURITY: any plaintext the registry held for it is zero-filled. Withdrawing a model
   * that is already withdrawn resolves at once. Throws for a name that is not configured.
   */
  async withdraw(name: string): Promise<void> {
    if (!this.#expected.includes(name)) throw new Error(`model ${JSON.stringify(name)} was not configured`);
    this.#withdrawn.add(name);
    const e = this.#entries.get(name);
    if (!e) return;
    this.#entries.delete(name);
    await this.#retire(e);
  }

  /**
   * Serves `model` again after a withdrawal (or replaces a served model with a new
   * session, retiring the old one once its calls finish). `model` must carry a new
   * session: a LoadedModel that was withdrawn or replaced is refused (its session is
   * released). Ready again when no model is withdrawn. Throws for a model that was not
   * configured, or after close().
   */
  republish(model: LoadedModel): void {
    if (this.#closed) throw new Error('registry is closed');
    if (this.#retired.has(model)) throw new Error(`model ${JSON.stringify(model.name)}: this session was released; load a new one`);
    if (!this.#expected.includes(model.name)) throw new Error(`model ${JSON.stringify(model.name)} was not configured`);
    this.#put(model);
    this.#published = this.#expected.every((n) => this.#entries.has(n));
  }

  /** Waits for the entry's calls, then releases its session and wipes its plaintext. */
  #retire(e: Entry): Promise<void> {
    this.#retired.add(e.model);
    // SECURITY: nothing may run on this entry's session any more, but calls already in it
    // may; plaintext is not used by calls, so wipe it now.
    e.model.plaintext?.fill(0);
    const drained = e.inflight === 0 ? Promise.resolve() : new Promise<void>((r) => (e.drained = r));
    const p = drained
      .then(() => e.model.session.release())
      .catch(() => undefined)
      .finally(() => this.#releasing.delete(p));
    this.#releasing.add(p);
    return p;
  }

  /** Marks the registry not ready and releases every session (after calls in them finish). */
  async close(): Promise<void> {
    this.#closed = true;
    this.#published = false;
    const entries = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.allSettled([...entries.map((e) => this.#retire(e)), ...this.#releasing]);
  }
}
