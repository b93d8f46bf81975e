import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { readTlv, splitCertificate, decodeSmallUint, decodeIa5String, encodeUint, encodeIa5String } from './der.js';
import { parseCertificate, readSnpKeyCertInfo } from './snp/certs.js';
import { checkSignedBy } from './snp/chain.js';
import { amdChain } from './snp/roots.js';
import { isAttestationError } from './codes.js';
import { toHex } from '../common/bytes.js';

const VEC = new URL('../test/data/vectors/', import.meta.url);
const vec = (p: string): Buffer => readFileSync(new URL(p, VEC));

describe('der', () => {
  it('round-trips small integers and IA5 strings', () => {
    for (const n of [0, 1, 127, 128, 217, 255, 256, 65535, 2 ** 31]) expect(decodeSmallUint(encodeUint(n))).toBe(n);
    expect(toHex(encodeUint(217))).toBe('020200d9');
    expect(decodeIa5String(encodeIa5String('Milan-B0'))).toBe('Milan-B0');
  });

  it('rejects non-DER forms', () => {
    expect(readTlv(Uint8Array.of(0x30, 0x80, 0, 0), 0)).toBeUndefined(); // indefinite
    expect(readTlv(Uint8Array.of(0x04, 0x81, 0x05, 1, 2, 3, 4, 5), 0)).toBeUndefined(); // non-minimal length
    expect(readTlv(Uint8Array.of(0x04, 0x05, 1, 2), 0)).toBeUndefined(); // past the end
    expect(decodeSmallUint(Uint8Array.of(0x02, 0x02, 0x00, 0x01))).toBeUndefined(); // non-minimal
    expect(decodeSmallUint(Uint8Array.of(0x02, 0x01, 0x80))).toBeUndefined(); // negative
    expect(decodeIa5String(Uint8Array.of(0x16, 0x01, 0x00))).toBeUndefined();
  });

  it('never throws on arbitrary bytes', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (b) => {
        readTlv(b, 0);
        splitCertificate(b);
        decodeSmallUint(b);
        decodeIa5String(b);
        return true;
      }),
      { numRuns: 2000 },
    );
  });

  it('certificate parsing gives the typed error on mutated certificates', () => {
    const der = vec('sev-snp/go-sev-guest/vcek.der');
    fc.assert(
      fc.property(fc.integer({ min: 0, max: der.length - 1 }), fc.integer({ min: 0, max: 255 }), (i, v) => {
        const b = Buffer.from(der);
        b[i] = v;
        try {
          readSnpKeyCertInfo(parseCertificate(b, 'VCEK'));
        } catch (e) {
          return isAttestationError(e);
        }
        return true;
      }),
      { numRuns: 300 },
    );
  });
});

describe('VCEK extensions (trustee fixtures)', () => {
  it('reads hwID stored raw (legacy) and wrapped in an OCTET STRING (new)', () => {
    const legacy = readSnpKeyCertInfo(parseCertificate(vec('sev-snp/trustee/test-vcek-invalid-legacy.der'), 'VCEK'));
    expect(legacy.tcb).toEqual({ bootloader: 3, tee: 0, snp: 10, microcode: 169 });
    expect(toHex(legacy.hwId!)).toBe(Buffer.from(Array.from({ length: 64 }, (_, i) => i)).toString('hex'));
    const wrapped = readSnpKeyCertInfo(parseCertificate(vec('sev-snp/trustee/test-vcek-invalid-new.der'), 'VCEK'));
    expect(wrapped.tcb).toEqual({ bootloader: 0, tee: 0, snp: 0, microcode: 30 });
    expect(toHex(wrapped.hwId!)).toBe(toHex(legacy.hwId!));
  });

  it('these synthetic VCEKs are not signed by the AMD Milan ASK', () => {
    const ask = amdChain('Milan', 'vcek').intermediate;
    for (const f of ['sev-snp/trustee/test-vcek-invalid-legacy.der', 'sev-snp/trustee/test-vcek-invalid-new.der']) {
      expect(() => checkSignedBy(parseCertificate(vec(f), 'VCEK'), ask)).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_CHAIN_INVALID' }));
    }
  });

  it('reads the Turin VCEK: 8-byte hwID and fmcSPL', () => {
    const pem = readFileSync(new URL('sev-snp/microsoft/turin_vcek.pem', VEC), 'utf8');
    const der = Buffer.from(pem.replace(/-----[^-]+-----|\s/g, ''), 'base64');
    const info = readSnpKeyCertInfo(parseCertificate(der, 'VCEK'));
    expect(info).toMatchObject({ product: 'Turin', productName: 'Turin', structVersion: 1 });
    expect(info.tcb).toEqual({ bootloader: 1, tee: 1, snp: 4, microcode: 81, fmc: 1 });
    expect(toHex(info.hwId!)).toBe('59790fb1c39f35c1');
  });
});
