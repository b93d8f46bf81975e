/**
 * Error codes of the inference server (`ERR_SRV_*`). Each code has a fixed category that
 * alone decides its gRPC status (common/errors.ts `grpcStatusFor`) and a fixed public
 * message; specifics go in `detail` and must name tensors, fields or sizes, never values.
 * The table is documented in server/README.md; codes.test.ts keeps the two in step.
 */
import { errorFactory, type CodeTable } from '../common/errors.js';

export const SERVER_CODES = {
  // Request decoding (INVALID_ARGUMENT).
  ERR_SRV_BAD_REQUEST: { category: 'bad-input', message: 'malformed request' },
  ERR_SRV_TENSOR_UNKNOWN_INPUT: { category: 'bad-input', message: 'unknown input tensor' },
  ERR_SRV_TENSOR_MISSING_INPUT: { category: 'bad-input', message: 'missing input tensor' },
  ERR_SRV_TENSOR_DUPLICATE: { category: 'bad-input', message: 'duplicate tensor' },
  ERR_SRV_TENSOR_DATATYPE: { category: 'bad-input', message: 'wrong tensor datatype' },
  ERR_SRV_TENSOR_SHAPE: { category: 'bad-input', message: 'invalid tensor shape' },
  ERR_SRV_TENSOR_SIZE: { category: 'bad-input', message: 'tensor data size does not match its shape' },
  ERR_SRV_TENSOR_VALUE: { category: 'bad-input', message: 'tensor value out of range for its datatype' },
  ERR_SRV_TENSOR_CONTENTS: { category: 'bad-input', message: 'invalid tensor contents' },
  ERR_SRV_TENSOR_TOO_LARGE: { category: 'bad-input', message: 'tensor element limit exceeded' },
  ERR_SRV_TENSOR_UNKNOWN_OUTPUT: { category: 'bad-input', message: 'unknown output tensor' },
  ERR_SRV_BAD_NONCE: { category: 'bad-input', message: 'client nonce must be exactly 32 bytes' },
  // Lookup and state.
  ERR_SRV_UNKNOWN_MODEL: { category: 'not-found', message: 'unknown model' },
  ERR_SRV_NOT_READY: { category: 'unavailable', message: 'server is not ready' },
  ERR_SRV_OVERLOADED: { category: 'overload', message: 'too many concurrent requests' },
  // Key broker (boot).
  ERR_SRV_BROKER_UNAVAILABLE: { category: 'unavailable', message: 'key broker unreachable or failing' },
  ERR_SRV_BROKER_REJECTED: { category: 'bad-input', message: 'key broker rejected the request' },
  ERR_SRV_BROKER_UNAUTHORIZED: { category: 'unauthorized', message: 'key broker refused the credential' },
  ERR_SRV_BROKER_VERIFICATION: { category: 'verification', message: 'key broker could not verify the evidence' },
  ERR_SRV_BROKER_DENIED: { category: 'policy', message: 'key broker policy denied the request' },
  ERR_SRV_BROKER_NOT_FOUND: { category: 'not-found', message: 'key broker does not know the key' },
  ERR_SRV_BROKER_PROTOCOL: { category: 'internal', message: 'key broker response violates the protocol' },
  ERR_SRV_EVIDENCE: { category: 'unavailable', message: 'evidence collection failed' },
  ERR_SRV_RELEASE_DECRYPT: { category: 'verification', message: 'released key could not be decrypted' },
  ERR_SRV_RELEASE_SIGNATURE: { category: 'verification', message: 'key release is not signed by the pinned broker key' },
  // Models (boot).
  ERR_SRV_MODEL_READ: { category: 'config', message: 'model file could not be read' },
  ERR_SRV_MODEL_PLAINTEXT_FORBIDDEN: { category: 'config', message: 'plaintext model not allowed' },
  ERR_SRV_MODEL_SEALED: { category: 'verification', message: 'sealed model could not be opened' },
  ERR_SRV_MODEL_UNSUPPORTED: { category: 'config', message: 'model uses an unsupported tensor type' },
  ERR_SRV_MODEL_LOAD: { category: 'internal', message: 'model could not be loaded' },
  ERR_SRV_BOOT_ABORTED: { category: 'unavailable', message: 'boot cancelled' },
  // Hot path and execution (server/registry.ts, server/tensors.ts, server/inference-service.ts).
  ERR_SRV_MODEL_WITHDRAWN: { category: 'unavailable', message: 'model has been withdrawn' },
  // API keys, quotas, extraction defenses (server/tenancy).
  ERR_SRV_UNAUTHENTICATED: { category: 'unauthorized', message: 'missing or invalid API key' },
  ERR_SRV_SCOPE_DENIED: { category: 'forbidden', message: 'operation not permitted for this API key' },
  ERR_SRV_KEY_BLOCKED: { category: 'forbidden', message: 'API key blocked for this model' },
  ERR_SRV_RATE_LIMITED: { category: 'overload', message: 'rate limit exceeded' },
  ERR_SRV_CONCURRENCY_LIMITED: { category: 'overload', message: 'concurrent request limit exceeded' },
  ERR_SRV_QUOTA_EXCEEDED: { category: 'overload', message: 'daily quota exceeded' },
  ERR_SRV_QUERY_BUDGET_EXCEEDED: { category: 'overload', message: 'query budget for this model exceeded' },
  ERR_SRV_REQUEST_LIMIT: { category: 'overload', message: 'request exceeds a hard limit' },
  ERR_SRV_LOAD_SHED: { category: 'overload', message: 'server is shedding load' },
  ERR_SRV_TIME_LIMIT: { category: 'overload', message: 'request exceeded the server time limit' },
  ERR_SRV_KEY_STORE: { category: 'config', message: 'invalid API key store' },
  ERR_SRV_KEY_NOT_FOUND: { category: 'not-found', message: 'no such API key' },
  // Key leases and revocation (server/boot.ts, server/lease.ts).
  ERR_SRV_LEASE_INVALID: { category: 'verification', message: 'key lease is not a valid lease from the pinned broker' },
  // Operator configuration.
  ERR_SRV_CONFIG: { category: 'config', message: 'invalid server configuration' },
  ERR_SRV_TLS: { category: 'config', message: 'invalid TLS certificate or key' },
  // Fallback.
  ERR_SRV_INTERNAL: { category: 'internal', message: 'internal error' },
} as const satisfies CodeTable<string>;

export type ServerErrorCode = keyof typeof SERVER_CODES;

export const ServerError = errorFactory<ServerErrorCode>(SERVER_CODES, 'ServerError');
export type ServerError = InstanceType<typeof ServerError>;
