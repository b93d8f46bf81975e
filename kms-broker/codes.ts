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
  // Release rules and policy testing (kms-broker/policy.ts, kms-broker/rules)
  // Signing keys and attestation results (kms-broker/tokens.ts)
  // Audit log (kms-broker/audit)
  // Abuse limits and metrics (kms-broker/limits.ts, kms-broker/metrics.ts)
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
};
