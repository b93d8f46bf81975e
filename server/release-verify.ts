/**
 * Authenticating a key release. HPKE base mode proves nothing about who sealed the DEK,
 * and the host sits on the network path and controls the sealed model files: without a
 * check here it could answer `release` with a DEK of its choosing and a model sealed under
 * it. The broker therefore signs every release (ES256 compact JWS over the response and the
 * key it was sealed to, kms-broker/protocol.ts `ReleaseSignedPayloadSchema`), and the
 * server verifies it against a pinned copy of the broker's JWKS before opening the DEK.
 *
 * Checks: JWS signature with a key from the pinned set, chosen by the JWS `kid` (any key
 * in the set: during a broker key rotation it holds the next, active and verify-only keys;
 * refresh the pinned copy after `cir broker signing-keys add`), alg ES256 only, `typ`; the payload
 * schema, every field equal to the response's, the ciphertext hash, and that the release
 * was sealed to this server's own HPKE key. Does not check freshness beyond what the
 * single-use attestation nonce already gives.
 */
import { readFile } from 'node:fs/promises';
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose';
import { z } from 'zod';
import { constantTimeEqual, sha256 } from '../common/bytes.js';
import { RELEASE_JWS_TYPE, ReleaseSignedPayloadSchema, type ReleaseResponse } from '../kms-broker/protocol.js';
import { ServerError } from './codes.js';

export interface ReleaseVerifier {
  /** Throws ERR_SRV_RELEASE_SIGNATURE unless `rel` is an authentic release sealed to `hpkePublicKey`. */
  verify(rel: ReleaseResponse, hpkePublicKey: Uint8Array): Promise<void>;
  /** True only for the explicit development relaxation that skips the check. */
  readonly unsigned: boolean;
}

const JwksSchema = z.object({ keys: z.array(z.record(z.string(), z.unknown())).min(1).max(16) });

function bad(detail: string, cause?: unknown): ServerError {
  return new ServerError('ERR_SRV_RELEASE_SIGNATURE', { detail, ...(cause ? { cause } : {}) });
}

export function jwksReleaseVerifier(jwks: JSONWebKeySet, expectedIssuer?: string): ReleaseVerifier {
  const keySet = createLocalJWKSet(jwks);
  return {
    unsigned: false,
    async verify(rel, hpkePublicKey) {
      let payloadBytes: Uint8Array;
      try {
        const r = await compactVerify(rel.signature, keySet, { algorithms: ['ES256'] });
        if (r.protectedHeader.typ !== RELEASE_JWS_TYPE) throw bad('unexpected JWS typ');
        payloadBytes = r.payload;
      } catch (e) {
        if (e instanceof ServerError) throw e;
        throw bad('signature does not verify with the pinned broker keys', e);
      }
      let payload: z.infer<typeof ReleaseSignedPayloadSchema>;
      try {
        payload = ReleaseSignedPayloadSchema.parse(JSON.parse(Buffer.from(payloadBytes).toString('utf8')));
      } catch (e) {
        throw bad('signed payload is malformed', e);
      }
      if (expectedIssuer !== undefined && payload.iss !== expectedIssuer) throw bad('issuer differs');
      if (payload.keyId !== rel.keyId || payload.version !== rel.version || payload.suite !== rel.suite || payload.enc !== rel.enc) {
        throw bad('signed fields differ from the response');
      }
      const ct = Buffer.from(rel.ciphertext, 'base64url');
      if (!constantTimeEqual(sha256(ct), Buffer.from(payload.ciphertextSha256, 'base64url'))) {
        throw bad('ciphertext differs from the signed one');
      }
      if (!constantTimeEqual(sha256(hpkePublicKey), Buffer.from(payload.keyHash, 'base64url'))) {
        throw bad('release was sealed to another key');
      }
    },
  };
}

/** SECURITY: development relaxation; accepts any release. Refused when NODE_ENV=production. */
export const UNSIGNED_RELEASES_ALLOWED: ReleaseVerifier = Object.freeze({
  unsigned: true,
  async verify() {},
});

/** Reads a pinned JWKS file (the broker writes one as `<stateDir>/jwks.json`). */
export async function loadReleaseVerifier(file: string, expectedIssuer?: string): Promise<ReleaseVerifier> {
  return jwksReleaseVerifier(await readPinnedJwks(file), expectedIssuer);
}

/**
 * Reads the broker's pinned JWKS (`broker.jwksFile`): JSON with 1 to 16 keys. Releases and
 * leases are verified against the same pinned set. Throws ERR_SRV_CONFIG.
 */
export async function readPinnedJwks(file: string): Promise<JSONWebKeySet> {
  try {
    return JwksSchema.parse(JSON.parse(await readFile(file, 'utf8'))) as unknown as JSONWebKeySet;
  } catch (cause) {
    throw new ServerError('ERR_SRV_CONFIG', { detail: `broker.jwksFile ${file} is not a readable JWKS`, cause });
  }
}
