import { randomBytes, timingSafeEqual } from 'node:crypto';
import path from 'node:path';
import { z } from 'zod';
import { sha256 } from '../common/bytes.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { KmsError } from './codes.js';
import { DEFAULT_TENANT, assertTenant } from './keystore.js';
import { TENANT_ID_RE } from './protocol.js';
import { deriveSubkey, fileStamp, readWithStamp, RecordMac } from './sealed-record.js';
import { ensurePrivateDir } from './secret-file.js';

/**
 * Admin identities of the broker: who may manage keys, policies, revocations and read the
 * audit trail, in which tenant.
 *
 * - An identity belongs to exactly one tenant and holds one or more roles (`ROLES`).
 * - It authenticates with a bearer token (`cira_<id>_<secret>`, 256-bit secret) whose
 *   SHA-256 alone is stored, and/or an mTLS client certificate whose SHA-256 fingerprint
 *   is registered (the TLS layer checks the chain to `tls.clientCaFile`).
 * - It has an expiry and can be revoked; both take effect on the next request (the store
 *   is re-read whenever its file changes).
 * - `subject` names the person or service behind it; the two-person rule compares
 *   identities AND subjects, so one person holding two tokens cannot approve their own change.
 *
 * The file `<stateDir>/identities.json` is MAC'd under a master-key subkey
 * (sealed-record.ts): editing it (adding a role, extending an expiry) without the master
 * key is detected. Managed offline with `cir broker identities ...`.
 */
export const ROLES = ['key-admin', 'policy-admin', 'auditor', 'operator'] as const;
export type Role = (typeof ROLES)[number];

/** What each operation needs. A route checks the permission before it looks anything up. */
export const PERMISSIONS = {
  'key.read': ['key-admin', 'policy-admin', 'auditor', 'operator'],
  'key.create': ['key-admin'],
  'key.rotate': ['key-admin'],
  'key.state': ['key-admin'],
  'key.destroy': ['key-admin'],
  'policy.read': ['key-admin', 'policy-admin', 'auditor', 'operator'],
  'policy.propose': ['policy-admin'],
  'policy.approve': ['policy-admin'],
  'policy.dry-run': ['policy-admin'],
  'revocation.write': ['operator'],
  'revocation.read': ['operator', 'auditor'],
  'audit.read': ['auditor'],
} as const satisfies Record<string, readonly Role[]>;
export type Permission = keyof typeof PERMISSIONS;

/** An authenticated caller of the admin API. */
export interface Principal {
  readonly id: string;
  readonly tenant: string;
  readonly subject: string;
  readonly roles: readonly Role[];
  readonly via: 'bearer' | 'mtls' | 'bootstrap' | 'cli';
}

/** Public description of an identity (never the token or its hash). */
export interface AdminIdentity {
  readonly id: string;
  readonly tenant: string;
  readonly subject: string;
  readonly roles: readonly Role[];
  readonly createdAt: string;
  readonly createdBy: string;
  readonly expiresAt: string;
  readonly revokedAt: string | null;
  readonly bearer: boolean;
  readonly certSha256: string | null;
}

export function hasPermission(p: Pick<Principal, 'roles'>, permission: Permission): boolean {
  const allowed: readonly Role[] = PERMISSIONS[permission];
  return p.roles.some((r) => allowed.includes(r));
}

/** Throws `ERR_KMS_ADMIN_FORBIDDEN` naming the permission and the roles that grant it. */
export function requirePermission(p: Principal, permission: Permission): void {
  if (!hasPermission(p, permission)) {
    throw new KmsError('ERR_KMS_ADMIN_FORBIDDEN', { detail: `${permission} needs role ${PERMISSIONS[permission].join(' or ')}` });
  }
}

/** The principal of the legacy single admin token: tenant `default`, every role. */
export const BOOTSTRAP_PRINCIPAL: Principal = Object.freeze({
  id: 'bootstrap',
  tenant: DEFAULT_TENANT,
  subject: 'bootstrap-admin-token',
  roles: ROLES,
  via: 'bootstrap',
});

export const IDENTITY_TOKEN_PREFIX = 'cira_';
const TOKEN_RE = /^cira_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;
const ID_RE = /^[0-9a-f]{16}$/;
export const MAX_IDENTITIES = 10_000;
export const MAX_IDENTITY_TTL_SECONDS = 366 * 24 * 3600;
const FORMAT = 'cir-kms-identities/v1';
const MAC_INFO = 'cir/kms-broker/master/identities-mac/v1';

const IsoDate = z.string().max(64).refine((s) => !Number.isNaN(Date.parse(s)), 'not a date');
const Hex64 = z.string().regex(/^[0-9a-f]{64}$/);
const SubjectSchema = z.string().min(1).max(200).regex(/^[\x21-\x7e][\x20-\x7e]*$/, 'printable ASCII');

