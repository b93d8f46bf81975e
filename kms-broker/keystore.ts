import { createCipheriv, createDecipheriv, createHmac, hkdfSync, randomBytes } from 'node:crypto';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { constantTimeEqual, fromBase64, fromBase64Url } from '../common/bytes.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import type { Logger } from '../common/logger.js';
import { KmsError } from './codes.js';
import { keysDir, masterKeyPath, type BrokerConfig } from './config.js';
import { canonicalJson, parseReleasePolicy, policyHash, type ReleasePolicy } from './policy.js';
import { KEY_ID_RE } from './protocol.js';
import { createFileExclusive, ensurePrivateDir, readSecretFile } from './secret-file.js';

export const DEK_LENGTH = 32;
export const MASTER_KEY_LENGTH = 32;

export type KeyVersionState = 'enabled' | 'disabled';

export interface KeyVersionInfo {
  readonly version: number;
  readonly createdAt: string;
  readonly state: KeyVersionState;
}

/** Public description of a key. Never holds key material. */
export interface KeyMetadata {
  readonly keyId: string;
  readonly createdAt: string;
  readonly updatedAt: string;
  /** Version released when a request names none. */
  readonly currentVersion: number;
  readonly versions: readonly KeyVersionInfo[];
  readonly policy: ReleasePolicy;
  /** SHA-256 of the policy's canonical JSON, lower-case hex. */
  readonly policyHash: string;
}

export interface UnwrappedKey {
  readonly keyId: string;
  readonly version: number;
  /** The plaintext DEK. Callers zero it (`fill(0)`) when done. */
  readonly dek: Buffer;
  readonly metadata: KeyMetadata;
}

/**
 * Storage of data-encryption keys and their release policies. `FileKeyStore` keeps them
 * in files; an HSM-backed store (PKCS#11) can implement the same interface.
 *
 * Every method validates `keyId` against `KEY_ID_RE` (`ERR_KMS_BAD_KEY_ID`). Policies are
 * passed in already parsed (see `parseReleasePolicy`); the store does not judge them.
 */
export interface KeyStore {
  /** Creates version 1 of a new key. `ERR_KMS_KEY_EXISTS` if the id is taken. */
  create(keyId: string, dek: Uint8Array, policy: ReleasePolicy): Promise<KeyMetadata>;
  list(): Promise<KeyMetadata[]>;
  /** `ERR_KMS_KEY_NOT_FOUND` when absent. */
  get(keyId: string): Promise<KeyMetadata>;
  setPolicy(keyId: string, policy: ReleasePolicy): Promise<KeyMetadata>;
  /**
   * The plaintext DEK of `version` (current version when undefined), with the metadata it
   * was read with, so the policy and the DEK come from one consistent read.
   */
  unwrap(keyId: string, version?: number): Promise<UnwrappedKey>;
}

/** Checks a key id against `KEY_ID_RE`; throws `ERR_KMS_BAD_KEY_ID`. */
export function assertKeyId(keyId: string): void {
  if (typeof keyId !== 'string' || !KEY_ID_RE.test(keyId)) {
    throw new KmsError('ERR_KMS_BAD_KEY_ID', { detail: 'must be 1-128 chars of [A-Za-z0-9._-], starting alphanumeric' });
  }
}

// ---------------------------------------------------------------------------------------
// On-disk format, one file per key: <stateDir>/keys/<keyId>.json
//
// {
//   "format": "cir-kms-key/v1", "keyId", "createdAt", "updatedAt", "currentVersion",
//   "policy", "policyHash",
//   "versions": [{ "version", "createdAt", "state", "iv": b64url(12), "ciphertext": b64url(DEK ‖ GCM tag) }],
//   "mac": b64url(HMAC-SHA256(macKey, canonicalJson(record without "mac")))
// }
//
// DEK wrap: AES-256-GCM under wrapKey, random 96-bit IV per write, AAD = DEK_AAD_LABEL ‖
// keyId ‖ 0 ‖ version (decimal). wrapKey and macKey are HKDF-SHA256 subkeys of the master
// key. The MAC binds the policy to the key: without the master key, someone who can write
// the state directory cannot edit a record (loosen its policy, add a version) or swap
// records between key ids. It does NOT stop rollback: a copy of an older, validly MAC'd
// record (an earlier, looser policy; a version since disabled) restored over the current
// file verifies fine, and so does deleting a record. Rollback protection needs a monotonic
// counter outside the state directory (HSM/TPM NV counter); planned, see README.md.
// ---------------------------------------------------------------------------------------

