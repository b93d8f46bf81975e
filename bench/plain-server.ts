/**
 * The reference of the `grpc-plain` bench mode: the smallest KServe v2 ModelInfer server a
 * team would write for itself with the libraries cir uses, and nothing else. It answers one
 * question: how much of what the `grpc` mode adds over `inproc` is cir's serving layer, and
 * how much is grpc-js, HTTP/2, loopback TCP and a second process on this machine?
 *
 * It shares with the cir server everything that is not cir's own code:
 *   - grpc-js with the same hot-path options (server/executor.ts hotPathServerOptions);
 *   - the same proto definitions and codec (server/proto.ts, proto-loader + protobufjs);
 *   - onnxruntime-node sessions with the same options and executor
 *     (server/executor.ts createSessionFactory, graph optimisation 'all', CPU);
 *   - zero-copy input tensors when the bytes are aligned, output bytes handed to the
 *     response without a copy (server/tensors.ts isZeroCopy, rawView);
 *   - idle polling after each call when asked (server/idle-poll.ts, `idlePollUs`).
 * It has none of cir's controls: no attestation, no sealed models, no validation beyond
 * what keeps it from crashing, no authentication, limits, logging or metrics. It only
 * serves plaintext models, on loopback, inside `cir bench`; it is not a server to deploy.
 */
import * as grpc from '@grpc/grpc-js';
import { Tensor } from '../common/ort.js';
import { loadServiceDefinitions } from '../server/proto.js';
import { createSessionFactory, hotPathServerOptions, type ExecutionSettings } from '../server/executor.js';
import { ARRAY_TYPES, DATATYPES, datatypeForOrtType, isDatatype, isZeroCopy, rawView } from '../server/tensors.js';
import type { InferenceSessionLike } from '../server/registry.js';
import { createIdlePoller } from '../server/idle-poll.js';
import { sessionsIn } from '../server/session-pool.js';

export interface PlainModel {
  readonly name: string;
  readonly onnx: Uint8Array;
}

export interface PlainServerOptions {
  readonly models: readonly PlainModel[];
  readonly execution: ExecutionSettings;
  readonly maxMessageBytes: number;
  /** Concurrent calls per connection, as the cir server's `maxConcurrentInfers`. */
  readonly maxConcurrentInfers: number;
  /** grpc-js server interceptors (the bench's server-side timing); none by default. */
  readonly interceptors?: readonly grpc.ServerInterceptor[];
  /** As the cir server's `idlePollUs` (server/idle-poll.ts); default 0, off. */
  readonly idlePollUs?: number;
}

export interface PlainServer {
  readonly port: number;
  /** Sessions serving each model (`execution.workers` when the pool was built), by name. */
  readonly sessions: ReadonlyMap<string, number>;
  close(): Promise<void>;
}

interface WireInput {
  readonly name?: unknown;
  readonly datatype?: unknown;
  readonly shape?: unknown;
}

/** A gRPC error that names no input value (the reference keeps cir's rule on secrets). */
const fail = (code: grpc.status, details: string): grpc.ServiceError => Object.assign(new Error(details), { code, details, metadata: new grpc.Metadata() });

/** What a caller may see of a thrown error: this module's own statuses, else a fixed INTERNAL. */
export function asStatus(e: unknown): grpc.ServiceError {
  const own = e instanceof Error && typeof (e as Partial<grpc.ServiceError>).code === 'number' && (e as Partial<grpc.ServiceError>).metadata instanceof grpc.Metadata;
  return own ? (e as grpc.ServiceError) : fail(grpc.status.INTERNAL, 'request failed');
}

/** Grace for calls in flight when the server closes, as the cir server gives. */
const CLOSE_GRACE_MS = 5000;

/** A copy of `bytes` in an ArrayBuffer of its own (Buffer#slice would be a view). */
function plainCopy(bytes: Uint8Array): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  out.set(bytes);
  return out;
}

/**
 * Builds the feeds of one request: each input's `raw_input_contents` as a tensor of its
 * declared datatype and shape, zero-copy when aligned. Throws a ServiceError for what
 * would otherwise throw inside onnxruntime.
 */
