/**
 * The broker's signing-key ring: ES256 (P-256) keys that sign attestation tokens, release
 * JWSs, lease documents and audit checkpoints, with rotation that never breaks a token
 * still in flight.
 *
 * On disk, under `<stateDir>/signing-keys/` (0700):
 * - `<kid>.pem`: PKCS#8 PEM private key, 0600, created exclusively; `kid` is the RFC 7638
 *   thumbprint (SHA-256, base64url) of its public key. Deleted when the key is retired.
 * - `ring.json`: `{version: 1, keys: [{kid, state, createdAt, activatedAt?, deactivatedAt?,
 *   retiredAt?, publicJwk}]}`, written atomically (temp, fsync, rename).
 *
 * Key states: `next` (published, not signing: servers can refresh their pinned JWKS before
 * it signs), `active` (exactly one; signs), `verify-only` (published, still verifies tokens
 * it signed), `retired` (neither; kept in ring.json so the archive never loses it).
 *
 * Checks on load: the ring schema, exactly one active key, unique kids, every kid equal to
 * the thumbprint of its `publicJwk`, and every non-retired key's PEM present, 0600, P-256 and
 * matching `publicJwk`. Any failure is `ERR_KMS_SIGNING_RING_INVALID` naming the file or kid.
 * Does not: lock against two operators changing the ring at the same moment (run ring
 * operations one at a time; the broker itself only reads the ring).
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { readFile, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { z } from 'zod';
import { writeFileAtomic } from '../common/atomic-file.js';
import type { Logger } from '../common/logger.js';
import { isKmsError, KmsError } from './codes.js';
import { createFileExclusive, ensurePrivateDir, readSecretFile } from './secret-file.js';

export const SIGNING_KEYS_DIR = 'signing-keys';
export const RING_FILE = 'ring.json';
/** Public keys of every key ever in the ring, next to `jwks.json` in the state directory. */
export const JWKS_ARCHIVE_FILE = 'jwks-archive.json';
/** The single signing key of brokers before the ring; imported as the first active key. */
export const LEGACY_SIGNING_KEY_FILE = 'token-signing-key.pem';
/** Most keys published at once (next + active + verify-only); servers pin at most 16. */
export const MAX_PUBLISHED_KEYS = 8;
const MAX_RING_KEYS = 1024;
const MAX_RING_BYTES = 1024 * 1024;

export const SIGNING_KEY_STATES = ['next', 'active', 'verify-only', 'retired'] as const;
export type SigningKeyState = (typeof SIGNING_KEY_STATES)[number];

/** RFC 7638 SHA-256 thumbprint, base64url: 43 characters, safe as a file name. */
export const KID_RE = /^[A-Za-z0-9_-]{43}$/;
const Iso = z.iso.datetime();
const Coord = z.string().regex(/^[A-Za-z0-9_-]{43}$/);

const PublicJwkSchema = z.strictObject({ kty: z.literal('EC'), crv: z.literal('P-256'), x: Coord, y: Coord });

const RingEntrySchema = z.strictObject({
  kid: z.string().regex(KID_RE),
  state: z.enum(SIGNING_KEY_STATES),
  createdAt: Iso,
  activatedAt: Iso.optional(),
  deactivatedAt: Iso.optional(),
  retiredAt: Iso.optional(),
  publicJwk: PublicJwkSchema,
});
export type RingEntry = z.infer<typeof RingEntrySchema>;

const RingFileSchema = z.strictObject({
  version: z.literal(1),
  keys: z.array(RingEntrySchema).min(1).max(MAX_RING_KEYS),
});
type RingFile = z.infer<typeof RingFileSchema>;

/** A published JWK: public members only, plus `kid`, `alg` and `use`. */
export type PublishedJwk = JWK & { kid: string; alg: 'ES256'; use: 'sig' };

export interface RingKey {
  readonly entry: RingEntry;
  readonly publicKey: KeyObject;
  /** Present for every key that is not retired. */
  readonly privateKey?: KeyObject;
  readonly jwk: PublishedJwk;
}

/**
 * A loaded, validated ring. Immutable: a change on disk gives a new ring.
 */
export class SigningRing {
  readonly entries: readonly RingEntry[];
  readonly #byKid: ReadonlyMap<string, RingKey>;
  readonly active: RingKey;

