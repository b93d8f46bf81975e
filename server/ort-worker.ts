/**
 * Worker-thread side of server/worker-executor.ts: one onnxruntime session per worker.
 * Messages (worker-executor.ts `ToWorker` / `FromWorker`):
 *
 *   create {model, options}  -> created {names, metadata, model (zero-filled)} | create-failed
 *   run {id, feeds, fetches?, options?} -> result {id, outputs} | run-failed {id, error}
 *   release                  -> released {error?}   (the main thread then terminates us)
 *
 * Runs execute in arrival order (onnxruntime-node runs each synchronously in a
 * setImmediate). A message this module does not know is a protocol error: it throws, the
 * worker dies, and the main thread fails every pending run.
 *
 * SECURITY: the model bytes are zero-filled as soon as onnxruntime has parsed them (or
 * failed to). Nothing is logged; errors carry onnxruntime's message, never tensor values.
 */
import { parentPort } from 'node:worker_threads';
import * as ort from '../common/ort.js';
import type { InferenceSession } from 'onnxruntime-node';
import type { FromWorker, ToWorker, WireError, WireTensor } from './worker-executor.js';

if (!parentPort) throw new Error('ort-worker must run in a worker thread');
const port = parentPort;

let session: ort.InferenceSession | undefined;
let released = false;
/** Runs started and not yet answered: release waits for them. */
const inflight = new Set<Promise<void>>();

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  port.postMessage(msg, transfer);
}

function wireError(e: unknown): WireError {
  return e instanceof Error ? { name: e.name, message: e.message } : { name: 'Error', message: String(e) };
}

async function create(model: Uint8Array, options: InferenceSession.SessionOptions): Promise<void> {
  let s: ort.InferenceSession;
  try {
    s = await ort.InferenceSession.create(model, options);
  } catch (e) {
    // SECURITY: cleared before answering (the main thread may terminate us on the answer).
    model.fill(0);
    post({ type: 'create-failed', error: wireError(e) });
    return;
  }
  // SECURITY: onnxruntime holds its own parsed copy; the plaintext must not linger here.
  model.fill(0);
  session = s;
  try {
    post(
      {
        type: 'created',
        inputNames: [...s.inputNames],
        outputNames: [...s.outputNames],
        // Plain {name, isTensor, type, shape} objects in onnxruntime-node 1.30: cloneable.
        inputMetadata: [...s.inputMetadata],
        outputMetadata: [...s.outputMetadata],
        model,
      },
      [model.buffer as ArrayBuffer],
    );
  } catch (e) {
    post({ type: 'create-failed', error: wireError(e) });
  }
}

async function run(m: Extract<ToWorker, { type: 'run' }>): Promise<void> {
  if (!session || released) {
    post({ type: 'run-failed', id: m.id, error: { name: 'Error', message: 'onnxruntime session was released' } });
    return;
  }
  let results: InferenceSession.ReturnType;
  try {
    const feeds: Record<string, ort.Tensor> = {};
    for (const f of m.feeds) feeds[f.name] = new ort.Tensor(f.type, f.data as never, f.dims);
    results = m.fetches ? await session.run(feeds, [...m.fetches], m.options) : await session.run(feeds, m.options);
  } catch (e) {
    post({ type: 'run-failed', id: m.id, error: wireError(e) });
    return;
  }
  const outputs: WireTensor[] = [];
  const transfer = new Set<ArrayBuffer>();
  for (const [name, t] of Object.entries(results)) {
    const data = t.data;
    outputs.push({ name, type: t.type, dims: [...t.dims], data });
    // Output buffers are fresh per run and ours alone: move them instead of copying.
    if (ArrayBuffer.isView(data) && data.buffer instanceof ArrayBuffer) transfer.add(data.buffer);
  }
  try {
    post({ type: 'result', id: m.id, outputs }, [...transfer]);
  } catch {
    // A buffer that cannot be transferred (not detachable): send copies instead.
    try {
      post({ type: 'result', id: m.id, outputs });
    } catch (e) {
      post({ type: 'run-failed', id: m.id, error: wireError(e) });
    }
  }
}

async function release(): Promise<void> {
  released = true;
  await Promise.allSettled(inflight);
  const s = session;
  session = undefined;
  try {
    await s?.release();
    post({ type: 'released' });
  } catch (e) {
    post({ type: 'released', error: wireError(e) });
  }
}

port.on('message', (m: ToWorker) => {
  switch (m?.type) {
    case 'create':
      void create(m.model, m.options);
      return;
    case 'run': {
      const p = run(m).finally(() => inflight.delete(p));
      inflight.add(p);
      return;
    }
    case 'release':
      void release();
      return;
    default:
      throw new Error('ort-worker: unknown message');
  }
});
