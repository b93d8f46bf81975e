/**
 * TLS client certificates of workloads (cir servers) on the attest, release and lease
 * renewal routes: RFC 8705-style certificate-bound attestation tokens and leases
 * (config `tls.workloadClientCerts`).
 *
 *   off      certificates are not looked at for binding; nothing is refused for lack of one
 *   bind     a certificate that chains to `tls.clientCaFile` binds the token issued at
 *            /attest (`cnf: {"x5t#S256": base64url SHA-256 of its DER}`, RFC 8705
 *            section 3.1) and the lease issued at release; a presented certificate that
 *            does not chain is refused (`ERR_KMS_CLIENT_CERT_UNTRUSTED`)
 *   require  as bind, and every workload route refuses a connection without a verified
 *            certificate (`ERR_KMS_CLIENT_CERT_REQUIRED`), so every token is bound
 *
 * A bound token or lease is accepted only over a connection presenting the same verified
 * certificate (constant-time comparison), in every mode: a binding, once made, is never
 * dropped by a configuration change (`ERR_KMS_CLIENT_CERT_REQUIRED` without a
 * certificate, `ERR_KMS_CLIENT_CERT_MISMATCH` with another one).
 *
 * What it gives: a stolen token or lease is useless from another TLS client identity. It
 * comes on top of attestation and never replaces it: the evidence, the key binding and
 * the release policy are checked exactly as without it.
 *
 * The listener requests, never requires, a certificate (admin clients with bearer tokens
 * and health checks connect without one), so the check is here, per route. Only a
 * certificate the TLS layer verified against `clientCaFile` counts (`socket.authorized`
 * and no `authorizationError`); admin identities use the same rule (`clientCertOf`).
 */
import type { TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { constantTimeEqual, fromBase64Url, sha256 } from '../common/bytes.js';
import { KmsError } from './codes.js';
import type { Cnf } from './protocol.js';

export const WORKLOAD_CLIENT_CERT_MODES = ['off', 'bind', 'require'] as const;
export type WorkloadClientCertMode = (typeof WORKLOAD_CLIENT_CERT_MODES)[number];

/** What the request's TLS connection presented. */
export type ClientCertState =
  | { readonly kind: 'none' }
  | { readonly kind: 'untrusted' }
  /** `sha256`: of the certificate's DER. */
  | { readonly kind: 'verified'; readonly sha256: Buffer };

/** The client certificate of the request's connection; `none` over plain HTTP. */
export function clientCertOf(request: FastifyRequest): ClientCertState {
  const socket = request.raw.socket as Partial<TLSSocket>;
  if (typeof socket.getPeerCertificate !== 'function') return { kind: 'none' };
  const raw = socket.getPeerCertificate(false)?.raw;
  if (!raw || raw.length === 0) return { kind: 'none' };
  // SECURITY: rejectUnauthorized is off on the listener (see app.ts); only `authorized`
  // says the chain was checked against clientCaFile. Node sets `authorized` once and never
  // clears it: a later handshake on the connection (TLS 1.2 renegotiation) whose
  // verification fails sets only `authorizationError`, while getPeerCertificate() already
  // returns that handshake's certificate. So an error, whenever it came, means untrusted
  // (app.ts also refuses renegotiation outright).
  if (socket.authorized !== true || socket.authorizationError) return { kind: 'untrusted' };
  return { kind: 'verified', sha256: sha256(raw) };
}

/** The `cnf` claim binding a token or lease to the certificate with this SHA-256. */
export function cnfOf(certSha256: Uint8Array): Cnf {
  return { 'x5t#S256': Buffer.from(certSha256).toString('base64url') };
}

/**
 * The client certificate of one workload request under `mode`. `of` refuses what the mode
 * refuses up front; `check` enforces a token's or lease's binding; `bindTo` is what new
 * tokens and leases are bound to.
 */
export class WorkloadCert {
  readonly #state: ClientCertState;
  readonly #mode: WorkloadClientCertMode;
  #checked = false;

  private constructor(state: ClientCertState, mode: WorkloadClientCertMode) {
    this.#state = state;
    this.#mode = mode;
  }

  /**
   * Throws `ERR_KMS_CLIENT_CERT_UNTRUSTED` (bind, require) for a certificate that does not
   * chain to the client CA, and `ERR_KMS_CLIENT_CERT_REQUIRED` (require) without one.
   */
  static of(request: FastifyRequest, mode: WorkloadClientCertMode): WorkloadCert {
    const state = clientCertOf(request);
    if (mode !== 'off' && state.kind === 'untrusted') throw new KmsError('ERR_KMS_CLIENT_CERT_UNTRUSTED');
    if (mode === 'require' && state.kind !== 'verified') throw new KmsError('ERR_KMS_CLIENT_CERT_REQUIRED', { detail: 'tls.workloadClientCerts is require' });
    return new WorkloadCert(state, mode);
  }

  /** The binding for a new token or lease: the verified certificate, unless the mode is off. */
  get bindTo(): Cnf | undefined {
    return this.#mode !== 'off' && this.#state.kind === 'verified' ? cnfOf(this.#state.sha256) : undefined;
  }

  /**
   * Hex SHA-256 of the certificate, for audit entries and decision logs: when the mode is
   * not off, or a binding was checked. Never the certificate itself.
   */
  get sha256Hex(): string | undefined {
    if (this.#state.kind !== 'verified' || (this.#mode === 'off' && !this.#checked)) return undefined;
    return this.#state.sha256.toString('hex');
  }

  /**
   * Accepts an unbound token or lease (`cnf` undefined), or one bound to this connection's
   * verified certificate. Otherwise `ERR_KMS_CLIENT_CERT_REQUIRED` (no certificate),
   * `ERR_KMS_CLIENT_CERT_UNTRUSTED` (one that does not chain) or `ERR_KMS_CLIENT_CERT_MISMATCH`.
   */
  check(cnf: Cnf | undefined, what: 'token' | 'lease'): void {
    if (cnf === undefined) return;
    const s = this.#state;
    if (s.kind === 'none') throw new KmsError('ERR_KMS_CLIENT_CERT_REQUIRED', { detail: `the ${what} is certificate-bound` });
    if (s.kind === 'untrusted') throw new KmsError('ERR_KMS_CLIENT_CERT_UNTRUSTED', { detail: `the ${what} is certificate-bound` });
    const bound = fromBase64Url(cnf['x5t#S256']);
    // SECURITY: constant time, like every other digest comparison of the broker.
    if (!bound || !constantTimeEqual(s.sha256, bound)) throw new KmsError('ERR_KMS_CLIENT_CERT_MISMATCH', { detail: what });
    this.#checked = true;
  }
}
