import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { KeyObject } from 'node:crypto';
import { verifySnpEvidence, verifySnpReport } from './verify.js';
import { certificateDer, parseCertificate } from './certs.js';
import { verifyCertChain } from './chain.js';
import { AMD_ARK_SPKI_SHA256, amdChain } from './roots.js';
import { validateSnpClaims } from './validate.js';
import { parseSnpPolicy } from './policy.js';
import { SnpEvidenceVerifier, evaluateSnpEvidence } from './evaluate.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { mintRootCa, mintIntermediateCa, mintVcek, generateVcekKeys } from '../sim/testing.js';
import { signSnpReport } from '../sim/report.js';
import type { SnpEvidence } from '../types.js';
import { x509 } from '../../common/x509.js';

const VEC = new URL('../../test/data/vectors/', import.meta.url);
const vec = (p: string): Buffer => readFileSync(new URL(p, VEC));
const pemCert = (p: string): Uint8Array => certificateDer(readFileSync(new URL(p, VEC), 'utf8'), p);

const NOW = new Date('2026-06-01T00:00:00Z');
const VLEK_NOW = new Date('2025-06-01T00:00:00Z');
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const rd = (report: Uint8Array): Uint8Array => report.slice(0x50, 0x90);

function evidence(report: Uint8Array, certs: Record<string, Uint8Array>): SnpEvidence {
  return { tee: 'sev-snp', report: b64(report), certs: Object.fromEntries(Object.entries(certs).map(([k, v]) => [k, b64(v)])) };
}

async function codeOf(p: Promise<unknown>): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

const MS = {
  milan: { report: 'sev-snp/microsoft/milan_attestation_report.bin', vcek: 'sev-snp/microsoft/milan_vcek.pem' },
  genoa: { report: 'sev-snp/microsoft/genoa_attestation_report.bin', vcek: 'sev-snp/microsoft/genoa_vcek.pem' },
  turin: { report: 'sev-snp/microsoft/turin_attestation_report.bin', vcek: 'sev-snp/microsoft/turin_vcek.pem' },
};

describe('real Microsoft reports verify against the pinned AMD roots (now = 2026-06-01)', () => {
  // Expected values: /work/shared/vectors/MANIFEST.md, "Key facts per evidence".
  const expected = {
    milan: { product: 'Milan', productName: 'Milan-B0', version: 3, tcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 }, fw: '1.55.29' },
    genoa: { product: 'Genoa', productName: 'Genoa', version: 3, tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 }, fw: '1.55.40' },
    turin: {
      product: 'Turin',
      productName: 'Turin',
      version: 5,
      tcb: { fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 81 },
      fw: '1.55.65',
    },
  } as const;
  for (const [name, files] of Object.entries(MS)) {
    it(name, async () => {
      const report = vec(files.report);
      const e = expected[name as keyof typeof expected];
      const claims = await verifySnpEvidence(evidence(report, { vcek: pemCert(files.vcek) }), { now: NOW, expectedReportData: rd(report) });
      expect(claims.tee).toBe('sev-snp');
      expect(claims.simulated).toBe(false);
      expect(claims.product).toBe(e.product);
      expect(claims.productName).toBe(e.productName);
      expect(claims.reportVersion).toBe(e.version);
      expect(claims.signingKey).toBe('vcek');
      expect(claims.reportedTcb).toEqual(e.tcb);
      expect(claims.currentTcb).toEqual(e.tcb);
      expect(claims.committedTcb).toEqual(e.tcb);
      expect(claims.launchTcb).toEqual(e.tcb);
      expect(claims.firmware).toEqual({ current: e.fw, committed: e.fw });
      expect(claims.guestSvn).toBe(2);
      expect(claims.vmpl).toBe(0);
      expect(claims.policy).toEqual({ abiMajor: 0, abiMinor: 31, smt: true, migrationAgent: false, debug: false, singleSocket: false });
      expect(claims.relaxations).toEqual([]);
      expect(claims.reportData).toBe('0'.repeat(128));
      expect(claims.measurement).toMatch(/^[0-9a-f]{96}$/);
      expect(Object.isFrozen(claims)).toBe(true);
    });
  }

  it('evidence may carry the bundled ASK and ARK (byte-identical)', async () => {
    const report = vec(MS.genoa.report);
    const { intermediate, ark } = amdChain('Genoa', 'vcek');
    const claims = await verifySnpEvidence(
      evidence(report, { vcek: pemCert(MS.genoa.vcek), ask: intermediate.der, ark: ark.der }),
      { now: NOW, expectedReportData: rd(report) },
    );
    expect(claims.product).toBe('Genoa');
  });

  it('accepts certificate validity bounds inclusively (now == VCEK notBefore / notAfter)', async () => {
    const report = vec(MS.turin.report);
    const vcek = pemCert(MS.turin.vcek);
    const c = parseCertificate(vcek, 'VCEK');
    for (const now of [c.notBefore, c.notAfter]) {
      await expect(verifySnpEvidence(evidence(report, { vcek }), { now, expectedReportData: rd(report) })).resolves.toBeTruthy();
    }
    const before = new Date(c.notBefore.getTime() - 1000);
    const after = new Date(c.notAfter.getTime() + 1000);
    expect(await codeOf(verifySnpEvidence(evidence(report, { vcek }), { now: before, expectedReportData: rd(report) }))).toBe(
      'ERR_ATT_SNP_CERT_NOT_YET_VALID',
    );
    expect(await codeOf(verifySnpEvidence(evidence(report, { vcek }), { now: after, expectedReportData: rd(report) }))).toBe(
      'ERR_ATT_SNP_CERT_EXPIRED',
    );
  });
});