const RECORD_FORMAT = 'cir-kms-key/v1';
const KEY_FILE_SUFFIX = '.json';
const GCM_IV_LENGTH = 12;
const GCM_TAG_LENGTH = 16;
const DEK_AAD_LABEL = 'cir/kms-broker/dek-wrap/v1\0';
const WRAP_KEY_INFO = 'cir/kms-broker/master/dek-wrap/v1';
const MAC_KEY_INFO = 'cir/kms-broker/master/record-mac/v1';

const B64Url = z.string().regex(/^[A-Za-z0-9_-]*$/);
const IsoDate = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not a date');

const StoredVersionSchema = z.strictObject({
  version: z.number().int().positive(),
  createdAt: IsoDate,
  state: z.enum(['enabled', 'disabled']),
  iv: B64Url,
  ciphertext: B64Url,
});

const StoredKeySchema = z.strictObject({
  format: z.literal(RECORD_FORMAT),
  keyId: z.string().regex(KEY_ID_RE),
  createdAt: IsoDate,
  updatedAt: IsoDate,
  currentVersion: z.number().int().positive(),
  policy: z.unknown(),
  policyHash: z.string().regex(/^[0-9a-f]{64}$/),
  versions: z.array(StoredVersionSchema).min(1),
  mac: B64Url,
});
type StoredKey = z.infer<typeof StoredKeySchema>;

export interface FileKeyStoreOptions {
  /** Directory of key files; created 0700. */
  readonly dir: string;
  /** 32-byte master key. Copied; the caller may zero its buffer afterwards. */
  readonly masterKey: Uint8Array;
  readonly now?: () => Date;
}

/**
 * `KeyStore` over one JSON file per key, each DEK encrypted at rest (see format above).
 *
 * Checks on every read: JSON shape, record MAC (constant time), policy hash, GCM tag. Any
 * failure is `ERR_KMS_STORE_CORRUPT` naming the file, never a crash. Does not detect
 * rollback to an older valid record (see the format note above). Writes go through
 * `writeFileAtomic` (temp file, fsync, rename, fsync dir), so a kill -9 leaves the old or
 * the new record; leftover `.*.tmp` files are ignored.
 * Does not: lock across processes. Mutations are serialised within one process; a CLI and
 * a running broker changing the same key at the same instant resolve as last-writer-wins.
 * Records are read from disk on every call, so offline CLI changes are seen at once.
 */
