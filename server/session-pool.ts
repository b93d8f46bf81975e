/**
 * A pool of identical onnxruntime sessions behind one InferenceSessionLike (server config
 * `workers` > 1, worker executor only). onnxruntime-node runs a session's `run()`
 * synchronously on one thread, so one session serves one request at a time however many
 * cores the machine has; with N sessions, each in its own worker thread, N requests of the
 * same model run at once.
 *
 * Dispatch: each run goes to the member with the fewest runs in flight; ties go to the
 * member after the one chosen last, so an idle pool spreads calls round the members
 * instead of warming only the first. A member whose worker died (OrtWorkerError
 * 'worker-failed') is retired when one of its runs fails so: its runs in flight reject as
 * they would without a pool (and so does a run sent to it between its death and the
 * pool's noticing), later runs go to the others, and once every member is retired every
 * run rejects with the last member's error. Nothing is restarted: a worker that died did
 * so inside onnxruntime or the worker protocol, and the process's operator should see the
 * errors and restart it.
 *
 * Costs: N copies of the model's weights in memory, and N onnxruntime thread pools (the
 * server divides its default intra-op threads between them, server/executor.ts).
 *
 * What this module does NOT do: it does not build sessions itself (the caller's `create`
 * does; `createSessionPool` releases the ones made if another fails), and it does not
 * queue: every run is handed to a member at once, whose worker runs its own runs in order.
 */
import type { InferenceSession } from 'onnxruntime-node';
import type { InferenceSessionLike } from './registry.js';
import { OrtWorkerError } from './worker-executor.js';

interface Member {
  readonly session: InferenceSessionLike;
  inFlight: number;
  retired: boolean;
}

class SessionPool implements InferenceSessionLike {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  readonly inputMetadata: readonly InferenceSession.ValueMetadata[];
  readonly outputMetadata: readonly InferenceSession.ValueMetadata[];

  readonly #members: Member[];
  /** The member chosen last: ties start after it. */
  #last = -1;
  /** Why the last member was retired: what runs reject with once none is left. */
  #lastFailure: unknown;
  #release: Promise<void> | undefined;

  constructor(sessions: readonly InferenceSessionLike[]) {
    const first = sessions[0]!;
    this.inputNames = first.inputNames;
    this.outputNames = first.outputNames;
    this.inputMetadata = first.inputMetadata;
    this.outputMetadata = first.outputMetadata;
    this.#members = sessions.map((session) => ({ session, inFlight: 0, retired: false }));
  }

  /** Members still taking runs. */
  get live(): number {
    return this.#members.filter((m) => !m.retired).length;
  }

  /** Both of onnxruntime's `run` overloads: the arguments go to the chosen member as they came. */
  readonly run = ((feeds: InferenceSession.FeedsType, arg1?: InferenceSession.FetchesType | InferenceSession.RunOptions, arg2?: InferenceSession.RunOptions) =>
    this.#dispatch(feeds, arg1, arg2)) as InferenceSessionLike['run'];

  #dispatch(
    feeds: InferenceSession.FeedsType,
    arg1: InferenceSession.FetchesType | InferenceSession.RunOptions | undefined,
    arg2: InferenceSession.RunOptions | undefined,
  ): Promise<InferenceSession.ReturnType> {
    if (this.#release) return Promise.reject(new OrtWorkerError('released', 'onnxruntime session was released'));
    const m = this.#pick();
    if (!m) return Promise.reject(this.#lastFailure);
    let run: Promise<InferenceSession.ReturnType>;
    try {
      run = (m.session.run as (f: typeof feeds, a?: typeof arg1, b?: typeof arg2) => Promise<InferenceSession.ReturnType>).call(m.session, feeds, arg1, arg2);
    } catch (e) {
      return Promise.reject(e);
    }
    m.inFlight++;
    return run.then(
      (out) => {
        m.inFlight--;
        return out;
      },
      (e: unknown) => {
        m.inFlight--;
        if (e instanceof OrtWorkerError && e.reason === 'worker-failed' && !m.retired) {
          m.retired = true;
          this.#lastFailure = e;
        }
        throw e;
      },
    );
  }

  /** The live member with the fewest runs in flight, searching from the one after the last pick. */
  #pick(): Member | undefined {
    const n = this.#members.length;
    let best: Member | undefined;
    let bestAt = -1;
    for (let k = 1; k <= n; k++) {
      const i = (this.#last + k) % n;
      const m = this.#members[i]!;
      if (m.retired || (best && m.inFlight >= best.inFlight)) continue;
      best = m;
      bestAt = i;
      if (m.inFlight === 0) break;
    }
    if (best) this.#last = bestAt;
    return best;
  }

  /** Releases every member (each finishes the run in progress first); rejects with the first failure. */
  release(): Promise<void> {
    this.#release ??= releaseAll(this.#members.map((m) => m.session));
    return this.#release;
  }
}

/** How many sessions serve behind `s`: a pool's live members, else 1. */
export function sessionsIn(s: InferenceSessionLike): number {
  return s instanceof SessionPool ? s.live : 1;
}

async function releaseAll(sessions: readonly InferenceSessionLike[]): Promise<void> {
  const results = await Promise.allSettled(sessions.map((s) => s.release()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/**
 * Creates `size` sessions with `create` (all at once) and pools them; `size` 1 returns the
 * one session itself. If any creation fails, the sessions that were made are released
 * and the first failure is thrown, so no worker is left behind.
 */
export async function createSessionPool(size: number, create: () => Promise<InferenceSessionLike>): Promise<InferenceSessionLike> {
  if (!Number.isInteger(size) || size < 1) throw new RangeError(`session pool size must be a positive integer, got ${size}`);
  if (size === 1) return create();
  const results = await Promise.allSettled(Array.from({ length: size }, () => create()));
  const made = results.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) {
    await releaseAll(made).catch(() => undefined);
    throw failed.reason;
  }
  return new SessionPool(made);
}