const StoredIdentitySchema = z.strictObject({
  id: z.string().regex(ID_RE),
  tenant: z.string().regex(TENANT_ID_RE),
  subject: SubjectSchema,
  roles: z.array(z.enum(ROLES)).min(1).max(ROLES.length),
  tokenSha256: Hex64.nullable(),
  certSha256: Hex64.nullable(),
  createdAt: IsoDate,
  createdBy: z.string().min(1).max(200),
  expiresAt: IsoDate,
  revokedAt: IsoDate.nullable(),
});
type StoredIdentity = z.infer<typeof StoredIdentitySchema>;

const StoredFileSchema = z.strictObject({
  format: z.literal(FORMAT),
  identities: z.array(StoredIdentitySchema).max(MAX_IDENTITIES),
  mac: z.string().regex(/^[A-Za-z0-9_-]*$/),
});

interface IdentityIndex {
  readonly stamp: string;
  readonly byId: Map<string, StoredIdentity>;
  readonly byCert: Map<string, StoredIdentity>;
  readonly all: StoredIdentity[];
}

export interface CreateIdentityInput {
  readonly tenant: string;
  readonly subject: string;
  readonly roles: readonly Role[];
  readonly ttlSeconds: number;
  /** Issue a bearer token (default true). */
  readonly bearer?: boolean;
  /** SHA-256 (hex) of an mTLS client certificate (DER) to accept for this identity. */
  readonly certSha256?: string;
}

export interface FileIdentityStoreOptions {
  readonly file: string;
  readonly masterKey: Uint8Array;
  readonly now?: () => Date;
}

/**
 * `identities.json` store. Reads are cached by file identity, so authentication costs a
 * `stat` while the file is unchanged; writes are atomic and serialised in this process.
 */
