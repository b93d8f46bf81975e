/**
 * API keys: the token format, the hash kept in the store, the store file schema and an
 * in-memory index for per-request authentication.
 *
 * Token: `cir_<keyId>_<secret>`: keyId is 16 lowercase hex characters (8 random bytes),
 * secret is 32 random bytes in unpadded base64url (43 characters). The store keeps only
 * SHA-256("cir-api-key-v1\0" || keyId || "\0" || secret), so a leaked store file yields
 * no usable key and a hash cannot be moved to another record.
 *
 * What this does NOT do: rate limiting (limits.ts), file watching (store-watcher.ts), or
 * any check of the model/operation (tenancy.ts decides on the returned record).
 */
import { hash as cryptoHash } from 'node:crypto';
import { randomBytes } from 'node:crypto';
import { lstat, readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../../common/atomic-file.js';
import { constantTimeEqual, fromHex } from '../../common/bytes.js';
import { deepFreeze, issuesDetail } from '../../common/config.js';
import { ServerError } from '../codes.js';
import { TenantNameSchema } from './config.js';

export const KEY_PREFIX = 'cir_';
const KEY_ID_HEX = 16;
const SECRET_BYTES = 32;
const SECRET_B64 = 43; // ceil(32 * 4 / 3), unpadded
/** Total token length: "cir_" + 16 + "_" + 43. */
export const TOKEN_LENGTH = KEY_PREFIX.length + KEY_ID_HEX + 1 + SECRET_B64;
const KEY_ID_RE = /^[0-9a-f]{16}$/;
const SECRET_RE = /^[A-Za-z0-9_-]{43}$/;
const HASH_DOMAIN_TEXT = 'cir-api-key-v1\0';

export const OPERATIONS = ['infer', 'metadata', 'evidence'] as const;
export type Operation = (typeof OPERATIONS)[number];

const isoTime = z.iso.datetime({ offset: true });
const hex64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters');

export const KeyRecordSchema = z.strictObject({
  keyId: z.string().regex(KEY_ID_RE, 'must be 16 lowercase hex characters'),
  /** SHA-256 of the secret (see `hashSecret`); absent for an mTLS-only identity. */
  secretSha256: hex64.optional(),
  /** SHA-256 of client certificate DER fingerprints that authenticate as this record. */
  certSha256: z.array(hex64).max(16).optional(),
  tenant: TenantNameSchema,
  /** Who holds the key (a workload, a team). Free text, shown by `cir keys list`. */
  owner: z.string().min(1).max(256),
  environment: z.string().min(1).max(64),
  scopes: z.strictObject({
    operations: z.array(z.enum(OPERATIONS)).min(1).max(3),
    models: z.union([z.literal('*'), z.array(z.string().min(1).max(128)).max(4096)]),
  }),
  createdAt: isoTime,
  expiresAt: isoTime.optional(),
  revokedAt: isoTime.optional(),
  /** The key this one replaced (`cir keys rotate`). */
  rotatedFrom: z.string().regex(KEY_ID_RE).optional(),
});
export type KeyRecord = Readonly<z.output<typeof KeyRecordSchema>>;

export const KeyStoreFileSchema = z
  .strictObject({ version: z.literal(1), keys: z.array(KeyRecordSchema).max(100_000) })
  .superRefine((f, ctx) => {
    const seen = new Set<string>();
    const certs = new Set<string>();
    f.keys.forEach((k, i) => {
      if (seen.has(k.keyId)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'keyId'], message: 'duplicate keyId' });
      seen.add(k.keyId);
      if (k.secretSha256 === undefined && (k.certSha256 ?? []).length === 0) {
        ctx.addIssue({ code: 'custom', path: ['keys', i], message: 'needs secretSha256 or certSha256' });
      }
      for (const c of k.certSha256 ?? []) {
        if (certs.has(c)) ctx.addIssue({ code: 'custom', path: ['keys', i, 'certSha256'], message: 'certificate mapped twice' });
        certs.add(c);
      }
    });
  });
export type KeyStoreFile = z.output<typeof KeyStoreFileSchema>;

/** Hash kept in the store for `secret` of key `keyId` (domain-separated SHA-256). */
export function hashSecret(keyId: string, secret: string): Buffer {
  // One-shot crypto.hash (no Hash object per request): the same bytes as
  // sha256(HASH_DOMAIN, keyId ‖ 0, secret), on the per-request path.
  return cryptoHash('sha256', `${HASH_DOMAIN_TEXT}${keyId}\0${secret}`, 'buffer');
}

