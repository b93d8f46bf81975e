/**
 * Wire protocol of the key broker: routes, request/response schemas and the HPKE context
 * strings of a key release. Shared by the broker (which enforces it) and the server's
 * broker client (which speaks it), so the two cannot drift.
 *
 * All binary fields are base64url without padding.
 */
import { z } from 'zod';
import { EAR_PROFILE, EarAppraisalSchema, SUBMOD_NAME_RE } from './ear.js';

export const ROUTES = {
  challenge: '/v1/attest/challenge',
  attest: '/v1/attest',
  release: (keyId: string) => `/v1/keys/${encodeURIComponent(keyId)}/release`,
  jwks: '/.well-known/jwks.json',
  health: '/healthz',
  adminKeys: '/v1/admin/keys',
  adminKey: (keyId: string) => `/v1/admin/keys/${encodeURIComponent(keyId)}`,
  adminKeyPolicy: (keyId: string) => `/v1/admin/keys/${encodeURIComponent(keyId)}/policy`,
  /** Release of a tenant's key; `release(keyId)` is the same for tenant `default`. */
  tenantRelease: (tenant: string, keyId: string) => `/v1/tenants/${encodeURIComponent(tenant)}/keys/${encodeURIComponent(keyId)}/release`,
  // leases (kms-broker/lease-routes.ts)
  leaseRenew: '/v1/leases/renew',
  adminRevocations: '/v1/admin/revocations',
  adminRevocation: (id: string) => `/v1/admin/revocations/${encodeURIComponent(id)}`,
} as const;

/** Key ids: short, URL-safe, no path tricks. */
export const KEY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Tenant ids: lower-case, DNS-label-like, so they are safe as directory names and log fields. */
export const TENANT_ID_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
export const TenantIdSchema = z.string().regex(TENANT_ID_RE, 'tenant must be 1-63 chars of [a-z0-9-], starting alphanumeric');

/** Admin API route templates (fastify syntax). Every route acts in the caller's tenant. */
export const ADMIN_ROUTES = {
  whoami: '/v1/admin/whoami',
  keys: '/v1/admin/keys',
  key: '/v1/admin/keys/:keyId',
  keyPolicies: '/v1/admin/keys/:keyId/policies',
  keyPolicy: '/v1/admin/keys/:keyId/policy',
  keyPolicyApprove: '/v1/admin/keys/:keyId/policy/approve',
  keyPolicyDryRun: '/v1/admin/keys/:keyId/policy/dry-run',
  keyRotate: '/v1/admin/keys/:keyId/rotate',
  keyEnable: '/v1/admin/keys/:keyId/enable',
  keyDisable: '/v1/admin/keys/:keyId/disable',
  keyDestroy: '/v1/admin/keys/:keyId/destroy',
  audit: '/v1/admin/audit',
} as const;

/** Fills an `ADMIN_ROUTES` template's `:keyId`. */
export function adminKeyRoute(template: string, keyId: string): string {
  return template.replace(':keyId', encodeURIComponent(keyId));
}

export const KeyIdSchema = z.string().regex(KEY_ID_RE, 'key id must be 1-128 chars of [A-Za-z0-9._-], starting alphanumeric');

const b64url = (bytes?: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/, 'must be base64url without padding')
    .refine((s) => bytes === undefined || Buffer.from(s, 'base64url').length === bytes, {
      message: bytes === undefined ? 'invalid' : `must decode to ${bytes} bytes`,
    });

/**
 * Confirmation claim (RFC 7800) of a certificate-bound token or lease, RFC 8705 section 3.1:
 * `x5t#S256` is the base64url SHA-256 of the DER of the TLS client certificate it is bound
 * to. The broker accepts such a token or lease only over a connection presenting that
 * certificate (kms-broker/workload-mtls.ts).
 */
export const CnfSchema = z.strictObject({ 'x5t#S256': b64url(32) });
export type Cnf = z.infer<typeof CnfSchema>;

export const ChallengeResponseSchema = z.strictObject({
  nonce: b64url(32),
  expiresAt: z.string(),
});
export type ChallengeResponse = z.infer<typeof ChallengeResponseSchema>;

