/**
 * Error model shared by every cir package.
 *
 * Each package defines its own literal-union of codes (`ERR_ATT_*`, `ERR_KMS_*`,
 * `ERR_SRV_*`, `ERR_SEAL_*`, `ERR_CFG_*`, `ERR_CLI_*`) in a `codes.ts` table that gives
 * every code a category and a fixed message. The category alone decides how the error
 * crosses a process edge (HTTP status, gRPC status, CLI exit code), so the mapping is
 * written once, here.
 *
 * SECURITY: `detail` may name spec fields and public values (a measurement in hex, a
 * field name, a size). It must never carry key material, tokens, prompts, tensor
 * contents or whole evidence blobs. `cause` is kept for local logs only and is never
 * serialised to a remote caller.
 */

export type ErrorCategory =
  | 'bad-input' // malformed request, hostile bytes, wrong shape: the caller's fault
  | 'unauthorized' // missing or wrong credential
  | 'verification' // evidence or token failed cryptographic verification or freshness
  | 'policy' // evidence verified, but policy said no
  | 'forbidden' // authenticated, but not allowed to do this
  | 'not-found'
  | 'conflict'
  | 'overload' // a bound was hit: rate, size, count
  | 'unavailable' // a dependency is not ready yet; retry later
  | 'config' // operator configuration is invalid
  | 'internal'; // anything else: a bug, never detailed to a remote caller

export interface ErrorCodeInfo {
  readonly category: ErrorCategory;
  /** Fixed, public message. Detail is appended separately. */
  readonly message: string;
}

export type CodeTable<C extends string> = { readonly [K in C]: ErrorCodeInfo };

export interface CirErrorOptions {
  /** Public, non-secret specifics (field names, expected/observed public values). */
  readonly detail?: string;
  /** Structured public specifics, e.g. policy failures. Must be non-secret. */
  readonly details?: Readonly<Record<string, unknown>>;
  /** Local-only; never sent to a remote caller. */
  readonly cause?: unknown;
}

export class CirError<C extends string = string> extends Error {
  readonly code: C;
  readonly category: ErrorCategory;
  readonly detail: string | undefined;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: C, info: ErrorCodeInfo, options: CirErrorOptions = {}) {
    super(options.detail ? `${info.message}: ${options.detail}` : info.message, { cause: options.cause });
    this.name = 'CirError';
    this.code = code;
    this.category = info.category;
    this.detail = options.detail;
    this.details = options.details;
  }
}

/** Builds a typed error factory for one package's code table. */
export function errorFactory<C extends string>(table: CodeTable<C>, name: string) {
  class PackageError extends CirError<C> {
    constructor(code: C, options?: CirErrorOptions) {
      super(code, table[code], options);
      this.name = name;
    }
  }
  Object.defineProperty(PackageError, 'name', { value: name });
  return PackageError;
}

export function isCirError(e: unknown): e is CirError {
  return e instanceof CirError;
}

const HTTP_STATUS: Readonly<Record<ErrorCategory, number>> = {
  'bad-input': 400,
  unauthorized: 401,
  verification: 403,
  policy: 403,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  overload: 429,
  unavailable: 503,
  config: 500,
  internal: 500,
};

export function httpStatusFor(category: ErrorCategory): number {
  return HTTP_STATUS[category];
}

/** gRPC status codes (numeric, from grpc/status.proto) so this module has no grpc dependency. */
export const GrpcStatus = {
  OK: 0,
  INVALID_ARGUMENT: 3,
  NOT_FOUND: 5,
  ALREADY_EXISTS: 6,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  FAILED_PRECONDITION: 9,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

const GRPC_STATUS: Readonly<Record<ErrorCategory, number>> = {
  'bad-input': GrpcStatus.INVALID_ARGUMENT,
  unauthorized: GrpcStatus.UNAUTHENTICATED,
  verification: GrpcStatus.UNAUTHENTICATED,
  policy: GrpcStatus.PERMISSION_DENIED,
  forbidden: GrpcStatus.PERMISSION_DENIED,
  'not-found': GrpcStatus.NOT_FOUND,
  conflict: GrpcStatus.ALREADY_EXISTS,
  overload: GrpcStatus.RESOURCE_EXHAUSTED,
  unavailable: GrpcStatus.UNAVAILABLE,
  config: GrpcStatus.INTERNAL,
  internal: GrpcStatus.INTERNAL,
};

export function grpcStatusFor(category: ErrorCategory): number {
  return GRPC_STATUS[category];
}

/** Whether the message of an error of this category may be shown to a remote caller. */
export function isPublicCategory(category: ErrorCategory): boolean {
  return category !== 'internal' && category !== 'config';
}

/** CLI exit codes: 0 ok, 1 check failed (verification/policy), 2 usage/config, 3 other. */
export function exitCodeFor(category: ErrorCategory): number {
  switch (category) {
    case 'verification':
    case 'policy':
    case 'forbidden':
    case 'unauthorized':
      return 1;
    case 'config':
    case 'bad-input':
      return 2;
    default:
      return 3;
  }
}
