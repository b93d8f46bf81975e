import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import type { z } from 'zod';
import { httpStatusFor, isCirError, isPublicCategory, type CirError } from '../common/errors.js';
import { issuesDetail } from '../common/config.js';
import { HTTP_STATUS_OVERRIDES, KMS_CODES, KmsError, type KmsCode } from './codes.js';
import { PROBLEM_CONTENT_TYPE, problemType, type Problem } from './protocol.js';

/**
 * RFC 7807 problem documents for every broker error.
 *
 * SECURITY: only errors whose category is public (see `isPublicCategory`) show their
 * code and detail; everything else, including any non-`CirError` and fastify's own 5xx,
 * becomes a bare `ERR_KMS_INTERNAL` with no detail. fastify's default handler would send
 * `err.message`, which is why the app installs `problemErrorHandler`.
 */
export function problemFor(err: CirError): Problem {
  if (!isPublicCategory(err.category)) return internalProblem();
  const status = HTTP_STATUS_OVERRIDES[err.code as KmsCode] ?? httpStatusFor(err.category);
  const problem: Problem = {
    type: problemType(err.code),
    title: titleOf(err),
    status,
    code: err.code,
  };
  if (err.detail !== undefined) problem.detail = err.detail;
  const failures = err.details?.failures;
  if (Array.isArray(failures)) {
    problem.failures = failures.map((f: { field: string; expected: string; observed: string }) => ({
      field: String(f.field),
      expected: String(f.expected),
      observed: String(f.observed),
    }));
  }
  const explanation = err.details?.explanation;
  if (Array.isArray(explanation)) {
    problem.explanation = explanation.map((r: { path: string; claim?: string; op: string; expected: string; observed: string; pass: boolean }) => ({
      path: String(r.path),
      ...(r.claim !== undefined ? { claim: String(r.claim) } : {}),
      op: String(r.op),
      expected: String(r.expected),
      observed: String(r.observed),
      pass: r.pass === true,
    }));
  }
  return problem;
}

export function internalProblem(): Problem {
  return {
    type: problemType('ERR_KMS_INTERNAL'),
    title: KMS_CODES.ERR_KMS_INTERNAL.message,
    status: 500,
    code: 'ERR_KMS_INTERNAL',
  };
}

function titleOf(err: CirError): string {
  // The fixed message, without the detail that CirError appends to `message`.
  return err.detail !== undefined && err.message.endsWith(`: ${err.detail}`)
    ? err.message.slice(0, -(err.detail.length + 2))
    : err.message;
}

/** WWW-Authenticate challenges (RFC 6750 section 3) for the 401s. */
const WWW_AUTHENTICATE: Readonly<Partial<Record<string, string>>> = {
  ERR_KMS_ADMIN_UNAUTHORIZED: 'Bearer realm="cir-kms-broker-admin"',
  ERR_KMS_TOKEN_MISSING: 'Bearer realm="cir-kms-broker"',
  ERR_KMS_TOKEN_INVALID: 'Bearer realm="cir-kms-broker", error="invalid_token"',
  // RFC 8705 section 3: a certificate-bound token over another certificate is invalid_token.
  ERR_KMS_CLIENT_CERT_MISMATCH: 'Bearer realm="cir-kms-broker", error="invalid_token"',
};

/**
 * Maps fastify's own request errors (body parsing, limits, content type) to broker codes.
 * Their messages can quote request bytes, so none is passed on.
 */
export function fromFastifyError(err: FastifyError): KmsError | undefined {
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return new KmsError('ERR_KMS_BODY_TOO_LARGE');
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_ERR_CTP_INVALID_TYPE':
      return new KmsError('ERR_KMS_UNSUPPORTED_MEDIA_TYPE', { detail: 'expected application/json' });
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'body: empty JSON body' });
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'body: not valid JSON' });
    default:
      break;
  }
  // JSON.parse SyntaxErrors surface with statusCode 400 and no code in some fastify paths.
  if (err instanceof SyntaxError || (err.statusCode === 400 && err.code === undefined)) {
    return new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'body: not valid JSON' });
  }
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return new KmsError('ERR_KMS_BAD_REQUEST', { detail: typeof err.code === 'string' ? err.code : undefined });
  }
  return undefined;
}

export function sendProblem(reply: FastifyReply, problem: Problem, code?: string, retryAfterSeconds?: number): FastifyReply {
  const challenge = code ? WWW_AUTHENTICATE[code] : undefined;
  if (challenge) reply.header('www-authenticate', challenge);
  if (problem.status === 429) reply.header('retry-after', String(retryAfterSeconds ?? 1));
  return reply.code(problem.status).type(PROBLEM_CONTENT_TYPE).send(problem);
}

/** Error handler for the whole app. Logs 5xx with the error (locally only). */
export function problemErrorHandler(err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const cir = isCirError(err) ? err : fromFastifyError(err as FastifyError);
  if (cir && isPublicCategory(cir.category)) {
    const problem = problemFor(cir);
    request.log.info({ code: cir.code, status: problem.status }, 'request refused');
    return sendProblem(reply, problem, cir.code, retryAfterOf(cir));
  }
  request.log.error({ err, code: cir?.code }, 'internal error');
  return sendProblem(reply, internalProblem());
}

/** `details.retryAfterSeconds` of an overload error (see ChallengeStore), when it is a sane number. */
function retryAfterOf(err: CirError): number | undefined {
  const v = err.details?.retryAfterSeconds;
  return typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 3600 ? v : undefined;
}

export function notFoundHandler(request: FastifyRequest, reply: FastifyReply): FastifyReply {
  const problem = problemFor(new KmsError('ERR_KMS_NOT_FOUND', { detail: `${request.method} ${pathOnly(request.url)}` }));
  return sendProblem(reply, problem, problem.code);
}

function pathOnly(url: string): string {
  const q = url.indexOf('?');
  const p = q === -1 ? url : url.slice(0, q);
  return p.length > 200 ? `${p.slice(0, 200)}…` : p;
}

/** Parses a request body with a zod schema; `ERR_KMS_BAD_REQUEST` naming each bad field. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: issuesDetail(r.error.issues) });
  return r.data;
}

/** The token of an `Authorization: Bearer <token>` header (RFC 6750 section 2.1). */
export function bearerToken(request: FastifyRequest): string {
  const h = request.headers.authorization;
  if (h === undefined || h === '') throw new KmsError('ERR_KMS_TOKEN_MISSING');
  const m = /^Bearer +([A-Za-z0-9._~+/-]+=*) *$/i.exec(h);
  if (!m?.[1]) throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'malformed Authorization header' });
  return m[1];
}

/** Log fields of a denial: the deciding code, its detail and, for policy, each rule (failing ones and the full explanation). */
export function denial(e: unknown): Record<string, unknown> {
  if (!isCirError(e)) return { decision: 'deny', rule: 'ERR_KMS_INTERNAL' };
  const failures = e.details?.failures;
  const explanation = e.details?.explanation;
  return {
    decision: 'deny',
    rule: e.code,
    reason: e.detail,
    ...(Array.isArray(failures) ? { failures } : {}),
    ...(Array.isArray(explanation) ? { explanation } : {}),
  };
}
