/**
 * Sealed model format v1: chunked AES-256-GCM with a per-file key, in the shape of a
 * STREAM / Tink "AES-GCM-HKDF streaming" construction.
 *
 *   header (authenticated as AAD of every chunk, all integers big-endian):
 *     0   8  magic "CIRSEAL\0"
 *     8   2  format version (1)
 *    10   4  header length H (whole header, including magic)
 *    14   4  chunk size C (plaintext bytes per chunk; 4 KiB .. 64 MiB)
 *    18   8  plaintext size N (bytes)
 *    26  32  plaintext SHA-256
 *    58  32  HKDF salt (random per file)
 *    90   7  nonce prefix (random per file)
 *    97   4  key version
 *   101   2  key id length L
 *   103   L  key id (UTF-8, [A-Za-z0-9._-])
 *   body: ceil(N / C) chunks (one empty chunk when N = 0), each ciphertext ‖ 16-byte GCM tag.
 *
 * file key = HKDF-SHA256(ikm = DEK, salt, info = "cir/seal/v1/file-key"), so a DEK shared
 * by many files never repeats a (key, nonce) pair. Chunk i's nonce is
 * prefix[7] ‖ u32be(i) ‖ last-flag[1] (0x01 on the final chunk only).
 *
 * What this detects: any header or ciphertext change (every tag covers the header);
 * reordering (the index is in the nonce); truncation or extension (the length is fixed by
 * the authenticated header and the last chunk carries the last flag); chunks swapped in
 * from another file (different salt, hence key). After decryption the SHA-256 of the whole
 * plaintext is compared as a final end-to-end check.
 * What it does not do: hide the model's size or key id, which are in the clear header.
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes, createHash } from 'node:crypto';
import { constantTimeEqual } from './bytes.js';
import { SealError } from './seal-codes.js';

export const SEAL_MAGIC = Buffer.from('CIRSEAL\0', 'latin1');
export const SEAL_FORMAT_VERSION = 1;
export const DEFAULT_CHUNK_SIZE = 1 << 20;
export const MIN_CHUNK_SIZE = 1 << 12;
export const MAX_CHUNK_SIZE = 1 << 26;
/** 2^40 bytes: far above any model we serve, far below GCM and counter limits. */
export const MAX_PLAINTEXT_SIZE = 2 ** 40;
const TAG_LENGTH = 16;
const FIXED_HEADER_LENGTH = 103;
const MAX_KEY_ID_LENGTH = 128;
const KEY_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const HKDF_INFO = Buffer.from('cir/seal/v1/file-key', 'utf8');

const OFF = {
  magic: 0,
  version: 8,
  headerLength: 10,
  chunkSize: 14,
  plaintextSize: 18,
  plaintextSha256: 26,
  salt: 58,
  noncePrefix: 90,
  keyVersion: 97,
  keyIdLength: 101,
  keyId: 103,
} as const;

export interface SealedHeader {
  readonly formatVersion: number;
  readonly headerLength: number;
  readonly chunkSize: number;
  readonly plaintextSize: number;
  /** Lower-case hex. */
  readonly plaintextSha256: string;
  readonly keyId: string;
  readonly keyVersion: number;
}

export interface SealOptions {
  readonly chunkSize?: number;
}

function checkDek(dek: Uint8Array): void {
  if (dek.length !== 32) throw new SealError('ERR_SEAL_BAD_KEY');
}

function fileKey(dek: Uint8Array, salt: Uint8Array): Buffer {
  return Buffer.from(hkdfSync('sha256', dek, salt, HKDF_INFO, 32));
}

function chunkNonce(prefix: Uint8Array, index: number, last: boolean): Buffer {
  const n = Buffer.alloc(12);
  n.set(prefix, 0);
  n.writeUInt32BE(index, 7);
  n[11] = last ? 1 : 0;
  return n;
}

function chunkCount(plaintextSize: number, chunkSize: number): number {
  return Math.max(1, Math.ceil(plaintextSize / chunkSize));
}

/** Total sealed length implied by a header. */
export function sealedLength(h: SealedHeader): number {
  return h.headerLength + h.plaintextSize + chunkCount(h.plaintextSize, h.chunkSize) * TAG_LENGTH;
}

/** Encrypts a model under `dek` (32 bytes). Returns the whole sealed file. */
export function sealModel(
  plaintext: Uint8Array,
  dek: Uint8Array,
  meta: { keyId: string; keyVersion: number },
  opts: SealOptions = {},
): Buffer {
  checkDek(dek);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK_SIZE;
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new RangeError(`chunkSize must be an integer in [${MIN_CHUNK_SIZE}, ${MAX_CHUNK_SIZE}]`);
  }
  if (!KEY_ID_RE.test(meta.keyId)) throw new RangeError('keyId must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}');
  if (!Number.isInteger(meta.keyVersion) || meta.keyVersion < 1 || meta.keyVersion > 0xffffffff) {
    throw new RangeError('keyVersion must be a positive 32-bit integer');
  }
  if (plaintext.length > MAX_PLAINTEXT_SIZE) throw new SealError('ERR_SEAL_TOO_LARGE');

  const keyId = Buffer.from(meta.keyId, 'utf8');
  const headerLength = FIXED_HEADER_LENGTH + keyId.length;
  const salt = randomBytes(32);
  const prefix = randomBytes(7);
  const header = Buffer.alloc(headerLength);
  SEAL_MAGIC.copy(header, OFF.magic);
  header.writeUInt16BE(SEAL_FORMAT_VERSION, OFF.version);
  header.writeUInt32BE(headerLength, OFF.headerLength);
  header.writeUInt32BE(chunkSize, OFF.chunkSize);
  header.writeBigUInt64BE(BigInt(plaintext.length), OFF.plaintextSize);
  createHash('sha256').update(plaintext).digest().copy(header, OFF.plaintextSha256);
  salt.copy(header, OFF.salt);
  prefix.copy(header, OFF.noncePrefix);
  header.writeUInt32BE(meta.keyVersion, OFF.keyVersion);
  header.writeUInt16BE(keyId.length, OFF.keyIdLength);
  keyId.copy(header, OFF.keyId);

  const n = chunkCount(plaintext.length, chunkSize);
  const out = Buffer.allocUnsafe(headerLength + plaintext.length + n * TAG_LENGTH);
  header.copy(out, 0);
  const key = fileKey(dek, salt);
  try {
    let w = headerLength;
    for (let i = 0; i < n; i++) {
      const start = i * chunkSize;
      const chunk = plaintext.subarray(start, Math.min(start + chunkSize, plaintext.length));
      const c = createCipheriv('aes-256-gcm', key, chunkNonce(prefix, i, i === n - 1));
      c.setAAD(header);
      w += c.update(chunk).copy(out, w);
      w += c.final().copy(out, w);
      w += c.getAuthTag().copy(out, w);
    }
    return out;
  } finally {
    key.fill(0);
  }
}