export class FileKeyStore implements KeyStore {
  readonly #dir: string;
  readonly #wrapKey: Buffer;
  readonly #macKey: Buffer;
  readonly #now: () => Date;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: FileKeyStoreOptions) {
    if (opts.masterKey.length !== MASTER_KEY_LENGTH) {
      throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: `must be ${MASTER_KEY_LENGTH} bytes` });
    }
    this.#dir = path.resolve(opts.dir);
    this.#wrapKey = deriveKey(opts.masterKey, WRAP_KEY_INFO);
    this.#macKey = deriveKey(opts.masterKey, MAC_KEY_INFO);
    this.#now = opts.now ?? (() => new Date());
  }

  get dir(): string {
    return this.#dir;
  }

  async create(keyId: string, dek: Uint8Array, policy: ReleasePolicy): Promise<KeyMetadata> {
    assertKeyId(keyId);
    if (dek.length !== DEK_LENGTH) throw new KmsError('ERR_KMS_DEK_INVALID', { detail: `got ${dek.length} bytes` });
    return this.#exclusive(async () => {
      if ((await this.#readRecord(keyId)) !== undefined) {
        throw new KmsError('ERR_KMS_KEY_EXISTS', { detail: keyId });
      }
      const now = this.#now().toISOString();
      const record = this.#seal({
        format: RECORD_FORMAT,
        keyId,
        createdAt: now,
        updatedAt: now,
        currentVersion: 1,
        policy,
        policyHash: policyHash(policy),
        versions: [{ version: 1, createdAt: now, state: 'enabled', ...this.#wrap(keyId, 1, dek) }],
      });
      await this.#write(record);
      return toMetadata(record, policy);
    });
  }

  async list(): Promise<KeyMetadata[]> {
    await ensurePrivateDir(this.#dir);
    const names = await readdir(this.#dir);
    const ids = names
      .filter((n) => n.endsWith(KEY_FILE_SUFFIX))
      .map((n) => n.slice(0, -KEY_FILE_SUFFIX.length))
      // Skips temp files (".<name>.<rand>.tmp") and anything else not named like a key.
      .filter((id) => KEY_ID_RE.test(id))
      .sort();
    const out: KeyMetadata[] = [];
    for (const id of ids) {
      const r = await this.#load(id);
      if (r) out.push(r.metadata);
    }
    return out;
  }

  async get(keyId: string): Promise<KeyMetadata> {
    assertKeyId(keyId);
    return (await this.#mustLoad(keyId)).metadata;
  }

  async setPolicy(keyId: string, policy: ReleasePolicy): Promise<KeyMetadata> {
    assertKeyId(keyId);
    return this.#exclusive(async () => {
      const { stored } = await this.#mustLoad(keyId);
      const { mac: _mac, ...rest } = stored;
      const record = this.#seal({
        ...rest,
        policy,
        policyHash: policyHash(policy),
        updatedAt: this.#now().toISOString(),
      });
      await this.#write(record);
      return toMetadata(record, policy);
    });
  }

  async unwrap(keyId: string, version?: number): Promise<UnwrappedKey> {
    assertKeyId(keyId);
    const { stored, metadata } = await this.#mustLoad(keyId);
    const v = version ?? stored.currentVersion;
    const entry = stored.versions.find((e) => e.version === v);
    if (!entry || entry.state !== 'enabled') {
      throw new KmsError('ERR_KMS_KEY_VERSION_NOT_FOUND', { detail: `${keyId} version ${v}` });
    }
    const dek = this.#unwrapEntry(keyId, entry);
    return { keyId, version: v, dek, metadata };
  }

  // --- internals ---------------------------------------------------------------------

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #file(keyId: string): string {
    const file = path.join(this.#dir, `${keyId}${KEY_FILE_SUFFIX}`);
    // SECURITY: KEY_ID_RE already excludes separators; this catches any future regex slip.
    if (path.dirname(file) !== this.#dir) throw new KmsError('ERR_KMS_BAD_KEY_ID', { detail: 'path escape' });
    return file;
  }

  #wrap(keyId: string, version: number, dek: Uint8Array): { iv: string; ciphertext: string } {
    const iv = randomBytes(GCM_IV_LENGTH);
    const c = createCipheriv('aes-256-gcm', this.#wrapKey, iv, { authTagLength: GCM_TAG_LENGTH });
    c.setAAD(dekAad(keyId, version));
    const ct = Buffer.concat([c.update(dek), c.final(), c.getAuthTag()]);
    return { iv: iv.toString('base64url'), ciphertext: ct.toString('base64url') };
  }

  #unwrapEntry(keyId: string, entry: StoredKey['versions'][number]): Buffer {
    const iv = fromBase64Url(entry.iv);
    const ct = fromBase64Url(entry.ciphertext);
    if (!iv || iv.length !== GCM_IV_LENGTH || !ct || ct.length !== DEK_LENGTH + GCM_TAG_LENGTH) {
      throw corrupt(keyId, `version ${entry.version}: bad iv or ciphertext length`);
    }
    try {
      const d = createDecipheriv('aes-256-gcm', this.#wrapKey, iv, { authTagLength: GCM_TAG_LENGTH });
      d.setAAD(dekAad(keyId, entry.version));
      d.setAuthTag(ct.subarray(DEK_LENGTH));
      return Buffer.concat([d.update(ct.subarray(0, DEK_LENGTH)), d.final()]);
    } catch (cause) {
      throw corrupt(keyId, `version ${entry.version}: DEK authentication failed`, cause);
    }
  }

  #mac(record: Omit<StoredKey, 'mac'>): Buffer {
    return createHmac('sha256', this.#macKey).update(canonicalJson(record), 'utf8').digest();
  }

  #seal(record: Omit<StoredKey, 'mac'>): StoredKey {
    return { ...record, mac: this.#mac(record).toString('base64url') };
  }

  async #write(record: StoredKey): Promise<void> {
    await ensurePrivateDir(this.#dir);
    try {
      await writeFileAtomic(this.#file(record.keyId), `${JSON.stringify(record, null, 2)}\n`, 0o600);
    } catch (cause) {
      throw new KmsError('ERR_KMS_STORE_IO', { detail: `writing ${record.keyId}${KEY_FILE_SUFFIX}`, cause });
    }
  }

  /** Raw file contents, or undefined when there is no such key. */
  async #readRecord(keyId: string): Promise<Buffer | undefined> {
    try {
      return await readFile(this.#file(keyId));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return undefined;
      throw new KmsError('ERR_KMS_STORE_IO', { detail: `reading ${keyId}${KEY_FILE_SUFFIX} (${code ?? 'error'})`, cause: e });
    }
  }

  async #mustLoad(keyId: string): Promise<{ stored: StoredKey; metadata: KeyMetadata }> {
    const r = await this.#load(keyId);
    if (!r) throw new KmsError('ERR_KMS_KEY_NOT_FOUND', { detail: keyId });
    return r;
  }

  async #load(keyId: string): Promise<{ stored: StoredKey; metadata: KeyMetadata } | undefined> {
    const raw = await this.#readRecord(keyId);
    if (raw === undefined) return undefined;
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch (cause) {
      throw corrupt(keyId, 'not valid JSON (truncated or overwritten?)', cause);
    }
    const parsed = StoredKeySchema.safeParse(json);
    if (!parsed.success) throw corrupt(keyId, `unexpected structure at ${parsed.error.issues[0]?.path.join('.') || '(root)'}`);
    const stored = parsed.data;
    const { mac, ...rest } = stored;
    const macBytes = fromBase64Url(mac);
    let expected: Buffer;
    try {
      expected = this.#mac(rest);
    } catch (cause) {
      throw corrupt(keyId, 'record is not plain JSON data', cause);
    }
    // SECURITY: constant-time MAC check before anything in the record is trusted.
    if (!macBytes || !constantTimeEqual(macBytes, expected)) {
      throw corrupt(keyId, 'integrity check failed (tampered, or a different master key)');
    }
    if (stored.keyId !== keyId) throw corrupt(keyId, 'record belongs to another key id');
    if (!stored.versions.some((v) => v.version === stored.currentVersion)) {
      throw corrupt(keyId, 'current version missing');
    }
    let policy: ReleasePolicy;
    try {
      // The production rule on simulated policies is enforced when the policy is set and at
      // release time (evaluatePolicy), not here, so an operator can still list and fix such a key.
      policy = parseReleasePolicy(stored.policy, { production: false });
    } catch (cause) {
      throw corrupt(keyId, `stored policy rejected (${(cause as KmsError).code ?? 'invalid'})`, cause);
    }
    if (policyHash(policy) !== stored.policyHash) throw corrupt(keyId, 'policy hash mismatch');
    return { stored, metadata: toMetadata(stored, policy) };
  }
}

