import { sign as cryptoSign, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, errors, type JWSHeaderParameters, type JWTPayload } from 'jose';

/**
 * Compact JWS (RFC 7515 section 7.1) with ES256 only (RFC 7518 section 3.4), signed and
 * verified synchronously with node:crypto `KeyObject`s (internal to tokens.ts).
 *
 * Why not jose's CompactSign / jwtVerify here: jose 6 does every signature through
 * WebCrypto, an asynchronous job on libuv's thread pool per operation; on the broker's hot
 * path (four signatures and one verification per key release) that cost several times the
 * ECDSA itself. The format stays jose's where it has a public function: the protected
 * header and the claims set are decoded by jose's `decodeProtectedHeader` / `decodeJwt`,
 * every failure is one of jose's error classes (so callers see the `code`s jwtVerify gives,
 * e.g. ERR_JWT_EXPIRED), and the tests check interoperability both ways against jose.
 *
 * What `verifyCompactEs256` checks: exactly three segments, each canonical base64url (no
 * padding, no stray bits); a protected header that is a JSON object with no `crit` (this
 * module understands no extension, so every `crit` is refused, `b64` included); `alg`
 * exactly "ES256" (ERR_JOSE_ALG_NOT_ALLOWED otherwise: `none`, HS256 ...); the key chosen
 * by the caller's resolver from the header (never a key the header carries); a P-256 key;
 * a 64-byte r||s signature that verifies over the ASCII signing input.
 * What `verifyJwtEs256` adds, as jose's jwtVerify does with the same options: `typ`
 * (compared as media types, case-insensitive, with an implied `application/`), the
 * presence of the required claims, `iss`, `aud` (a string or an array holding it), `nbf`
 * and `exp` against `now` (no clock tolerance), `iat` a number, not in the future and at
 * most `maxTokenAgeSeconds` old.
 * Does not: check the payload's own schema (the caller does), or keep any state.
 */

export const ES256 = 'ES256';
/** ES256 signatures are r||s, 32 bytes each (RFC 7518 section 3.4). */
const ES256_SIGNATURE_BYTES = 64;
const B64URL_RE = /^[A-Za-z0-9_-]*$/;

function b64u(bytes: Uint8Array | string): string {
  return (typeof bytes === 'string' ? Buffer.from(bytes, 'utf8') : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength)).toString('base64url');
}

/** Canonical base64url (the form every JOSE producer writes) to bytes; undefined otherwise. */
function fromB64uCanonical(s: string): Buffer | undefined {
  if (!B64URL_RE.test(s) || s.length % 4 === 1) return undefined;
  const b = Buffer.from(s, 'base64url');
  // SECURITY: refuse non-canonical encodings (stray low bits), so one token has one spelling.
  return b.toString('base64url') === s ? b : undefined;
}

/** SECURITY: the key must be an EC P-256 key, whatever the caller hands in. */
function assertP256(key: KeyObject, type: 'private' | 'public'): void {
  if (key?.type !== type || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new errors.JOSENotSupported(`ES256 needs an EC P-256 ${type} key`);
  }
}

/**
 * Signs `payload` as a compact JWS: protected header `{"alg":"ES256","kid":kid,"typ":typ}`
 * (members in that order: the bytes jose's CompactSign writes for the same header), payload
 * base64url, ECDSA P-256 SHA-256 signature as r||s. Throws ERR_JOSE_NOT_SUPPORTED for a key
 * that is not a P-256 private key.
 */
