import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { verifySnpEvidence } from './verify.js';
import { evaluateSnpEvidence } from './evaluate.js';
import { certificateDer } from './certs.js';
import * as L from './layout.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { SimulatedSnp } from '../sim/simulated-snp.js';
import { mintSnpEvidence, SIM_TEST_MEASUREMENT, encodeTcb, type MintOptions } from '../sim/testing.js';
import type { SnpEvidence } from '../types.js';
import type { SnpPolicyInput } from './policy.js';
import { toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';

/**
 * Table-driven negative tests: one valid simulated report, and for each check a copy with
 * exactly that field group changed and RE-SIGNED by the simulator's VCEK key (the test
 * mint), so the signature stays valid and only the targeted check can fail. Signature
 * tricks tamper AFTER signing. Each row asserts the error code (never message text), or,
 * for policy rules, the failing claim field.
 */

// Certificates are minted at CREATED and checked at NOW; no test reads the clock.
const CREATED = new Date('2026-05-01T00:00:00Z');
const NOW = new Date('2026-06-01T00:00:00Z');
const RD = new Uint8Array(64).fill(0x42);
const MEAS_HEX = toHex(SIM_TEST_MEASUREMENT);

/** Order of the P-384 group (SEC 2, secp384r1 parameter n). */
const P384_N = BigInt('0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973');

let tmp: string;
let sim: SimulatedSnp;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cir-neg-'));
  sim = await SimulatedSnp.open(path.join(tmp, 'sim'), { now: CREATED });
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

function verifyMinted(ev: SnpEvidence, opts: { now?: Date; expectedReportData?: Uint8Array } = {}) {
  return verifySnpEvidence(ev, { now: opts.now ?? NOW, expectedReportData: opts.expectedReportData ?? RD, trust: sim.trustOptions() });
}

const mint = (o: MintOptions = {}): SnpEvidence => mintSnpEvidence(sim, { reportData: RD, ...o });

// --- byte helpers (little-endian, as in the report) ------------------------------------
const setU32 = (off: number, v: number) => (b: Uint8Array): void => new DataView(b.buffer, b.byteOffset).setUint32(off, v >>> 0, true);
const orByte = (off: number, v: number) => (b: Uint8Array): void => void (b[off] = b[off]! | v);

function readScalar(b: Uint8Array, off: number): bigint {
  let v = 0n;
  for (let i = L.SIG_P384_SCALAR_SIZE - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[off + i]!);
  return v;
}
function writeScalar(b: Uint8Array, off: number, v: bigint): void {
  if (v < 0n || v >= 1n << 384n) throw new RangeError('scalar does not fit in 48 bytes');
  for (let i = 0; i < L.SIG_P384_SCALAR_SIZE; i++) {
    b[off + i] = Number(v & 0xffn);
    v >>= 8n;
  }
}
const setScalar = (off: number, f: (old: bigint) => bigint) => (b: Uint8Array): void => writeScalar(b, off, f(readScalar(b, off)));
const reverseScalar = (off: number) => (b: Uint8Array): void => {
  b.subarray(off, off + L.SIG_P384_SCALAR_SIZE).reverse();
};

describe('control', () => {
  it('the unmodified minted report verifies and passes a policy naming its measurement', async () => {
    const ev = mint();
    const claims = await verifyMinted(ev);
    expect(claims.simulated).toBe(true);
    const r = await evaluateSnpEvidence(ev, {
      now: NOW,
      expectedReportData: RD,
      trust: sim.trustOptions(),
      policy: { measurements: [MEAS_HEX], allowSimulated: true },
    });
    expect(r.failures).toEqual([]);
  });
});

describe('field groups re-signed by the VCEK key: the verifier names the one failing check', () => {
  const flags = (signingKey: number, extra = 0): number => (signingKey << L.FLAG_SIGNING_KEY_SHIFT) | extra;
  const cases: { name: string; mint: MintOptions; code: AttestationErrorCode }[] = [
    // version
    ...[0, 1, 4, 6, 0xffffffff].map((v) => ({
      name: `version ${v}`,
      mint: { patch: setU32(L.OFF_VERSION, v) },
      code: 'ERR_ATT_SNP_UNSUPPORTED_VERSION' as const,
    })),
    // signature algorithm
    ...[0, 2, 0xffffffff].map((v) => ({
      name: `signature_algo ${v}`,
      mint: { fields: { signatureAlgo: v } },
      code: 'ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO' as const,
    })),
    // signing key
    ...[2, 3, 4, 5, 6, 7].map((k) => ({
      name: `signing_key ${k}`,
      mint: { fields: { flags: flags(k) } },
      code: 'ERR_ATT_SNP_UNSUPPORTED_SIGNING_KEY' as const,
    })),
    { name: 'signing_key 1 (VLEK) with only a VCEK', mint: { fields: { flags: flags(1) } }, code: 'ERR_ATT_SNP_SIGNING_KEY_MISMATCH' },
    // guest policy must-be-one / must-be-zero bits
    { name: 'policy bit 17 (must be one) clear', mint: { fields: { policy: 0x10000n } }, code: 'ERR_ATT_SNP_BAD_GUEST_POLICY' },
    ...[26n, 32n, 63n].map((bit) => ({
      name: `policy bit ${bit} (must be zero) set`,
      mint: { fields: { policy: 0x30000n | (1n << bit) } },
      code: 'ERR_ATT_SNP_BAD_GUEST_POLICY' as const,
    })),
    // reserved ranges
    ...[
      ['flags bit 5', (b: Uint8Array) => setU32(L.OFF_FLAGS, 1 << 5)(b)],
      ['flags bit 31', (b: Uint8Array) => setU32(L.OFF_FLAGS, 1 << 31)(b)],
      ['0x04C', orByte(L.OFF_RESERVED_04C, 1)],
      ['0x04F', orByte(L.OFF_RESERVED_04C + 3, 0x80)],
      ['0x18B (after CPUID)', orByte(L.OFF_RESERVED_18B, 1)],
      ['0x19F', orByte(L.OFF_CHIP_ID - 1, 1)],
      ['0x1EB', orByte(L.OFF_RESERVED_1EB, 1)],
      ['0x1EF', orByte(L.OFF_RESERVED_1EF, 1)],
      ['0x1F8 (launch_mit_vector before v5)', orByte(L.OFF_LAUNCH_MIT_VECTOR, 1)],
      ['0x207 (current_mit_vector before v5)', orByte(L.OFF_RESERVED_208 - 1, 1)],
      ['0x208', orByte(L.OFF_RESERVED_208, 1)],
      ['0x29F (last signed byte)', orByte(L.SIGNED_REGION_END - 1, 1)],
    ].map(([name, patch]) => ({
      name: `reserved ${name as string} non-zero`,
      mint: { patch: patch as (b: Uint8Array) => void },
      code: 'ERR_ATT_SNP_RESERVED_NONZERO' as const,
    })),
    // CPUID
    { name: 'cpuid of an unknown family', mint: { fields: { cpuid: { family: 0x1b, model: 0, stepping: 0 } } }, code: 'ERR_ATT_SNP_UNSUPPORTED_PRODUCT' },
    { name: 'cpuid says Milan, VCEK says Genoa', mint: { fields: { cpuid: { family: 0x19, model: 0x01, stepping: 1 } } }, code: 'ERR_ATT_SNP_PRODUCT_MISMATCH' },
    // binding to the VCEK
    ...(['bootloader', 'tee', 'snp', 'microcode'] as const).map((k) => ({
      name: `reported_tcb.${k} differs from the VCEK`,
      mint: { fields: { reportedTcb: encodeTcb({ bootloader: 10, tee: 0, snp: 23, microcode: 84, [k]: 99 }, 'milan-genoa') } },
      code: 'ERR_ATT_SNP_TCB_MISMATCH' as const,
    })),
    { name: 'chip_id differs from the VCEK hwID', mint: { fields: { chipId: new Uint8Array(64).fill(7) } }, code: 'ERR_ATT_SNP_CHIP_ID_MISMATCH' },
    { name: 'chip_id one bit off', mint: { patch: (b) => void (b[L.OFF_CHIP_ID + 17] = b[L.OFF_CHIP_ID + 17]! ^ 1) }, code: 'ERR_ATT_SNP_CHIP_ID_MISMATCH' },
    // report_data binding (signed by the key: only the comparison can catch it)
    { name: 'report_data differs from the expected value', mint: { reportData: new Uint8Array(64).fill(0x43) }, code: 'ERR_ATT_SNP_REPORT_DATA_MISMATCH' },
    { name: 'report_data differs in its last byte', mint: { patch: (b) => void (b[L.OFF_REPORT_DATA + 63] = 0) }, code: 'ERR_ATT_SNP_REPORT_DATA_MISMATCH' },
  ];

  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, async () => {
      expect(await codeOf(verifyMinted(mint(c.mint)))).toBe(c.code);
    });
  }
});