/**
 * Parses and sanity-checks the clear header. Checks lengths and ranges only; nothing here
 * is authenticated until `openSealedModel` succeeds.
 */
export function readSealedHeader(sealed: Uint8Array): SealedHeader {
  const b = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (b.length < SEAL_MAGIC.length || !b.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC)) {
    throw new SealError('ERR_SEAL_BAD_MAGIC');
  }
  if (b.length < FIXED_HEADER_LENGTH) throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'header is truncated' });
  const formatVersion = b.readUInt16BE(OFF.version);
  if (formatVersion !== SEAL_FORMAT_VERSION) {
    throw new SealError('ERR_SEAL_UNSUPPORTED_VERSION', { detail: `version ${formatVersion}` });
  }
  const headerLength = b.readUInt32BE(OFF.headerLength);
  const keyIdLength = b.readUInt16BE(OFF.keyIdLength);
  if (keyIdLength === 0 || keyIdLength > MAX_KEY_ID_LENGTH || headerLength !== FIXED_HEADER_LENGTH + keyIdLength) {
    throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'inconsistent header or key id length' });
  }
  if (b.length < headerLength) throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'header is truncated' });
  const chunkSize = b.readUInt32BE(OFF.chunkSize);
  if (chunkSize < MIN_CHUNK_SIZE || chunkSize > MAX_CHUNK_SIZE) {
    throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'chunk size out of range' });
  }
  const size = b.readBigUInt64BE(OFF.plaintextSize);
  if (size > BigInt(MAX_PLAINTEXT_SIZE)) throw new SealError('ERR_SEAL_TOO_LARGE');
  const keyId = b.subarray(OFF.keyId, OFF.keyId + keyIdLength).toString('utf8');
  if (!KEY_ID_RE.test(keyId)) throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'invalid key id' });
  const keyVersion = b.readUInt32BE(OFF.keyVersion);
  if (keyVersion === 0) throw new SealError('ERR_SEAL_MALFORMED_HEADER', { detail: 'key version 0' });
  return Object.freeze({
    formatVersion,
    headerLength,
    chunkSize,
    plaintextSize: Number(size),
    plaintextSha256: b.subarray(OFF.plaintextSha256, OFF.plaintextSha256 + 32).toString('hex'),
    keyId,
    keyVersion,
  });
}

/**
 * Decrypts a sealed model in memory and returns the plaintext. Throws `SealError` on any
 * tampering, truncation, extension, reordering, cross-file swap or wrong key; on failure
 * the partially decrypted buffer is zeroed before the error propagates.
 */
export function openSealedModel(sealed: Uint8Array, dek: Uint8Array): Buffer {
  checkDek(dek);
  const h = readSealedHeader(sealed);
  const b = Buffer.from(sealed.buffer, sealed.byteOffset, sealed.byteLength);
  if (b.length !== sealedLength(h)) throw new SealError('ERR_SEAL_LENGTH_MISMATCH');
  const header = b.subarray(0, h.headerLength);
  const salt = b.subarray(OFF.salt, OFF.salt + 32);
  const prefix = b.subarray(OFF.noncePrefix, OFF.noncePrefix + 7);
  const n = chunkCount(h.plaintextSize, h.chunkSize);
  const out = Buffer.alloc(h.plaintextSize);
  const key = fileKey(dek, salt);
  try {
    let r = h.headerLength;
    for (let i = 0; i < n; i++) {
      const len = Math.min(h.chunkSize, h.plaintextSize - i * h.chunkSize);
      const d = createDecipheriv('aes-256-gcm', key, chunkNonce(prefix, i, i === n - 1));
      d.setAAD(header);
      d.setAuthTag(b.subarray(r + len, r + len + TAG_LENGTH));
      const pt = d.update(b.subarray(r, r + len));
      try {
        d.final();
      } catch (cause) {
        pt.fill(0);
        throw new SealError('ERR_SEAL_AUTH_FAILED', { detail: `chunk ${i}`, cause });
      }
      pt.copy(out, i * h.chunkSize);
      r += len + TAG_LENGTH;
    }
    const digest = createHash('sha256').update(out).digest();
    if (!constantTimeEqual(digest, Buffer.from(h.plaintextSha256, 'hex'))) {
      throw new SealError('ERR_SEAL_DIGEST_MISMATCH');
    }
    return out;
  } catch (e) {
    out.fill(0);
    throw e;
  } finally {
    key.fill(0);
  }
}
