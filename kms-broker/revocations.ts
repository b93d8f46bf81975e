/**
 * Kill switches: revocations that deny new key releases and lease renewals.
 *
 * A revocation is scoped to one tenant and matches
 *   - `key`: one key id, every version or (with `version`) one version;
 *   - `tenant`: every key of the tenant;
 *   - `measurement`: every release or renewal whose attested launch measurement (SEV-SNP
 *     MEASUREMENT, TDX MRTD, lower-case hex) is the given one, for any key of the tenant.
 * The release route and the renew route both ask `matches()`; a match is a denial
 * (`ERR_KMS_RELEASE_REVOKED`, `ERR_KMS_LEASE_REVOKED`). Servers learn of it at their next
 * renewal, so a revocation takes effect on serving within one renewal interval.
 *
 * Persistence: `<stateDir>/revocations.json`, written with `writeFileAtomic` (a crash
 * leaves the old or the new file), mode 0600, and integrity-protected with an HMAC-SHA256
 * under an HKDF subkey of the master key (`deriveRevocationKey`):
 *
 *   { "format": "cir-kms-revocations/v1", "revocations": [...],
 *     "mac": b64url(HMAC-SHA256(macKey, canonicalJson(document without "mac"))) }
 *
 * Someone who can write the state directory but lacks the master key cannot add, edit or
 * drop one revocation: the broker refuses to start on a bad MAC (`ERR_KMS_REVOCATIONS_CORRUPT`).
 * It does NOT stop rollback, exactly as for key records (keystore.ts): an older, validly
 * MAC'd copy of the file restored over the current one (say, from before a revocation was
 * added) verifies fine, and so does deleting the file (no revocations). Rollback protection
 * needs a monotonic counter outside the state directory (HSM/TPM NV counter); planned.
 *
 * Concurrency: one writer, the broker process. The list is held in memory (the release
 * path consults it on every request) and the file is read once, at open. Mutations are
 * serialised; memory changes only after the file write succeeded, so an acknowledged
 * revocation is durable and a failed write leaves the previous state (a failed lift keeps
 * the revocation: fail closed).
 */
import { randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../common/atomic-file.js';
import type { Logger } from '../common/logger.js';
import { KmsError } from './codes.js';
import { deriveSubkey, RecordMac } from './sealed-record.js';
import { RevocationSchema, type Revocation, type RevocationCreateRequest } from './protocol.js';

export type { Revocation } from './protocol.js';

/** File name in the broker state directory. */
export const REVOCATIONS_FILE = 'revocations.json';
/** Most revocations held at once, over all tenants. */
export const MAX_REVOCATIONS = 10_000;

const FORMAT = 'cir-kms-revocations/v1';
const MAC_KEY_INFO = 'cir/kms-broker/master/revocations-mac/v1';

const FileSchema = z.strictObject({
  format: z.literal(FORMAT),
  revocations: z.array(RevocationSchema).max(MAX_REVOCATIONS),
  mac: z.string().regex(/^[A-Za-z0-9_-]+$/),
});

/**
 * The HMAC key of `revocations.json`: HKDF-SHA256 of the 32-byte master key with its own
 * `info` label, as keystore.ts derives its wrap and MAC keys, so it is independent of them.
 * The caller zeroes the master key; the result is the caller's to zero too.
 */
export function deriveRevocationKey(masterKey: Uint8Array): Buffer {
  if (masterKey.length !== 32) throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: 'must be 32 bytes' });
  return deriveSubkey(masterKey, MAC_KEY_INFO);
}

/** What a release or renewal is about; `matches` compares a revocation against it. */
export interface RevocationTarget {
  readonly tenant: string;
  readonly keyId: string;
  readonly version: number;
  /** Attested launch measurement, hex (any case). */
  readonly measurement: string;
}

export interface RevocationStoreOptions {
  /** The revocation file; `<stateDir>/revocations.json` for the broker. Undefined: memory only. */
  readonly file?: string;
  /** 32-byte HMAC key (`deriveRevocationKey`); copied. Required with `file`. */
  readonly macKey?: Uint8Array;
  readonly now?: () => Date;
  readonly logger?: Logger;
}

/** Whether revocation `r` covers `t`. Tenants compare exactly, measurements case-insensitively. */
export function revocationMatches(r: Revocation, t: RevocationTarget): boolean {
  if (r.tenant !== t.tenant) return false;
  switch (r.scope) {
    case 'tenant':
      return true;
    case 'key':
      return r.keyId === t.keyId && (r.version === undefined || r.version === t.version);
    case 'measurement':
      return r.measurement !== undefined && r.measurement === t.measurement.toLowerCase();
    default:
      return false;
  }
}

/**
 * The kill-switch store (see the module comment for format and guarantees).
 * Checks on open: JSON shape, format, every entry's schema, the HMAC (constant time); any
 * failure is `ERR_KMS_REVOCATIONS_CORRUPT` (an unreadable file `ERR_KMS_STORE_IO`), never a
 * crash. Does not: detect rollback, or see changes made to the file by another process
 * after open.
 */
export class RevocationStore {
  readonly #file: string | undefined;
  readonly #macKey: Buffer | undefined;
  readonly #now: () => Date;
  readonly #logger: Logger | undefined;
  #items: readonly Revocation[];
  #queue: Promise<unknown> = Promise.resolve();

