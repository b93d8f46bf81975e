/**
 * HTTP client for the key broker, speaking exactly kms-broker/protocol.ts: the routes,
 * request and response schemas, and RFC 7807 problem documents for errors.
 *
 * What it checks: every request against the protocol schema before sending (a bug here
 * should not reach the broker), every 2xx response against the protocol schema, every
 * error response against ProblemSchema; response bodies are capped in size; each call has
 * a timeout and can be cancelled. What it does not check: the attestation token (opaque
 * to the server; the broker checks it on release) or the released ciphertext (opened and
 * authenticated by HPKE in boot.ts).
 *
 * Errors are ServerError with a code chosen by HTTP status (401 -> UNAUTHORIZED,
 * 403 -> DENIED or VERIFICATION per the broker's code, 404 -> NOT_FOUND, other 4xx ->
 * REJECTED, 5xx / network / timeout -> UNAVAILABLE, schema violations -> PROTOCOL);
 * `details` carries `{ status, brokerCode, failures }` from the problem document.
 *
 * An https broker with a private CA: pass `ca` (PEM). undici (whose Agent would let global
 * fetch take a CA) is not a dependency, so that path goes through node:https instead
 * (`fetchWithCa`), trusting only the given CA, not the system store. An mTLS client
 * certificate (`clientCert`, for a broker with `tls.workloadClientCerts`) takes the same
 * path and is presented on every request: challenge, attest, release and renew.
 */
import { request as httpsRequest } from 'node:https';
import { readFile } from 'node:fs/promises';
import { readSecretFile } from '../kms-broker/secret-file.js';
import { Readable } from 'node:stream';
import type { z } from 'zod';
import { TENANT_ID_RE,
  AttestRequestSchema,
  AttestResponseSchema,
  ChallengeResponseSchema,
  KeyIdSchema,
  LeaseRenewRequestSchema,
  LeaseRenewResponseSchema,
  ProblemSchema,
  ReleaseRequestSchema,
  ReleaseResponseSchema,
  ROUTES,
  type AttestRequest,
  type AttestResponse,
  type ChallengeResponse,
  type LeaseRenewResponse,
  type Problem,
  type ReleaseResponse,
} from '../kms-broker/protocol.js';
import { ServerError, type ServerErrorCode } from './codes.js';

export interface ReleaseParams {
  /** Attestation-result token from `attest`. SECURITY: sent only as a Bearer header. */
  readonly token: string;
  /** base64url raw X25519 HPKE public key, the one bound in the token. */
  readonly publicKey: string;
  readonly version?: number;
}

export interface RenewParams {
  /** Fresh attestation-result token. SECURITY: sent only as a Bearer header. */
  readonly token: string;
  /** The lease JWS to renew (opaque here; lease.ts verifies the renewed one). */
  readonly lease: string;
  /** base64url raw X25519 HPKE public key, the one bound in the token and the lease. */
  readonly publicKey: string;
}

/** What boot.ts and lease.ts need from a broker; tests inject fakes. */
export interface BrokerClient {
  challenge(signal?: AbortSignal): Promise<ChallengeResponse>;
  attest(req: AttestRequest, signal?: AbortSignal): Promise<AttestResponse>;
  release(keyId: string, params: ReleaseParams, signal?: AbortSignal): Promise<ReleaseResponse>;
  /** `POST ROUTES.leaseRenew`: a renewed lease (same id, new expiry); no key material. */
  renew(params: RenewParams, signal?: AbortSignal): Promise<LeaseRenewResponse>;
}

export interface HttpBrokerClientOptions {
  /** Base URL, e.g. http://127.0.0.1:8200 */
  readonly url: string;
  readonly timeoutMs?: number;
  /** Largest accepted response body (default 1 MiB). */
  readonly maxResponseBytes?: number;
  /** PEM CA certificate(s) to trust for an https broker, instead of the system store. */
  readonly ca?: string | Buffer;
  readonly fetch?: typeof fetch;
  /**
   * The broker tenant whose keys this server releases (default `default`): sent with every
   * attestation (the token is issued for it) and used in the release route.
   */
  readonly tenant?: string;
  /**
   * mTLS client certificate and key (PEM), presented on every request; needs an https url
   * and no `fetch` (an injected fetch could not present it).
   */
  readonly clientCert?: { readonly cert: string | Buffer; readonly key: string | Buffer };
}

