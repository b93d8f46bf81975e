import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
import fc from 'fast-check';
import { sealModel, openSealedModel, readSealedHeader, sealedLength, MIN_CHUNK_SIZE } from './seal.js';
import { SealError } from './seal-codes.js';
import { isCirError } from './errors.js';

const CHUNK = MIN_CHUNK_SIZE;
const meta = { keyId: 'model-a', keyVersion: 1 };

function codeOf(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (isCirError(e)) return e.code;
    throw e;
  }
  return 'OK';
}

describe('sealed model format', () => {
  const dek = randomBytes(32);
  const plaintext = randomBytes(CHUNK * 3 + 123);
  const sealed = sealModel(plaintext, dek, meta, { chunkSize: CHUNK });

  it('round-trips and exposes an honest header', () => {
    const h = readSealedHeader(sealed);
    expect(h).toMatchObject({ formatVersion: 1, keyId: 'model-a', keyVersion: 1, plaintextSize: plaintext.length, chunkSize: CHUNK });
    expect(sealedLength(h)).toBe(sealed.length);
    expect(openSealedModel(sealed, dek).equals(plaintext)).toBe(true);
  });

  it('round-trips empty and exact-multiple sizes', () => {
    for (const size of [0, 1, CHUNK, CHUNK * 2]) {
      const pt = randomBytes(size);
      expect(openSealedModel(sealModel(pt, dek, meta, { chunkSize: CHUNK }), dek).equals(pt)).toBe(true);
    }
  });

  it('never leaves plaintext in the ciphertext', () => {
    const pt = Buffer.alloc(CHUNK * 2, 0x41);
    const s = sealModel(pt, dek, meta, { chunkSize: CHUNK });
    expect(s.includes(Buffer.alloc(64, 0x41))).toBe(false);
  });

  it('detects a flipped bit anywhere: header, ciphertext, tag', () => {
    const h = readSealedHeader(sealed);
    // Every header byte other than those readSealedHeader itself rejects, plus body samples.
    const positions = [...Array(h.headerLength).keys(), h.headerLength, h.headerLength + CHUNK + 3, sealed.length - 1];
    for (const pos of positions) {
      const t = Buffer.from(sealed);
      t[pos] = t[pos]! ^ 0x01;
      expect(codeOf(() => openSealedModel(t, dek)), `byte ${pos}`).not.toBe('OK');
    }
  });

  it('detects truncation, including dropping exactly the last chunk', () => {
    const h = readSealedHeader(sealed);
    expect(codeOf(() => openSealedModel(sealed.subarray(0, sealed.length - 1), dek))).toBe('ERR_SEAL_LENGTH_MISMATCH');
    const lastChunkLen = 123 + 16;
    const dropped = sealed.subarray(0, sealed.length - lastChunkLen);
    expect(codeOf(() => openSealedModel(dropped, dek))).toBe('ERR_SEAL_LENGTH_MISMATCH');
    // Even with the header's size rewritten to match, the header is authenticated and the
    // new last chunk lacks the last-chunk flag.
    const forged = Buffer.from(dropped);
    forged.writeBigUInt64BE(BigInt(CHUNK * 3), 18);
    expect(sealedLength(readSealedHeader(forged))).toBe(forged.length);
    expect(codeOf(() => openSealedModel(forged, dek))).toBe('ERR_SEAL_AUTH_FAILED');
    expect(h.plaintextSize).toBe(plaintext.length);
  });

  it('detects extension', () => {
    expect(codeOf(() => openSealedModel(Buffer.concat([sealed, Buffer.alloc(16)]), dek))).toBe('ERR_SEAL_LENGTH_MISMATCH');
  });

  it('detects reordered chunks', () => {
    const h = readSealedHeader(sealed).headerLength;
    const c = CHUNK + 16;
    const t = Buffer.from(sealed);
    sealed.copy(t, h, h + c, h + 2 * c);
    sealed.copy(t, h + c, h, h + c);
    expect(codeOf(() => openSealedModel(t, dek))).toBe('ERR_SEAL_AUTH_FAILED');
  });

  it('detects a chunk swapped in from another file sealed under the same key', () => {
    const other = sealModel(plaintext, dek, meta, { chunkSize: CHUNK });
    const h = readSealedHeader(sealed).headerLength;
    const t = Buffer.from(sealed);
    other.copy(t, h, h, h + CHUNK + 16);
    expect(codeOf(() => openSealedModel(t, dek))).toBe('ERR_SEAL_AUTH_FAILED');
    // and a whole header swapped from the other file
    const t2 = Buffer.from(sealed);
    other.copy(t2, 0, 0, h);
    expect(codeOf(() => openSealedModel(t2, dek))).toBe('ERR_SEAL_AUTH_FAILED');
  });

  it('rejects the wrong key', () => {
    expect(codeOf(() => openSealedModel(sealed, randomBytes(32)))).toBe('ERR_SEAL_AUTH_FAILED');
    expect(codeOf(() => openSealedModel(sealed, randomBytes(16)))).toBe('ERR_SEAL_BAD_KEY');
  });

  it('rejects bad magic and unknown versions', () => {
    expect(codeOf(() => readSealedHeader(Buffer.from('PK\x03\x04 not a sealed model')))).toBe('ERR_SEAL_BAD_MAGIC');
    const t = Buffer.from(sealed);
    t.writeUInt16BE(2, 8);
    expect(codeOf(() => readSealedHeader(t))).toBe('ERR_SEAL_UNSUPPORTED_VERSION');
  });

  it('property: arbitrary bytes give a SealError or a header, never another exception', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => {
        for (const input of [bytes, Buffer.concat([sealed.subarray(0, 20), bytes])]) {
          try {
            readSealedHeader(input);
            openSealedModel(input, dek);
          } catch (e) {
            expect(e).toBeInstanceOf(SealError);
          }
        }
      }),
      { numRuns: 500 },
    );
  });

  it('property: any single-byte mutation of a sealed file is rejected', () => {
    const small = sealModel(randomBytes(CHUNK + 10), dek, meta, { chunkSize: CHUNK });
    fc.assert(
      fc.property(fc.integer({ min: 0, max: small.length - 1 }), fc.integer({ min: 1, max: 255 }), (pos, x) => {
        const t = Buffer.from(small);
        t[pos] = t[pos]! ^ x;
        expect(() => openSealedModel(t, dek)).toThrow(SealError);
      }),
      { numRuns: 300 },
    );
  });
});