export interface ParsedToken {
  readonly keyId: string;
  readonly secret: string;
}

/**
 * Splits a bearer token into keyId and secret by fixed positions. Returns undefined for
 * anything that is not exactly the token format; never throws.
 */
export function parseToken(token: unknown): ParsedToken | undefined {
  if (typeof token !== 'string' || token.length !== TOKEN_LENGTH || !token.startsWith(KEY_PREFIX)) return undefined;
  const keyId = token.slice(KEY_PREFIX.length, KEY_PREFIX.length + KEY_ID_HEX);
  if (token[KEY_PREFIX.length + KEY_ID_HEX] !== '_') return undefined;
  const secret = token.slice(KEY_PREFIX.length + KEY_ID_HEX + 1);
  if (!KEY_ID_RE.test(keyId) || !SECRET_RE.test(secret)) return undefined;
  return { keyId, secret };
}

/**
 * Extracts the token from an `authorization` metadata value: exactly `Bearer <token>`
 * (scheme case-insensitive). Returns undefined otherwise; never throws.
 */
export function bearerToken(value: unknown): string | undefined {
  const v = Buffer.isBuffer(value) ? undefined : value;
  if (typeof v !== 'string' || v.length > 512) return undefined;
  if (v.length < 7 || v.slice(0, 7).toLowerCase() !== 'bearer ') return undefined;
  return v.slice(7).trim();
}

export interface NewKey {
  /** The token, shown once. SECURITY: never stored, never logged. */
  readonly token: string;
  readonly record: KeyRecord;
}

export interface IssueOptions {
  readonly tenant: string;
  readonly owner: string;
  readonly environment: string;
  readonly operations: readonly Operation[];
  readonly models: '*' | readonly string[];
  readonly now: Date;
  readonly expiresAt?: Date;
  readonly certSha256?: readonly string[];
  readonly rotatedFrom?: string;
}

/** Mints a fresh key (random keyId and secret) and its store record. */
export function mintKey(o: IssueOptions, existingIds: ReadonlySet<string> = new Set()): NewKey {
  let keyId: string;
  do keyId = randomBytes(KEY_ID_HEX / 2).toString('hex');
  while (existingIds.has(keyId));
  const secret = randomBytes(SECRET_BYTES).toString('base64url');
  const record = KeyRecordSchema.parse({
    keyId,
    secretSha256: hashSecret(keyId, secret).toString('hex'),
    ...(o.certSha256?.length ? { certSha256: [...o.certSha256] } : {}),
    tenant: o.tenant,
    owner: o.owner,
    environment: o.environment,
    scopes: { operations: [...new Set(o.operations)], models: o.models === '*' ? '*' : [...new Set(o.models)] },
    createdAt: o.now.toISOString(),
    ...(o.expiresAt ? { expiresAt: o.expiresAt.toISOString() } : {}),
    ...(o.rotatedFrom ? { rotatedFrom: o.rotatedFrom } : {}),
  });
  return { token: `${KEY_PREFIX}${keyId}_${secret}`, record };
}

/** Why a record is not usable at `now`, or undefined when it is. */
export function inactiveReason(r: KeyRecord, nowMs: number): 'revoked' | 'expired' | undefined {
  if (r.revokedAt !== undefined && Date.parse(r.revokedAt) <= nowMs) return 'revoked';
  if (r.expiresAt !== undefined && Date.parse(r.expiresAt) <= nowMs) return 'expired';
  return undefined;
}

/** A key record prepared for the request path. */
export interface Principal {
  readonly keyId: string;
  readonly tenant: string;
  readonly owner: string;
  readonly environment: string;
  readonly operations: ReadonlySet<Operation>;
  /** undefined = every model of the tenant. */
  readonly models: ReadonlySet<string> | undefined;
  readonly expiresAtMs: number;
  readonly revokedAtMs: number;
}

interface Entry {
  readonly principal: Principal;
  readonly hash: Buffer | undefined;
}

export type AuthFailure = 'missing' | 'malformed' | 'unknown' | 'mismatch' | 'expired' | 'revoked';

/**
 * Immutable index of a parsed store: by keyId, and by client certificate fingerprint.
 * `authenticate` looks a token up by keyId, then compares the hash in constant time, then
 * checks revocation and expiry. It does NOT check models or operations.
 */
export class KeyIndex {
  readonly #byId = new Map<string, Entry>();
  readonly #byCert = new Map<string, Principal>();
  readonly size: number;

