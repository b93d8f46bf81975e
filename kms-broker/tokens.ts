import { readFileSync } from 'node:fs';
import { randomBytes, type KeyObject } from 'node:crypto';
import { compactVerify, jwtVerify, type JWSHeaderParameters } from 'jose';
import type { Logger } from '../common/logger.js';
import { isKmsError, KmsError } from './codes.js';
import { EAR_PROFILE, SUBMOD_NAME_RE, type EarAppraisal } from './ear.js';
import { signCompactEs256 } from './jws-es256.js';
import {
  ATTESTATION_TOKEN_TYPE,
  AttestationTokenPayloadSchema,
  RELEASE_JWS_TYPE,
  ReleaseSignedPayloadSchema,
  TOKEN_AUDIENCE,
  type AttestationTokenPayload,
  type Cnf,
  type ReleaseSignedPayload,
} from './protocol.js';
import { loadRing, memoryRing, openRing, ringStamp, type PublishedJwk, type SigningRing } from './signing-keys.js';

/** Longest token (or generic JWS) accepted for verification; real ones are a few KiB. */
export const MAX_TOKEN_LENGTH = 16 * 1024;
const ALG = 'ES256';

/** JWS `typ` of the audit log's signed checkpoints (`checkpointSigner`). */
export const AUDIT_HEAD_JWS_TYPE = 'cir-audit-head+jws';

/** `typ`s that only the dedicated methods sign; `signJws`/`verifyJws` refuse them. */
export const RESERVED_JWS_TYPES: readonly string[] = Object.freeze([ATTESTATION_TOKEN_TYPE, RELEASE_JWS_TYPE, AUDIT_HEAD_JWS_TYPE]);
const JWS_TYP_RE = /^[A-Za-z0-9][A-Za-z0-9.+_-]{0,63}$/;

/** `ear.verifier-id.developer` of every token. */
export const VERIFIER_DEVELOPER = 'cir';

export interface TokenServiceOptions {
  readonly issuer: string;
  /** Token lifetime, at most 300 s. */
  readonly ttlSeconds: number;
  /** `ear.verifier-id.build`; default `cir <package version>`. */
  readonly verifierBuild?: string;
}

export interface OpenRingTokenOptions extends TokenServiceOptions {
  readonly logger?: Logger;
  /** Shortest time between two checks of ring.json (default 1000 ms; 0 checks on every use). */
  readonly reloadIntervalMs?: number;
  /** Also check on a timer (unref'd) so an idle broker re-publishes promptly; default true. Stop with `close()`. */
  readonly watch?: boolean;
  /** Called after the ring was (re)loaded from disk with a change, e.g. to re-publish jwks.json. Errors are logged. */
  readonly onRingChange?: (svc: TokenService) => Promise<void>;
}

/** Submodule appraisals of a token: `cpu` always; `gpu-0`... when GPU verifiers join. */
export type Submods = { readonly cpu: EarAppraisal } & { readonly [name: `gpu-${number}`]: EarAppraisal };

/** What the broker puts in a token besides the registered claims (see `AttestationTokenPayloadSchema`). */
export interface TokenBody {
  /** The broker nonce the evidence was bound to (`eat_nonce`), base64url. */
  readonly nonce: string;
  /** SHA-256 of the raw HPKE public key bound in report_data, base64url (`cir.key-hash`). */
  readonly keyHash: string;
  readonly tee: 'sev-snp' | 'tdx';
  /** Verified claims (`cir.claims`); `claims.tee` must equal `tee`. */
  readonly claims: Record<string, unknown>;
  /** Every relaxation applied (`cir.relaxations`). */
  readonly relaxations: readonly string[];
  /** Attestation policy id (`cir.policy-id`), e.g. `attestation/sev-snp`. */
  readonly policyId: string;
  /** SHA-256 hex of that policy (`cir.policy-hash`). */
  readonly policyHash: string;
  /** Tenant (`cir.tenant`); `'default'` when absent. */
  readonly tenant?: string;
  /** EAR appraisal per submodule (kms-broker/ear.ts `appraiseCpu`). */
  readonly submods: Submods;
  /** Confirmation (`cnf`, RFC 8705): the TLS client certificate the token is bound to; absent: unbound. */
  readonly cnf?: Cnf;
}