export function signCompactEs256(header: { readonly kid: string; readonly typ: string }, payload: Uint8Array, key: KeyObject): string {
  assertP256(key, 'private');
  const input = `${b64u(JSON.stringify({ alg: ES256, kid: header.kid, typ: header.typ }))}.${b64u(payload)}`;
  const signature = cryptoSign('sha256', Buffer.from(input, 'ascii'), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

export interface VerifiedCompactJws {
  readonly protectedHeader: JWSHeaderParameters;
  readonly payload: Uint8Array;
}

/**
 * Verifies a compact ES256 JWS (see the file comment for the checks). `resolveKey` picks the
 * public key from the protected header (by `kid`); whatever it throws is thrown unchanged.
 * Throws jose's errors: ERR_JWS_INVALID (format), ERR_JOSE_ALG_NOT_ALLOWED,
 * ERR_JWS_SIGNATURE_VERIFICATION_FAILED, ERR_JOSE_NOT_SUPPORTED (a key of another type).
 */
export function verifyCompactEs256(jws: string, resolveKey: (header: JWSHeaderParameters) => KeyObject): VerifiedCompactJws {
  if (typeof jws !== 'string') throw new errors.JWSInvalid('Compact JWS must be a string');
  const parts = jws.split('.');
  if (parts.length !== 3) throw new errors.JWSInvalid('Invalid Compact JWS');
  const [h, p, s] = parts as [string, string, string];
  const payload = fromB64uCanonical(p);
  const signature = fromB64uCanonical(s);
  if (h === '' || fromB64uCanonical(h) === undefined || payload === undefined || signature === undefined) {
    throw new errors.JWSInvalid('JWS segments must be canonical base64url');
  }
  let header: JWSHeaderParameters;
  try {
    header = decodeProtectedHeader(jws) as JWSHeaderParameters;
  } catch (cause) {
    throw new errors.JWSInvalid('JWS Protected Header is invalid', { cause });
  }
  // SECURITY: no extension is understood, so none may be marked critical (RFC 7515 4.1.11).
  if (Object.hasOwn(header, 'crit')) throw new errors.JWSInvalid('"crit" is not supported');
  const { alg } = header;
  if (typeof alg !== 'string' || alg === '') throw new errors.JWSInvalid('JWS "alg" (Algorithm) Header Parameter missing or invalid');
  // SECURITY: algorithm allow-list of one.
  if (alg !== ES256) throw new errors.JOSEAlgNotAllowed('"alg" (Algorithm) Header Parameter value not allowed');
  const key = resolveKey(header);
  assertP256(key, 'public');
  if (signature.length !== ES256_SIGNATURE_BYTES) throw new errors.JWSSignatureVerificationFailed();
  let ok = false;
  try {
    ok = cryptoVerify('sha256', Buffer.from(`${h}.${p}`, 'ascii'), { key, dsaEncoding: 'ieee-p1363' }, signature);
  } catch (cause) {
    throw new errors.JWSSignatureVerificationFailed(undefined, { cause });
  }
  if (!ok) throw new errors.JWSSignatureVerificationFailed();
  return { protectedHeader: header, payload: new Uint8Array(payload) };
}

export interface JwtChecks {
  /** Expected `typ`, compared as jose does (case-insensitive, implied `application/`). */
  readonly typ: string;
  readonly issuer: string;
  readonly audience: string;
  readonly now: Date;
  /** Largest accepted `now - iat`, seconds. */
  readonly maxTokenAgeSeconds: number;
  /** Claims that must be present (besides iss, aud and iat, which always must). */
  readonly requiredClaims: readonly string[];
}

/** jose's normalisation of a `typ` media type (jwt_claims_set.js). */
const normalizeTyp = (value: string): string => {
  const lower = value.toLowerCase();
  return value.includes('/') ? lower : `application/${lower}`;
};

const claimFailed = (message: string, payload: JWTPayload, claim: string, reason: string) =>
  new errors.JWTClaimValidationFailed(message, payload, claim, reason);

/**
 * verifyCompactEs256, then the JWT claims set checks of jose's jwtVerify with options
 * `{ typ, issuer, audience, currentDate: now, maxTokenAge, requiredClaims }` and no clock
 * tolerance (see the file comment). Returns the claims set as decoded by jose's decodeJwt.
 * Throws jose's errors: those of verifyCompactEs256, ERR_JWT_INVALID (claims set not a JSON
 * object), ERR_JWT_CLAIM_VALIDATION_FAILED, ERR_JWT_EXPIRED.
 */
export function verifyJwtEs256(
  jwt: string,
  resolveKey: (header: JWSHeaderParameters) => KeyObject,
  checks: JwtChecks,
): { readonly protectedHeader: JWSHeaderParameters; readonly payload: JWTPayload } {
  const { protectedHeader } = verifyCompactEs256(jwt, resolveKey);
  const claims = decodeJwt(jwt);
  if (typeof protectedHeader.typ !== 'string' || normalizeTyp(protectedHeader.typ) !== normalizeTyp(checks.typ)) {
    throw claimFailed('unexpected "typ" JWT header value', claims, 'typ', 'check_failed');
  }
  for (const name of new Set(['iss', 'aud', 'iat', ...checks.requiredClaims])) {
    if (!Object.hasOwn(claims, name)) throw claimFailed(`missing required "${name}" claim`, claims, name, 'missing');
  }
  if (claims.iss !== checks.issuer) throw claimFailed('unexpected "iss" claim value', claims, 'iss', 'check_failed');
  const aud = claims.aud;
  if (!(typeof aud === 'string' ? aud === checks.audience : Array.isArray(aud) && aud.includes(checks.audience))) {
    throw claimFailed('unexpected "aud" claim value', claims, 'aud', 'check_failed');
  }
  const now = Math.floor(checks.now.getTime() / 1000);
  if (!Number.isFinite(now)) throw new TypeError('Invalid currentDate option input');
  const numeric = (name: 'iat' | 'nbf' | 'exp'): number | undefined => {
    const v = claims[name];
    if (v === undefined) return undefined;
    if (typeof v !== 'number') throw claimFailed(`"${name}" claim must be a number`, claims, name, 'invalid');
    return v;
  };
  const iat = numeric('iat')!;
  const nbf = numeric('nbf');
  if (nbf !== undefined && nbf > now) throw claimFailed('"nbf" claim timestamp check failed', claims, 'nbf', 'check_failed');
  const exp = numeric('exp');
  if (exp !== undefined && exp <= now) throw new errors.JWTExpired('"exp" claim timestamp check failed', claims, 'exp', 'check_failed');
  const age = now - iat;
  if (age > checks.maxTokenAgeSeconds) {
    throw new errors.JWTExpired('"iat" claim timestamp check failed (too far in the past)', claims, 'iat', 'check_failed');
  }
  if (age < 0) throw claimFailed('"iat" claim timestamp check failed (it should be in the past)', claims, 'iat', 'check_failed');
  return { protectedHeader, payload: claims };
}
