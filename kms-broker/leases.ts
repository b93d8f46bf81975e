/**
 * Key leases: every key release comes with a lease that the server must renew (with a
 * fresh attestation) before it expires; a server that cannot renew stops serving the model
 * (server/lease.ts). Revocations (revocations.ts) and policy or key changes take effect on
 * serving at the next renewal.
 *
 * A lease is a compact JWS (ES256, the broker's token key, `typ` LEASE_JWS_TYPE) over
 * `LeasePayloadSchema`: `{iss, lid, tenant, keyId, version, measurement, keyHash, nonce,
 * iat, exp, renewAfter, cnf?}`; `cnf` binds it to a TLS client certificate (workload-mtls.ts). Renewal keeps `lid` and issues a new `iat`/`exp`/`renewAfter` and
 * the fresh attestation's `nonce`. No DEK is sent on renewal: the server still holds the
 * model it loaded; the lease only says it may keep serving it.
 *
 * The broker keeps no lease state: a lease is checked by its signature and expiry alone.
 * Revoking is therefore done by kill switches matched on renewal, never by lease id.
 */
import { randomBytes } from 'node:crypto';
import { constantTimeEqual, fromBase64Url, sha256 } from '../common/bytes.js';
import { isKmsError, KmsError } from './codes.js';
import { measurementOf, type BrokerClaims, type PolicyDecision } from './policy.js';
import { LEASE_JWS_TYPE, LeasePayloadSchema, MAX_LEASE_JWS_LENGTH, type Cnf, type Lease, type LeasePayload } from './protocol.js';
import type { RevocationStore } from './revocations.js';

/** Tenant of requests that name none (the legacy `/v1/keys/:keyId/release` route). */
export { DEFAULT_TENANT } from './keystore.js';

/**
 * Signs and verifies compact JWS with the broker's token key; `TokenService.signJws` /
 * `verifyJws` (kms-broker/tokens.ts). `verifyJws` must check the signature against the
 * broker's own keys, the ES256 allow-list and `typ`, and return the payload; leases.ts
 * checks the payload itself (schema, issuer, expiry). `signJws` adds `iss` and `iat`
 * when absent; leases set both.
 */
export interface JwsSigner {
  signJws(typ: string, payload: Record<string, unknown>, now: Date): Promise<string>;
  verifyJws(typ: string, jws: string): Promise<{ readonly payload: Record<string, unknown> }>;
}

export interface LeaseServiceOptions {
  /** Lease lifetime, seconds (config `leases.ttlSeconds`). */
  readonly ttlSeconds: number;
  /** Renew after this fraction of the lifetime (config `leases.renewFraction`). */
  readonly renewFraction: number;
  /** `iss` of leases; the broker's `issuer`. */
  readonly issuer: string;
}

/** Who and what a lease is for. */
export interface LeaseSubject {
  readonly tenant: string;
  readonly keyId: string;
  readonly version: number;
  /** Attested launch measurement, hex. */
  readonly measurement: string;
  /** SHA-256 of the raw HPKE public key, base64url. */
  readonly keyHash: string;
  /** Nonce of the attestation the grant rests on, base64url. */
  readonly nonce: string;
  /** The TLS client certificate the lease is bound to (RFC 8705 `cnf`); absent: unbound. */
  readonly cnf?: Cnf;
}

/**
 * Issues and verifies leases. Checks on verify: length, signature and `typ` (via the
 * signer), payload schema (including `iat <= renewAfter < exp`), `iss`, and `exp` at the
 * injected time (`exp <= now` is expired). Does not: look at keys, policies or revocations
 * (`renewLease` does), or remember leases.
 */
export class LeaseService {
  readonly #signer: JwsSigner;
  readonly #opts: LeaseServiceOptions;