  private constructor(opts: RevocationStoreOptions, items: readonly Revocation[]) {
    this.#file = opts.file;
    this.#macKey = opts.macKey ? Buffer.from(opts.macKey) : undefined;
    this.#now = opts.now ?? (() => new Date());
    this.#logger = opts.logger;
    this.#items = Object.freeze(items.map((r) => Object.freeze({ ...r })));
  }

  /** A store that keeps revocations in memory only (tests, embedders that persist elsewhere). */
  static memory(opts: Omit<RevocationStoreOptions, 'file' | 'macKey'> = {}): RevocationStore {
    return new RevocationStore(opts, []);
  }

  /** Opens (or starts empty when the file is absent) the persistent store. */
  static async open(opts: RevocationStoreOptions & { readonly file: string; readonly macKey: Uint8Array }): Promise<RevocationStore> {
    if (opts.macKey.length !== 32) throw new KmsError('ERR_KMS_MASTER_KEY_INVALID', { detail: 'revocation MAC key must be 32 bytes' });
    const name = path.basename(opts.file);
    let raw: Buffer;
    try {
      raw = await readFile(opts.file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return new RevocationStore(opts, []);
      throw new KmsError('ERR_KMS_STORE_IO', { detail: `reading ${name} (${code ?? 'error'})`, cause: e });
    }
    // SECURITY: JSON, schema, then a constant-time MAC check before any entry is trusted.
    const { mac: _mac, ...rest } = new RecordMac(opts.macKey).open(raw, FileSchema, (why, cause) => corrupt(name, why, cause));
    const ids = new Set(rest.revocations.map((r) => r.id));
    if (ids.size !== rest.revocations.length) throw corrupt(name, 'duplicate revocation id');
    return new RevocationStore(opts, rest.revocations);
  }

  /** Number of revocations held, over all tenants. */
  get size(): number {
    return this.#items.length;
  }

  /** The revocations of `tenant`, oldest first. */
  list(tenant: string): readonly Revocation[] {
    return this.#items.filter((r) => r.tenant === tenant);
  }

  /** The first revocation that covers `target`, if any. Synchronous: no I/O on the release path. */
  matches(target: RevocationTarget): Revocation | undefined {
    return this.#items.find((r) => revocationMatches(r, target));
  }

  /**
   * Adds a revocation in `tenant`, created by admin identity `by`. The request must already
   * be parsed by `RevocationCreateRequestSchema` (scope and fields agree). Resolves once it
   * is durable. Throws `ERR_KMS_REVOCATIONS_FULL` at `MAX_REVOCATIONS`, `ERR_KMS_STORE_IO`.
   */
  add(tenant: string, req: RevocationCreateRequest, by: string): Promise<Revocation> {
    return this.#exclusive(async () => {
      if (this.#items.length >= MAX_REVOCATIONS) throw new KmsError('ERR_KMS_REVOCATIONS_FULL', { detail: `at most ${MAX_REVOCATIONS}` });
      const candidate = {
        id: randomBytes(16).toString('base64url'),
        tenant,
        scope: req.scope,
        ...(req.keyId !== undefined ? { keyId: req.keyId } : {}),
        ...(req.version !== undefined ? { version: req.version } : {}),
        ...(req.measurement !== undefined ? { measurement: req.measurement.toLowerCase() } : {}),
        reason: req.reason,
        createdAt: this.#now().toISOString(),
        createdBy: by,
      };
      const checked = RevocationSchema.safeParse(candidate);
      if (!checked.success) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'revocation does not match its schema' });
      const r = Object.freeze(checked.data);
      await this.#commit([...this.#items, r]);
      return r;
    });
  }

  /**
   * Lifts revocation `id` of `tenant`. `ERR_KMS_REVOCATION_NOT_FOUND` when there is none
   * in that tenant (another tenant's id is "not found" too, so ids leak nothing).
   */
  lift(tenant: string, id: string): Promise<Revocation> {
    return this.#exclusive(async () => {
      const r = this.#items.find((x) => x.id === id && x.tenant === tenant);
      if (!r) throw new KmsError('ERR_KMS_REVOCATION_NOT_FOUND');
      await this.#commit(this.#items.filter((x) => x !== r));
      return r;
    });
  }

  async #commit(next: readonly Revocation[]): Promise<void> {
    if (this.#file !== undefined && this.#macKey !== undefined) {
      const doc = new RecordMac(this.#macKey).seal({ format: FORMAT, revocations: next });
      try {
        await writeFileAtomic(this.#file, `${JSON.stringify(doc, null, 2)}\n`, 0o600);
      } catch (cause) {
        this.#logger?.error({ file: path.basename(this.#file) }, 'writing revocations failed; state unchanged');
        throw new KmsError('ERR_KMS_STORE_IO', { detail: `writing ${path.basename(this.#file)}`, cause });
      }
    }
    this.#items = Object.freeze([...next]);
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#queue.then(fn, fn);
    this.#queue = run.catch(() => undefined);
    return run;
  }
}

function corrupt(name: string, why: string, cause?: unknown): KmsError {
  return new KmsError('ERR_KMS_REVOCATIONS_CORRUPT', { detail: `${name}: ${why}`, ...(cause ? { cause } : {}) });
}
