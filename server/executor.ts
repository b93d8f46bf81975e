/**
 * How the server executes models: onnxruntime session options (threads, execution mode),
 * where sessions run (the executor), and the gRPC server options of the hot path.
 *
 * Executor. onnxruntime-node runs `session.run()` synchronously on the calling thread (it
 * is wrapped in a setImmediate, not moved to a thread). With `executor: 'inline'` (the
 * default) that thread is the Node event loop: gRPC I/O waits while a model runs. With
 * `executor: 'worker'` each session lives in its own worker thread
 * (server/worker-executor.ts) and the event loop only decodes, copies the inputs across,
 * and encodes: gRPC I/O overlaps with compute. The worker costs a postMessage round trip
 * and one input copy per run (tens of microseconds), so it pays only for models that take
 * milliseconds; for sub-millisecond models inline is faster.
 *
 * Threads. Either way one thread calls onnxruntime (the event loop inline, the worker
 * otherwise) and counts as one of its compute threads, and the event loop needs a core of
 * its own for gRPC. The default therefore leaves one core to the event loop and gives
 * onnxruntime the rest: intra-op threads = max(1, cores - 1), counting the caller. On a
 * 2-core machine that is 1. It is a trade-off, not a rule (measured, bench/README.md "Hot
 * path", Threads): a second thread competes with the event loop for the other core, which
 * costs small models (VAD throughput -8 to -20 % over gRPC, -30 % in process), but halves
 * the run of a compute-bound one (a 12 ms CNN: 13.7-14.0 ms at p50 over gRPC becomes
 * 7.2-7.6 ms, and its throughput at concurrency 4 rises from 73-78 to 118-132 req/s).
 * Servers of heavy models on small machines should measure `intraOpThreads: 2`. With
 * workers, sessions of different models run at the same time, each with its own pool: with
 * several busy models, lower `intraOpThreads`.
 * `executionMode: 'parallel'` only helps graphs with independent branches; the default is
 * onnxruntime's `sequential`, where inter-op threads are unused.
 *
 * Workers. One session serves one request at a time (onnxruntime-node runs it
 * synchronously on one thread), so on a machine of many cores one model's throughput is
 * that of one run at a time, however the intra-op threads speed it up. With the worker
 * executor, `workers: N` gives each model N sessions in N worker threads
 * (server/session-pool.ts): N requests of the model run at once, at the cost of N copies
 * of its weights. The default intra-op count is then divided between them:
 * max(1, floor((cores - 1) / N)) each.
 *
 * What this module does NOT do: it does not choose an execution provider (the server
 * creates CPU sessions).
 */
import { availableParallelism } from 'node:os';
import * as ort from '../common/ort.js';
import type { InferenceSession } from 'onnxruntime-node';
import type { InferenceSessionLike } from './registry.js';
import { createSessionPool } from './session-pool.js';
import { createWorkerSession } from './worker-executor.js';

export type ExecutionMode = 'sequential' | 'parallel';

/** Where sessions run: on the event loop, or each in its own worker thread. */
export type ExecutorKind = 'inline' | 'worker';

/** Operator settings (server config); 0 threads means "cir picks" (see resolveThreads). */
export interface ExecutionSettings {
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  readonly executionMode: ExecutionMode;
  /** onnxruntime thread-pool spin-waiting (`session.intra_op.allow_spinning`); default off. */
  readonly spinning?: boolean;
  /** Where sessions run; default 'inline' (see the header). */
  readonly executor?: ExecutorKind;
  /** Sessions (worker threads) per model, worker executor only; default 1 (see the header). */
  readonly workers?: number;
}

/** Resolved thread counts, as passed to onnxruntime. */
export interface ResolvedThreads {
  readonly intraOpNumThreads: number;
  /** Absent: onnxruntime's default (only used in parallel mode). */
  readonly interOpNumThreads?: number;
}