  private constructor(keys: readonly RingKey[]) {
    this.entries = Object.freeze(keys.map((k) => k.entry));
    this.#byKid = new Map(keys.map((k) => [k.entry.kid, k]));
    const active = keys.filter((k) => k.entry.state === 'active');
    if (active.length !== 1 || !active[0]!.privateKey) {
      throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${active.length} active keys; exactly one required` });
    }
    this.active = active[0]!;
  }

  /** @internal Builds a ring from already-validated keys. */
  static of(keys: readonly RingKey[]): SigningRing {
    return new SigningRing(keys);
  }

  /** The key `kid` may verify a signature: only active and verify-only keys (never next, never retired). */
  verifier(kid: unknown): RingKey | undefined {
    if (typeof kid !== 'string') return undefined;
    const k = this.#byKid.get(kid);
    return k && (k.entry.state === 'active' || k.entry.state === 'verify-only') ? k : undefined;
  }

  get(kid: string): RingKey | undefined {
    return this.#byKid.get(kid);
  }

  /** The JWK Set to publish (`GET /.well-known/jwks.json`, `jwks.json`): next, active and verify-only keys. */
  jwks(): { keys: PublishedJwk[] } {
    return { keys: [...this.#byKid.values()].filter((k) => k.entry.state !== 'retired').map((k) => ({ ...k.jwk })) };
  }

  /** Public keys of every key in the ring, retired ones included. */
  archive(): { keys: PublishedJwk[] } {
    return { keys: [...this.#byKid.values()].map((k) => ({ ...k.jwk })) };
  }
}

// --- keys --------------------------------------------------------------------------------

function generatePem(): string {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  return privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();
}

/** Parses a PKCS#8 PEM P-256 private key. Throws `ERR_KMS_SIGNING_KEY_INVALID` (never quoting the PEM). */
export async function parseSigningKey(pem: string | Buffer): Promise<{ privateKey: KeyObject; publicJwk: RingEntry['publicJwk']; kid: string }> {
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch (cause) {
    throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'not a PEM private key', cause });
  }
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'must be an EC P-256 key' });
  }
  const full = createPublicKey(privateKey).export({ format: 'jwk' });
  if (typeof full.x !== 'string' || typeof full.y !== 'string') {
    throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: 'cannot export the public key' });
  }
  // Only the public members, in the RFC 7638 set for EC keys.
  const publicJwk = { kty: 'EC', crv: 'P-256', x: full.x, y: full.y } as const;
  return { privateKey, publicJwk, kid: await calculateJwkThumbprint(publicJwk, 'sha256') };
}

function publishedJwk(kid: string, publicJwk: RingEntry['publicJwk']): PublishedJwk {
  return Object.freeze({ ...publicJwk, kid, alg: 'ES256', use: 'sig' }) as PublishedJwk;
}

/** An in-memory ring with one active key (tests, embedders); `pem` generated when absent. */
export async function memoryRing(pem?: string | Buffer, now: Date = new Date()): Promise<SigningRing> {
  const k = await parseSigningKey(pem ?? generatePem());
  const entry: RingEntry = { kid: k.kid, state: 'active', createdAt: now.toISOString(), activatedAt: now.toISOString(), publicJwk: k.publicJwk };
  return SigningRing.of([{ entry, privateKey: k.privateKey, publicKey: createPublicKey(k.privateKey), jwk: publishedJwk(k.kid, k.publicJwk) }]);
}

// --- files -------------------------------------------------------------------------------

export function ringDir(stateDir: string): string {
  return path.join(stateDir, SIGNING_KEYS_DIR);
}

function ringFile(stateDir: string): string {
  return path.join(ringDir(stateDir), RING_FILE);
}

function keyFile(stateDir: string, kid: string): string {
  // SECURITY: kid is checked against KID_RE (no separators, no dots) before it names a file.
  if (!KID_RE.test(kid)) throw new KmsError('ERR_KMS_SIGNING_KEY_NOT_FOUND', { detail: 'malformed kid' });
  return path.join(ringDir(stateDir), `${kid}.pem`);
}

function ioError(file: string, cause: unknown): KmsError {
  return new KmsError('ERR_KMS_STORE_IO', { detail: `${file}: ${(cause as NodeJS.ErrnoException).code ?? 'I/O error'}`, cause });
}

/**
 * Identity of ring.json as it is now (inode, mtime, size), or undefined when absent. A
 * change means the ring must be re-read; the atomic rename gives every write a new inode.
 */
export async function ringStamp(stateDir: string): Promise<string | undefined> {
  try {
    const st = await stat(ringFile(stateDir), { bigint: true });
    return `${st.ino}:${st.mtimeNs}:${st.size}`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(ringFile(stateDir), e);
  }
}

async function readRingFile(stateDir: string): Promise<RingFile | undefined> {
  const file = ringFile(stateDir);
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile() || st.size > MAX_RING_BYTES) throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${file}: not a regular file or too large` });
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (isKmsError(e)) throw e;
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw ioError(file, e);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${file}: not JSON` });
  }
  const r = RingFileSchema.safeParse(json);
  if (!r.success) {
    const fields = [...new Set(r.error.issues.map((i) => i.path.join('.') || '(root)'))].slice(0, 8).join(', ');
    throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${file}: ${fields}` });
  }
  return r.data;
}

