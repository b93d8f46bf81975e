import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { link, open, readdir, readFile, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { constantTimeEqual, fromBase64, fromBase64Url } from '../common/bytes.js';
import { fsyncDir, writeFileAtomic } from '../common/atomic-file.js';
import type { Logger } from '../common/logger.js';
import { KmsError } from './codes.js';
import { masterKeyPath, type BrokerConfig } from './config.js';
import { parseReleasePolicy, policyHash, type ReleasePolicy } from './policy.js';
import { deepFreeze } from '../common/config.js';
import { KEY_ID_RE, TENANT_ID_RE } from './protocol.js';
import { deriveSubkey, fileStamp, readWithStamp, RecordMac } from './sealed-record.js';
import { createFileExclusive, ensurePrivateDir, readSecretFile } from './secret-file.js';

export const DEK_LENGTH = 32;
export const MASTER_KEY_LENGTH = 32;
/** The tenant of keys created without one, and of keys migrated from the single-tenant format. */
export const DEFAULT_TENANT = 'default';
/** Most policy versions one key keeps; a policy change beyond it is refused. */
export const MAX_POLICY_VERSIONS = 1000;
/** Most key versions one key keeps. */
export const MAX_KEY_VERSIONS = 1000;

/** A key's name: keys live in a tenant's namespace, ids are unique per tenant only. */
export interface KeyRef {
  readonly tenant: string;
  readonly keyId: string;
}

export type KeyState = 'enabled' | 'disabled' | 'destroyed';
export type KeyVersionState = 'enabled' | 'disabled' | 'destroyed';
export type PolicyStatus = 'active' | 'pending' | 'superseded' | 'withdrawn';

export interface KeyVersionInfo {
  readonly version: number;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly state: KeyVersionState;
  readonly destroyedAt?: string;
}

/** One version of a key's release policy. Policies are not secret (measurements, TCB levels). */
export interface PolicyVersion {
  readonly version: number;
  readonly hash: string;
  readonly policy: ReleasePolicy;
  readonly status: PolicyStatus;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly approvedBy?: string;
  readonly approvedAt?: string;
}

/** Public description of a key. Never holds key material. */
export interface KeyMetadata {
  readonly tenant: string;
  readonly keyId: string;
  readonly state: KeyState;
  readonly createdAt: string;
  readonly createdBy: string;
  readonly updatedAt: string;
  /** Version released when a request names none. */
  readonly currentVersion: number;
  readonly versions: readonly KeyVersionInfo[];
  /** The active release policy; null when none is active yet (then nothing is released). */
  readonly policy: ReleasePolicy | null;
  /** SHA-256 (hex) of the active policy's canonical JSON; null without one. */
  readonly policyHash: string | null;
  readonly policyVersion: number | null;
  /** A proposed policy awaiting a second approver (two-person rule), if any. */
  readonly pendingPolicy: { readonly version: number; readonly hash: string; readonly createdBy: string; readonly createdAt: string } | null;
  /** Candidate policy evaluated on live requests without being enforced, if any. */
  readonly dryRunPolicy: { readonly hash: string; readonly policy: ReleasePolicy; readonly setBy: string; readonly setAt: string } | null;
}

export interface UnwrappedKey {
  readonly tenant: string;
  readonly keyId: string;
  readonly version: number;
  /** The plaintext DEK. Callers zero it (`fill(0)`) when done. */
  readonly dek: Buffer;
  readonly metadata: KeyMetadata;
}

export interface TenantSettings {
  readonly tenant: string;
  /** A policy change takes effect only once a second identity approves it. */
  readonly twoPersonRule: boolean;
  readonly updatedAt: string | null;
}

/** What a new policy does on arrival: take effect, or wait for a second approver. */
export type PolicyArrival = 'active' | 'pending';

/**
 * Storage of data-encryption keys, their versions and release-policy history, per tenant.
 * `FileKeyStore` keeps them in files; an HSM-backed store (PKCS#11) can implement it too.
 *
 * Every method validates the tenant (`TENANT_ID_RE`, `ERR_KMS_BAD_TENANT`) and key id
 * (`KEY_ID_RE`, `ERR_KMS_BAD_KEY_ID`). A key of another tenant is indistinguishable from
 * a missing one (`ERR_KMS_KEY_NOT_FOUND`). Policies are passed in parsed; the store does
 * not judge them. `by` names the acting identity, recorded in the history.
 */
export interface KeyStore {
  /** Creates version 1. `ERR_KMS_KEY_EXISTS` if the id is taken in this tenant (destroyed keys included). */
  create(ref: KeyRef, dek: Uint8Array, by: string, policy?: { policy: ReleasePolicy; arrival: PolicyArrival }): Promise<KeyMetadata>;
  list(tenant: string): Promise<KeyMetadata[]>;
  listTenants(): Promise<string[]>;
  get(ref: KeyRef): Promise<KeyMetadata>;
  /** Adds a version with a new DEK and makes it current; earlier versions stay as they are. */
  rotate(ref: KeyRef, dek: Uint8Array, by: string): Promise<KeyMetadata>;
  /** Enables or disables the key (no version) or one version. Refused on destroyed keys. */
  setState(ref: KeyRef, state: 'enabled' | 'disabled', by: string, version?: number): Promise<KeyMetadata>;
  /**
   * Crypto-shreds the key (no version: every version) or one version: the wrapped DEK is
   * overwritten and only a tombstone remains. Irreversible. The current version cannot be
   * destroyed alone (rotate first, or destroy the key).
   */
  destroy(ref: KeyRef, by: string, version?: number): Promise<KeyMetadata>;
  /** Adds a policy version, active at once or pending approval. */
  proposePolicy(ref: KeyRef, policy: ReleasePolicy, by: string, arrival: PolicyArrival): Promise<KeyMetadata>;
  /** Activates pending policy `version`; `approver` must differ from its author (checked by the caller too). */
  approvePolicy(ref: KeyRef, version: number, approver: string): Promise<KeyMetadata>;
  /** Sets (or clears, with null) the dry-run candidate policy. */
  setDryRunPolicy(ref: KeyRef, policy: ReleasePolicy | null, by: string): Promise<KeyMetadata>;
  /** Every policy version, oldest first. */
  policyHistory(ref: KeyRef): Promise<PolicyVersion[]>;
  /**
   * The plaintext DEK of `version` (current when undefined) with the metadata it was read
   * with. `ERR_KMS_KEY_DISABLED` for a disabled or destroyed key or version.
   */
  unwrap(ref: KeyRef, version?: number): Promise<UnwrappedKey>;
  tenantSettings(tenant: string): Promise<TenantSettings>;
  setTenantSettings(tenant: string, settings: { twoPersonRule: boolean }): Promise<TenantSettings>;
}

/** Checks a key id against `KEY_ID_RE`; throws `ERR_KMS_BAD_KEY_ID`. */
export function assertKeyId(keyId: string): void {
  if (typeof keyId !== 'string' || !KEY_ID_RE.test(keyId)) {
    throw new KmsError('ERR_KMS_BAD_KEY_ID', { detail: 'must be 1-128 chars of [A-Za-z0-9._-], starting alphanumeric' });
  }
}

/** Checks a tenant id against `TENANT_ID_RE`; throws `ERR_KMS_BAD_TENANT`. */
export function assertTenant(tenant: string): void {
  if (typeof tenant !== 'string' || !TENANT_ID_RE.test(tenant)) {
    throw new KmsError('ERR_KMS_BAD_TENANT', { detail: 'must be 1-63 chars of [a-z0-9-], starting alphanumeric' });
  }
}

function assertRef(ref: KeyRef): void {
  assertTenant(ref.tenant);
  assertKeyId(ref.keyId);
}

// ---------------------------------------------------------------------------------------
// On-disk format, one file per key: <stateDir>/tenants/<tenant>/keys/<keyId>.json
//
// {
//   "format": "cir-kms-key/v2", "tenant", "keyId", "state", "createdAt", "createdBy",
//   "updatedAt", "currentVersion",
//   "versions": [{ "version", "createdAt", "createdBy", "state",
//                  "iv": b64url(12), "ciphertext": b64url(DEK ‖ GCM tag) }   (not destroyed)
//                | { ..., "state": "destroyed", "destroyedAt" }               (tombstone)],
//   "policies": [{ "version", "hash", "document", "status", "createdAt", "createdBy",
//                  "approvedBy"?, "approvedAt"? }],
//   "dryRun": null | { "hash", "document", "setAt", "setBy" },
//   "mac"
// }
//
// DEK wrap: AES-256-GCM under wrapKey, random 96-bit IV per write, AAD = DEK_AAD_LABEL ‖
// tenant ‖ 0 ‖ keyId ‖ 0 ‖ version. wrapKey and the record MAC key are HKDF-SHA256 subkeys of
// the master key (sealed-record.ts). The MAC covers tenant and key id, so records cannot be
// edited or moved between tenants or ids without the master key. No rollback protection
// (see sealed-record.ts).
//
// Format v1 (`<stateDir>/keys/<keyId>.json`, single tenant) is migrated on open into
// tenant `default`: the v2 record is written first, then the v1 file removed, so a crash
// in between leaves both and the next open finishes the move.
// ---------------------------------------------------------------------------------------

const RECORD_FORMAT = 'cir-kms-key/v2';
const V1_RECORD_FORMAT = 'cir-kms-key/v1';
const TENANT_FORMAT = 'cir-kms-tenant/v1';
const KEY_FILE_SUFFIX = '.json';
const SHRED_MARK = '.shred-';
const GCM_IV_LENGTH = 12;
const GCM_TAG_LENGTH = 16;
const DEK_AAD_LABEL = 'cir/kms-broker/dek-wrap/v2\0';
const V1_DEK_AAD_LABEL = 'cir/kms-broker/dek-wrap/v1\0';
const WRAP_KEY_INFO = 'cir/kms-broker/master/dek-wrap/v1';
const MAC_KEY_INFO = 'cir/kms-broker/master/record-mac/v1';
const TENANT_MAC_INFO = 'cir/kms-broker/master/tenant-mac/v1';

const B64Url = z.string().regex(/^[A-Za-z0-9_-]*$/);
const IsoDate = z.string().max(64).refine((s) => !Number.isNaN(Date.parse(s)), 'not a date');
const Actor = z.string().min(1).max(200);
const Hex64 = z.string().regex(/^[0-9a-f]{64}$/);

const StoredVersionSchema = z
  .strictObject({
    version: z.number().int().positive(),
    createdAt: IsoDate,
    createdBy: Actor,
    state: z.enum(['enabled', 'disabled', 'destroyed']),
    iv: B64Url.optional(),
    ciphertext: B64Url.optional(),
    destroyedAt: IsoDate.optional(),
  })
  .refine((v) => (v.state === 'destroyed') === (v.iv === undefined && v.ciphertext === undefined), 'wrapped DEK iff not destroyed');

const StoredPolicySchema = z.strictObject({
  version: z.number().int().positive(),
  hash: Hex64,
  document: z.unknown(),
  status: z.enum(['active', 'pending', 'superseded', 'withdrawn']),
  createdAt: IsoDate,
  createdBy: Actor,
  approvedBy: Actor.optional(),
  approvedAt: IsoDate.optional(),
});

const StoredKeySchema = z.strictObject({
  format: z.literal(RECORD_FORMAT),
  tenant: z.string().regex(TENANT_ID_RE),
  keyId: z.string().regex(KEY_ID_RE),
  state: z.enum(['enabled', 'disabled', 'destroyed']),
  createdAt: IsoDate,
  createdBy: Actor,
  updatedAt: IsoDate,
  currentVersion: z.number().int().positive(),
  versions: z.array(StoredVersionSchema).min(1).max(MAX_KEY_VERSIONS),
  policies: z.array(StoredPolicySchema).max(MAX_POLICY_VERSIONS),
  dryRun: z.strictObject({ hash: Hex64, document: z.unknown(), setAt: IsoDate, setBy: Actor }).nullable(),
  mac: B64Url,
});
type StoredKey = z.infer<typeof StoredKeySchema>;
type StoredVersion = StoredKey['versions'][number];
type Unsealed = Omit<StoredKey, 'mac'>;

const V1KeySchema = z.strictObject({
  format: z.literal(V1_RECORD_FORMAT),
  keyId: z.string().regex(KEY_ID_RE),
  createdAt: IsoDate,
  updatedAt: IsoDate,
  currentVersion: z.number().int().positive(),
  policy: z.unknown(),
  policyHash: Hex64,
  versions: z
    .array(z.strictObject({ version: z.number().int().positive(), createdAt: IsoDate, state: z.enum(['enabled', 'disabled']), iv: B64Url, ciphertext: B64Url }))
    .min(1),
  mac: B64Url,
});

const StoredTenantSchema = z.strictObject({
  format: z.literal(TENANT_FORMAT),
  tenant: z.string().regex(TENANT_ID_RE),
  twoPersonRule: z.boolean(),
  updatedAt: IsoDate,
  mac: B64Url,
});

export interface FileKeyStoreOptions {
  /** The broker state directory; key records live under `<root>/tenants/`. */
  readonly root: string;
  /** 32-byte master key. Copied; the caller may zero its buffer afterwards. */
  readonly masterKey: Uint8Array;
  readonly now?: () => Date;
  readonly logger?: Pick<Logger, 'info' | 'warn'>;
}

interface Loaded {
  readonly stamp: string;
  readonly stored: StoredKey;
  readonly metadata: KeyMetadata;
}

/**
 * `KeyStore` over one JSON file per key (format above).
 *
 * Checks on every read: JSON shape, record MAC (constant time), that the record names the
 * tenant and id of its path, policy hashes, and the GCM tag of any DEK it unwraps. Any
 * failure is `ERR_KMS_STORE_CORRUPT` naming the file, never a crash. Parsed records are
 * cached by file identity (inode, size, mtime), so a release costs a `stat` while the
 * file is unchanged, and a change by another process (the offline CLI) is seen at once.
 * Writes go through `writeFileAtomic`, so a kill -9 leaves the old or the new record.
 * Does not: lock across processes (one process mutating at a time is the operator's
 * promise: the running broker, or the offline CLI while it is stopped; concurrent writers
 * resolve as last-writer-wins per key), or detect rollback of a record (sealed-record.ts).
 */
export class FileKeyStore implements KeyStore {
  readonly #root: string;
  readonly #wrapKey: Buffer;
  readonly #mac: RecordMac;
  readonly #tenantMac: RecordMac;
  readonly #now: () => Date;
  readonly #logger: Pick<Logger, 'info' | 'warn'> | undefined;
  readonly #cache = new Map<string, Loaded>();
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: FileKeyStoreOptions) {
    if (opts.masterKey.length !== MASTER_KEY_LENGTH) {
      throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: `must be ${MASTER_KEY_LENGTH} bytes` });
    }
    this.#root = path.resolve(opts.root);
    this.#wrapKey = deriveSubkey(opts.masterKey, WRAP_KEY_INFO);
    const macKey = deriveSubkey(opts.masterKey, MAC_KEY_INFO);
    this.#mac = new RecordMac(macKey);
    this.#tenantMac = new RecordMac(deriveSubkey(opts.masterKey, TENANT_MAC_INFO));
    this.#now = opts.now ?? (() => new Date());
    this.#logger = opts.logger;
  }

  get root(): string {
    return this.#root;
  }

  // --- keys ------------------------------------------------------------------------------

  async create(
    ref: KeyRef,
    dek: Uint8Array,
    by: string,
    initial?: { policy: ReleasePolicy; arrival: PolicyArrival },
  ): Promise<KeyMetadata> {
    assertRef(ref);
    assertDek(dek);
    return this.#exclusive(async () => {
      if ((await this.#load(ref)) !== undefined) throw new KmsError('ERR_KMS_KEY_EXISTS', { detail: ref.keyId });
      const now = this.#now().toISOString();
      const record: Unsealed = {
        format: RECORD_FORMAT,
        tenant: ref.tenant,
        keyId: ref.keyId,
        state: 'enabled',
        createdAt: now,
        createdBy: by,
        updatedAt: now,
        currentVersion: 1,
        versions: [{ version: 1, createdAt: now, createdBy: by, state: 'enabled', ...this.#wrap(ref, 1, dek) }],
        policies: initial
          ? [{ version: 1, hash: policyHash(initial.policy), document: initial.policy, status: initial.arrival, createdAt: now, createdBy: by }]
          : [],
        dryRun: null,
      };
      return this.#write(record);
    });
  }

  async list(tenant: string): Promise<KeyMetadata[]> {
    assertTenant(tenant);
    const dir = this.#keysDir(tenant);
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError(`listing ${tenant}`, e);
    }
    const ids = names
      .filter((n) => n.endsWith(KEY_FILE_SUFFIX))
      .map((n) => n.slice(0, -KEY_FILE_SUFFIX.length))
      // Skips temp files (".<name>.<rand>.tmp"), shred leftovers and anything else not named like a key.
      .filter((id) => KEY_ID_RE.test(id))
      .sort();
    const out: KeyMetadata[] = [];
    for (const keyId of ids) {
      const r = await this.#load({ tenant, keyId });
      if (r) out.push(r.metadata);
    }
    return out;
  }

  async listTenants(): Promise<string[]> {
    try {
      return (await readdir(path.join(this.#root, 'tenants'))).filter((t) => TENANT_ID_RE.test(t)).sort();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError('listing tenants', e);
    }
  }

  async get(ref: KeyRef): Promise<KeyMetadata> {
    assertRef(ref);
    return (await this.#mustLoad(ref)).metadata;
  }

  async rotate(ref: KeyRef, dek: Uint8Array, by: string): Promise<KeyMetadata> {
    assertRef(ref);
    assertDek(dek);
    return this.#mutate(ref, (r, now) => {
      assertNotDestroyed(r);
      if (r.versions.length >= MAX_KEY_VERSIONS) throw new KmsError('ERR_KMS_LIMIT_REACHED', { detail: `at most ${MAX_KEY_VERSIONS} key versions` });
      const version = Math.max(...r.versions.map((v) => v.version)) + 1;
      return {
        ...r,
        currentVersion: version,
        versions: [...r.versions, { version, createdAt: now, createdBy: by, state: 'enabled', ...this.#wrap(ref, version, dek) }],
      };
    });
  }

  async setState(ref: KeyRef, state: 'enabled' | 'disabled', _by: string, version?: number): Promise<KeyMetadata> {
    assertRef(ref);
    return this.#mutate(ref, (r) => {
      assertNotDestroyed(r);
      if (version === undefined) return { ...r, state };
      const target = findVersion(r, version);
      if (target.state === 'destroyed') throw new KmsError('ERR_KMS_KEY_DESTROYED', { detail: `${r.keyId} version ${version}` });
      return { ...r, versions: r.versions.map((v) => (v.version === version ? { ...v, state } : v)) };
    });
  }

  async destroy(ref: KeyRef, _by: string, version?: number): Promise<KeyMetadata> {
    assertRef(ref);
    return this.#mutate(
      ref,
      (r, now) => {
        assertNotDestroyed(r);
        const tombstone = (v: StoredVersion): StoredVersion =>
          v.state === 'destroyed'
            ? v
            : { version: v.version, createdAt: v.createdAt, createdBy: v.createdBy, state: 'destroyed', destroyedAt: now };
        if (version === undefined) {
          return { ...r, state: 'destroyed', versions: r.versions.map(tombstone), dryRun: null };
        }
        const target = findVersion(r, version);
        if (target.state === 'destroyed') throw new KmsError('ERR_KMS_KEY_DESTROYED', { detail: `${r.keyId} version ${version}` });
        if (version === r.currentVersion) {
          throw new KmsError('ERR_KMS_KEY_STATE', { detail: 'the current version cannot be destroyed alone; rotate first or destroy the key' });
        }
        return { ...r, versions: r.versions.map((v) => (v.version === version ? tombstone(v) : v)) };
      },
      { shred: true },
    );
  }

  async proposePolicy(ref: KeyRef, policy: ReleasePolicy, by: string, arrival: PolicyArrival): Promise<KeyMetadata> {
    assertRef(ref);
    return this.#mutate(ref, (r, now) => {
      assertNotDestroyed(r);
      if (r.policies.length >= MAX_POLICY_VERSIONS) {
        throw new KmsError('ERR_KMS_LIMIT_REACHED', { detail: `at most ${MAX_POLICY_VERSIONS} policy versions` });
      }
      const version = r.policies.length === 0 ? 1 : Math.max(...r.policies.map((p) => p.version)) + 1;
      const entry = { version, hash: policyHash(policy), document: policy, status: arrival, createdAt: now, createdBy: by } as const;
      // A newer proposal replaces an older one still waiting: only one pending at a time.
      const earlier = r.policies.map((p) =>
        p.status === 'pending' ? { ...p, status: 'withdrawn' as const } : arrival === 'active' && p.status === 'active' ? { ...p, status: 'superseded' as const } : p,
      );
      return { ...r, policies: [...earlier, entry] };
    });
  }

  async approvePolicy(ref: KeyRef, version: number, approver: string): Promise<KeyMetadata> {
    assertRef(ref);
    return this.#mutate(ref, (r, now) => {
      assertNotDestroyed(r);
      const target = r.policies.find((p) => p.version === version);
      if (!target || target.status !== 'pending') {
        throw new KmsError('ERR_KMS_POLICY_NOT_PENDING', { detail: `${r.keyId} policy version ${version}` });
      }
      // SECURITY: the two-person rule; the route checks it too, the store never trusts the caller alone.
      if (target.createdBy === approver) throw new KmsError('ERR_KMS_SAME_APPROVER');
      return {
        ...r,
        policies: r.policies.map((p) =>
          p.version === version
            ? { ...p, status: 'active' as const, approvedBy: approver, approvedAt: now }
            : p.status === 'active'
              ? { ...p, status: 'superseded' as const }
              : p,
        ),
      };
    });
  }

  async setDryRunPolicy(ref: KeyRef, policy: ReleasePolicy | null, by: string): Promise<KeyMetadata> {
    assertRef(ref);
    return this.#mutate(ref, (r, now) => {
      assertNotDestroyed(r);
      return { ...r, dryRun: policy === null ? null : { hash: policyHash(policy), document: policy, setAt: now, setBy: by } };
    });
  }

  async policyHistory(ref: KeyRef): Promise<PolicyVersion[]> {
    assertRef(ref);
    const { stored } = await this.#mustLoad(ref);
    return stored.policies.map((p) =>
      Object.freeze({
        version: p.version,
        hash: p.hash,
        policy: parseStoredPolicy(ref, p.document, p.hash),
        status: p.status,
        createdAt: p.createdAt,
        createdBy: p.createdBy,
        ...(p.approvedBy !== undefined ? { approvedBy: p.approvedBy } : {}),
        ...(p.approvedAt !== undefined ? { approvedAt: p.approvedAt } : {}),
      }),
    );
  }

  async unwrap(ref: KeyRef, version?: number): Promise<UnwrappedKey> {
    assertRef(ref);
    const { stored, metadata } = await this.#mustLoad(ref);
    const v = version ?? stored.currentVersion;
    const entry = stored.versions.find((e) => e.version === v);
    if (!entry) throw new KmsError('ERR_KMS_KEY_VERSION_NOT_FOUND', { detail: `${ref.keyId} version ${v}` });
    if (stored.state !== 'enabled' || entry.state !== 'enabled') {
      throw new KmsError('ERR_KMS_KEY_DISABLED', {
        detail: `${ref.keyId} version ${v} is ${stored.state !== 'enabled' ? stored.state : entry.state}`,
      });
    }
    return { tenant: ref.tenant, keyId: ref.keyId, version: v, dek: this.#unwrapEntry(ref, entry, DEK_AAD_LABEL), metadata };
  }

  // --- tenants ---------------------------------------------------------------------------

  async tenantSettings(tenant: string): Promise<TenantSettings> {
    assertTenant(tenant);
    const file = this.#tenantFile(tenant);
    const read = await readWithStamp(file).catch((e: unknown) => {
      throw ioError(`reading ${tenant}/tenant.json`, e);
    });
    if (!read) return Object.freeze({ tenant, twoPersonRule: false, updatedAt: null });
    const fail = (why: string, cause?: unknown) =>
      new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `tenants/${tenant}/tenant.json: ${why}`, cause });
    const rec = this.#tenantMac.open(read.data, StoredTenantSchema, fail);
    if (rec.tenant !== tenant) throw fail('record belongs to another tenant');
    return Object.freeze({ tenant, twoPersonRule: rec.twoPersonRule, updatedAt: rec.updatedAt });
  }

  async setTenantSettings(tenant: string, settings: { twoPersonRule: boolean }): Promise<TenantSettings> {
    assertTenant(tenant);
    return this.#exclusive(async () => {
      const updatedAt = this.#now().toISOString();
      const rec = this.#tenantMac.seal({ format: TENANT_FORMAT, tenant, twoPersonRule: settings.twoPersonRule, updatedAt });
      await ensurePrivateDir(path.dirname(this.#tenantFile(tenant)));
      try {
        await writeFileAtomic(this.#tenantFile(tenant), `${JSON.stringify(rec, null, 2)}\n`, 0o600);
      } catch (cause) {
        throw ioError(`writing ${tenant}/tenant.json`, cause);
      }
      return Object.freeze({ tenant, twoPersonRule: settings.twoPersonRule, updatedAt });
    });
  }

  // --- maintenance -----------------------------------------------------------------------

  /**
   * Finishes interrupted work in the state directory: overwrites and removes leftover shred
   * files of an interrupted destroy, and migrates single-tenant v1 records into tenant
   * `default`. Idempotent; `openKeyStore` runs it.
   */
  async recover(): Promise<{ migrated: string[]; shredded: number }> {
    let shredded = 0;
    for (const tenant of await this.listTenants()) {
      const dir = this.#keysDir(tenant);
      for (const name of await readdir(dir).catch(() => [] as string[])) {
        if (name.includes(SHRED_MARK)) {
          await shredFile(path.join(dir, name));
          shredded++;
        }
      }
    }
    const migrated = await this.#migrateV1();
    return { migrated, shredded };
  }

  // --- internals -------------------------------------------------------------------------

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  #mutate(ref: KeyRef, change: (r: Unsealed, now: string) => Unsealed, opts: { shred?: boolean } = {}): Promise<KeyMetadata> {
    return this.#exclusive(async () => {
      const { stored } = await this.#mustLoad(ref);
      const { mac: _mac, ...rest } = stored;
      const now = this.#now().toISOString();
      return this.#write({ ...change(rest, now), updatedAt: now }, opts);
    });
  }

  #keysDir(tenant: string): string {
    return path.join(this.#root, 'tenants', tenant, 'keys');
  }

  #tenantFile(tenant: string): string {
    return path.join(this.#root, 'tenants', tenant, 'tenant.json');
  }

  #file(ref: KeyRef): string {
    const dir = this.#keysDir(ref.tenant);
    const file = path.join(dir, `${ref.keyId}${KEY_FILE_SUFFIX}`);
    // SECURITY: the id regexes already exclude separators; this catches any future regex slip.
    if (path.dirname(file) !== dir || path.dirname(path.dirname(dir)) !== path.join(this.#root, 'tenants')) {
      throw new KmsError('ERR_KMS_BAD_KEY_ID', { detail: 'path escape' });
    }
    return file;
  }

  #wrap(ref: KeyRef, version: number, dek: Uint8Array): { iv: string; ciphertext: string } {
    const iv = randomBytes(GCM_IV_LENGTH);
    const c = createCipheriv('aes-256-gcm', this.#wrapKey, iv, { authTagLength: GCM_TAG_LENGTH });
    c.setAAD(dekAad(DEK_AAD_LABEL, ref, version));
    const ct = Buffer.concat([c.update(dek), c.final(), c.getAuthTag()]);
    return { iv: iv.toString('base64url'), ciphertext: ct.toString('base64url') };
  }

  #unwrapEntry(ref: KeyRef, entry: { version: number; iv?: string | undefined; ciphertext?: string | undefined }, label: string): Buffer {
    const iv = entry.iv === undefined ? undefined : fromBase64Url(entry.iv);
    const ct = entry.ciphertext === undefined ? undefined : fromBase64Url(entry.ciphertext);
    if (!iv || iv.length !== GCM_IV_LENGTH || !ct || ct.length !== DEK_LENGTH + GCM_TAG_LENGTH) {
      throw corrupt(ref, `version ${entry.version}: bad iv or ciphertext length`);
    }
    try {
      const d = createDecipheriv('aes-256-gcm', this.#wrapKey, iv, { authTagLength: GCM_TAG_LENGTH });
      d.setAAD(label === DEK_AAD_LABEL ? dekAad(label, ref, entry.version) : Buffer.from(`${label}${ref.keyId}\0${entry.version}`, 'utf8'));
      d.setAuthTag(ct.subarray(DEK_LENGTH));
      const part = d.update(ct.subarray(0, DEK_LENGTH));
      const last = d.final();
      // SECURITY: the DEK in a buffer of its own (not Node's shared pool, where a copy could
      // travel with a neighbour's bytes), and the intermediate pieces wiped.
      const dek = Buffer.alloc(part.length + last.length);
      part.copy(dek);
      last.copy(dek, part.length);
      part.fill(0);
      last.fill(0);
      return dek;
    } catch (cause) {
      throw corrupt(ref, `version ${entry.version}: DEK authentication failed`, cause);
    }
  }

  async #write(record: Unsealed, opts: { shred?: boolean } = {}): Promise<KeyMetadata> {
    const ref = { tenant: record.tenant, keyId: record.keyId };
    const sealed = this.#mac.seal(record);
    const metadata = toMetadata(sealed, ref);
    const file = this.#file(ref);
    const dir = path.dirname(file);
    await ensurePrivateDir(path.join(this.#root, 'tenants'));
    await ensurePrivateDir(path.dirname(dir));
    await ensurePrivateDir(dir);
    // Crypto-shred: keep a second name for the old record, put the tombstone in place, then
    // overwrite the old bytes through that name. A crash in between leaves a shred file that
    // `recover` overwrites and removes on the next open.
    const shredName = opts.shred ? path.join(dir, `.${ref.keyId}${SHRED_MARK}${randomBytes(6).toString('hex')}`) : undefined;
    try {
      if (shredName) await link(file, shredName);
      await writeFileAtomic(file, `${JSON.stringify(sealed, null, 2)}\n`, 0o600);
      if (shredName) await shredFile(shredName);
    } catch (cause) {
      throw ioError(`writing ${ref.tenant}/${ref.keyId}${KEY_FILE_SUFFIX}`, cause);
    }
    this.#cache.delete(cacheKey(ref));
    return metadata;
  }

  async #mustLoad(ref: KeyRef): Promise<Loaded> {
    const r = await this.#load(ref);
    if (!r) throw new KmsError('ERR_KMS_KEY_NOT_FOUND', { detail: ref.keyId });
    return r;
  }

  async #load(ref: KeyRef): Promise<Loaded | undefined> {
    const file = this.#file(ref);
    const key = cacheKey(ref);
    const cached = this.#cache.get(key);
    let stamp: string | undefined;
    try {
      stamp = await fileStamp(file);
    } catch (e) {
      throw ioError(`reading ${ref.tenant}/${ref.keyId}${KEY_FILE_SUFFIX}`, e);
    }
    if (stamp === undefined) {
      this.#cache.delete(key);
      return undefined;
    }
    if (cached && cached.stamp === stamp) return cached;
    let read: { data: Buffer; stamp: string } | undefined;
    try {
      read = await readWithStamp(file);
    } catch (e) {
      throw ioError(`reading ${ref.tenant}/${ref.keyId}${KEY_FILE_SUFFIX}`, e);
    }
    if (!read) return undefined;
    const stored = this.#mac.open(read.data, StoredKeySchema, (why, cause) => corrupt(ref, why, cause));
    if (stored.keyId !== ref.keyId || stored.tenant !== ref.tenant) throw corrupt(ref, 'record belongs to another key or tenant');
    if (!stored.versions.some((v) => v.version === stored.currentVersion)) throw corrupt(ref, 'current version missing');
    if (stored.policies.filter((p) => p.status === 'active').length > 1) throw corrupt(ref, 'more than one active policy');
    if (stored.policies.filter((p) => p.status === 'pending').length > 1) throw corrupt(ref, 'more than one pending policy');
    for (const p of stored.policies) parseStoredPolicy(ref, p.document, p.hash);
    if (stored.dryRun) parseStoredPolicy(ref, stored.dryRun.document, stored.dryRun.hash);
    const loaded: Loaded = { stamp: read.stamp, stored, metadata: toMetadata(stored, ref) };
    this.#cache.set(key, loaded);
    return loaded;
  }

  async #migrateV1(): Promise<string[]> {
    const dir = path.join(this.#root, 'keys');
    let names: string[];
    try {
      names = await readdir(dir);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw ioError('listing keys/ (v1)', e);
    }
    const migrated: string[] = [];
    for (const name of names.filter((n) => n.endsWith(KEY_FILE_SUFFIX)).sort()) {
      const keyId = name.slice(0, -KEY_FILE_SUFFIX.length);
      if (!KEY_ID_RE.test(keyId)) continue;
      const ref = { tenant: DEFAULT_TENANT, keyId };
      const v1File = path.join(dir, name);
      const raw = await readFile(v1File);
      const v1 = this.#mac.open(raw, V1KeySchema, (why, cause) =>
        new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `keys/${name} (v1): ${why}`, cause }),
      );
      if (v1.keyId !== keyId) throw new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `keys/${name} (v1): record belongs to another key id` });
      if ((await this.#load(ref)) === undefined) {
        const versions: StoredVersion[] = v1.versions.map((v) => {
          const dek = this.#unwrapEntry(ref, v, V1_DEK_AAD_LABEL);
          try {
            return { version: v.version, createdAt: v.createdAt, createdBy: 'migrated-v1', state: v.state, ...this.#wrap(ref, v.version, dek) };
          } finally {
            dek.fill(0);
          }
        });
        const policy = parseStoredPolicy(ref, v1.policy, v1.policyHash);
        await this.#write({
          format: RECORD_FORMAT,
          tenant: DEFAULT_TENANT,
          keyId,
          state: 'enabled',
          createdAt: v1.createdAt,
          createdBy: 'migrated-v1',
          updatedAt: v1.updatedAt,
          currentVersion: v1.currentVersion,
          versions,
          policies: [{ version: 1, hash: v1.policyHash, document: policy, status: 'active', createdAt: v1.updatedAt, createdBy: 'migrated-v1' }],
          dryRun: null,
        });
      }
      await shredFile(v1File);
      migrated.push(keyId);
      this.#logger?.info({ keyId, tenant: DEFAULT_TENANT }, 'migrated a single-tenant (v1) key record');
    }
    return migrated;
  }
}