const DEFAULT_TIMEOUT_MS = 10_000;
const DEFAULT_MAX_RESPONSE_BYTES = 1 << 20;

/** Broker problem codes that mean "the evidence did not verify" rather than "policy said no". */
function isVerificationCode(code: string): boolean {
  return /VERIF|SIGNATURE|CHAIN|NONCE|EVIDENCE|BINDING|REPORT|CERT|EXPIRED|FRESH/i.test(code);
}

function codeForStatus(status: number, brokerCode: string | undefined): ServerErrorCode {
  if (status === 401) return 'ERR_SRV_BROKER_UNAUTHORIZED';
  if (status === 403) {
    return brokerCode !== undefined && isVerificationCode(brokerCode) && !/POLICY/i.test(brokerCode)
      ? 'ERR_SRV_BROKER_VERIFICATION'
      : 'ERR_SRV_BROKER_DENIED';
  }
  if (status === 404) return 'ERR_SRV_BROKER_NOT_FOUND';
  if (status === 408 || status === 429 || status >= 500) return 'ERR_SRV_BROKER_UNAVAILABLE';
  return 'ERR_SRV_BROKER_REJECTED';
}

export class HttpBrokerClient implements BrokerClient {
  readonly #base: URL;
  readonly #timeoutMs: number;
  readonly #maxBytes: number;
  readonly #fetch: typeof fetch;
  readonly #tenant: string;

