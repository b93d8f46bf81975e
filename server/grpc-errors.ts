/**
 * The gRPC edge: every handler goes through `unary`, which turns any outcome into a
 * response or a status, so no exception ever reaches grpc-js raw.
 *
 * Mapping (common/errors.ts `grpcStatusFor`): bad-input -> INVALID_ARGUMENT,
 * verification/unauthorized -> UNAUTHENTICATED, policy/forbidden -> PERMISSION_DENIED,
 * overload -> RESOURCE_EXHAUSTED, not-found -> NOT_FOUND, unavailable -> UNAVAILABLE,
 * everything else (internal, config, non-CirError) -> INTERNAL "internal error".
 *
 * SECURITY: public errors carry their fixed message plus public detail and the error code
 * in the `cir-error-code` trailer; non-public errors carry only "internal error" and a
 * request id (`cir-request-id`) that matches the local log line holding the cause. No
 * stack trace or cause ever crosses the edge.
 */
import { randomUUID } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { grpcStatusFor, isCirError, isPublicCategory } from '../common/errors.js';

export const ERROR_CODE_METADATA_KEY = 'cir-error-code';
export const REQUEST_ID_METADATA_KEY = 'cir-request-id';
export const INTERNAL_MESSAGE = 'internal error';

export interface GrpcErrorStatus {
  code: grpc.status;
  details: string;
  metadata: grpc.Metadata;
}

/** Converts any thrown value into a gRPC status, logging non-public causes locally. */
export function toGrpcStatus(err: unknown, logger: Logger, method: string, requestId: string): GrpcErrorStatus {
  const metadata = new grpc.Metadata();
  metadata.set(REQUEST_ID_METADATA_KEY, requestId);
  if (isCirError(err) && isPublicCategory(err.category)) {
    metadata.set(ERROR_CODE_METADATA_KEY, err.code);
    logger.debug({ method, requestId, code: err.code }, 'request rejected');
    return { code: grpcStatusFor(err.category) as grpc.status, details: err.message, metadata };
  }
  // SECURITY: cause and stack go to the local log only.
  logger.error({ method, requestId, code: isCirError(err) ? err.code : undefined, err }, 'request failed');
  return { code: grpc.status.INTERNAL, details: INTERNAL_MESSAGE, metadata };
}

export type UnaryHandler<Req, Res> = (request: Req, call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res> | Res;

/** Wraps an async handler into a grpc-js unary handler that never throws. */
export function unary<Req, Res>(
  logger: Logger,
  method: string,
  handler: UnaryHandler<Req, Res>,
): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    let pending: Promise<Res>;
    try {
      pending = Promise.resolve(handler(call.request, call));
    } catch (e) {
      pending = Promise.reject(e);
    }
    pending.then(
      (res) => callback(null, res),
      (err: unknown) => {
        // The request id exists only to tie an error reply to its log line: made on the
        // error path, not for every request.
        const s = toGrpcStatus(err, logger, method, randomUUID());
        callback({ code: s.code, details: s.details, metadata: s.metadata });
      },
    );
  };
}