export const AttestRequestSchema = z.strictObject({
  nonce: b64url(32),
  /** TEE evidence (SnpEvidence, TdxEvidence); the verifier checks its shape. */
  evidence: z.record(z.string(), z.unknown()),
  /** Raw X25519 HPKE public key born inside the TEE. */
  publicKey: b64url(32),
  /** The tenant whose keys the token may release; `default` when absent. Carried in the token. */
  tenant: z.string().regex(TENANT_ID_RE, 'tenant must be 1-63 chars of [a-z0-9-], starting alphanumeric').optional(),
});
export type AttestRequest = z.infer<typeof AttestRequestSchema>;

export const AttestResponseSchema = z.object({
  token: z.string(),
  expiresAt: z.string(),
  claims: z.record(z.string(), z.unknown()),
});
export type AttestResponse = z.infer<typeof AttestResponseSchema>;

export const ReleaseRequestSchema = z.strictObject({
  /** Must hash to the key hash bound in the attestation token. */
  publicKey: b64url(32),
  /** Key version; the current version when absent. */
  version: z.number().int().positive().optional(),
});
export type ReleaseRequest = z.infer<typeof ReleaseRequestSchema>;

// ---------------------------------------------------------------------------------------
// Key leases (kms-broker/leases.ts, server/lease.ts)
// ---------------------------------------------------------------------------------------

/** JWS `typ` of a key lease. */
export const LEASE_JWS_TYPE = 'cir-key-lease+jws';

/** Longest lease JWS accepted anywhere; real ones are well under 1 KiB. */
export const MAX_LEASE_JWS_LENGTH = 4096;

/** Lease ids: 16 random bytes, base64url. */
export const LEASE_ID_RE = /^[A-Za-z0-9_-]{22}$/;

/** Lower-case hex launch measurement (SEV-SNP MEASUREMENT, TDX MRTD: 48 bytes). */
export const MeasurementHexSchema = z.string().regex(/^[0-9a-f]{64,128}$/, 'must be 64-128 lower-case hex characters');

/**
 * What a lease JWS (compact, ES256, `typ` LEASE_JWS_TYPE, signed with the broker's token key)
 * covers. `iat`, `exp` and `renewAfter` are seconds since the epoch; `nonce` is the broker
 * nonce of the attestation that the release or renewal was granted on, so a server can
 * tell a fresh lease from a replayed one.
 */
export const LeasePayloadSchema = z
  .strictObject({
    iss: z.string().min(1).max(256),
    lid: z.string().regex(LEASE_ID_RE),
    tenant: z.string().min(1).max(128),
    keyId: KeyIdSchema,
    version: z.number().int().positive(),
    measurement: MeasurementHexSchema,
    /** SHA-256 of the raw HPKE public key the DEK was sealed to, base64url. */
    keyHash: b64url(32),
    nonce: b64url(32),
    iat: z.number().int().nonnegative(),
    exp: z.number().int().positive(),
    renewAfter: z.number().int().nonnegative(),
    /** Present when the release (or renewal) was certificate-bound: renewal needs that certificate. */
    cnf: CnfSchema.optional(),
  })
  .refine((p) => p.iat <= p.renewAfter && p.renewAfter < p.exp, { message: 'must have iat <= renewAfter < exp' });
export type LeasePayload = z.infer<typeof LeasePayloadSchema>;

/** A lease as returned by release and renew: `token` is the signed lease, the rest restates it. */
export const LeaseSchema = z.strictObject({
  id: z.string().regex(LEASE_ID_RE),
  expiresAt: z.string(),
  renewAfter: z.string(),
  token: z.string().min(1).max(MAX_LEASE_JWS_LENGTH),
});
export type Lease = z.infer<typeof LeaseSchema>;

/** `POST ROUTES.leaseRenew` body; `Authorization: Bearer <fresh attestation token>`. */
export const LeaseRenewRequestSchema = z.strictObject({
  lease: z.string().min(1).max(MAX_LEASE_JWS_LENGTH),
  /** Raw X25519 HPKE public key; must hash to the lease's and the token's key hash. */
  publicKey: b64url(32),
});
export type LeaseRenewRequest = z.infer<typeof LeaseRenewRequestSchema>;

export const LeaseRenewResponseSchema = z.strictObject({ lease: LeaseSchema });
export type LeaseRenewResponse = z.infer<typeof LeaseRenewResponseSchema>;

/** Kill-switch scopes: one key (optionally one version), a whole tenant, or a launch measurement. */
export const REVOCATION_SCOPES = ['key', 'tenant', 'measurement'] as const;