  constructor(opts: HttpBrokerClientOptions) {
    let base: URL;
    try {
      base = new URL(opts.url);
    } catch (cause) {
      throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.url is not a URL', cause });
    }
    if (base.protocol !== 'http:' && base.protocol !== 'https:') {
      throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.url must be http or https' });
    }
    if (base.username || base.password) {
      // SECURITY: credentials in a URL end up in logs; the broker does not use them anyway.
      throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.url must not contain credentials' });
    }
    this.#tenant = opts.tenant ?? 'default';
    if (!TENANT_ID_RE.test(this.#tenant)) throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.tenant is not a valid tenant id' });
    this.#base = base;
    this.#timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.#maxBytes = opts.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    if (opts.ca !== undefined && base.protocol !== 'https:') {
      throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.caFile needs an https broker.url' });
    }
    if (opts.clientCert !== undefined) {
      if (base.protocol !== 'https:') throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.clientCertFile needs an https broker.url' });
      // SECURITY: never drop the configured certificate silently.
      if (opts.fetch !== undefined) throw new ServerError('ERR_SRV_CONFIG', { detail: 'a broker client certificate cannot be presented through an injected fetch' });
      this.#fetch = fetchWithCa(opts.ca, opts.clientCert);
    } else {
      this.#fetch = opts.fetch ?? (opts.ca !== undefined ? fetchWithCa(opts.ca) : globalThis.fetch);
    }
  }

  async challenge(signal?: AbortSignal): Promise<ChallengeResponse> {
    return this.#call('challenge', ROUTES.challenge, undefined, undefined, ChallengeResponseSchema, signal);
  }

  async attest(req: AttestRequest, signal?: AbortSignal): Promise<AttestResponse> {
    const body = checkRequest('attest', AttestRequestSchema, { ...req, tenant: req.tenant ?? this.#tenant });
    return this.#call('attest', ROUTES.attest, body, undefined, AttestResponseSchema, signal);
  }

  async release(keyId: string, params: ReleaseParams, signal?: AbortSignal): Promise<ReleaseResponse> {
    if (!KeyIdSchema.safeParse(keyId).success) {
      throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: 'release: key id is not valid' });
    }
    const body = checkRequest('release', ReleaseRequestSchema, {
      publicKey: params.publicKey,
      ...(params.version !== undefined ? { version: params.version } : {}),
    });
    const res = await this.#call('release', ROUTES.tenantRelease(this.#tenant, keyId), body, params.token, ReleaseResponseSchema, signal);
    // SECURITY: the AAD binds key id and version, but check them here too so a mismatch is
    // reported as what it is rather than as an HPKE failure.
    if (res.keyId !== keyId || (params.version !== undefined && res.version !== params.version)) {
      throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: 'release: response is for another key or version' });
    }
    return res;
  }

  async renew(params: RenewParams, signal?: AbortSignal): Promise<LeaseRenewResponse> {
    const body = checkRequest('renew', LeaseRenewRequestSchema, { lease: params.lease, publicKey: params.publicKey });
    return this.#call('renew', ROUTES.leaseRenew, body, params.token, LeaseRenewResponseSchema, signal);
  }

  async #call<T extends z.ZodType>(
    op: string,
    route: string,
    body: unknown,
    token: string | undefined,
    schema: T,
    signal: AbortSignal | undefined,
  ): Promise<z.infer<T>> {
    const url = new URL(route, this.#base);
    const timeout = AbortSignal.timeout(this.#timeoutMs);
    // Every broker route takes a JSON body (the challenge's is `{}`).
    const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/json' };
    if (token !== undefined) headers['authorization'] = `Bearer ${token}`;
    let res: Response;
    try {
      res = await this.#fetch(url, {
        method: 'POST',
        headers,
        body: JSON.stringify(body ?? {}),
        signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
        redirect: 'error',
      });
    } catch (cause) {
      if (signal?.aborted) throw new ServerError('ERR_SRV_BOOT_ABORTED', { detail: `${op} cancelled`, cause });
      const what = timeout.aborted ? `timed out after ${this.#timeoutMs} ms` : 'request failed';
      throw new ServerError('ERR_SRV_BROKER_UNAVAILABLE', { detail: `${op}: ${what}`, cause });
    }
    const text = await this.#readBody(op, res);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (cause) {
      if (!res.ok) throw problemError(op, res.status, undefined);
      throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: `${op}: response is not JSON`, cause });
    }
    if (!res.ok) {
      const p = ProblemSchema.safeParse(json);
      throw problemError(op, res.status, p.success ? p.data : undefined);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      const fields = parsed.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
      throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: `${op}: response fails the schema at ${fields}` });
    }
    return parsed.data;
  }

  async #readBody(op: string, res: Response): Promise<string> {
    const declared = Number(res.headers.get('content-length') ?? '0');
    if (declared > this.#maxBytes) {
      await res.body?.cancel().catch(() => undefined);
      throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: `${op}: response larger than ${this.#maxBytes} bytes` });
    }
    const chunks: Uint8Array[] = [];
    let size = 0;
    try {
      if (res.body) {
        for await (const chunk of res.body as AsyncIterable<Uint8Array>) {
          size += chunk.byteLength;
          if (size > this.#maxBytes) {
            throw new ServerError('ERR_SRV_BROKER_PROTOCOL', {
              detail: `${op}: response larger than ${this.#maxBytes} bytes`,
            });
          }
          chunks.push(chunk);
        }
      }
    } catch (cause) {
      if (cause instanceof ServerError) throw cause;
      throw new ServerError('ERR_SRV_BROKER_UNAVAILABLE', { detail: `${op}: response body failed`, cause });
    }
    return Buffer.concat(chunks).toString('utf8');
  }
}

/**
 * A minimal `fetch` over node:https that trusts exactly `ca` (the system store when
 * undefined) and presents `clientCert` when given. Supports what this client uses: POST
 * with string body, headers, AbortSignal; no redirects are followed.
 */