/**
 * A verified token: the payload exactly as on the wire (`eat_nonce`, `cir.claims`, ...) plus
 * the same values under short names and the `kid` of the ring key that signed it.
 */
export type VerifiedToken = AttestationTokenPayload & {
  readonly kid: string;
  readonly tee: 'sev-snp' | 'tdx';
  readonly tenant: string;
  readonly keyHash: string;
  readonly nonce: string;
  readonly claims: Record<string, unknown>;
  readonly relaxations: readonly string[];
  readonly policyId: string;
  readonly policyHash: string;
  readonly expiresAt: Date;
};

/** What the broker signs about a release besides `iss` and `iat`, which `signRelease` adds. */
export type ReleaseSignedBody = Omit<ReleaseSignedPayload, 'iss' | 'iat'>;

export interface IssuedToken {
  readonly token: string;
  readonly jti: string;
  readonly expiresAt: Date;
  /** The key that signed it. */
  readonly kid: string;
}

export interface CheckpointSigner {
  /** Compact JWS (ES256, `kid`, `typ` AUDIT_HEAD_JWS_TYPE) over `payload`, with the active key. */
  sign(payload: Uint8Array): Promise<string>;
}

let cachedVersion: string | undefined;
/** The package version, read once from package.json (source and dist layouts). */
function cirVersion(): string {
  if (cachedVersion !== undefined) return cachedVersion;
  cachedVersion = '0.0.0';
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: unknown; version?: unknown };
      if (pkg.name === 'cir' && typeof pkg.version === 'string') {
        cachedVersion = pkg.version;
        break;
      }
    } catch {
      // try the next layout
    }
  }
  return cachedVersion;
}

function invalid(code: 'ERR_KMS_TOKEN_INVALID' | 'ERR_KMS_JWS_INVALID', cause: unknown): KmsError {
  if (isKmsError(cause) && cause.code === code) return cause;
  const c = (cause as { code?: unknown } | undefined)?.code;
  return new KmsError(code, { detail: typeof c === 'string' && /^ERR_J[A-Z_]+$/.test(c) ? c : 'unverifiable', cause });
}

/**
 * Issues and verifies the broker's attestation-result tokens (EAR profile of JWT, RFC 7519,
 * draft-ietf-rats-ear), and signs releases, lease documents (`signJws`) and audit
 * checkpoints, all with the active key of the signing-key ring (signing-keys.ts).
 *
 * Checks on verify: ES256 only (alg allow-list; `none`, HS256 and every other alg are
 * refused), signature by an active or verify-only key of the ring chosen by `kid` (never a
 * key named or embedded by the token; next and retired keys never verify), `typ`, `iss`,
 * `aud = TOKEN_AUDIENCE`, `exp` (and `iat` not in the future, age at most the TTL) at the
 * injected `now`, then the payload schema. Any failure is `ERR_KMS_TOKEN_INVALID`.
 * Does not: track used jtis (a token may be presented several times within its few
 * minutes; the release is sealed to the bound key, so a thief learns nothing).
 *
 * Signing uses jws-es256.ts (node:crypto ECDSA, synchronous: jose's WebCrypto jobs dominated
 * the release path). Every verification (tokens, `verifyJws`) is jose's `jwtVerify` /
 * `compactVerify`.
 *
 * A ring opened from a state directory (`openRing`) is re-read when ring.json changes
 * (checked at most once per `reloadIntervalMs`), so `cir broker signing-keys` takes effect
 * in a running broker; a ring that fails to load is logged and the previous one kept.
 */