/** `POST ROUTES.adminRevocations` body. The tenant is the caller's own. */
export const RevocationCreateRequestSchema = z
  .strictObject({
    scope: z.enum(REVOCATION_SCOPES),
    keyId: KeyIdSchema.optional(),
    version: z.number().int().positive().optional(),
    /** Hex; any case, stored lower-case. */
    measurement: z
      .string()
      .regex(/^[0-9a-fA-F]{64,128}$/, 'must be 64-128 hex characters')
      .optional(),
    reason: z.string().min(1).max(512),
  })
  .superRefine((r, ctx) => {
    const want: readonly string[] = { key: ['keyId'], tenant: [], measurement: ['measurement'] }[r.scope];
    for (const f of ['keyId', 'version', 'measurement'] as const) {
      const allowed = want.includes(f) || (f === 'version' && r.scope === 'key');
      if (r[f] === undefined && want.includes(f)) ctx.addIssue({ code: 'custom', path: [f], message: `required for scope ${r.scope}` });
      if (r[f] !== undefined && !allowed) ctx.addIssue({ code: 'custom', path: [f], message: `not allowed for scope ${r.scope}` });
    }
  });
export type RevocationCreateRequest = z.infer<typeof RevocationCreateRequestSchema>;

export const RevocationSchema = z.strictObject({
  id: z.string().regex(LEASE_ID_RE),
  tenant: z.string().min(1).max(128),
  scope: z.enum(REVOCATION_SCOPES),
  keyId: KeyIdSchema.optional(),
  version: z.number().int().positive().optional(),
  measurement: MeasurementHexSchema.optional(),
  reason: z.string().min(1).max(512),
  createdAt: z.string(),
  /** Admin identity id that created it. */
  createdBy: z.string().min(1).max(256),
});
export type Revocation = z.infer<typeof RevocationSchema>;

export const ReleaseResponseSchema = z.strictObject({
  keyId: z.string(),
  version: z.number().int().positive(),
  suite: z.string(),
  enc: b64url(32),
  ciphertext: b64url(),
  /**
   * Compact JWS (ES256, `typ` RELEASE_JWS_TYPE, `kid` of a key in the broker's JWKS) whose
   * payload is `ReleaseSignedPayloadSchema`. It authenticates the release: HPKE base mode
   * alone proves nothing about the sender, so without this anyone on the path could hand
   * the server a DEK of their choosing (and a model sealed under it). Servers verify it
   * against a pinned copy of the broker's JWKS.
   */
  signature: z.string().min(1).max(16_384),
  /** The lease on this key; the server renews it before `expiresAt` (see `LeasePayloadSchema`). */
  lease: LeaseSchema,
});
export type ReleaseResponse = z.infer<typeof ReleaseResponseSchema>;

/** JWS `typ` of a signed key release. */
export const RELEASE_JWS_TYPE = 'cir-key-release+jws';

/** What a release signature covers: every response field plus the key it was sealed to. */
export const ReleaseSignedPayloadSchema = z.strictObject({
  iss: z.string(),
  iat: z.number().int(),
  keyId: z.string(),
  version: z.number().int().positive(),
  suite: z.string(),
  enc: b64url(32),
  /** SHA-256 of `ciphertext` bytes, base64url (the ciphertext itself is not repeated). */
  ciphertextSha256: b64url(32),
  /** SHA-256 of the raw HPKE public key the DEK was sealed to, base64url. */
  keyHash: b64url(32),
});
export type ReleaseSignedPayload = z.infer<typeof ReleaseSignedPayloadSchema>;

/** File the broker writes in its state directory with its public JWKS, for servers to pin. */
export const BROKER_JWKS_FILE = 'jwks.json';

/** HPKE `info` for a released DEK. */
export const RELEASE_HPKE_INFO = Buffer.from('cir/kms-broker/release/v1', 'utf8');

/** HPKE `aad` for a released DEK: binds the key id and version so a DEK cannot be passed off as another. */
export function releaseAad(keyId: string, version: number): Buffer {
  return Buffer.from(`cir/kms-broker/release/v1\0${keyId}\0${version}`, 'utf8');
}

/** JWT audience of attestation-result tokens issued by the broker for key release. */
export const TOKEN_AUDIENCE = 'cir-kms-broker/release';

