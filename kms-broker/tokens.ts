import { createPrivateKey, createPublicKey, generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { calculateJwkThumbprint, CompactSign, jwtVerify, SignJWT, type JWK } from 'jose';
import type { Logger } from '../common/logger.js';
import { KmsError } from './codes.js';
import {
  ATTESTATION_TOKEN_TYPE,
  AttestationTokenPayloadSchema,
  RELEASE_JWS_TYPE,
  ReleaseSignedPayloadSchema,
  TOKEN_AUDIENCE,
  type AttestationTokenPayload,
  type ReleaseSignedPayload,
} from './protocol.js';
import { createFileExclusive, readSecretFile } from './secret-file.js';

/** Longest token accepted for verification; real ones are a few KiB. */
export const MAX_TOKEN_LENGTH = 16 * 1024;
const ALG = 'ES256';

export interface TokenServiceOptions {
  readonly issuer: string;
  /** Token lifetime, at most 300 s. */
  readonly ttlSeconds: number;
}

/** What the broker puts in a token besides the registered claims. */
export type TokenBody = Omit<AttestationTokenPayload, 'iss' | 'aud' | 'iat' | 'exp' | 'jti'>;

/** What the broker signs about a release besides `iss` and `iat`, which `signRelease` adds. */
export type ReleaseSignedBody = Omit<ReleaseSignedPayload, 'iss' | 'iat'>;

export interface IssuedToken {
  readonly token: string;
  readonly jti: string;
  readonly expiresAt: Date;
}

/**
 * Issues and verifies the broker's attestation-result tokens (JWT, RFC 7519).
 *
 * Checks on verify: ES256 only (alg allow-list; `none`, HS256 and every other alg are
 * refused), signature by the broker's own key (never a key named by the token), `kid`,
 * `typ`, `iss`, `aud = TOKEN_AUDIENCE`, `exp` (and `iat` not in the future, age at most the
 * TTL) at the injected `now`, then the payload shape. Any failure is `ERR_KMS_TOKEN_INVALID`.
 * Does not: track used jtis (a token may be presented several times within its few
 * minutes; the release is sealed to the bound key, so a thief learns nothing).
 */
export class TokenService {
  readonly #privateKey: KeyObject;
  readonly #publicKey: KeyObject;
  readonly #jwk: JWK;
  readonly kid: string;
  readonly #opts: TokenServiceOptions;

  private constructor(privateKey: KeyObject, kid: string, jwk: JWK, opts: TokenServiceOptions) {
    this.#privateKey = privateKey;
    this.#publicKey = createPublicKey(privateKey);
    this.#jwk = jwk;
    this.kid = kid;
    this.#opts = opts;
  }

  /** From a PKCS#8 PEM P-256 private key. Throws `ERR_KMS_SIGNING_KEY_INVALID`. */
  static async fromPem(pem: string | Buffer, opts: TokenServiceOptions): Promise<TokenService> {
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: 'pem' });
    } catch (cause) {
      throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'not a PEM private key', cause });
    }
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
      throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'must be an EC P-256 key' });
    }
    const full = createPublicKey(key).export({ format: 'jwk' });
    if (typeof full.x !== 'string' || typeof full.y !== 'string') {
      throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'cannot export the public key' });
    }
    // Only the public members, in the RFC 7638 set for EC keys.
    const jwk: JWK = { kty: 'EC', crv: 'P-256', x: full.x, y: full.y };
    const kid = await calculateJwkThumbprint(jwk, 'sha256');
    return new TokenService(key, kid, Object.freeze({ ...jwk, kid, alg: ALG, use: 'sig' }), opts);
  }

  /** A fresh in-memory key; for tests. */
  static async generate(opts: TokenServiceOptions): Promise<TokenService> {
    return TokenService.fromPem(generatePem(), opts);
  }

  /**
   * Loads the signing key from `file` (PKCS#8 PEM, must be 0600 or tighter), generating it
   * on first start (0600, created exclusively).
   */
  static async open(file: string, opts: TokenServiceOptions & { logger?: Logger }): Promise<TokenService> {
    const read = await readSecretFile(file);
    if (read.kind === 'bad') throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: `${file}: ${read.reason}` });
    if (read.kind === 'ok') return TokenService.fromPem(read.data, opts);
    const created = await createFileExclusive(file, generatePem(), 0o600);
    if (created) opts.logger?.info({ file }, 'generated a new token signing key');
    return TokenService.open(file, opts);
  }

  /** The JWK Set to publish at /.well-known/jwks.json. */
  jwks(): { keys: JWK[] } {
    return { keys: [{ ...this.#jwk }] };
  }

  async issue(body: TokenBody, now: Date): Promise<IssuedToken> {
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + this.#opts.ttlSeconds;
    const jti = randomBytes(16).toString('base64url');
    const token = await new SignJWT({ ...body })
      .setProtectedHeader({ alg: ALG, kid: this.kid, typ: ATTESTATION_TOKEN_TYPE })
      .setIssuer(this.#opts.issuer)
      .setAudience(TOKEN_AUDIENCE)
      .setIssuedAt(iat)
      .setExpirationTime(exp)
      .setJti(jti)
      .sign(this.#privateKey);
    return { token, jti, expiresAt: new Date(exp * 1000) };
  }

  /**
   * Signs a key release: a compact JWS (RFC 7515), ES256 with the token key, protected
   * header `{alg: 'ES256', kid, typ: RELEASE_JWS_TYPE}`, payload exactly
   * `ReleaseSignedPayloadSchema` with `iss` = the configured issuer and `iat` = `now` in
   * seconds. Verifiable against `jwks()` (and the pinned `BROKER_JWKS_FILE`).
   * Checks the payload against the schema first (a bug, `ERR_KMS_INTERNAL`, if it fails).
   * Does not: set an expiry (the release is single-shot; the verifier decides how old an
   * `iat` it accepts) or include the ciphertext itself (its SHA-256 stands for it).
   */
  async signRelease(body: ReleaseSignedBody, now: Date): Promise<string> {
    const candidate = { ...body, iss: this.#opts.issuer, iat: Math.floor(now.getTime() / 1000) };
    const parsed = ReleaseSignedPayloadSchema.safeParse(candidate);
    if (!parsed.success) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'release payload does not match its schema' });
    const payload: ReleaseSignedPayload = parsed.data;
    // SECURITY: the same pinned key as the tokens, but a distinct `typ`, so a release
    // signature can never be replayed as an attestation token (jwtVerify checks typ) or
    // the other way round.
    return new CompactSign(Buffer.from(JSON.stringify(payload), 'utf8'))
      .setProtectedHeader({ alg: ALG, kid: this.kid, typ: RELEASE_JWS_TYPE })
      .sign(this.#privateKey);
  }

  async verify(token: string, now: Date): Promise<AttestationTokenPayload> {
    if (token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'bad length' });
    }
    let result;
    try {
      result = await jwtVerify(token, this.#publicKey, {
        // SECURITY: algorithm allow-list; the key is ours, never one named in the token header.
        algorithms: [ALG],
        issuer: this.#opts.issuer,
        audience: TOKEN_AUDIENCE,
        typ: ATTESTATION_TOKEN_TYPE,
        currentDate: now,
        maxTokenAge: this.#opts.ttlSeconds,
        requiredClaims: ['iss', 'aud', 'iat', 'exp', 'jti'],
      });
    } catch (cause) {
      const code = (cause as { code?: unknown }).code;
      throw new KmsError('ERR_KMS_TOKEN_INVALID', {
        detail: typeof code === 'string' && /^ERR_J[A-Z_]+$/.test(code) ? code : 'unverifiable',
        cause,
      });
    }
    if (result.protectedHeader.kid !== this.kid) {
      throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'unknown kid' });
    }
    const payload = AttestationTokenPayloadSchema.safeParse(result.payload);
    if (!payload.success) throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'unexpected payload' });
    return payload.data;
  }
}

function generatePem(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}