export class FileIdentityStore {
  readonly #file: string;
  readonly #mac: RecordMac;
  readonly #now: () => Date;
  #cache: IdentityIndex | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(opts: FileIdentityStoreOptions) {
    this.#file = path.resolve(opts.file);
    this.#mac = new RecordMac(deriveSubkey(opts.masterKey, MAC_INFO));
    this.#now = opts.now ?? (() => new Date());
  }

  /** Creates an identity. The token, when issued, is returned once and never stored. */
  async create(input: CreateIdentityInput, by: string): Promise<{ identity: AdminIdentity; token?: string }> {
    assertTenant(input.tenant);
    const subject = SubjectSchema.safeParse(input.subject);
    if (!subject.success) throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: 'subject: 1-200 printable ASCII characters' });
    const roles = [...new Set(input.roles)];
    if (roles.length === 0 || !roles.every((r) => (ROLES as readonly string[]).includes(r))) {
      throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: `roles: one or more of ${ROLES.join(', ')}` });
    }
    if (!Number.isInteger(input.ttlSeconds) || input.ttlSeconds < 60 || input.ttlSeconds > MAX_IDENTITY_TTL_SECONDS) {
      throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: `ttl: 60 s to ${MAX_IDENTITY_TTL_SECONDS} s` });
    }
    const bearer = input.bearer ?? true;
    const cert = input.certSha256?.toLowerCase();
    if (cert !== undefined && !/^[0-9a-f]{64}$/.test(cert)) {
      throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: 'certSha256: 64 hex digits' });
    }
    if (!bearer && cert === undefined) throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: 'needs a bearer token or a certificate' });
    return this.#exclusive(async () => {
      const all = (await this.#read()).all;
      if (all.length >= MAX_IDENTITIES) throw new KmsError('ERR_KMS_LIMIT_REACHED', { detail: `at most ${MAX_IDENTITIES} identities` });
      if (cert !== undefined && all.some((i) => i.certSha256 === cert && i.revokedAt === null)) {
        throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: 'certificate already bound to another identity' });
      }
      const id = randomBytes(8).toString('hex');
      const secret = bearer ? randomBytes(32).toString('base64url') : undefined;
      const token = secret === undefined ? undefined : `${IDENTITY_TOKEN_PREFIX}${id}_${secret}`;
      const now = this.#now();
      const stored: StoredIdentity = {
        id,
        tenant: input.tenant,
        subject: subject.data,
        roles: roles as Role[],
        tokenSha256: token === undefined ? null : sha256(Buffer.from(token, 'utf8')).toString('hex'),
        certSha256: cert ?? null,
        createdAt: now.toISOString(),
        createdBy: by,
        expiresAt: new Date(now.getTime() + input.ttlSeconds * 1000).toISOString(),
        revokedAt: null,
      };
      await this.#write([...all, stored]);
      return { identity: toPublic(stored), ...(token !== undefined ? { token } : {}) };
    });
  }

  async list(tenant?: string): Promise<AdminIdentity[]> {
    const all = (await this.#read()).all;
    return all.filter((i) => tenant === undefined || i.tenant === tenant).map(toPublic);
  }

  /** Revokes an identity (idempotent). `ERR_KMS_IDENTITY_NOT_FOUND` for an unknown id. */
  async revoke(id: string): Promise<AdminIdentity> {
    return this.#exclusive(async () => {
      const all = (await this.#read()).all;
      const target = all.find((i) => i.id === id);
      if (!target) throw new KmsError('ERR_KMS_IDENTITY_NOT_FOUND', { detail: ID_RE.test(id) ? id : 'malformed id' });
      if (target.revokedAt !== null) return toPublic(target);
      const revoked = { ...target, revokedAt: this.#now().toISOString() };
      await this.#write(all.map((i) => (i.id === id ? revoked : i)));
      return toPublic(revoked);
    });
  }

  /**
   * The principal of a bearer token, or undefined (unknown, malformed, revoked, expired).
   * SECURITY: the token's SHA-256 is compared in constant time with the stored one; an
   * unknown id runs the same comparison against a dummy, so timing does not reveal which
   * ids exist.
   */
  async authenticateBearer(token: string): Promise<Principal | undefined> {
    const m = TOKEN_RE.exec(token);
    const { byId } = await this.#read();
    const stored = m ? byId.get(m[1]!) : undefined;
    const expected = stored?.tokenSha256 ? Buffer.from(stored.tokenSha256, 'hex') : DUMMY_HASH;
    const ok = timingSafeEqual(sha256(Buffer.from(token, 'utf8')), expected);
    if (!m || !stored || !stored.tokenSha256 || !ok) return undefined;
    return this.#live(stored, 'bearer');
  }

  /** The principal of a TLS-verified client certificate's SHA-256 (hex), or undefined. */
  async authenticateCertificate(certSha256: string): Promise<Principal | undefined> {
    const stored = (await this.#read()).byCert.get(certSha256.toLowerCase());
    return stored ? this.#live(stored, 'mtls') : undefined;
  }

  #live(stored: StoredIdentity, via: 'bearer' | 'mtls'): Principal | undefined {
    if (stored.revokedAt !== null) return undefined;
    if (Date.parse(stored.expiresAt) <= this.#now().getTime()) return undefined;
    return Object.freeze({ id: stored.id, tenant: stored.tenant, subject: stored.subject, roles: Object.freeze([...stored.roles]), via });
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }

  async #read(): Promise<IdentityIndex> {
    let stamp: string | undefined;
    try {
      stamp = await fileStamp(this.#file);
    } catch (cause) {
      throw new KmsError('ERR_KMS_STORE_IO', { detail: 'reading identities.json', cause });
    }
    if (stamp === undefined) return { stamp: '', byId: new Map(), byCert: new Map(), all: [] };
    if (this.#cache && this.#cache.stamp === stamp) return this.#cache;
    const read = await readWithStamp(this.#file).catch((cause: unknown) => {
      throw new KmsError('ERR_KMS_STORE_IO', { detail: 'reading identities.json', cause });
    });
    if (!read) return { stamp: '', byId: new Map(), byCert: new Map(), all: [] };
    const rec = this.#mac.open(read.data, StoredFileSchema, (why, cause) =>
      new KmsError('ERR_KMS_STORE_CORRUPT', { detail: `identities.json: ${why}`, cause }),
    );
    const byId = new Map<string, StoredIdentity>();
    const byCert = new Map<string, StoredIdentity>();
    for (const i of rec.identities) {
      if (byId.has(i.id)) throw new KmsError('ERR_KMS_STORE_CORRUPT', { detail: 'identities.json: duplicate id' });
      byId.set(i.id, i);
      if (i.certSha256 !== null && i.revokedAt === null) byCert.set(i.certSha256, i);
    }
    this.#cache = { stamp: read.stamp, byId, byCert, all: rec.identities };
    return this.#cache;
  }

  async #write(identities: StoredIdentity[]): Promise<void> {
    await ensurePrivateDir(path.dirname(this.#file));
    const rec = this.#mac.seal({ format: FORMAT, identities });
    try {
      await writeFileAtomic(this.#file, `${JSON.stringify(rec, null, 2)}\n`, 0o600);
    } catch (cause) {
      throw new KmsError('ERR_KMS_STORE_IO', { detail: 'writing identities.json', cause });
    }
    this.#cache = undefined;
  }
}

const DUMMY_HASH = Buffer.alloc(32, 0xa5);

function toPublic(i: StoredIdentity): AdminIdentity {
  return Object.freeze({
    id: i.id,
    tenant: i.tenant,
    subject: i.subject,
    roles: Object.freeze([...i.roles]),
    createdAt: i.createdAt,
    createdBy: i.createdBy,
    expiresAt: i.expiresAt,
    revokedAt: i.revokedAt,
    bearer: i.tokenSha256 !== null,
    certSha256: i.certSha256,
  });
}

/** Parses a duration like `90d`, `12h`, `30m`, `3600s` or `3600` into seconds. */
export function parseTtl(text: string): number {
  const m = /^(\d{1,9})([smhd]?)$/.exec(text.trim());
  if (!m) throw new KmsError('ERR_KMS_IDENTITY_INVALID', { detail: 'ttl: a number with an optional s, m, h or d suffix' });
  const mult = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd'];
  return Number(m[1]) * mult;
}
