/**
 * Server-side timing for the bench's server processes: a grpc-js server interceptor that
 * times every call of one method, from the moment grpc-js hands the new call to the
 * interceptors (the HTTP/2 stream's request headers have arrived) to the moment the
 * response message has been serialised and handed to HTTP/2. That span holds everything the
 * server process does for a call (reading the request body, decoding, validation, the
 * model run, encoding the response) and nothing of the transport: not the client, not the
 * kernel's loopback, not the wake-ups of either process, not the trailers. Against the
 * client's latency of the same calls it splits the overhead over `inproc` into the serving
 * layer's share and the transport's share.
 *
 * Only calls whose handler produced a response message are recorded (a call that failed in
 * the handler has none). `reset()` starts a new window: calls that started before it are not
 * recorded, even when they answer after it, so a window holds only calls that began inside
 * it. The bench sends the reset over stdin as its measured window starts, while requests come
 * over TCP, so the server's window is the client's only approximately: a call or two at either
 * edge may fall on the other side.
 */
import * as grpc from '@grpc/grpc-js';
import { LatencyRecorder, type LatencySummary } from './stats.js';

export interface ServerTiming {
  /** Install on the grpc-js server (`interceptors` option). */
  readonly interceptor: grpc.ServerInterceptor;
  /** Forgets what was recorded; calls started before this are not recorded. */
  reset(): void;
  /** The calls recorded since the last reset (or since creation). */
  summary(): LatencySummary;
}

/** Times the calls of `methodPath` (e.g. `/inference.GRPCInferenceService/ModelInfer`). */
export function createServerTiming(methodPath: string, now: () => number = () => performance.now()): ServerTiming {
  let rec = new LatencyRecorder();
  let generation = 0;
  const interceptor: grpc.ServerInterceptor = (method, call) => {
    if (method.path !== methodPath) return new grpc.ServerInterceptingCall(call);
    const started = now();
    const startedIn = generation;
    let recorded = false;
    return new grpc.ServerInterceptingCall(call, {
      sendMessage(message, next) {
        next(message);
        // A unary method answers once; a second message (a streaming method) is not timed again.
        if (recorded || startedIn !== generation) return;
        recorded = true;
        rec.recordMs(Math.max(0, now() - started));
      },
    });
  };
  return {
    interceptor,
    reset() {
      generation++;
      rec.destroy();
      rec = new LatencyRecorder();
    },
    summary: () => rec.summary(),
  };
}