  constructor(signer: JwsSigner, opts: LeaseServiceOptions) {
    if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds < 2) throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'leases.ttlSeconds' });
    if (!(opts.renewFraction > 0 && opts.renewFraction < 1)) throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'leases.renewFraction' });
    this.#signer = signer;
    this.#opts = opts;
  }

  /** Issues a lease for `subject` at `now`: a new lid unless `lid` is given (renewal). */
  async issue(subject: LeaseSubject, now: Date, lid?: string): Promise<Lease> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + this.#opts.ttlSeconds;
    // At least one second before expiry, whatever the fraction and TTL.
    const renewAfter = Math.min(exp - 1, iat + Math.max(1, Math.floor(this.#opts.ttlSeconds * this.#opts.renewFraction)));
    const candidate = {
      iss: this.#opts.issuer,
      lid: lid ?? randomBytes(16).toString('base64url'),
      tenant: subject.tenant,
      keyId: subject.keyId,
      version: subject.version,
      measurement: subject.measurement.toLowerCase(),
      keyHash: subject.keyHash,
      nonce: subject.nonce,
      iat,
      exp,
      renewAfter,
      ...(subject.cnf !== undefined ? { cnf: { 'x5t#S256': subject.cnf['x5t#S256'] } } : {}),
    };
    const parsed = LeasePayloadSchema.safeParse(candidate);
    if (!parsed.success) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'lease payload does not match its schema' });
    const token = await this.#signer.signJws(LEASE_JWS_TYPE, { ...parsed.data }, now);
    return {
      id: parsed.data.lid,
      expiresAt: new Date(exp * 1000).toISOString(),
      renewAfter: new Date(renewAfter * 1000).toISOString(),
      token,
    };
  }

  /** The payload of a valid lease of ours. `ERR_KMS_LEASE_INVALID`, or `ERR_KMS_LEASE_EXPIRED`. */
  async verify(jws: string, now: Date): Promise<LeasePayload> {
    if (typeof jws !== 'string' || jws.length === 0 || jws.length > MAX_LEASE_JWS_LENGTH) {
      throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: 'bad length' });
    }
    let raw: unknown;
    try {
      raw = (await this.#signer.verifyJws(LEASE_JWS_TYPE, jws)).payload;
    } catch (cause) {
      throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: isKmsError(cause) && cause.detail ? cause.detail : 'unverifiable', cause });
    }
    const parsed = LeasePayloadSchema.safeParse(raw);
    if (!parsed.success) throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: 'unexpected payload' });
    const p = parsed.data;
    if (p.iss !== this.#opts.issuer) throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: 'iss' });
    const t = Math.floor(now.getTime() / 1000);
    // SECURITY: an expired lease is never renewed; the server must attest and release again.
    if (p.exp <= t) throw new KmsError('ERR_KMS_LEASE_EXPIRED', { detail: `lease ${p.lid.slice(0, 8)}` });
    return p;
  }
}

/** A verified attestation-result token, as the renew route needs it (see app.ts's adapter). */
export interface VerifiedAttestation {
  readonly claims: BrokerClaims;
  /** SHA-256 of the bound HPKE public key, base64url. */
  readonly keyHash: string;
  /** Broker nonce the evidence was bound to, base64url. */
  readonly nonce: string;
  /** Tenant the attestation was requested for, when tokens carry one. */
  readonly tenant?: string;
  readonly jti?: string;
  /** The TLS client certificate the token is bound to, when it is (RFC 8705 `cnf`). */
  readonly cnf?: Cnf;
}

/** The key (version) a lease names, as the key store has it now. */
export interface CheckedKey {
  /** Whatever `evaluate` needs to decide (the release policy). */
  readonly policy: unknown;
}

export interface RenewDeps {
  readonly leases: LeaseService;
  readonly revocations: Pick<RevocationStore, 'matches'>;
  /**
   * The key version as the store has it now; must throw `ERR_KMS_KEY_NOT_FOUND` /
   * `ERR_KMS_KEY_VERSION_NOT_FOUND` (or another typed 4xx) when it is gone or disabled.
   */
  checkKey(tenant: string, keyId: string, version: number): Promise<CheckedKey>;
  /** The key's release policy on the fresh claims. */
  evaluate(claims: BrokerClaims, tenant: string, keyId: string, key: CheckedKey): PolicyDecision;
}

export interface RenewInput {
  readonly leaseJws: string;
  /** Raw X25519 HPKE public key from the request body. */
  readonly publicKey: Uint8Array;
  readonly attestation: VerifiedAttestation;
  readonly now: Date;
  /**
   * The renewing connection's TLS client certificate (workload-mtls.ts `WorkloadCert`):
   * `check` enforces the token's and the lease's bindings, `bindTo` binds the renewed lease.
   * Absent: a bound token or lease is refused (`ERR_KMS_CLIENT_CERT_REQUIRED`).
   */
  readonly clientCert?: { check(cnf: Cnf | undefined, what: 'token' | 'lease'): void; readonly bindTo: Cnf | undefined };
}