function cacheKey(ref: KeyRef): string {
  return `${ref.tenant}/${ref.keyId}`;
}

function assertDek(dek: Uint8Array): void {
  if (dek.length !== DEK_LENGTH) throw new KmsError('ERR_KMS_DEK_INVALID', { detail: `got ${dek.length} bytes` });
}

function assertNotDestroyed(r: Unsealed): void {
  if (r.state === 'destroyed') throw new KmsError('ERR_KMS_KEY_DESTROYED', { detail: r.keyId });
}

function findVersion(r: Unsealed, version: number): StoredVersion {
  const v = r.versions.find((e) => e.version === version);
  if (!v) throw new KmsError('ERR_KMS_KEY_VERSION_NOT_FOUND', { detail: `${r.keyId} version ${version}` });
  return v;
}

function parseStoredPolicy(ref: KeyRef, document: unknown, hash: string): ReleasePolicy {
  let policy: ReleasePolicy;
  try {
    // The production rule on simulated policies is enforced when a policy is set and at
    // release time (evaluatePolicy), not here, so an operator can still list and fix such a key.
    policy = parseReleasePolicy(document, { production: false });
  } catch (cause) {
    throw corrupt(ref, `stored policy rejected (${(cause as KmsError).code ?? 'invalid'})`, cause);
  }
  if (!constantTimeEqual(Buffer.from(policyHash(policy)), Buffer.from(hash))) throw corrupt(ref, 'policy hash mismatch');
  // Deep-frozen: records are cached and shared, and policyHash caches by object.
  return deepFreeze(policy);
}