async function writeRingFile(stateDir: string, ring: RingFile): Promise<void> {
  const file = ringFile(stateDir);
  try {
    await writeFileAtomic(file, `${JSON.stringify(ring, null, 2)}\n`, 0o600);
  } catch (e) {
    throw ioError(file, e);
  }
}

/**
 * Loads and validates the ring of `stateDir` (see the module comment for the checks).
 * Throws `ERR_KMS_SIGNING_RING_INVALID` when ring.json is absent or invalid.
 */
export async function loadRing(stateDir: string): Promise<SigningRing> {
  const file = await readRingFile(stateDir);
  if (!file) throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${ringFile(stateDir)}: missing` });
  const seen = new Set<string>();
  const keys: RingKey[] = [];
  for (const entry of file.keys) {
    if (seen.has(entry.kid)) throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `duplicate kid ${entry.kid}` });
    seen.add(entry.kid);
    // SECURITY: the kid names the key everywhere (headers, JWKS, archive); it must be the key's own thumbprint.
    if ((await calculateJwkThumbprint(entry.publicJwk, 'sha256')) !== entry.kid) {
      throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `kid ${entry.kid} is not the thumbprint of its publicJwk` });
    }
    let publicKey: KeyObject;
    try {
      publicKey = createPublicKey({ key: entry.publicJwk, format: 'jwk' });
    } catch (cause) {
      throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `kid ${entry.kid}: publicJwk is not a P-256 point`, cause });
    }
    let privateKey: KeyObject | undefined;
    if (entry.state !== 'retired') {
      const f = keyFile(stateDir, entry.kid);
      const read = await readSecretFile(f);
      if (read.kind !== 'ok') {
        throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${f}: ${read.kind === 'bad' ? read.reason : 'missing'}` });
      }
      let parsed;
      try {
        parsed = await parseSigningKey(read.data);
      } catch (cause) {
        throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${f}: not a P-256 PKCS#8 key`, cause });
      }
      // SECURITY: a PEM swapped under another key's name would sign under the wrong kid.
      if (parsed.kid !== entry.kid) throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${f}: key does not match its kid` });
      privateKey = parsed.privateKey;
    }
    keys.push({ entry, publicKey, ...(privateKey ? { privateKey } : {}), jwk: publishedJwk(entry.kid, entry.publicJwk) });
  }
  return SigningRing.of(keys);
}

export interface OpenRingOptions {
  readonly logger?: Logger;
  readonly now?: Date;
}

/**
 * Opens the ring of `stateDir`, creating it on first start: a state directory holding only
 * the pre-ring `token-signing-key.pem` has that key imported as the first active key (same
 * kid, so servers that pinned the old JWKS keep working); otherwise a fresh key is generated.
 * Creation is first-writer-wins (two brokers starting at once end up with one ring).
 */
export async function openRing(stateDir: string, opts: OpenRingOptions = {}): Promise<SigningRing> {
  const dir = ringDir(stateDir);
  try {
    await ensurePrivateDir(dir);
  } catch (e) {
    throw ioError(dir, e);
  }
  if ((await readRingFile(stateDir)) === undefined) {
    const now = (opts.now ?? new Date()).toISOString();
    const legacyFile = path.join(stateDir, LEGACY_SIGNING_KEY_FILE);
    const legacy = await readSecretFile(legacyFile);
    if (legacy.kind === 'bad') throw new KmsError('ERR_KMS_SIGNING_KEY_INVALID', { detail: `${legacyFile}: ${legacy.reason}` });
    const pem = legacy.kind === 'ok' ? legacy.data : Buffer.from(generatePem(), 'utf8');
    const k = await parseSigningKey(pem);
    try {
      await createFileExclusive(keyFile(stateDir, k.kid), pem, 0o600);
      const ring: RingFile = { version: 1, keys: [{ kid: k.kid, state: 'active', createdAt: now, activatedAt: now, publicJwk: k.publicJwk }] };
      const created = await createFileExclusive(ringFile(stateDir), `${JSON.stringify(ring, null, 2)}\n`, 0o600);
      if (created) {
        opts.logger?.info(
          { kid: k.kid, imported: legacy.kind === 'ok' },
          legacy.kind === 'ok' ? 'imported token-signing-key.pem as the active signing key' : 'generated a new signing key ring',
        );
      }
    } catch (e) {
      throw isKmsError(e) ? e : ioError(dir, e);
    }
  }
  return loadRing(stateDir);
}

// --- operations --------------------------------------------------------------------------

export interface RingOpOptions {
  readonly now?: Date;
}

/** What `list` shows: the ring entries (public data only). */
export async function listSigningKeys(stateDir: string): Promise<readonly RingEntry[]> {
  return (await loadRing(stateDir)).entries;
}

async function mutate(stateDir: string, f: (keys: RingEntry[]) => RingEntry[]): Promise<RingEntry[]> {
  // Validates the whole ring (PEMs included) before changing it.
  const ring = await loadRing(stateDir);
  const next = f(ring.entries.map((e) => ({ ...e })));
  if (next.filter((e) => e.state === 'active').length !== 1) {
    throw new KmsError('ERR_KMS_INTERNAL', { detail: 'ring operation would leave other than one active key' });
  }
  await writeRingFile(stateDir, { version: 1, keys: next });
  return next;
}

function find(keys: RingEntry[], kid: string): RingEntry {
  const e = keys.find((k) => k.kid === kid);
  if (!e) throw new KmsError('ERR_KMS_SIGNING_KEY_NOT_FOUND', { detail: KID_RE.test(kid) ? kid : 'malformed kid' });
  return e;
}

/**
 * Adds a fresh key in state `next`: published in the JWKS, not signing. Refused
 * (`ERR_KMS_SIGNING_KEY_OP_REFUSED`) when `MAX_PUBLISHED_KEYS` keys are already published.
 */
export async function addSigningKey(stateDir: string, opts: RingOpOptions = {}): Promise<RingEntry> {
  const now = (opts.now ?? new Date()).toISOString();
  const pem = generatePem();
  const k = await parseSigningKey(pem);
  await loadRing(stateDir); // refuse to add to a ring that does not load
  const file = keyFile(stateDir, k.kid);
  try {
    if (!(await createFileExclusive(file, pem, 0o600))) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'generated kid already exists' });
  } catch (e) {
    throw isKmsError(e) ? e : ioError(file, e);
  }
  const entry: RingEntry = { kid: k.kid, state: 'next', createdAt: now, publicJwk: k.publicJwk };
  try {
    await mutate(stateDir, (keys) => {
      if (keys.filter((e) => e.state !== 'retired').length >= MAX_PUBLISHED_KEYS) {
        throw new KmsError('ERR_KMS_SIGNING_KEY_OP_REFUSED', { detail: `already ${MAX_PUBLISHED_KEYS} published keys; retire one first` });
      }
      return [...keys, entry];
    });
  } catch (e) {
    await unlink(file).catch(() => undefined);
    throw e;
  }
  return entry;
}

/**
 * Makes `kid` (a `next` or `verify-only` key) the active key; the previous active key
 * becomes `verify-only` (its tokens keep verifying until it is retired). Activating the
 * active key is a no-op.
 */
export async function activateSigningKey(stateDir: string, kid: string, opts: RingOpOptions = {}): Promise<readonly RingEntry[]> {
  const now = (opts.now ?? new Date()).toISOString();
  return mutate(stateDir, (keys) => {
    const target = find(keys, kid);
    if (target.state === 'active') return keys;
    if (target.state === 'retired') throw new KmsError('ERR_KMS_SIGNING_KEY_OP_REFUSED', { detail: `${kid} is retired` });
    for (const e of keys) {
      if (e.state === 'active') {
        e.state = 'verify-only';
        e.deactivatedAt = now;
      }
    }
    target.state = 'active';
    target.activatedAt = now;
    delete target.deactivatedAt;
    return keys;
  });
}

/** `add` then `activate` of the new key. */
export async function rotateSigningKey(stateDir: string, opts: RingOpOptions = {}): Promise<RingEntry> {
  const added = await addSigningKey(stateDir, opts);
  await activateSigningKey(stateDir, added.kid, opts);
  return { ...added, state: 'active' };
}

export interface RetireOptions extends RingOpOptions {
  /** Token lifetime (config `tokenTtlSeconds`): a key deactivated less than this ago may still have tokens in flight. */
  readonly ttlSeconds: number;
  /** Retire even while tokens it signed may be in flight. */
  readonly force?: boolean;
}

/**
 * Retires `kid`: it leaves the JWKS, no longer verifies anything, and its private key file
 * is deleted (its public key stays in ring.json and the archive). Refused
 * (`ERR_KMS_SIGNING_KEY_OP_REFUSED`) for the active key, and for a verify-only key
 * deactivated less than `ttlSeconds` ago unless `force`. A `next` key never signed and can
 * be retired at once.
 */
export async function retireSigningKey(stateDir: string, kid: string, opts: RetireOptions): Promise<RingEntry> {
  const now = opts.now ?? new Date();
  let retired: RingEntry | undefined;
  await mutate(stateDir, (keys) => {
    const target = find(keys, kid);
    if (target.state === 'active') throw new KmsError('ERR_KMS_SIGNING_KEY_OP_REFUSED', { detail: `${kid} is the active key; activate another first` });
    if (target.state === 'retired') throw new KmsError('ERR_KMS_SIGNING_KEY_OP_REFUSED', { detail: `${kid} is already retired` });
    if (target.state === 'verify-only' && !opts.force) {
      const since = target.deactivatedAt ? (now.getTime() - Date.parse(target.deactivatedAt)) / 1000 : 0;
      // SECURITY: tokens it signed live up to ttlSeconds after it stopped signing.
      if (since < opts.ttlSeconds) {
        throw new KmsError('ERR_KMS_SIGNING_KEY_OP_REFUSED', {
          detail: `${kid} stopped signing ${Math.max(0, Math.floor(since))} s ago; tokens may be in flight for ${opts.ttlSeconds} s (or --force)`,
        });
      }
    }
    target.state = 'retired';
    target.retiredAt = now.toISOString();
    retired = { ...target };
    return keys;
  });
  // SECURITY: a retired key never signs again; drop the private key once the ring no longer names it.
  const file = keyFile(stateDir, kid);
  await unlink(file).catch((e: NodeJS.ErrnoException) => {
    if (e.code !== 'ENOENT') throw ioError(file, e);
  });
  return retired!;
}

// --- publishing --------------------------------------------------------------------------

const JwksFileSchema = z.object({ keys: z.array(z.looseObject({ kid: z.string() })).max(MAX_RING_KEYS) });

/**
 * Writes `jwks.json` (the published set) and `jwks-archive.json` (every key ever in the
 * ring, merged with the archive already on disk so that it never shrinks), atomically and
 * 0644: both hold public keys only. An unreadable existing archive is
 * `ERR_KMS_SIGNING_RING_INVALID` (never silently replaced).
 */
export async function publishRingJwks(ring: SigningRing, files: { jwksFile: string; archiveFile: string }): Promise<void> {
  let previous: { kid: string }[] = [];
  try {
    const text = await readFile(files.archiveFile, 'utf8');
    const parsed = JwksFileSchema.safeParse(JSON.parse(text));
    if (!parsed.success) throw new Error('schema');
    previous = parsed.data.keys;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
      throw new KmsError('ERR_KMS_SIGNING_RING_INVALID', { detail: `${files.archiveFile}: not a JWK Set` });
    }
  }
  const merged = new Map<string, unknown>(previous.map((k) => [k.kid, k]));
  for (const k of ring.archive().keys) if (!merged.has(k.kid)) merged.set(k.kid, k);
  try {
    await writeFileAtomic(files.jwksFile, `${JSON.stringify(ring.jwks(), null, 2)}\n`, 0o644);
    await writeFileAtomic(files.archiveFile, `${JSON.stringify({ keys: [...merged.values()] }, null, 2)}\n`, 0o644);
  } catch (e) {
    throw ioError(files.jwksFile, e);
  }
}
