import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import { parseSnpReport, productFromCpuid, decodeTcb, snpSignedRegion } from './abi.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { toHex } from '../../common/bytes.js';

const VEC = new URL('../../test/data/vectors/', import.meta.url);
const vec = (p: string): Buffer => readFileSync(new URL(p, VEC));

function codeOf(f: () => unknown): AttestationErrorCode | 'no error' | 'foreign error' {
  try {
    f();
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

// Facts from /work/shared/vectors/MANIFEST.md, "Key facts per evidence".
const FACTS = {
  milan: {
    file: 'sev-snp/microsoft/milan_attestation_report.bin',
    version: 3,
    guestSvn: 2,
    policy: 0x3001fn,
    platformInfo: 0x25n,
    product: 'Milan',
    reportedTcbRaw: 0xdb18000000000004n,
    reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
    measurement: '5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1',
    reportId: '5e01036273418d910bdca3f5cb9c7d849e88e2141483eb6cc9afd794ffbbbcbc',
    chipId:
      '4ffb5cb4fd594f3fee6528fc3fb10370bb38abe89dcd5ba2cf0ab6a11df2ca282add516bef45a890a8c9f9732bdca68f9f3f16c42e846030a800295dbeb19ba5',
    fw: { major: 1, minor: 55, build: 29 },
    cpuid: { family: 0x19, model: 0x1, stepping: 0x1 },
  },
  genoa: {
    file: 'sev-snp/microsoft/genoa_attestation_report.bin',
    version: 3,
    guestSvn: 2,
    policy: 0x3001fn,
    platformInfo: 0x27n,
    product: 'Genoa',
    reportedTcbRaw: 0x541700000000000an,
    reportedTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
    measurement: '5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1',
    reportId: 'c840e4fc01bec5121388abbf2e850c5b1d482adab7a4b06c4d93028c56599429',
    chipId:
      'b1e24a27bbc3a4d58090d8b89851dce3b8031544be249b9ac17132bb222b027622347ee4d0fe4f689efdfc47a68cefc686cbb448d01436506ee1e28010cab7c0',
    fw: { major: 1, minor: 55, build: 40 },
    cpuid: { family: 0x19, model: 0x11, stepping: 0x1 },
  },
  turin: {
    file: 'sev-snp/microsoft/turin_attestation_report.bin',
    version: 5,
    guestSvn: 2,
    policy: 0x3001fn,
    platformInfo: 0x65n,
    product: 'Turin',
    reportedTcbRaw: 0x5100000004010101n,
    reportedTcb: { fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 81 },
    measurement: '6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa142fccf1d1b0baca496841bdf243619d4',
    reportId: 'd2f0b13e226f7c8aee44f2fd22cac739438124864fec3e3a2249901a2f4bc9a6',
    chipId: '59790fb1c39f35c1' + '0'.repeat(112),
    fw: { major: 1, minor: 55, build: 65 },
    cpuid: { family: 0x1a, model: 0x2, stepping: 0x1 },
  },
} as const;

describe('parseSnpReport: real reports (MANIFEST facts)', () => {
  for (const [name, f] of Object.entries(FACTS)) {
    it(`parses ${name}`, () => {
      const r = parseSnpReport(vec(f.file));
      expect(r.version).toBe(f.version);
      expect(r.guestSvn).toBe(f.guestSvn);
      expect(r.policy.raw).toBe(f.policy);
      expect(r.policy.debug).toBe(false);
      expect(r.policy.smt).toBe(true);
      expect(r.policy.abiMinor).toBe(0x1f);
      expect(r.policy.abiMajor).toBe(0);
      expect(r.platformInfo.raw).toBe(f.platformInfo);
      expect(r.vmpl).toBe(0);
      expect(r.signatureAlgo).toBe(1);
      expect(r.signingKey).toBe('vcek');
      expect(r.product).toBe(f.product);
      expect(r.cpuid).toEqual(f.cpuid);
      expect(r.reportedTcb.raw).toBe(f.reportedTcbRaw);
      const { raw: _raw, ...tcb } = r.reportedTcb;
      expect(tcb).toEqual(f.reportedTcb);
      expect(toHex(r.measurement)).toBe(f.measurement);
      expect(toHex(r.reportData)).toBe('0'.repeat(128));
      expect(toHex(r.reportId)).toBe(f.reportId);
      expect(toHex(r.chipId)).toBe(f.chipId);
      expect(r.currentFirmware).toEqual(f.fw);
      expect(r.signedRegion.length).toBe(0x2a0);
      expect(Object.isFrozen(r)).toBe(true);
      expect(Object.isFrozen(r.policy)).toBe(true);
    });
  }

  it('decodes the v5 mitigation vectors (Turin: 0x3f)', () => {
    const r = parseSnpReport(vec(FACTS.turin.file));
    expect(r.launchMitVector).toBe(0x3fn);
    expect(r.currentMitVector).toBe(0x3fn);
    expect(r.tcbLayout).toBe('turin');
  });

  it('parses the VLEK report (v3, signing key 1, VMPL 1)', () => {
    const r = parseSnpReport(vec('sev-snp/trustee/test-vlek-report.bin'));
    expect(r.signingKey).toBe('vlek');
    expect(r.vmpl).toBe(1);
    expect(r.reportedTcb).toMatchObject({ bootloader: 4, tee: 0, snp: 24, microcode: 217 });
    expect(toHex(r.chipId)).toBe('0'.repeat(128));
    expect(r.currentFirmware).toEqual({ major: 1, minor: 55, build: 29 });
  });

  it('parses the go-sev-guest v2 report: no cpuid, no product, debug bit set', () => {
    const r = parseSnpReport(vec('sev-snp/go-sev-guest/attestation.bin'));
    expect(r.version).toBe(2);
    expect(r.cpuid).toBeUndefined();
    expect(r.product).toBeUndefined();
    expect(r.tcbLayout).toBe('milan-genoa');
    expect(r.policy.raw).toBe(0xb0000n);
    expect(r.policy.debug).toBe(true);
    expect(r.reportedTcb).toMatchObject({ bootloader: 2, tee: 0, snp: 5, microcode: 68 });
    expect(r.currentFirmware).toEqual({ major: 1, minor: 49, build: 3 });
  });

  it('copies its input: later changes to the caller buffer do not affect the struct', () => {
    const b = Buffer.from(vec(FACTS.milan.file));
    const r = parseSnpReport(b);
    b.fill(0xee, 0x90, 0x90 + 48);
    expect(toHex(r.measurement)).toBe(FACTS.milan.measurement);
    expect(toHex(snpSignedRegion(b).subarray(0x90, 0x91))).toBe('ee');
  });
});

describe('parseSnpReport: negative table', () => {
  const good = (): Buffer => Buffer.from(vec(FACTS.genoa.file));
  const u32 = (off: number, v: number) => (b: Buffer): void => void b.writeUInt32LE(v, off);
  const cases: [string, (b: Buffer) => Buffer | void, AttestationErrorCode][] = [
    ['one byte short', (b) => b.subarray(0, 1183), 'ERR_ATT_SNP_BAD_SIZE'],
    ['one byte long', (b) => Buffer.concat([b, Buffer.alloc(1)]), 'ERR_ATT_SNP_BAD_SIZE'],
    ['empty', () => Buffer.alloc(0), 'ERR_ATT_SNP_BAD_SIZE'],
    ['version 1', u32(0x0, 1), 'ERR_ATT_SNP_UNSUPPORTED_VERSION'],
    ['version 4', u32(0x0, 4), 'ERR_ATT_SNP_UNSUPPORTED_VERSION'],
    ['version 6', u32(0x0, 6), 'ERR_ATT_SNP_UNSUPPORTED_VERSION'],
    ['signature_algo 2', u32(0x34, 2), 'ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO'],
    ['signature_algo 0', u32(0x34, 0), 'ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO'],
    ...[2, 3, 4, 5, 6, 7].map(
      (k) => [`signing_key ${k}`, u32(0x48, k << 2), 'ERR_ATT_SNP_UNSUPPORTED_SIGNING_KEY'] as [string, (b: Buffer) => void, AttestationErrorCode],
    ),
    ['flags bit 5', u32(0x48, 1 << 5), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x04C', (b) => void (b[0x4c] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x18B', (b) => void (b[0x18b] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x19F', (b) => void (b[0x19f] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x1EB', (b) => void (b[0x1eb] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x1EF', (b) => void (b[0x1ef] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['mit vector in a v3 report', (b) => void (b[0x1f8] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x208', (b) => void (b[0x208] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['reserved 0x29F', (b) => void (b[0x29f] = 1), 'ERR_ATT_SNP_RESERVED_NONZERO'],
    ['policy bit 17 clear', (b) => void (b[0x0a] = b[0x0a]! & ~0x02), 'ERR_ATT_SNP_BAD_GUEST_POLICY'],
    ['policy bit 26 set', (b) => void (b[0x0b] = b[0x0b]! | 0x04), 'ERR_ATT_SNP_BAD_GUEST_POLICY'],
    ['policy bit 63 set', (b) => void (b[0x0f] = 0x80), 'ERR_ATT_SNP_BAD_GUEST_POLICY'],
    ['signature r high byte', (b) => void (b[0x2a0 + 48] = 1), 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING'],
    ['signature s high byte', (b) => void (b[0x2e8 + 71] = 1), 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING'],
    ['signature reserved tail', (b) => void (b[0x49f] = 1), 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING'],
    // microsoft/TEE-Attestation-Verification expectations (MANIFEST): unsupported processors.
    ['cpuid 0x19/0x20', (b) => void ((b[0x188] = 0x19), (b[0x189] = 0x20)), 'ERR_ATT_SNP_UNSUPPORTED_PRODUCT'],
    ['cpuid 0x1A/0x12', (b) => void ((b[0x188] = 0x1a), (b[0x189] = 0x12)), 'ERR_ATT_SNP_UNSUPPORTED_PRODUCT'],
    ['cpuid 0x1B/0x00', (b) => void ((b[0x188] = 0x1b), (b[0x189] = 0x00)), 'ERR_ATT_SNP_UNSUPPORTED_PRODUCT'],
    ['cpuid 0/0 in a v3 report', (b) => void ((b[0x188] = 0), (b[0x189] = 0)), 'ERR_ATT_SNP_UNSUPPORTED_PRODUCT'],
  ];
  for (const [name, mutate, code] of cases) {
    it(`${name} -> ${code}`, () => {
      const b = good();
      const out = mutate(b) ?? b;
      expect(codeOf(() => parseSnpReport(out))).toBe(code);
    });
  }

  it('a v2 report must have zero cpuid bytes', () => {
    const b = Buffer.from(vec('sev-snp/go-sev-guest/attestation.bin'));
    b[0x188] = 0x19;
    expect(codeOf(() => parseSnpReport(b))).toBe('ERR_ATT_SNP_RESERVED_NONZERO');
  });

  it('rejects non-Uint8Array input with a typed error', () => {
    expect(codeOf(() => parseSnpReport('x' as unknown as Uint8Array))).toBe('ERR_ATT_BAD_ARGUMENT');
  });
});

describe('product and TCB decoding', () => {
  it('maps CPUID family/model to products', () => {
    expect(productFromCpuid(0x19, 0x01)).toBe('Milan');
    expect(productFromCpuid(0x19, 0x11)).toBe('Genoa');
    expect(productFromCpuid(0x19, 0xa0)).toBe('Genoa');
    expect(productFromCpuid(0x1a, 0x02)).toBe('Turin');
    expect(productFromCpuid(0x1a, 0x11)).toBe('Turin');
    expect(productFromCpuid(0x19, 0x20)).toBeUndefined();
    expect(productFromCpuid(0x1a, 0x12)).toBeUndefined();
    expect(productFromCpuid(0x17, 0x31)).toBeUndefined();
  });

  it('decodes both TCB byte orders', () => {
    const t = Buffer.alloc(8);
    t.writeBigUInt64LE(0x5100000004010101n);
    expect(decodeTcb(t, 'turin')).toMatchObject({ fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 81 });
    t.writeBigUInt64LE(0xdb18000000000004n);
    const m = decodeTcb(t, 'milan-genoa');
    expect(m).toMatchObject({ bootloader: 4, tee: 0, snp: 24, microcode: 219 });
    expect(m.fmc).toBeUndefined();
  });
});

describe('parseSnpReport: property tests', () => {
  const onlyTypedErrors = (b: Uint8Array): boolean => {
    const c = codeOf(() => parseSnpReport(b));
    return c !== 'foreign error';
  };

  it('arbitrary bytes give a struct or the package error, never another exception', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), onlyTypedErrors), { numRuns: 500 });
    fc.assert(fc.property(fc.uint8Array({ minLength: 1184, maxLength: 1184 }), onlyTypedErrors), { numRuns: 500 });
  });

  it('mutated real reports give a struct or the package error', () => {
    const bases = Object.values(FACTS).map((f) => vec(f.file));
    bases.push(vec('sev-snp/go-sev-guest/attestation.bin'), vec('sev-snp/trustee/test-vlek-report.bin'));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: bases.length - 1 }),
        fc.array(fc.tuple(fc.integer({ min: 0, max: 1183 }), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.integer({ min: -3, max: 3 }),
        (i, edits, sizeDelta) => {
          const b = Buffer.from(bases[i]!);
          for (const [off, v] of edits) b[off] = v;
          const sized = sizeDelta >= 0 ? Buffer.concat([b, Buffer.alloc(sizeDelta)]) : b.subarray(0, b.length + sizeDelta);
          return onlyTypedErrors(sized);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