function toMetadata(r: StoredKey | (Unsealed & { mac: string }), ref: KeyRef): KeyMetadata {
  const active = r.policies.find((p) => p.status === 'active');
  const pending = r.policies.find((p) => p.status === 'pending');
  return Object.freeze({
    tenant: r.tenant,
    keyId: r.keyId,
    state: r.state,
    createdAt: r.createdAt,
    createdBy: r.createdBy,
    updatedAt: r.updatedAt,
    currentVersion: r.currentVersion,
    versions: Object.freeze(
      r.versions.map((v) =>
        Object.freeze({
          version: v.version,
          createdAt: v.createdAt,
          createdBy: v.createdBy,
          state: v.state,
          ...(v.destroyedAt !== undefined ? { destroyedAt: v.destroyedAt } : {}),
        }),
      ),
    ),
    policy: active ? parseStoredPolicy(ref, active.document, active.hash) : null,
    policyHash: active?.hash ?? null,
    policyVersion: active?.version ?? null,
    pendingPolicy: pending
      ? Object.freeze({ version: pending.version, hash: pending.hash, createdBy: pending.createdBy, createdAt: pending.createdAt })
      : null,
    dryRunPolicy: r.dryRun
      ? Object.freeze({ hash: r.dryRun.hash, policy: parseStoredPolicy(ref, r.dryRun.document, r.dryRun.hash), setBy: r.dryRun.setBy, setAt: r.dryRun.setAt })
      : null,
  });
}