describe('other real evidence', () => {
  const vlekReport = vec('sev-snp/trustee/test-vlek-report.bin');
  const vlek = vec('sev-snp/trustee/test-vlek.der');

  it('the trustee VLEK report verifies at 2025-06-01 (VLEK <- ASVK <- ARK-Milan)', async () => {
    const claims = await verifySnpEvidence(evidence(vlekReport, { vlek }), { now: VLEK_NOW, expectedReportData: rd(vlekReport) });
    expect(claims.signingKey).toBe('vlek');
    expect(claims.product).toBe('Milan');
    expect(claims.vmpl).toBe(1);
    expect(claims.reportedTcb).toEqual({ bootloader: 4, tee: 0, snp: 24, microcode: 217 });
    expect(claims.cspId).toBe('CN=cc-us-east-2.amazonaws.com');
  });

  it('VMPL 1 evidence (trustee VLEK, GCP report) verifies but a default policy rejects it', async () => {
    // Security review: absent `vmpl` used to mean "any VMPL"; it now means VMPL 0.
    const gcp = vec('sev-snp/teekit-gcp/sev-gcp-reportdata.bin');
    const gcpVcek = pemCert('sev-snp/teekit-gcp/sev-gcp-vcek.pem');
    // The trustee report runs provisional firmware (committed TCB older than current).
    const cases = [
      { ev: evidence(vlekReport, { vlek }), now: VLEK_NOW, report: vlekReport, base: { allowProvisionalFirmware: true } },
      { ev: evidence(gcp, { vcek: gcpVcek }), now: NOW, report: gcp, base: {} },
    ];
    for (const c of cases) {
      const opts = { now: c.now, expectedReportData: rd(c.report) };
      const claims = await verifySnpEvidence(c.ev, opts);
      expect(claims.vmpl).toBe(1);
      const base = { ...c.base, measurements: [claims.measurement] };
      const baseRelaxations = 'allowProvisionalFirmware' in c.base ? ['allow-provisional-firmware'] : [];
      const byDefault = await evaluateSnpEvidence(c.ev, { ...opts, policy: base });
      expect(byDefault.failures).toEqual([{ field: 'vmpl', expected: '0', observed: '1' }]);
      expect(byDefault.claims.relaxations).toEqual(baseRelaxations);
      const exact = await evaluateSnpEvidence(c.ev, { ...opts, policy: { ...base, vmpl: 1 } });
      expect(exact.failures).toEqual([]);
      expect(exact.claims.relaxations).toEqual(baseRelaxations);
      const any = await evaluateSnpEvidence(c.ev, { ...opts, policy: { ...base, anyVmpl: true } });
      expect(any.failures).toEqual([]);
      expect(any.claims.relaxations).toEqual([...baseRelaxations, 'any-vmpl']);
    }
  });

  it('the VMPL 0 GCP report passes a default policy', async () => {
    const report = vec('sev-snp/teekit-gcp/sev-gcp.bin');
    const ev = evidence(report, { vcek: pemCert('sev-snp/teekit-gcp/sev-gcp-vcek.pem') });
    const opts = { now: NOW, expectedReportData: rd(report) };
    const claims = await verifySnpEvidence(ev, opts);
    expect(claims.vmpl).toBe(0);
    expect((await evaluateSnpEvidence(ev, { ...opts, policy: { measurements: [claims.measurement] } })).failures).toEqual([]);
  });

  it('the VLEK has expired by 2026-06-01', async () => {
    const p = verifySnpEvidence(evidence(vlekReport, { vlek }), { now: NOW, expectedReportData: rd(vlekReport) });
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_CERT_EXPIRED');
  });

  it('a VLEK report with only a VCEK, or a VCEK report with a VLEK, is rejected', async () => {
    const p1 = verifySnpEvidence(evidence(vlekReport, { vcek: pemCert(MS.milan.vcek) }), { now: VLEK_NOW, expectedReportData: rd(vlekReport) });
    expect(await codeOf(p1)).toBe('ERR_ATT_SNP_SIGNING_KEY_MISMATCH');
    const milan = vec(MS.milan.report);
    const p2 = verifySnpEvidence(evidence(milan, { vcek: vlek }), { now: VLEK_NOW, expectedReportData: rd(milan) });
    expect(await codeOf(p2)).toBe('ERR_ATT_SNP_SIGNING_KEY_MISMATCH');
    const p3 = verifySnpEvidence(evidence(milan, { vlek }), { now: VLEK_NOW, expectedReportData: rd(milan) });
    expect(await codeOf(p3)).toBe('ERR_ATT_SNP_SIGNING_KEY_MISMATCH');
  });

  it('go-sev-guest attestation.bin (v2, debug) verifies, but a default policy rejects debug', async () => {
    const report = vec('sev-snp/go-sev-guest/attestation.bin');
    const claims = await verifySnpEvidence(evidence(report, { vcek: vec('sev-snp/go-sev-guest/vcek.der') }), {
      now: NOW,
      expectedReportData: rd(report),
    });
    expect(claims.reportVersion).toBe(2);
    expect(claims.product).toBe('Milan');
    expect(claims.policy.debug).toBe(true);
    expect(claims.reportedTcb).toEqual({ bootloader: 2, tee: 0, snp: 5, microcode: 68 });
    const failures = validateSnpClaims(claims, parseSnpPolicy({ measurements: [claims.measurement] }));
    expect(failures).toEqual([{ field: 'policy.debug', expected: 'false', observed: 'true' }]);
    expect(validateSnpClaims(claims, parseSnpPolicy({ measurements: [claims.measurement], allowDebug: true }))).toEqual([]);
  });

  it('SnpEvidenceVerifier (EvidenceVerifier) and evaluateSnpEvidence run the same pipeline', async () => {
    const report = vec(MS.genoa.report);
    const ev = evidence(report, { vcek: pemCert(MS.genoa.vcek) });
    const v = new SnpEvidenceVerifier();
    expect(v.tee).toBe('sev-snp');
    const claims = await v.verify(ev, { now: NOW, expectedReportData: rd(report) });
    expect(claims.product).toBe('Genoa');
    const r = await evaluateSnpEvidence(ev, {
      now: NOW,
      expectedReportData: rd(report),
      policy: { measurements: [claims.measurement], minTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 } },
    });
    expect(r.failures).toEqual([]);
    const r2 = await evaluateSnpEvidence(ev, {
      now: NOW,
      expectedReportData: rd(report),
      policy: { anyMeasurement: true, minTcb: { bootloader: 10, tee: 0, snp: 24, microcode: 84 } },
    });
    expect(r2.claims.relaxations).toEqual(['any-measurement']);
    expect(r2.failures.map((f) => f.field)).toEqual(['reportedTcb.snp', 'committedTcb.snp', 'launchTcb.snp']);
  });
});

