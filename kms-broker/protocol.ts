/**
 * Wire protocol of the key broker: routes, request/response schemas and the HPKE context
 * strings of a key release. Shared by the broker (which enforces it) and the server's
 * broker client (which speaks it), so the two cannot drift.
 *
 * All binary fields are base64url without padding.
 */
import { z } from 'zod';

export const ROUTES = {
  challenge: '/v1/attest/challenge',
  attest: '/v1/attest',
  release: (keyId: string) => `/v1/keys/${encodeURIComponent(keyId)}/release`,
  jwks: '/.well-known/jwks.json',
  health: '/healthz',
  adminKeys: '/v1/admin/keys',
  adminKey: (keyId: string) => `/v1/admin/keys/${encodeURIComponent(keyId)}`,
  adminKeyPolicy: (keyId: string) => `/v1/admin/keys/${encodeURIComponent(keyId)}/policy`,
} as const;

/** Key ids: short, URL-safe, no path tricks. */
export const KEY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
export const KeyIdSchema = z.string().regex(KEY_ID_RE, 'key id must be 1-128 chars of [A-Za-z0-9._-], starting alphanumeric');

const b64url = (bytes?: number) =>
  z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/, 'must be base64url without padding')
    .refine((s) => bytes === undefined || Buffer.from(s, 'base64url').length === bytes, {
      message: bytes === undefined ? 'invalid' : `must decode to ${bytes} bytes`,
    });

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
});
export type Problem = z.infer<typeof ProblemSchema>;

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemType(code: string): string {
  return `urn:cir:error:${code}`;
}

/** JWT `typ` header of attestation-result tokens (added by kms-broker). */
export const ATTESTATION_TOKEN_TYPE = 'cir-attestation-result+jwt';

/**
 * Payload of an attestation-result token (added by kms-broker). ES256, signed by the
 * broker's key published at `ROUTES.jwks`; `aud` is `TOKEN_AUDIENCE`, lifetime at most 5 min.
 */
export const AttestationTokenPayloadSchema = z
  .object({
    iss: z.string(),
    aud: z.union([z.string(), z.array(z.string())]),
    iat: z.number().int(),
    exp: z.number().int(),
    jti: z.string().min(1),
    /** The broker nonce the evidence was bound to. */
    nonce: b64url(32),
    /** SHA-256 of the raw HPKE public key bound in report_data. */
    keyHash: b64url(32),
    /** The TEE the evidence came from; always equal to `claims.tee`. */
    tee: z.enum(['sev-snp', 'tdx']),
    /** Verified claims (SnpClaims or TdxClaims, by `tee`). */
    claims: z.record(z.string(), z.unknown()),
    /** Relaxations of default checks: the verifier's plus the attestation policy's. */
    relaxations: z.array(z.string()),
    /** SHA-256 (hex) of the broker attestation policy the evidence passed. */
    policyHash: z.string(),
  })
  .refine((p) => p.claims.tee === p.tee, { path: ['claims', 'tee'], message: 'must equal tee' });
export type AttestationTokenPayload = z.infer<typeof AttestationTokenPayloadSchema>;

/** `POST ROUTES.adminKeys` body (added by kms-broker). `policy` is a release policy: SEV-SNP (SnpPolicySchema), or TDX with `tee: "tdx"` (TdxPolicySchema). */
export const AdminCreateKeyRequestSchema = z.strictObject({
  keyId: KeyIdSchema,
  /** The 32-byte data-encryption key. */
  dek: b64url(32),
  policy: z.unknown(),
});
export type AdminCreateKeyRequest = z.infer<typeof AdminCreateKeyRequestSchema>;

/** `PUT ROUTES.adminKeyPolicy` body (added by kms-broker). */
export const AdminSetPolicyRequestSchema = z.strictObject({
  policy: z.unknown(),
});
export type AdminSetPolicyRequest = z.infer<typeof AdminSetPolicyRequestSchema>;