function dekAad(label: string, ref: KeyRef, version: number): Buffer {
  return Buffer.from(`${label}${ref.tenant}\0${ref.keyId}\0${version}`, 'utf8');
}

function corrupt(ref: KeyRef, why: string, cause?: unknown): KmsError {
  return new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `${ref.tenant}/${ref.keyId}${KEY_FILE_SUFFIX}: ${why}`, cause });
}

function ioError(what: string, cause: unknown): KmsError {
  if (cause instanceof KmsError) return cause;
  const code = (cause as NodeJS.ErrnoException).code;
  return new KmsError('ERR_KMS_STORE_IO', { detail: `${what}${code ? ` (${code})` : ''}`, cause });
}

/**
 * Overwrites a file's bytes with zeros, fsyncs, and removes it. Best effort against
 * recovery from this filesystem: copy-on-write filesystems, SSD wear levelling, snapshots
 * and backups may keep the old bytes (see the crypto-shredding note in README.md).
 */
async function shredFile(file: string): Promise<void> {
  try {
    const fh = await open(file, 'r+');
    try {
      const { size } = await fh.stat();
      if (size > 0) await fh.write(Buffer.alloc(size), 0, size, 0);
      await fh.sync();
    } finally {
      await fh.close();
    }
    // Rename to a neutral name before unlinking, so no directory entry keeps the key's name.
    const dead = path.join(path.dirname(file), `.deleted-${randomBytes(6).toString('hex')}`);
    await rename(file, dead);
    await unlink(dead);
    await fsyncDir(path.dirname(file));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
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
 * key, creates `<stateDir>` with mode 0700, and runs `recover` (finishing an interrupted
 * destroy, migrating v1 records). This is what the broker and the offline CLI
 * (`cir broker keys ...`) both use.
 */
export async function openKeyStore(config: BrokerConfig, opts: OpenKeyStoreOptions = {}): Promise<FileKeyStore> {
  await ensurePrivateDir(config.stateDir);
  const { key } = await loadMasterKey(config, opts);
  let store: FileKeyStore;
  try {
    store = new FileKeyStore({
      root: config.stateDir,
      masterKey: key,
      ...(opts.now ? { now: opts.now } : {}),
      ...(opts.logger ? { logger: opts.logger } : {}),
    });
  } finally {
    key.fill(0);
  }
  await store.recover();
  return store;
}