export function plainFeeds(req: { inputs?: unknown; raw_input_contents?: unknown }): Record<string, Tensor> {
  const inputs = Array.isArray(req.inputs) ? (req.inputs as WireInput[]) : [];
  const raw = Array.isArray(req.raw_input_contents) ? (req.raw_input_contents as unknown[]) : [];
  if (inputs.length === 0 || raw.length !== inputs.length) throw fail(grpc.status.INVALID_ARGUMENT, 'every input must come in raw_input_contents');
  const feeds: Record<string, Tensor> = Object.create(null) as Record<string, Tensor>;
  for (let i = 0; i < inputs.length; i++) {
    const { name, datatype, shape } = inputs[i]!;
    const bytes = raw[i];
    if (typeof name !== 'string' || !isDatatype(datatype) || !Array.isArray(shape) || !(bytes instanceof Uint8Array)) {
      throw fail(grpc.status.INVALID_ARGUMENT, `input ${i} needs a name, a datatype, a shape and raw contents`);
    }
    if (Object.hasOwn(feeds, name)) throw fail(grpc.status.INVALID_ARGUMENT, `input ${i} repeats the name of an earlier input`);
    const dims = shape.map(Number);
    const count = dims.reduce((a, d) => a * d, 1);
    const info = DATATYPES[datatype];
    if (!dims.every((d) => Number.isSafeInteger(d) && d >= 0) || count * info.bytes !== bytes.byteLength) {
      throw fail(grpc.status.INVALID_ARGUMENT, `input ${i}: shape and byte length disagree`);
    }
    const Ctor = ARRAY_TYPES[datatype];
    const data = isZeroCopy(bytes, info.bytes) ? new Ctor(bytes.buffer as ArrayBuffer, bytes.byteOffset, count) : new Ctor(plainCopy(bytes).buffer as ArrayBuffer, 0, count);
    feeds[name] = new Tensor(info.ort, data as Float32Array, dims);
  }
  return feeds;
}

/** The response of one run: every output, raw, in the session's output order. */
export function plainResponse(modelName: string, id: unknown, outputNames: readonly string[], results: Readonly<Record<string, Tensor>>): object {
  const outputs: object[] = [];
  const raw: Buffer[] = [];
  for (const [i, name] of outputNames.entries()) {
    const t = results[name];
    const dt = t && datatypeForOrtType(t.type);
    if (!t || !dt) throw fail(grpc.status.INTERNAL, `output ${i} has no supported tensor`);
    outputs.push({ name, datatype: dt, shape: t.dims.map(Number) });
    raw.push(rawView(t.data as Float32Array));
  }
  return { model_name: modelName, id: typeof id === 'string' ? id : '', outputs, raw_output_contents: raw };
}

/** Starts the reference server on 127.0.0.1 (an ephemeral port), plaintext. */
export async function startPlainServer(o: PlainServerOptions): Promise<PlainServer> {
  const create = createSessionFactory(o.execution);
  const idlePoll = createIdlePoller(o.idlePollUs ?? 0);
  const sessions = new Map<string, InferenceSessionLike>();
  /** Each model's run, counted as in flight by the idle poller (the run itself when it is off). */
  const runs = new Map<string, (feeds: Record<string, Tensor>) => Promise<Readonly<Record<string, Tensor>>>>();
  const release = async (): Promise<void> => {
    for (const s of sessions.values()) await s.release().catch(() => undefined);
  };
  const server = new grpc.Server({
    'grpc.max_receive_message_length': o.maxMessageBytes,
    'grpc.max_send_message_length': o.maxMessageBytes,
    ...hotPathServerOptions(o.maxConcurrentInfers),
    ...(o.interceptors?.length ? { interceptors: [...o.interceptors] } : {}),
  });
  const method = loadServiceDefinitions().inference['ModelInfer']!;
  const modelInfer: grpc.handleUnaryCall<{ model_name?: unknown; id?: unknown; inputs?: unknown; raw_input_contents?: unknown }, object> = (call, callback) => {
    const req = call.request;
    const session = typeof req.model_name === 'string' ? sessions.get(req.model_name) : undefined;
    if (!session) {
      callback(fail(grpc.status.NOT_FOUND, 'unknown model'));
      return;
    }
    let feeds: Record<string, Tensor>;
    try {
      feeds = plainFeeds(req);
    } catch (e) {
      callback(asStatus(e));
      return;
    }
    runs.get(req.model_name as string)!(feeds).then(
      (results) => {
        try {
          callback(null, plainResponse(req.model_name as string, req.id, session.outputNames, results));
        } catch (e) {
          callback(asStatus(e));
        }
      },
      () => callback(fail(grpc.status.INTERNAL, 'inference failed')),
    );
  };
  let port: number;
  try {
    for (const m of o.models) {
      const s = await create(m.onnx, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
      sessions.set(m.name, s);
      runs.set(m.name, idlePoll.track((feeds: Record<string, Tensor>) => s.run(feeds)));
    }
    server.addService({ ModelInfer: method }, { ModelInfer: modelInfer as grpc.UntypedHandleCall });
    port = await new Promise<number>((resolve, reject) =>
      server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
    );
  } catch (e) {
    server.forceShutdown();
    await release();
    throw e;
  }
  return {
    port,
    sessions: new Map([...sessions].map(([name, s]) => [name, sessionsIn(s)])),
    async close() {
      idlePoll.stop();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => server.forceShutdown(), CLOSE_GRACE_MS);
        server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
      await release();
    },
  };
}