describe('signature tricks (after signing)', () => {
  const r = L.OFF_SIG_R;
  const s = L.OFF_SIG_S;
  const cases: { name: string; tamper: (b: Uint8Array) => void; code: AttestationErrorCode }[] = [
    { name: 'r = 0', tamper: setScalar(r, () => 0n), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 's = 0', tamper: setScalar(s, () => 0n), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'r = s = 0', tamper: (b) => b.fill(0, L.OFF_SIGNATURE, L.REPORT_SIZE), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'r = n', tamper: setScalar(r, () => P384_N), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 's = n', tamper: setScalar(s, () => P384_N), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'r = n + 1', tamper: setScalar(r, () => P384_N + 1n), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'r = 2^384 - 1', tamper: setScalar(r, () => (1n << 384n) - 1n), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 's = 2^384 - 1', tamper: setScalar(s, () => (1n << 384n) - 1n), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    {
      // r + n (and s + n) would be the classic "same value mod n" trick; they fit in 48
      // bytes only when r < 2^384 - n (about 2^190), which a real signature never is, so
      // the encoding rule (48 significant bytes) is what rejects them.
      name: 'r + n (spills into byte 48)',
      tamper: (b) => {
        const v = readScalar(b, r) + P384_N;
        writeScalar(b, r, v & ((1n << 384n) - 1n));
        b[r + L.SIG_P384_SCALAR_SIZE] = Number(v >> 384n);
      },
      code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING',
    },
    { name: 'r big-endian instead of little-endian', tamper: reverseScalar(r), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 's big-endian instead of little-endian', tamper: reverseScalar(s), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    {
      name: 'r and s swapped',
      tamper: (b) => {
        const rv = b.slice(r, r + L.SIG_COMPONENT_SIZE);
        b.copyWithin(r, s, s + L.SIG_COMPONENT_SIZE);
        b.set(rv, s);
      },
      code: 'ERR_ATT_SNP_BAD_SIGNATURE',
    },
    { name: 'r padding byte 48 non-zero', tamper: orByte(r + L.SIG_P384_SCALAR_SIZE, 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING' },
    { name: 'r padding byte 71 non-zero', tamper: orByte(r + L.SIG_COMPONENT_SIZE - 1, 0x80), code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING' },
    { name: 's padding byte 48 non-zero', tamper: orByte(s + L.SIG_P384_SCALAR_SIZE, 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING' },
    { name: 'signature reserved tail (0x330) non-zero', tamper: orByte(L.OFF_SIG_RESERVED, 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING' },
    { name: 'last byte of the report non-zero', tamper: orByte(L.REPORT_SIZE - 1, 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE_ENCODING' },
    { name: 'one signed byte (measurement) flipped', tamper: (b) => void (b[L.OFF_MEASUREMENT] = b[L.OFF_MEASUREMENT]! ^ 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
  ];
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, async () => {
      expect(await codeOf(verifyMinted(mint({ tamper: c.tamper })))).toBe(c.code);
    });
  }
});

describe('policy rules on verified claims (validate): the failure names the field', () => {
  const base: SnpPolicyInput = { measurements: [MEAS_HEX], allowSimulated: true };
  const tcbMin = { bootloader: 10, tee: 0, snp: 23, microcode: 84 };
  const cases: { name: string; mint?: MintOptions; policy?: SnpPolicyInput; fields: string[] }[] = [
    { name: 'measurement not in the allow-list', mint: { measurement: new Uint8Array(48).fill(1) }, fields: ['measurement'] },
    { name: 'measurement one bit off', mint: { patch: (b) => void (b[L.OFF_MEASUREMENT + 47] = b[L.OFF_MEASUREMENT + 47]! ^ 1) }, fields: ['measurement'] },
    { name: 'DEBUG policy bit', mint: { policy: 0x30000n | (1n << 19n) }, fields: ['policy.debug'] },
    { name: 'migration agent policy bit', mint: { policy: 0x30000n | (1n << 18n) }, fields: ['policy.migrationAgent'] },
    { name: 'VMPL 2 under the default (VMPL 0)', mint: { vmpl: 2 }, fields: ['vmpl'] },
    { name: 'VMPL 0 where the policy wants 1', policy: { ...base, vmpl: 1 }, fields: ['vmpl'] },
    { name: 'simulated without allowSimulated', policy: { measurements: [MEAS_HEX] }, fields: ['simulated'] },
    {
      name: 'minTcb.snp above reported',
      policy: { ...base, minTcb: { ...tcbMin, snp: 24 } },
      fields: ['reportedTcb.snp', 'committedTcb.snp', 'launchTcb.snp'],
    },
    { name: 'host_data not allowed', policy: { ...base, hostData: ['11'.repeat(32)] }, fields: ['hostData'] },
    { name: 'chip_id not allowed', policy: { ...base, chipIds: ['22'.repeat(64)] }, fields: ['chipId'] },
    { name: 'guest SVN below minimum', mint: { guestSvn: 1 }, policy: { ...base, minGuestSvn: 2 }, fields: ['guestSvn'] },
    { name: 'current firmware below minimum', policy: { ...base, minFirmware: '1.56' }, fields: ['firmware.current'] },
    {
      name: 'committed firmware older than current (provisional)',
      mint: { fields: { committedFirmware: { major: 1, minor: 55, build: 39 } } },
      fields: ['firmware.committed'],
    },
    {
      name: 'committed TCB older than current (provisional)',
      mint: { fields: { currentTcb: encodeTcb({ ...tcbMin, microcode: 85 }, 'milan-genoa') } },
      fields: ['committedTcb'],
    },
    { name: 'reportData pinned by policy differs', policy: { ...base, reportData: '00'.repeat(64) }, fields: ['reportData'] },
  ];
  for (const c of cases) {
    it(`${c.name} -> ${c.fields.join(', ')}`, async () => {
      const r = await evaluateSnpEvidence(mint(c.mint), {
        now: NOW,
        expectedReportData: RD,
        trust: sim.trustOptions(),
        policy: c.policy ?? base,
      });
      expect(r.failures.map((f) => f.field)).toEqual(c.fields);
    });
  }
});

describe('certificate validity bounds are inclusive (RFC 5280)', () => {
  let notBefore: Date;
  let notAfter: Date;
  beforeAll(() => {
    const vcek = new x509.X509Certificate(sim.vcekDer);
    notBefore = vcek.notBefore;
    notAfter = vcek.notAfter;
    // The simulated CAs outlive the VCEK, so only the VCEK bound is hit at notAfter.
    expect(new x509.X509Certificate(sim.askDer).notAfter.getTime()).toBeGreaterThan(notAfter.getTime());
  });

  it('exactly at notBefore and at notAfter: valid', async () => {
    expect(await codeOf(verifyMinted(mint(), { now: notBefore }))).toBe('no error');
    expect(await codeOf(verifyMinted(mint(), { now: notAfter }))).toBe('no error');
  });

  it('notBefore - 1 s: ERR_ATT_SNP_CERT_NOT_YET_VALID', async () => {
    expect(await codeOf(verifyMinted(mint(), { now: new Date(notBefore.getTime() - 1000) }))).toBe('ERR_ATT_SNP_CERT_NOT_YET_VALID');
  });

  it('notAfter + 1 s: ERR_ATT_SNP_CERT_EXPIRED', async () => {
    expect(await codeOf(verifyMinted(mint(), { now: new Date(notAfter.getTime() + 1000) }))).toBe('ERR_ATT_SNP_CERT_EXPIRED');
  });
});

describe('wrong product chain (real vectors)', () => {
  const VEC = new URL('../../test/data/vectors/', import.meta.url);
  const report = (p: string): Uint8Array => new Uint8Array(readFileSync(new URL(p, VEC)));
  const pem = (p: string): Uint8Array => certificateDer(readFileSync(new URL(p, VEC), 'utf8'), p);
  const milan = { report: 'sev-snp/microsoft/milan_attestation_report.bin', vcek: 'sev-snp/microsoft/milan_vcek.pem' };
  const genoa = { report: 'sev-snp/microsoft/genoa_attestation_report.bin', vcek: 'sev-snp/microsoft/genoa_vcek.pem' };
  const ev = (r: Uint8Array, vcek: Uint8Array): SnpEvidence => ({
    tee: 'sev-snp',
    report: Buffer.from(r).toString('base64'),
    certs: { vcek: Buffer.from(vcek).toString('base64') },
  });
  const cases = [
    { name: 'Milan VCEK with a Genoa report', report: genoa.report, vcek: milan.vcek },
    { name: 'Genoa VCEK with a Milan report', report: milan.report, vcek: genoa.vcek },
  ];
  for (const c of cases) {
    it(`${c.name} -> ERR_ATT_SNP_PRODUCT_MISMATCH`, async () => {
      const r = report(c.report);
      const p = verifySnpEvidence(ev(r, pem(c.vcek)), { now: NOW, expectedReportData: r.slice(L.OFF_REPORT_DATA, L.OFF_MEASUREMENT) });
      expect(await codeOf(p)).toBe('ERR_ATT_SNP_PRODUCT_MISMATCH');
    });
  }
});