function toMetadata(r: StoredKey, policy: ReleasePolicy): KeyMetadata {
  return Object.freeze({
    keyId: r.keyId,
    createdAt: r.createdAt,
    updatedAt: r.updatedAt,
    currentVersion: r.currentVersion,
    versions: Object.freeze(r.versions.map((v) => Object.freeze({ version: v.version, createdAt: v.createdAt, state: v.state }))),
    policy,
    policyHash: r.policyHash,
  });
}

function dekAad(keyId: string, version: number): Buffer {
  return Buffer.from(`${DEK_AAD_LABEL}${keyId}\0${version}`, 'utf8');
}

function deriveKey(master: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
}

function corrupt(keyId: string, why: string, cause?: unknown): KmsError {
  return new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `${keyId}${KEY_FILE_SUFFIX}: ${why}`, cause });
}

// ---------------------------------------------------------------------------------------
// Master key
// ---------------------------------------------------------------------------------------

export type MasterKeySource = 'env' | 'file' | 'generated';

export interface MasterKeyOptions {
  readonly env?: Readonly<Record<string, string | undefined>>;
  readonly logger?: Logger;
}

/**
 * Loads the 32-byte master key: from the environment variable `config.masterKeyEnv`
 * (base64) when set, else from `masterKeyFile` (base64, must be mode 0600 or tighter),
 * else generates one into that file (0600, created exclusively so concurrent first
 * starts agree). If both env and file hold a key they must be equal.
 * Throws `ERR_KMS_MASTER_KEY_INVALID`; the detail never contains key bytes.
 */