export class TokenService {
  #ring: SigningRing;
  readonly #opts: TokenServiceOptions;
  readonly #build: string;
  readonly #source:
    | {
        readonly stateDir: string;
        stamp: string | undefined;
        lastCheck: number;
        readonly intervalMs: number;
        readonly logger: Logger | undefined;
        readonly onChange: ((svc: TokenService) => Promise<void>) | undefined;
        inFlight: Promise<boolean> | undefined;
        timer: NodeJS.Timeout | undefined;
      }
    | undefined;

  private constructor(ring: SigningRing, opts: TokenServiceOptions, source?: { stateDir: string; stamp: string | undefined; opts: OpenRingTokenOptions }) {
    if (!Number.isInteger(opts.ttlSeconds) || opts.ttlSeconds < 1 || opts.ttlSeconds > 300) {
      throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'tokenTtlSeconds must be 1..300' });
    }
    this.#ring = ring;
    this.#opts = opts;
    this.#build = opts.verifierBuild ?? `cir ${cirVersion()}`;
    if (source) {
      this.#source = {
        stateDir: source.stateDir,
        stamp: source.stamp,
        lastCheck: Date.now(),
        intervalMs: source.opts.reloadIntervalMs ?? 1000,
        logger: source.opts.logger,
        onChange: source.opts.onRingChange,
        inFlight: undefined,
        timer: undefined,
      };
    }
  }

  /** One active key from a PKCS#8 PEM P-256 private key, in memory. Throws `ERR_KMS_SIGNING_KEY_INVALID`. */
  static async fromPem(pem: string | Buffer, opts: TokenServiceOptions): Promise<TokenService> {
    return new TokenService(await memoryRing(pem), opts);
  }

  /** A fresh in-memory key; for tests. */
  static async generate(opts: TokenServiceOptions): Promise<TokenService> {
    return new TokenService(await memoryRing(), opts);
  }

  /**
   * Opens (creating or migrating, see signing-keys.ts `openRing`) the ring of `stateDir`
   * and follows its changes. Throws `ERR_KMS_SIGNING_RING_INVALID` / `ERR_KMS_SIGNING_KEY_INVALID`.
   */
  static async openRing(stateDir: string, opts: OpenRingTokenOptions): Promise<TokenService> {
    const stampBefore = await ringStamp(stateDir);
    const ring = await openRing(stateDir, { ...(opts.logger ? { logger: opts.logger } : {}) });
    const stamp = stampBefore === undefined ? await ringStamp(stateDir) : stampBefore;
    const svc = new TokenService(ring, opts, { stateDir, stamp, opts });
    if (opts.watch !== false) svc.#startWatch();
    return svc;
  }

  /** The active key's id. */
  get kid(): string {
    return this.#ring.active.entry.kid;
  }

  /** The ring as loaded now. */
  get ring(): SigningRing {
    return this.#ring;
  }

  /** The JWK Set to publish at /.well-known/jwks.json: next, active and verify-only keys. */
  jwks(): { keys: PublishedJwk[] } {
    return this.#ring.jwks();
  }

  /** Public keys of every key in the ring (retired included), for `jwks-archive.json`. */
  jwksArchive(): { keys: PublishedJwk[] } {
    return this.#ring.archive();
  }

  /**
   * Re-reads ring.json now if it changed since the last load; returns whether a new ring
   * was taken. A ring that fails to load is logged (code and detail only) and the previous
   * one kept; the failure is then retried on the next change.
   */
  async reload(): Promise<boolean> {
    const src = this.#source;
    if (!src) return false;
    src.inFlight ??= (async () => {
      try {
        src.lastCheck = Date.now();
        const stamp = await ringStamp(src.stateDir);
        if (stamp === src.stamp) return false;
        src.stamp = stamp;
        let ring: SigningRing;
        try {
          ring = await loadRing(src.stateDir);
        } catch (e) {
          src.logger?.error(
            { code: isKmsError(e) ? e.code : 'ERR_KMS_INTERNAL', detail: isKmsError(e) ? e.detail : undefined },
            'signing key ring changed but does not load; keeping the previous ring',
          );
          return false;
        }
        const before = this.kid;
        this.#ring = ring;
        src.logger?.info({ kid: this.kid, previousKid: before, published: ring.jwks().keys.map((k) => k.kid) }, 'signing key ring reloaded');
        if (src.onChange) {
          await src.onChange(this).catch((e: unknown) => {
            src.logger?.error({ code: isKmsError(e) ? e.code : 'ERR_KMS_INTERNAL' }, 'publishing the reloaded ring failed');
          });
        }
        return true;
      } catch (e) {
        src.logger?.error({ code: isKmsError(e) ? e.code : 'ERR_KMS_INTERNAL' }, 'checking the signing key ring failed');
        return false;
      } finally {
        src.inFlight = undefined;
      }
    })();
    return src.inFlight;
  }

  /** Stops the ring watch timer. Idempotent. */
  close(): void {
    if (this.#source?.timer) {
      clearInterval(this.#source.timer);
      this.#source.timer = undefined;
    }
  }

  #startWatch(): void {
    const src = this.#source;
    if (!src) return;
    src.timer = setInterval(() => void this.reload(), Math.max(src.intervalMs, 250));
    src.timer.unref();
  }

  /** The current ring, re-read first when the check interval has passed. */
  async #current(): Promise<SigningRing> {
    const src = this.#source;
    if (src && Date.now() - src.lastCheck >= src.intervalMs) await this.reload();
    return this.#ring;
  }

  #signer(ring: SigningRing): { kid: string; key: KeyObject } {
    const k = ring.active;
    if (!k.privateKey) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'active key without private key' });
    return { kid: k.entry.kid, key: k.privateKey };
  }

  /** Resolves the verification key of a protected header: active or verify-only ring keys only. */
  #resolver(ring: SigningRing, code: 'ERR_KMS_TOKEN_INVALID' | 'ERR_KMS_JWS_INVALID') {
    return (header: JWSHeaderParameters) => {
      // SECURITY: the key comes from our ring by kid; a `jwk`, `jku` or `x5c` in the header is never used.
      const k = ring.verifier(header.kid);
      if (!k) throw new KmsError(code, { detail: 'unknown kid' });
      return k.publicKey;
    };
  }

  /**
   * Signs an attestation-result token (EAR JWT) with the active key: the registered claims
   * (`iss`, `aud`, `iat`, `exp` = `iat` + TTL, `jti`), the EAR claims (`eat_profile`,
   * `ear.verifier-id`, `eat_nonce`, `submods`), cir's `cir.*` claims from `body`, and
   * `cnf` (RFC 8705 certificate binding) when `body.cnf` is set.
   * Checks the payload against `AttestationTokenPayloadSchema` first (`ERR_KMS_INTERNAL`, a
   * bug, if it fails).
   */
  async issue(body: TokenBody, now: Date): Promise<IssuedToken> {
    const ring = await this.#current();
    const iat = Math.floor(now.getTime() / 1000);
    const exp = iat + this.#opts.ttlSeconds;
    const jti = randomBytes(16).toString('base64url');
    for (const name of Object.keys(body.submods)) {
      if (!SUBMOD_NAME_RE.test(name)) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'bad submodule name' });
    }
    const candidate = {
      iss: this.#opts.issuer,
      aud: TOKEN_AUDIENCE,
      iat,
      exp,
      jti,
      eat_profile: EAR_PROFILE,
      'ear.verifier-id': { build: this.#build, developer: VERIFIER_DEVELOPER },
      eat_nonce: body.nonce,
      submods: body.submods,
      'cir.tee': body.tee,
      'cir.tenant': body.tenant ?? 'default',
      'cir.key-hash': body.keyHash,
      'cir.policy-id': body.policyId,
      'cir.policy-hash': body.policyHash,
      'cir.relaxations': [...body.relaxations],
      'cir.claims': body.claims,
      ...(body.cnf !== undefined ? { cnf: { 'x5t#S256': body.cnf['x5t#S256'] } } : {}),
    };
    const parsed = AttestationTokenPayloadSchema.safeParse(candidate);
    if (!parsed.success) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'token payload does not match its schema' });
    const { kid, key } = this.#signer(ring);
    const token = await signCompactEs256({ kid, typ: ATTESTATION_TOKEN_TYPE }, Buffer.from(JSON.stringify(candidate), 'utf8'), key);
    return { token, jti, expiresAt: new Date(exp * 1000), kid };
  }

  /**
   * Signs a key release: a compact JWS (RFC 7515), ES256 with the active key, protected
   * header `{alg: 'ES256', kid, typ: RELEASE_JWS_TYPE}`, payload exactly
   * `ReleaseSignedPayloadSchema` with `iss` = the configured issuer and `iat` = `now` in
   * seconds. Verifiable against `jwks()` (and the pinned `BROKER_JWKS_FILE`).
   * Checks the payload against the schema first (a bug, `ERR_KMS_INTERNAL`, if it fails).
   * Does not: set an expiry (the release is single-shot; the verifier decides how old an
   * `iat` it accepts) or include the ciphertext itself (its SHA-256 stands for it).
   */
  async signRelease(body: ReleaseSignedBody, now: Date): Promise<string> {
    const ring = await this.#current();
    const candidate = { ...body, iss: this.#opts.issuer, iat: Math.floor(now.getTime() / 1000) };
    const parsed = ReleaseSignedPayloadSchema.safeParse(candidate);
    if (!parsed.success) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'release payload does not match its schema' });
    const payload: ReleaseSignedPayload = parsed.data;
    const { kid, key } = this.#signer(ring);
    // SECURITY: the same ring as the tokens, but a distinct `typ`, so a release signature can
    // never be replayed as an attestation token (jwtVerify checks typ) or the other way round.
    return await signCompactEs256({ kid, typ: RELEASE_JWS_TYPE }, Buffer.from(JSON.stringify(payload), 'utf8'), key);
  }

  /** Verifies an attestation-result token (see the class comment). Throws `ERR_KMS_TOKEN_INVALID`. */
  async verify(token: string, now: Date): Promise<VerifiedToken> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'bad length' });
    }
    const ring = await this.#current();
    let result;
    try {
      result = await jwtVerify(token, this.#resolver(ring, 'ERR_KMS_TOKEN_INVALID'), {
        // SECURITY: algorithm allow-list.
        algorithms: [ALG],
        issuer: this.#opts.issuer,
        audience: TOKEN_AUDIENCE,
        typ: ATTESTATION_TOKEN_TYPE,
        currentDate: now,
        maxTokenAge: this.#opts.ttlSeconds,
        requiredClaims: ['iss', 'aud', 'iat', 'exp', 'jti'],
      });
    } catch (cause) {
      throw invalid('ERR_KMS_TOKEN_INVALID', cause);
    }
    const parsed = AttestationTokenPayloadSchema.safeParse(result.payload);
    if (!parsed.success) throw new KmsError('ERR_KMS_TOKEN_INVALID', { detail: 'unexpected payload' });
    const p = parsed.data;
    return Object.freeze({
      ...p,
      kid: result.protectedHeader.kid as string,
      tee: p['cir.tee'],
      tenant: p['cir.tenant'],
      keyHash: p['cir.key-hash'],
      nonce: p.eat_nonce,
      claims: p['cir.claims'],
      relaxations: p['cir.relaxations'],
      policyId: p['cir.policy-id'],
      policyHash: p['cir.policy-hash'],
      expiresAt: new Date(p.exp * 1000),
    });
  }

  /**
   * Signs a generic document (e.g. a key lease): compact JWS, ES256 with the active key,
   * protected header `{alg, kid, typ}`, payload `payload` with `iss` (the configured issuer)
   * and `iat` (`now` in seconds) filled in when absent. Refuses (`ERR_KMS_INTERNAL`, a bug) a
   * reserved `typ` (tokens, releases, audit checkpoints: they cannot be forged through this
   * method), a malformed `typ`, an `iss` other than the issuer, a non-integer `iat`, or a
   * payload over `MAX_TOKEN_LENGTH` bytes.
   * Does not: add an expiry; put one in the payload and check it in the verifier.
   */
  async signJws(typ: string, payload: Record<string, unknown>, now: Date): Promise<string> {
    assertGenericTyp(typ, 'ERR_KMS_INTERNAL');
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new KmsError('ERR_KMS_INTERNAL', { detail: 'payload must be a JSON object' });
    }
    if (Object.hasOwn(payload, 'iss') && payload.iss !== this.#opts.issuer) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'iss must be the issuer' });
    if (Object.hasOwn(payload, 'iat') && !Number.isSafeInteger(payload.iat)) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'iat must be an integer' });
    const full = { iss: this.#opts.issuer, iat: Math.floor(now.getTime() / 1000), ...payload };
    const bytes = Buffer.from(JSON.stringify(full), 'utf8');
    if (bytes.length > MAX_TOKEN_LENGTH) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'payload too large' });
    const { kid, key } = this.#signer(await this.#current());
    return await signCompactEs256({ kid, typ }, bytes, key);
  }

  /**
   * Verifies a document signed by `signJws`: ES256 only, signature by an active or
   * verify-only ring key chosen by `kid`, `typ` exactly `typ` (reserved types refused),
   * payload a JSON object. Throws `ERR_KMS_JWS_INVALID`.
   * Does not: check any time (no `exp` is set; the caller checks its own validity fields).
   */
  async verifyJws(typ: string, jws: string): Promise<{ payload: Record<string, unknown>; kid: string }> {
    assertGenericTyp(typ, 'ERR_KMS_JWS_INVALID');
    if (typeof jws !== 'string' || jws.length === 0 || jws.length > MAX_TOKEN_LENGTH) {
      throw new KmsError('ERR_KMS_JWS_INVALID', { detail: 'bad length' });
    }
    const ring = await this.#current();
    let r;
    try {
      r = await compactVerify(jws, this.#resolver(ring, 'ERR_KMS_JWS_INVALID'), { algorithms: [ALG] });
    } catch (cause) {
      throw invalid('ERR_KMS_JWS_INVALID', cause);
    }
    if (r.protectedHeader.typ !== typ) throw new KmsError('ERR_KMS_JWS_INVALID', { detail: 'unexpected typ' });
    let payload: unknown;
    try {
      payload = JSON.parse(Buffer.from(r.payload).toString('utf8'));
    } catch {
      throw new KmsError('ERR_KMS_JWS_INVALID', { detail: 'payload is not JSON' });
    }
    if (typeof payload !== 'object' || payload === null || Array.isArray(payload)) {
      throw new KmsError('ERR_KMS_JWS_INVALID', { detail: 'payload is not a JSON object' });
    }
    return { payload: payload as Record<string, unknown>, kid: r.protectedHeader.kid as string };
  }

  /**
   * A signer for the audit log's checkpoints: each `sign` is a compact JWS (ES256, `kid`,
   * `typ` AUDIT_HEAD_JWS_TYPE) over the given bytes with the key active at that moment.
   * Verify with `jwks-archive.json` (every key ever in the ring), so old checkpoints stay
   * verifiable after their key is retired.
   */
  checkpointSigner(): CheckpointSigner {
    return {
      sign: async (payload: Uint8Array) => {
        const { kid, key } = this.#signer(await this.#current());
        return await signCompactEs256({ kid, typ: AUDIT_HEAD_JWS_TYPE }, Uint8Array.from(payload), key);
      },
    };
  }
}

function assertGenericTyp(typ: string, code: 'ERR_KMS_INTERNAL' | 'ERR_KMS_JWS_INVALID'): void {
  if (typeof typ !== 'string' || !JWS_TYP_RE.test(typ)) throw new KmsError(code, { detail: 'malformed typ' });
  // SECURITY: case-insensitive, as media types are (RFC 7515 section 4.1.9).
  if (RESERVED_JWS_TYPES.some((t) => t.toLowerCase() === typ.toLowerCase())) throw new KmsError(code, { detail: 'reserved typ' });
}

