import { errorFactory, type CodeTable } from '../common/errors.js';

/**
 * Every error the key broker can raise, with its category (which alone decides the HTTP
 * status, see `httpStatusFor`) and a fixed public message. `codes.test.ts` keeps this
 * table, the HTTP mapping and the documentation in `kms-broker/README.md` in step.
 *
 * SECURITY: messages are fixed strings; per-error specifics go in `detail` and must be
 * public values only (field names, key ids, hex measurements, sizes).
 */
export const KMS_CODES = {
  // Requests
  ERR_KMS_BAD_REQUEST: { category: 'bad-input', message: 'malformed request' },
  ERR_KMS_BODY_TOO_LARGE: { category: 'bad-input', message: 'request body too large' },
  ERR_KMS_UNSUPPORTED_MEDIA_TYPE: { category: 'bad-input', message: 'unsupported content type' },
  ERR_KMS_NOT_FOUND: { category: 'not-found', message: 'no such route' },
  // Challenges and attestation
  ERR_KMS_CHALLENGES_EXHAUSTED: { category: 'overload', message: 'too many outstanding challenges' },
  ERR_KMS_CLIENT_CHALLENGES_EXHAUSTED: { category: 'overload', message: 'too many outstanding challenges for this client' },
  ERR_KMS_NONCE_INVALID: { category: 'verification', message: 'nonce unknown, expired or already used' },
  ERR_KMS_EVIDENCE_MALFORMED: { category: 'bad-input', message: 'evidence is malformed' },
  ERR_KMS_EVIDENCE_REJECTED: { category: 'verification', message: 'evidence failed verification' },
  ERR_KMS_BINDING_MISMATCH: { category: 'verification', message: 'report_data does not bind the nonce and public key' },
  ERR_KMS_ATTESTATION_DENIED: { category: 'policy', message: 'attestation policy denied the evidence' },
  ERR_KMS_VERIFIER_UNAVAILABLE: { category: 'unavailable', message: 'evidence verifier unavailable' },
  ERR_KMS_TEE_NOT_CONFIGURED: { category: 'forbidden', message: 'this broker is not configured to verify evidence of this TEE' },
  // Release
  ERR_KMS_TOKEN_MISSING: { category: 'unauthorized', message: 'attestation token required' },
  ERR_KMS_TOKEN_INVALID: { category: 'unauthorized', message: 'attestation token invalid' },
  ERR_KMS_KEY_BINDING_MISMATCH: { category: 'forbidden', message: 'public key is not the one bound in the token' },
  ERR_KMS_POLICY_DENIED: { category: 'policy', message: 'release policy denied the request' },
  // Workload client certificates (kms-broker/workload-mtls.ts, `tls.workloadClientCerts`)
  ERR_KMS_CLIENT_CERT_REQUIRED: { category: 'unauthorized', message: 'a TLS client certificate that chains to the client CA is required' },
  ERR_KMS_CLIENT_CERT_UNTRUSTED: { category: 'unauthorized', message: 'TLS client certificate does not chain to the client CA' },
  ERR_KMS_CLIENT_CERT_MISMATCH: { category: 'unauthorized', message: 'token or lease is bound to another TLS client certificate' },
  // Keys and policies
  ERR_KMS_BAD_KEY_ID: { category: 'bad-input', message: 'invalid key id' },
  ERR_KMS_KEY_NOT_FOUND: { category: 'not-found', message: 'no such key' },
  ERR_KMS_KEY_VERSION_NOT_FOUND: { category: 'not-found', message: 'no such key version' },
  ERR_KMS_KEY_EXISTS: { category: 'conflict', message: 'key already exists' },
  ERR_KMS_DEK_INVALID: { category: 'bad-input', message: 'data encryption key must be 32 bytes' },
  ERR_KMS_POLICY_INVALID: { category: 'bad-input', message: 'invalid policy' },
  ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION: {
    category: 'bad-input',
    message: 'a policy that allows the simulated TEE is refused in production',
  },
  // Admin
  ERR_KMS_ADMIN_DISABLED: { category: 'not-found', message: 'admin API disabled' },
  ERR_KMS_ADMIN_UNAUTHORIZED: { category: 'unauthorized', message: 'admin token missing or wrong' },
  // Tenants, key lifecycle, admin identities, leases (kms-broker/tenancy)
  ERR_KMS_BAD_TENANT: { category: 'bad-input', message: 'invalid tenant id' },
  ERR_KMS_KEY_DISABLED: { category: 'forbidden', message: 'key or key version is disabled or destroyed' },
  ERR_KMS_KEY_DESTROYED: { category: 'conflict', message: 'key or key version was destroyed' },
  ERR_KMS_KEY_STATE: { category: 'conflict', message: 'operation not allowed in the key state' },
  ERR_KMS_NO_ACTIVE_POLICY: { category: 'policy', message: 'key has no active release policy' },
  ERR_KMS_POLICY_NOT_PENDING: { category: 'not-found', message: 'no such pending policy version' },
  ERR_KMS_SAME_APPROVER: { category: 'forbidden', message: 'a policy change must be approved by a different identity' },
  ERR_KMS_LIMIT_REACHED: { category: 'conflict', message: 'limit reached' },
  ERR_KMS_ADMIN_FORBIDDEN: { category: 'forbidden', message: 'identity lacks the role for this operation' },
  ERR_KMS_IDENTITY_INVALID: { category: 'bad-input', message: 'invalid admin identity' },
  ERR_KMS_IDENTITY_NOT_FOUND: { category: 'not-found', message: 'no such admin identity' },
  ERR_KMS_STATE_LOCKED: { category: 'conflict', message: 'the broker state directory is in use by another process' },
  ERR_KMS_AUDIT_UNAVAILABLE: { category: 'unavailable', message: 'audit log unavailable; request refused' },
  // leases
  ERR_KMS_LEASE_INVALID: { category: 'verification', message: 'lease invalid' },
  ERR_KMS_LEASE_EXPIRED: { category: 'verification', message: 'lease expired; release the key again' },
  ERR_KMS_LEASE_REVOKED: { category: 'forbidden', message: 'a revocation denies renewing this lease' },
  ERR_KMS_RELEASE_REVOKED: { category: 'forbidden', message: 'a revocation denies releasing this key' },
  ERR_KMS_REVOCATION_NOT_FOUND: { category: 'not-found', message: 'no such revocation' },
  ERR_KMS_REVOCATIONS_FULL: { category: 'conflict', message: 'too many revocations' },
  ERR_KMS_REVOCATIONS_CORRUPT: { category: 'internal', message: 'revocation file is corrupt' },
  // Release rules and policy testing (kms-broker/policy.ts, kms-broker/rules)
  // Signing keys and attestation results (kms-broker/tokens.ts)
  ERR_KMS_SIGNING_RING_INVALID: { category: 'config', message: 'signing key ring is invalid' },
  ERR_KMS_SIGNING_KEY_NOT_FOUND: { category: 'not-found', message: 'no such signing key' },
  ERR_KMS_SIGNING_KEY_OP_REFUSED: { category: 'conflict', message: 'signing key operation refused' },
  ERR_KMS_JWS_INVALID: { category: 'unauthorized', message: 'signed document invalid' },
  // Audit log (kms-broker/audit)
  ERR_KMS_AUDIT_EVENT_INVALID: { category: 'internal', message: 'audit event rejected by the audit schema' },
  ERR_KMS_AUDIT_WRITE_FAILED: { category: 'internal', message: 'audit log write failed' },
  ERR_KMS_AUDIT_CORRUPT: { category: 'internal', message: 'audit log is corrupt or was tampered with' },
  ERR_KMS_AUDIT_CLOSED: { category: 'internal', message: 'audit log is closed' },
  ERR_KMS_AUDIT_UNREADABLE: { category: 'bad-input', message: 'audit files cannot be read' },
  ERR_KMS_AUDIT_EXPORT_INVALID: { category: 'bad-input', message: 'invalid audit export request' },
  ERR_KMS_AUDIT_LOG_INVALID: { category: 'verification', message: 'audit log failed verification' },
  // Abuse limits and metrics (kms-broker/limits.ts, kms-broker/metrics.ts)
  ERR_KMS_RATE_LIMITED: { category: 'overload', message: 'too many requests' },
  ERR_KMS_OVERLOADED: { category: 'overload', message: 'broker overloaded' },
  ERR_KMS_VERIFIER_BUSY: { category: 'overload', message: 'too many evidence verifications in progress' },
  ERR_KMS_EVIDENCE_TOO_LARGE: { category: 'bad-input', message: 'evidence too large' },
  // State and configuration
  ERR_KMS_STORE_CORRUPT: { category: 'internal', message: 'key store file is corrupt' },
  ERR_KMS_STORE_IO: { category: 'internal', message: 'key store I/O failed' },
  ERR_KMS_MASTER_KEY_INVALID: { category: 'config', message: 'master key invalid' },
  ERR_KMS_SIGNING_KEY_INVALID: { category: 'config', message: 'token signing key invalid' },
  ERR_KMS_CONFIG_INVALID: { category: 'config', message: 'invalid broker configuration' },
  ERR_KMS_INTERNAL: { category: 'internal', message: 'internal error' },
} as const satisfies CodeTable<string>;

export type KmsCode = keyof typeof KMS_CODES;

/** The one error class of the key broker. Assert on `.code`, never on message text. */
export const KmsError = errorFactory<KmsCode>(KMS_CODES, 'KmsError');
export type KmsError = InstanceType<typeof KmsError>;

export function isKmsError(e: unknown): e is KmsError {
  return e instanceof KmsError;
}

/**
 * HTTP statuses that refine the category mapping of `common/errors.ts` where HTTP has a
 * more precise status than the category's (413 and 415 are both "bad input").
 */
export const HTTP_STATUS_OVERRIDES: Readonly<Partial<Record<KmsCode, number>>> = {
  ERR_KMS_BODY_TOO_LARGE: 413,
  ERR_KMS_UNSUPPORTED_MEDIA_TYPE: 415,
  // limits: the attest body is bounded by `limits.maxEvidenceBytes`.
  ERR_KMS_EVIDENCE_TOO_LARGE: 413,
  // leases: an expired lease is gone for good; the server must release again.
  ERR_KMS_LEASE_EXPIRED: 410,
};