  constructor(file: KeyStoreFile) {
    for (const r of file.keys) {
      const principal: Principal = Object.freeze({
        keyId: r.keyId,
        tenant: r.tenant,
        owner: r.owner,
        environment: r.environment,
        operations: new Set(r.scopes.operations),
        models: r.scopes.models === '*' ? undefined : new Set(r.scopes.models),
        expiresAtMs: r.expiresAt === undefined ? Infinity : Date.parse(r.expiresAt),
        revokedAtMs: r.revokedAt === undefined ? Infinity : Date.parse(r.revokedAt),
      });
      this.#byId.set(r.keyId, { principal, hash: r.secretSha256 === undefined ? undefined : fromHex(r.secretSha256) });
      for (const c of r.certSha256 ?? []) this.#byCert.set(c, principal);
    }
    this.size = file.keys.length;
  }

  authenticate(token: string | undefined, nowMs: number): Principal | AuthFailure {
    if (token === undefined || token === '') return 'missing';
    const parsed = parseToken(token);
    if (!parsed) return 'malformed';
    const entry = this.#byId.get(parsed.keyId);
    // SECURITY: hash even for an unknown id so that path costs about the same.
    const got = hashSecret(parsed.keyId, parsed.secret);
    if (!entry || !entry.hash) {
      constantTimeEqual(got, got);
      return 'unknown';
    }
    // SECURITY: constant-time comparison of the stored hash.
    if (!constantTimeEqual(got, entry.hash)) return 'mismatch';
    return liveness(entry.principal, nowMs);
  }

  /** Principal for a client certificate's SHA-256 (DER) fingerprint, if mapped and live. */
  byCertificate(sha256Hex: string, nowMs: number): Principal | AuthFailure {
    const p = this.#byCert.get(sha256Hex);
    return p ? liveness(p, nowMs) : 'unknown';
  }
}

function liveness(p: Principal, nowMs: number): Principal | AuthFailure {
  if (p.revokedAtMs <= nowMs) return 'revoked';
  if (p.expiresAtMs <= nowMs) return 'expired';
  return p;
}

/**
 * Parses store file bytes. Throws ERR_SRV_KEY_STORE naming the offending fields (never
 * values). Property-tested: arbitrary bytes give a store or that error, nothing else.
 */
export function parseKeyStore(bytes: Uint8Array): KeyStoreFile {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new ServerError('ERR_SRV_KEY_STORE', { detail: 'not valid JSON' });
  }
  const r = KeyStoreFileSchema.safeParse(json);
  if (!r.success) throw new ServerError('ERR_SRV_KEY_STORE', { detail: issuesDetail(r.error.issues) });
  return deepFreeze(r.data);
}

/**
 * Reads and parses the store file. Refuses a file that is not a regular file or that
 * group/others can access (the hashes identify keys; treat the file like a secret).
 * `missingOk` returns an empty store for a file that does not exist (CLI `issue`).
 */
export async function readKeyStore(file: string, opts: { missingOk?: boolean } = {}): Promise<KeyStoreFile> {
  let st;
  try {
    st = await lstat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT' && opts.missingOk) return { version: 1, keys: [] };
    throw new ServerError('ERR_SRV_KEY_STORE', { detail: `cannot stat (${(e as NodeJS.ErrnoException).code ?? 'error'})` });
  }
  if (!st.isFile()) throw new ServerError('ERR_SRV_KEY_STORE', { detail: 'not a regular file' });
  // SECURITY: like ssh with private keys, a store others can read is refused.
  if ((st.mode & 0o077) !== 0) {
    throw new ServerError('ERR_SRV_KEY_STORE', { detail: `mode ${(st.mode & 0o777).toString(8)} lets group/others access it; chmod 600` });
  }
  let bytes: Buffer;
  try {
    bytes = await readFile(file);
  } catch (e) {
    throw new ServerError('ERR_SRV_KEY_STORE', { detail: `cannot read (${(e as NodeJS.ErrnoException).code ?? 'error'})` });
  }
  return parseKeyStore(bytes);
}

/** Validates and writes the store atomically with mode 0600 (never a half-written file). */
export async function writeKeyStore(file: string, store: KeyStoreFile): Promise<void> {
  const checked = KeyStoreFileSchema.safeParse(store);
  if (!checked.success) throw new ServerError('ERR_SRV_KEY_STORE', { detail: issuesDetail(checked.error.issues) });
  await writeFileAtomic(file, `${JSON.stringify(checked.data, null, 2)}\n`, 0o600);
}