describe('negative table on real evidence', () => {
  type Case = {
    name: string;
    base?: keyof typeof MS;
    mutate?: (b: Buffer) => Buffer | void;
    certs?: () => Record<string, Uint8Array>;
    now?: Date;
    expected?: (report: Uint8Array) => Uint8Array;
    code: AttestationErrorCode;
  };
  const setU32 = (off: number, v: number) => (b: Buffer): void => void b.writeUInt32LE(v, off);
  const cases: Case[] = [
    { name: 'flip byte 100 (report_data, expected follows it)', mutate: (b) => void (b[100] = b[100]! ^ 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'flip byte 0x90 (measurement)', mutate: (b) => void (b[0x90] = b[0x90]! ^ 0x80), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'flip signature r', mutate: (b) => void (b[0x2a0] = b[0x2a0]! ^ 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'reported_tcb changed (signed field)', mutate: (b) => void (b[0x180] = b[0x180]! + 1), code: 'ERR_ATT_SNP_BAD_SIGNATURE' },
    { name: 'signature_algo = 2', mutate: setU32(0x34, 2), code: 'ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO' },
    { name: 'signing key 1 (VLEK) on a VCEK report', mutate: setU32(0x48, 1 << 2), code: 'ERR_ATT_SNP_SIGNING_KEY_MISMATCH' },
    { name: 'signing key 7 (none)', mutate: setU32(0x48, 7 << 2), code: 'ERR_ATT_SNP_UNSUPPORTED_SIGNING_KEY' },
    { name: 'report one byte short', mutate: (b) => b.subarray(0, 1183), code: 'ERR_ATT_SNP_BAD_SIZE' },
    { name: 'report with trailing byte', mutate: (b) => Buffer.concat([b, Buffer.alloc(1)]), code: 'ERR_ATT_SNP_BAD_SIZE' },
    { name: 'unknown version 4', mutate: setU32(0, 4), code: 'ERR_ATT_SNP_UNSUPPORTED_VERSION' },
    { name: 'Milan VCEK with a Genoa report', certs: () => ({ vcek: pemCert(MS.milan.vcek) }), code: 'ERR_ATT_SNP_PRODUCT_MISMATCH' },
    { name: 'Turin VCEK with a Genoa report', certs: () => ({ vcek: pemCert(MS.turin.vcek) }), code: 'ERR_ATT_SNP_PRODUCT_MISMATCH' },
    { name: 'Genoa VCEK with a Milan report', base: 'milan', certs: () => ({ vcek: pemCert(MS.genoa.vcek) }), code: 'ERR_ATT_SNP_PRODUCT_MISMATCH' },
    { name: 'Genoa VCEK with a Turin report', base: 'turin', certs: () => ({ vcek: pemCert(MS.genoa.vcek) }), code: 'ERR_ATT_SNP_PRODUCT_MISMATCH' },
    {
      name: 'Milan report relabelled as Genoa via cpuid (signed field)',
      base: 'milan',
      mutate: (b) => void (b[0x189] = 0x11),
      certs: () => ({ vcek: pemCert(MS.milan.vcek) }),
      code: 'ERR_ATT_SNP_PRODUCT_MISMATCH',
    },
    { name: 'before the VCEK notBefore', now: new Date('2026-01-01T00:00:00Z'), code: 'ERR_ATT_SNP_CERT_NOT_YET_VALID' },
    { name: 'after the VCEK notAfter', now: new Date('2033-06-01T00:00:00Z'), code: 'ERR_ATT_SNP_CERT_EXPIRED' },
    { name: 'after the ARK notAfter', now: new Date('2050-01-01T00:00:00Z'), code: 'ERR_ATT_SNP_CERT_EXPIRED' },
    { name: 'expected report_data differs', expected: () => new Uint8Array(64).fill(1), code: 'ERR_ATT_SNP_REPORT_DATA_MISMATCH' },
    { name: 'no certificates', certs: () => ({}), code: 'ERR_ATT_SNP_MISSING_CERT' },
    { name: 'VCEK is not a certificate', certs: () => ({ vcek: new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]) }), code: 'ERR_ATT_SNP_BAD_CERT' },
    {
      name: 'evidence ASK is another product’s ASK',
      certs: () => ({ vcek: pemCert(MS.genoa.vcek), ask: amdChain('Milan', 'vcek').intermediate.der }),
      code: 'ERR_ATT_SNP_UNTRUSTED_CERT',
    },
    {
      name: 'evidence ARK is another product’s ARK',
      certs: () => ({ vcek: pemCert(MS.genoa.vcek), ark: amdChain('Milan', 'vcek').ark.der }),
      code: 'ERR_ATT_SNP_ARK_PIN_MISMATCH',
    },
    {
      name: 'ASK presented as the VCEK',
      certs: () => ({ vcek: amdChain('Genoa', 'vcek').intermediate.der }),
      code: 'ERR_ATT_SNP_BAD_CERT_EXTENSION',
    },
  ];
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, async () => {
      const files = MS[c.base ?? 'genoa'];
      const b = Buffer.from(vec(files.report));
      const report = c.mutate?.(b) ?? b;
      const certs = c.certs ? c.certs() : { vcek: pemCert(files.vcek) };
      const expectedReportData = c.expected ? c.expected(report) : report.length >= 0x90 ? rd(report) : new Uint8Array(64);
      const p = verifySnpEvidence(evidence(report, certs), { now: c.now ?? NOW, expectedReportData });
      expect(await codeOf(p)).toBe(c.code);
    });
  }

  it('rejects malformed envelopes with ERR_ATT_SNP_BAD_EVIDENCE', async () => {
    const report = vec(MS.genoa.report);
    const good = evidence(report, { vcek: pemCert(MS.genoa.vcek) });
    const bad: unknown[] = [
      null,
      'string',
      42,
      { ...good, tee: 'tdx' },
      { ...good, extra: 1 },
      { ...good, report: good.report.replace(/=*$/, '') + '!' },
      { ...good, report: good.report.slice(0, -1) }, // unpadded / wrong length base64
      { ...good, report: `${good.report}\n` },
      { ...good, certs: { ...good.certs, other: 'AAAA' } },
      { ...good, certs: { vcek: 'A'.repeat(20000) } },
      { tee: 'sev-snp' },
    ];
    for (const e of bad) {
      expect(await codeOf(verifySnpEvidence(e, { now: NOW, expectedReportData: rd(report) }))).toBe('ERR_ATT_SNP_BAD_EVIDENCE');
    }
  });

  it('requires a 64-byte expectedReportData and a valid now', async () => {
    const report = vec(MS.genoa.report);
    const ev = evidence(report, { vcek: pemCert(MS.genoa.vcek) });
    for (const opts of [
      { now: NOW, expectedReportData: new Uint8Array(32) },
      { now: NOW, expectedReportData: undefined as unknown as Uint8Array },
      { now: new Date(NaN), expectedReportData: rd(report) },
    ]) {
      expect(await codeOf(verifySnpEvidence(ev, opts))).toBe('ERR_ATT_BAD_ARGUMENT');
    }
  });
});