/**
 * Thread counts for `cores` CPU cores: intra-op = the configured value, or
 * max(1, floor((cores - 1) / workers)) when 0 (workers defaults to 1); inter-op = the
 * configured value, or onnxruntime's default when 0. Does not check that `cores` matches
 * the machine (tests pass their own).
 */
export function resolveThreads(
  s: Pick<ExecutionSettings, 'intraOpThreads' | 'interOpThreads' | 'workers'>,
  cores = availableParallelism(),
): ResolvedThreads {
  const intra = s.intraOpThreads > 0 ? s.intraOpThreads : Math.max(1, Math.floor((Math.floor(cores) - 1) / (s.workers ?? 1)));
  return s.interOpThreads > 0 ? { intraOpNumThreads: intra, interOpNumThreads: s.interOpThreads } : { intraOpNumThreads: intra };
}

/**
 * Session options for a model: the caller's `base` (execution providers, optimisation
 * level) with threads and execution mode from `settings` overriding any in `base`.
 */
export function sessionOptionsFor(
  base: InferenceSession.SessionOptions,
  settings: ExecutionSettings,
  cores?: number,
): InferenceSession.SessionOptions {
  const { intraOpNumThreads: _i, interOpNumThreads: _o, executionMode: _m, ...rest } = base;
  // Session config entries (onnxruntime flattens `extra` to `session.intra_op.allow_spinning`).
  const noSpin = settings.spinning === true ? undefined : { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } };
  return { ...rest, ...resolveThreads(settings, cores), executionMode: settings.executionMode, ...(noSpin ? { extra: noSpin } : {}) };
}

/** The shape of boot.ts's SessionFactory (kept structural so boot.ts need not import this). */
export type CreateSession = (model: Uint8Array, options: InferenceSession.SessionOptions) => Promise<InferenceSessionLike>;

const createInline: CreateSession = (model, options) => ort.InferenceSession.create(model, options);

/**
 * A session factory for boot.ts that applies `settings` (threads, execution mode) on top
 * of boot's options. `create` defaults to onnxruntime-node's InferenceSession.create, or
 * to a worker-thread session with `settings.executor: 'worker'`; tests inject a fake to
 * see the options. With `workers` > 1 each model gets a pool of that many sessions, each
 * made by `create`; that needs the worker executor (a RangeError otherwise: inline
 * sessions all run on the one event loop, so a pool of them would run no faster).
 */
export function createSessionFactory(settings: ExecutionSettings, create?: CreateSession, cores?: number): CreateSession {
  const workers = settings.workers ?? 1;
  if (!Number.isInteger(workers) || workers < 1) throw new RangeError(`workers must be a positive whole number, got ${workers}`);
  if (workers > 1 && settings.executor !== 'worker') throw new RangeError(`workers: ${workers} needs the worker executor`);
  const c = create ?? (settings.executor === 'worker' ? (m, o) => createWorkerSession(m, o) : createInline);
  return (model, options) => {
    const o = sessionOptionsFor(options, settings, cores);
    return createSessionPool(workers, () => c(model, o));
  };
}


/**
 * grpc-js server options for the hot path, merged into the server's own options (message
 * size limits stay the caller's). Channelz keeps per-call statistics and traces that cir
 * never reads: it is off. `maxConcurrentStreams` bounds streams per HTTP/2 connection so
 * one client cannot queue more calls than the server admits (ERR_SRV_OVERLOADED answers
 * the rest quickly). No compression is configured: tensors rarely compress, and
 * compressing would put zlib on the event loop.
 * `maxConcurrentInfers` + 16 streams per connection: a well-behaved client sees
 * ERR_SRV_OVERLOADED (a fast, typed answer) before HTTP/2 starts queueing its calls, and
 * control RPCs (ModelReady, metadata) still get through at the limit.
 */
export function hotPathServerOptions(maxConcurrentInfers: number): Record<string, number> {
  return {
    'grpc.enable_channelz': 0,
    'grpc.max_concurrent_streams': Math.max(1, Math.floor(maxConcurrentInfers)) + 16,
  };
}