/** RFC 7807 problem document, as every broker error is returned. */
export const ProblemSchema = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number(),
  code: z.string(),
  detail: z.string().optional(),
  failures: z.array(z.object({ field: z.string(), expected: z.string(), observed: z.string() })).optional(),
  /** Policy denials: every rule evaluated, pass or fail, expected vs observed. */
  explanation: z
    .array(z.object({ path: z.string(), claim: z.string().optional(), op: z.string(), expected: z.string(), observed: z.string(), pass: z.boolean() }))
    .optional(),
});
export type Problem = z.infer<typeof ProblemSchema>;

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: string): string {
  return `urn:cir:error:${code}`;
}

/** JWT `typ` header of attestation-result tokens (added by kms-broker); distinct from `RELEASE_JWS_TYPE`. */
export const ATTESTATION_TOKEN_TYPE = 'cir-attestation-result+jwt';

/**
 * Payload of an attestation-result token (kms-broker/tokens.ts): an EAR (draft-ietf-rats-ear,
 * JWT serialization) plus cir's private claims, all under the `cir.` prefix. ES256, signed by
 * an active key of the broker's ring (published at `ROUTES.jwks`); `aud` is `TOKEN_AUDIENCE`,
 * lifetime at most 5 min. `submods` holds one EAR appraisal per attester: `cpu` always, GPU
 * submodules (`gpu-0`...) later. See kms-broker/ear.ts for the trustworthiness vector.
 */
export const AttestationTokenPayloadSchema = z
  .object({
    iss: z.string(),
    aud: z.union([z.string(), z.array(z.string())]),
    iat: z.number().int(),
    exp: z.number().int(),
    jti: z.string().min(1).max(64),
    eat_profile: z.literal(EAR_PROFILE),
    'ear.verifier-id': z.strictObject({ build: z.string().min(1).max(128), developer: z.string().min(1).max(256) }),
    /** The broker nonce the evidence was bound to. */
    eat_nonce: b64url(32),
    submods: z
      .record(z.string().regex(SUBMOD_NAME_RE), EarAppraisalSchema)
      .refine((m) => Object.hasOwn(m, 'cpu'), { message: 'must hold the cpu submodule' }),
    /** The TEE the evidence came from; always equal to `cir.claims.tee`. */
    'cir.tee': z.enum(['sev-snp', 'tdx']),
    /** The tenant the token was issued for. */
    'cir.tenant': z.string().min(1).max(128),
    /** SHA-256 of the raw HPKE public key bound in report_data, base64url. */
    'cir.key-hash': b64url(32),
    /** Id of the broker attestation policy the evidence passed, e.g. `attestation/sev-snp`. */
    'cir.policy-id': z.string().min(1).max(256),
    /** SHA-256 (hex) of that policy. */
    'cir.policy-hash': z.string().regex(/^[0-9a-f]{64}$/),
    /** Relaxations of default checks: the verifier's plus the attestation policy's. */
    'cir.relaxations': z.array(z.string().max(256)).max(64),
    /** Verified claims (SnpClaims or TdxClaims, by `cir.tee`). */
    'cir.claims': z.record(z.string(), z.unknown()),
    /** Present when issued over a TLS connection with a verified client certificate (`tls.workloadClientCerts`). */
    cnf: CnfSchema.optional(),
  })
  .refine((p) => p['cir.claims'].tee === p['cir.tee'], { path: ['cir.claims', 'tee'], message: 'must equal cir.tee' });
export type AttestationTokenPayload = z.infer<typeof AttestationTokenPayloadSchema>;

/** `POST ROUTES.adminKeys` body (added by kms-broker). `policy` is a release policy: SEV-SNP (SnpPolicySchema), or TDX with `tee: "tdx"` (TdxPolicySchema). */
export const AdminCreateKeyRequestSchema = z.strictObject({
  keyId: KeyIdSchema,
  /** The 32-byte data-encryption key to import; generated by the broker when absent. */
  dek: b64url(32).optional(),
  /** Initial release policy; optional (a key without an active policy is never released). */
  policy: z.unknown().optional(),
});
export type AdminCreateKeyRequest = z.infer<typeof AdminCreateKeyRequestSchema>;

/** `PUT ROUTES.adminKeyPolicy` body (added by kms-broker). */
export const AdminSetPolicyRequestSchema = z.strictObject({
  policy: z.unknown(),
});
export type AdminSetPolicyRequest = z.infer<typeof AdminSetPolicyRequestSchema>;
