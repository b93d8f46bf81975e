import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { cachedSignatureCheck, parseCertificateCached, VERIFIED_LINK_CACHE_MAX } from './cert-cache.js';
import { certificateDer } from './certs.js';

const VCEK = certificateDer(
  readFileSync(new URL('../../test/data/vectors/sev-snp/microsoft/genoa_vcek.pem', import.meta.url), 'utf8'),
  'genoa VCEK',
);

describe('parseCertificateCached', () => {
  it('reuses a parse only for byte-identical DER and the same label', () => {
    const a = parseCertificateCached(VCEK, 'VCEK');
    expect(parseCertificateCached(new Uint8Array(VCEK), 'VCEK')).toBe(a);
    const other = parseCertificateCached(VCEK, 'VLEK');
    expect(other).not.toBe(a);
    expect(other.label).toBe('VLEK');
  });

  it('a changed byte is a different entry, and a parse failure is not cached', () => {
    const a = parseCertificateCached(VCEK, 'VCEK');
    const bad = new Uint8Array(VCEK);
    bad[bad.length - 1]! ^= 1; // inside the signature: still parses, different bytes
    const b = parseCertificateCached(bad, 'VCEK');
    expect(b).not.toBe(a);
    expect(b.der).toEqual(bad);
    const garbage = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]);
    for (let i = 0; i < 2; i++) expect(() => parseCertificateCached(garbage, 'VCEK')).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_BAD_CERT' }));
  });

  it('is not affected by the caller mutating its input afterwards', () => {
    const mine = new Uint8Array(VCEK);
    const a = parseCertificateCached(mine, 'VCEK-mutation');
    mine[10]! ^= 0xff;
    expect(a.der).toEqual(VCEK);
  });
});

describe('cachedSignatureCheck', () => {
  const spki = new Uint8Array([1, 2, 3]);
  const tbs = new Uint8Array([4, 5, 6]);
  const sig = new Uint8Array([7, 8, 9]);

  it('memoises successes for identical bytes only', () => {
    let calls = 0;
    const ok = (): boolean => (calls++, true);
    expect(cachedSignatureCheck(spki, tbs, sig, ok)).toBe(true);
    expect(cachedSignatureCheck(new Uint8Array(spki), new Uint8Array(tbs), new Uint8Array(sig), ok)).toBe(true);
    expect(calls).toBe(1);
    for (const [s, t, g] of [
      [new Uint8Array([1, 2, 4]), tbs, sig],
      [spki, new Uint8Array([4, 5, 7]), sig],
      [spki, tbs, new Uint8Array([7, 8, 8])],
    ] as const) {
      cachedSignatureCheck(s, t, g, ok);
    }
    expect(calls).toBe(4);
  });

  it('never caches a failure', () => {
    let calls = 0;
    const bad = (): boolean => (calls++, false);
    const t = new Uint8Array([0xee]);
    expect(cachedSignatureCheck(spki, t, sig, bad)).toBe(false);
    expect(cachedSignatureCheck(spki, t, sig, bad)).toBe(false);
    expect(calls).toBe(2);
  });

  it('is bounded: the least recently used entry is evicted', () => {
    let calls = 0;
    const ok = (): boolean => (calls++, true);
    const first = new Uint8Array([0xab, 0xcd]);
    cachedSignatureCheck(spki, first, sig, ok);
    for (let i = 0; i < VERIFIED_LINK_CACHE_MAX; i++) cachedSignatureCheck(spki, new Uint8Array([0xfe, i & 0xff, i >> 8]), sig, ok);
    calls = 0;
    cachedSignatureCheck(spki, first, sig, ok);
    expect(calls).toBe(1);
  });
});