export async function loadMasterKey(
  config: BrokerConfig,
  opts: MasterKeyOptions = {},
): Promise<{ key: Buffer; source: MasterKeySource }> {
  const env = opts.env ?? process.env;
  const file = masterKeyPath(config);
  const envValue = env[config.masterKeyEnv];
  const fromEnv = envValue !== undefined && envValue !== '' ? decodeMasterKey(envValue, `env ${config.masterKeyEnv}`) : undefined;

  const read = await readSecretFile(file);
  if (read.kind === 'bad') throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: `${file}: ${read.reason}` });
  const fromFile = read.kind === 'ok' ? decodeMasterKey(read.data.toString('utf8'), file) : undefined;

  if (fromEnv && fromFile) {
    if (!constantTimeEqual(fromEnv, fromFile)) {
      throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', {
        detail: `env ${config.masterKeyEnv} and ${file} hold different keys; remove one`,
      });
    }
    return { key: fromEnv, source: 'env' };
  }
  if (fromEnv) return { key: fromEnv, source: 'env' };
  if (fromFile) return { key: fromFile, source: 'file' };

  await ensurePrivateDir(config.stateDir);
  const generated = randomBytes(MASTER_KEY_LENGTH);
  const created = await createFileExclusive(file, `${generated.toString('base64')}\n`, 0o600);
  if (!created) {
    generated.fill(0);
    return loadMasterKey(config, opts); // another process created it first; use theirs
  }
  opts.logger?.warn({ file }, 'generated a new master key; back it up, key files are unreadable without it');
  return { key: generated, source: 'generated' };
}

function decodeMasterKey(text: string, where: string): Buffer {
  const b = fromBase64(text.trim());
  if (!b || b.length !== MASTER_KEY_LENGTH) {
    throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: `${where}: must be base64 of ${MASTER_KEY_LENGTH} bytes` });
  }
  return b;
}

export interface OpenKeyStoreOptions extends MasterKeyOptions {
  readonly now?: () => Date;
}

/**
 * Opens the file key store of a broker state directory: loads (or generates) the master
 * key, creates `<stateDir>` and `<stateDir>/keys` with mode 0700. This is what the broker
 * and the offline CLI (`cir broker keys ...`) both use.
 */
export async function openKeyStore(config: BrokerConfig, opts: OpenKeyStoreOptions = {}): Promise<FileKeyStore> {
  await ensurePrivateDir(config.stateDir);
  const { key } = await loadMasterKey(config, opts);
  await ensurePrivateDir(keysDir(config));
  try {
    return new FileKeyStore({
      dir: keysDir(config),
      masterKey: key,
      ...(opts.now ? { now: opts.now } : {}),
    });
  } finally {
    key.fill(0);
  }
}