export interface RenewResult {
  readonly lease: Lease;
  readonly previous: LeasePayload;
  readonly decision: PolicyDecision;
}

/**
 * Renews a lease, checking in order:
 *  1. the lease is ours and not expired (`ERR_KMS_LEASE_INVALID`, `ERR_KMS_LEASE_EXPIRED`);
 *     a certificate-bound token or lease comes over a connection presenting that
 *     certificate (`ERR_KMS_CLIENT_CERT_*`, see `RenewInput.clientCert`);
 *  2. SHA-256(publicKey) = lease keyHash = token keyHash (`ERR_KMS_KEY_BINDING_MISMATCH`),
 *     in constant time: the renewing TEE holds the key the DEK was sealed to;
 *  3. the token's tenant (when it names one) and the fresh measurement equal the lease's
 *     (`ERR_KMS_LEASE_INVALID`): same key pair means same TEE instance, so a different
 *     measurement is a forgery or a bug;
 *  4. no revocation matches {tenant, keyId, version, measurement} (`ERR_KMS_LEASE_REVOKED`);
 *  5. the key version still exists and is enabled (`checkKey`'s error);
 *  6. the release policy still allows the fresh claims (`ERR_KMS_POLICY_DENIED` with failures).
 * Then issues a lease with the same lid, a new expiry and the token's nonce, bound to the
 * certificate the lease or token was bound to, else to `clientCert.bindTo`.
 * Does not: verify the attestation token (the caller passes a verified one) or send a DEK.
 */
export async function renewLease(input: RenewInput, deps: RenewDeps): Promise<RenewResult> {
  const prev = await deps.leases.verify(input.leaseJws, input.now);
  const att = input.attestation;
  // SECURITY: certificate binding (RFC 8705) before anything else is looked at; without a
  // connection to check against, a bound token or lease fails closed.
  if (input.clientCert) {
    input.clientCert.check(att.cnf, 'token');
    input.clientCert.check(prev.cnf, 'lease');
  } else if (att.cnf !== undefined || prev.cnf !== undefined) {
    throw new KmsError('ERR_KMS_CLIENT_CERT_REQUIRED', { detail: `the ${att.cnf !== undefined ? 'token' : 'lease'} is certificate-bound` });
  }
  const presented = sha256(input.publicKey);
  const leaseHash = fromBase64Url(prev.keyHash);
  const tokenHash = fromBase64Url(att.keyHash);
  // SECURITY: both comparisons always run, in constant time.
  const okLease = leaseHash !== undefined && constantTimeEqual(presented, leaseHash);
  const okToken = tokenHash !== undefined && constantTimeEqual(presented, tokenHash);
  if (!okLease || !okToken) throw new KmsError('ERR_KMS_KEY_BINDING_MISMATCH', { detail: okLease ? 'token keyHash' : 'lease keyHash' });
  if (att.tenant !== undefined && att.tenant !== prev.tenant) throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: 'tenant' });
  const measurement = measurementOf(att.claims).toLowerCase();
  if (measurement !== prev.measurement) throw new KmsError('ERR_KMS_LEASE_INVALID', { detail: 'measurement differs from the lease' });
  const target = { tenant: prev.tenant, keyId: prev.keyId, version: prev.version, measurement };
  const revoked = deps.revocations.matches(target);
  if (revoked) throw new KmsError('ERR_KMS_LEASE_REVOKED', { detail: `revocation ${revoked.id} (${revoked.scope})` });
  const key = await deps.checkKey(prev.tenant, prev.keyId, prev.version);
  const decision = deps.evaluate(att.claims, prev.tenant, prev.keyId, key);
  if (!decision.allowed) {
    throw new KmsError('ERR_KMS_POLICY_DENIED', {
      detail: decision.failures.map((f) => f.field).join(', '),
      details: { failures: decision.failures },
    });
  }
  // Both checked above: when either is set it is the connection's certificate.
  const cnf = prev.cnf ?? att.cnf ?? input.clientCert?.bindTo;
  const lease = await deps.leases.issue(
    { tenant: prev.tenant, keyId: prev.keyId, version: prev.version, measurement, keyHash: prev.keyHash, nonce: att.nonce, ...(cnf ? { cnf } : {}) },
    input.now,
    prev.lid,
  );
  return { lease, previous: prev, decision };
}
