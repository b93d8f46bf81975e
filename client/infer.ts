/**
 * `cir infer`: verify the server first, then call ModelInfer over the channel pinned to
 * the attested TLS key. SECURITY: if verification fails nothing is sent; the inference
 * request is never built into a call on an unverified channel.
 */
import { loadServiceClients } from '../server/proto.js';
import { ClientError } from './codes.js';
import { fromModelInferResponse, toModelInferRequest, type OutputTensorJson } from './tensor-json.js';
import { verifyServer, type VerifyServerOptions, type VerifyServerResult } from './verify.js';
import { parseTarget } from './pinned-tls.js';
import { INFER_CHANNEL_OPTIONS, PINNED_CHANNEL_OPTIONS } from './pinned-tls.js';
import type * as grpc from '@grpc/grpc-js';
import { status as grpcStatus, Metadata as grpcMetadata } from '@grpc/grpc-js';

/** Maps a ModelInfer status to a typed error; the server's message is public by design. */
function inferError(err: grpc.ServiceError): ClientError {
  const detail = `ModelInfer: ${err.details || err.message}`;
  switch (err.code) {
    case grpcStatus.INVALID_ARGUMENT:
      return new ClientError('ERR_CLI_SERVER_REJECTED_INPUT', { detail, cause: err });
    case grpcStatus.NOT_FOUND:
      return new ClientError('ERR_CLI_SERVER_MODEL_NOT_FOUND', { detail, cause: err });
    case grpcStatus.RESOURCE_EXHAUSTED: {
      // The server's retry hint (tenancy limits), in milliseconds.
      const retry = Number(err.metadata?.get('retry-after-ms')[0]);
      return new ClientError('ERR_CLI_SERVER_OVERLOADED', { detail, cause: err, ...(Number.isFinite(retry) ? { details: { retryAfterMs: retry } } : {}) });
    }
    default:
      return new ClientError('ERR_CLI_RPC_FAILED', { detail, cause: err });
  }
}

export interface InferOptions extends VerifyServerOptions {
  readonly model: string;
  /** Parsed JSON input file (see tensor-json.ts). */
  readonly input: unknown;
  /**
   * API key (`cir_<keyId>_<secret>`) sent as `authorization: Bearer ...` on ModelInfer,
   * only after verification succeeded. SECURITY: never logged or put in an error.
   */
  readonly apiKey?: string;
}

export interface InferResult {
  readonly verification: VerifyServerResult;
  readonly model: string;
  readonly outputs: OutputTensorJson[];
}

export async function inferVerified(opts: InferOptions): Promise<InferResult> {
  // Build the request before connecting so a malformed input file fails locally.
  const request = toModelInferRequest(opts.model, opts.input);
  const verification = await verifyServer(opts);
  if (!verification.ok || !verification.credentials) {
    const failed = verification.checks.filter((c) => !c.ok).map((c) => c.name);
    throw new ClientError('ERR_CLI_NOT_VERIFIED', { detail: `failed: ${failed.join(', ')}`, details: { checks: verification.checks } });
  }
  const { GRPCInferenceService } = loadServiceClients();
  const t = parseTarget(opts.server);
  const metadata = new grpcMetadata();
  if (opts.apiKey !== undefined) metadata.set('authorization', `Bearer ${opts.apiKey}`);
  const client = new GRPCInferenceService(`${t.host.includes(':') ? `[${t.host}]` : t.host}:${t.port}`, verification.credentials, {
    ...PINNED_CHANNEL_OPTIONS,
    ...INFER_CHANNEL_OPTIONS,
  });
  try {
    const res = await new Promise<Parameters<typeof fromModelInferResponse>[0]>((resolve, reject) => {
      (client as unknown as Record<string, Function>).ModelInfer!.call(
        client,
        request,
        metadata,
        { deadline: Date.now() + (opts.timeoutMs ?? 30_000) },
        (err: grpc.ServiceError | null, r: Parameters<typeof fromModelInferResponse>[0]) => {
          if (err) reject(inferError(err));
          else resolve(r);
        },
      );
    });
    const decoded = fromModelInferResponse(res);
    return { verification, model: decoded.model, outputs: decoded.outputs };
  } finally {
    client.close();
  }
}