export function fetchWithCa(
  ca: string | Buffer | undefined,
  clientCert?: { readonly cert: string | Buffer; readonly key: string | Buffer },
): typeof fetch {
  return ((input: string | URL | Request, init?: RequestInit): Promise<Response> =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input);
      const signal = init?.signal ?? undefined;
      if (signal?.aborted) {
        reject(signal.reason);
        return;
      }
      const req = httpsRequest(
        url,
        {
          method: init?.method ?? 'GET',
          headers: init?.headers as Record<string, string> | undefined,
          ...(ca !== undefined ? { ca } : {}),
          ...(clientCert ? { cert: clientCert.cert, key: clientCert.key } : {}),
          // SECURITY: server identity is checked (default checkServerIdentity) against `ca` only.
          rejectUnauthorized: true,
          ...(signal ? { signal } : {}),
        },
        (res) => {
          const headers = new Headers();
          for (const [k, v] of Object.entries(res.headers)) {
            if (typeof v === 'string') headers.set(k, v);
            else if (Array.isArray(v)) for (const x of v) headers.append(k, x);
          }
          const status = res.statusCode ?? 500;
          const nullBody = status === 204 || status === 304;
          if (nullBody) res.resume();
          resolve(
            new Response(nullBody ? null : (Readable.toWeb(res) as ReadableStream<Uint8Array>), {
              status,
              headers,
            }),
          );
        },
      );
      req.on('error', reject);
      req.end(typeof init?.body === 'string' ? init.body : undefined);
    })) as typeof fetch;
}

/** The files of the server config's `broker` section that `readBrokerTls` reads. */
export interface BrokerTlsFiles {
  readonly caFile?: string | undefined;
  readonly clientCertFile?: string | undefined;
  readonly clientKeyFile?: string | undefined;
}

/**
 * Reads the broker TLS files of the server config: the CA, and the mTLS client certificate
 * and key. The key must be a regular file that group and others cannot access (mode 0600
 * or stricter), as the broker's own secret files. Throws `ERR_SRV_CONFIG` naming the field
 * (and the path, never the content).
 */
export async function readBrokerTls(files: BrokerTlsFiles): Promise<{ ca?: Buffer; clientCert?: { cert: Buffer; key: Buffer } }> {
  const read = async (field: string, file: string): Promise<Buffer> => {
    try {
      return await readFile(file);
    } catch (cause) {
      throw new ServerError('ERR_SRV_CONFIG', { detail: `broker.${field} ${file} could not be read`, cause });
    }
  };
  const ca = files.caFile !== undefined ? await read('caFile', files.caFile) : undefined;
  if ((files.clientCertFile === undefined) !== (files.clientKeyFile === undefined)) {
    throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.clientCertFile and broker.clientKeyFile must be given together' });
  }
  let clientCert: { cert: Buffer; key: Buffer } | undefined;
  if (files.clientCertFile !== undefined && files.clientKeyFile !== undefined) {
    const cert = await read('clientCertFile', files.clientCertFile);
    const key = await readSecretFile(files.clientKeyFile);
    if (key.kind !== 'ok') {
      const why = key.kind === 'missing' ? 'does not exist' : key.reason;
      throw new ServerError('ERR_SRV_CONFIG', { detail: `broker.clientKeyFile ${files.clientKeyFile}: ${why}` });
    }
    clientCert = { cert, key: key.data };
  }
  return { ...(ca ? { ca } : {}), ...(clientCert ? { clientCert } : {}) };
}

function checkRequest<T extends z.ZodType>(op: string, schema: T, value: unknown): z.infer<T> {
  const r = schema.safeParse(value);
  if (!r.success) {
    const fields = r.error.issues.map((i) => i.path.join('.') || '(root)').join(', ');
    throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: `${op}: request fails the schema at ${fields}` });
  }
  return r.data;
}

function problemError(op: string, status: number, problem: Problem | undefined): ServerError {
  const code = codeForStatus(status, problem?.code);
  // SECURITY: the broker's detail is public by its own contract (RFC 7807 with generic
  // 5xx messages); we still keep it out of `message` and only in structured details.
  return new ServerError(code, {
    detail: `${op}: HTTP ${status}${problem ? ` ${problem.code}` : ''}`,
    details: {
      status,
      ...(problem ? { brokerCode: problem.code } : {}),
      ...(problem?.failures ? { failures: problem.failures } : {}),
    },
  });
}

/** Failing policy rules carried by a broker error, if any. */
export function brokerFailures(e: unknown): readonly { field: string; expected: string; observed: string }[] {
  if (!(e instanceof ServerError) || !e.details) return [];
  const f = e.details['failures'];
  return Array.isArray(f) ? (f as { field: string; expected: string; observed: string }[]) : [];
}