describe('look-alike AMD root (self-made RSA key with the AMD names)', () => {
  const validity = { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2045-01-01T00:00:00Z') };
  let fakeArk: Awaited<ReturnType<typeof mintRootCa>>;
  let fakeAsk: Awaited<ReturnType<typeof mintIntermediateCa>>;
  let fakeVcekDer: Uint8Array;
  let fakeReport: Uint8Array;

  beforeAll(async () => {
    // Byte-identical subject names (same DER) as the real ARK-Genoa and SEV-Genoa.
    const amd = amdChain('Genoa', 'vcek');
    fakeArk = await mintRootCa(new x509.X509Certificate(amd.ark.der).subjectName, validity);
    fakeAsk = await mintIntermediateCa(new x509.X509Certificate(amd.intermediate.der).subjectName, fakeArk, validity);
    expect(Buffer.compare(parseCertificate(new Uint8Array(fakeAsk.cert.rawData), 'x').parts.subject, amd.intermediate.parts.subject)).toBe(0);
    // A report copied from the real Genoa one, re-signed by a key the fake ASK certified,
    // with a VCEK carrying the real chip's hwID and TCB.
    const real = vec(MS.genoa.report);
    const realVcek = parseCertificate(pemCert(MS.genoa.vcek), 'VCEK');
    const keys = await generateVcekKeys();
    const cert = await mintVcek(
      'OU=Engineering,C=US,L=Santa Clara,ST=CA,O=Advanced Micro Devices,CN=SEV-VCEK',
      fakeAsk,
      keys.publicKey,
      {
        productName: 'Genoa',
        structVersion: 0,
        tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
        hwId: realVcek.extensions.get('1.3.6.1.4.1.3704.1.4')!.value,
      },
      validity,
    );
    fakeVcekDer = new Uint8Array(cert.rawData);
    fakeReport = signSnpReport(new Uint8Array(real), KeyObject.from(keys.privateKey as unknown as Parameters<typeof KeyObject.from>[0]));
  });

  it('is rejected by the ARK pin when it is presented as the root', () => {
    const leaf = parseCertificate(fakeVcekDer, 'VCEK');
    const intermediate = parseCertificate(new Uint8Array(fakeAsk.cert.rawData), 'ASK');
    const root = parseCertificate(new Uint8Array(fakeArk.cert.rawData), 'ARK');
    let code: string | undefined;
    try {
      verifyCertChain({ leaf, intermediate, root, rootSpkiSha256: AMD_ARK_SPKI_SHA256.Genoa, now: NOW });
    } catch (e) {
      code = isAttestationError(e) ? e.code : 'foreign';
    }
    expect(code).toBe('ERR_ATT_SNP_ARK_PIN_MISMATCH');
  });

  it('is rejected when carried in the evidence', async () => {
    const p = verifySnpEvidence(
      evidence(fakeReport, { vcek: fakeVcekDer, ask: new Uint8Array(fakeAsk.cert.rawData), ark: new Uint8Array(fakeArk.cert.rawData) }),
      { now: NOW, expectedReportData: rd(fakeReport) },
    );
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_UNTRUSTED_CERT');
    const p2 = verifySnpEvidence(evidence(fakeReport, { vcek: fakeVcekDer, ark: new Uint8Array(fakeArk.cert.rawData) }), {
      now: NOW,
      expectedReportData: rd(fakeReport),
    });
    expect(await codeOf(p2)).toBe('ERR_ATT_SNP_ARK_PIN_MISMATCH');
  });

  it('a leaf issued under the look-alike ASK fails against the real AMD ASK', async () => {
    const p = verifySnpEvidence(evidence(fakeReport, { vcek: fakeVcekDer }), { now: NOW, expectedReportData: rd(fakeReport) });
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_CHAIN_INVALID');
  });

  it('cannot take the AMD path even when configured as the simulated root', async () => {
    const trust = { simulatedRoot: { arkDer: new Uint8Array(fakeArk.cert.rawData) }, allowSimulated: true };
    const p = verifySnpEvidence(evidence(fakeReport, { vcek: fakeVcekDer, ask: new Uint8Array(fakeAsk.cert.rawData) }), {
      now: NOW,
      expectedReportData: rd(fakeReport),
      trust,
    });
    // The leaf names the AMD ASK, so the AMD bundle is used; the evidence ASK is not it.
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_UNTRUSTED_CERT');
    const p2 = verifySnpEvidence(evidence(fakeReport, { vcek: fakeVcekDer }), { now: NOW, expectedReportData: rd(fakeReport), trust });
    expect(await codeOf(p2)).toBe('ERR_ATT_SNP_CHAIN_INVALID');
  });

  it('an AMD ARK cannot be configured as the simulated root', async () => {
    const report = vec(MS.genoa.report);
    const p = verifySnpReport(report, { vcek: pemCert(MS.genoa.vcek) }, {
      now: NOW,
      expectedReportData: rd(report),
      trust: { simulatedRoot: { arkDer: amdChain('Genoa', 'vcek').ark.der } },
    });
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_BAD_TRUST');
  });
});
