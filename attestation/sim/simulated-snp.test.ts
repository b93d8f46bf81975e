import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtemp, rm, readdir, stat, cp, unlink, readFile, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { SimulatedSnp, SIM_FILES } from './simulated-snp.js';
import { mintSnpEvidence, SIM_TEST_MEASUREMENT, encodeTcb } from './testing.js';
import { verifySnpEvidence } from '../snp/verify.js';
import { parseSnpReport } from '../snp/abi.js';
import { evaluateSnpEvidence } from '../snp/evaluate.js';
import { validateSnpClaims } from '../snp/validate.js';
import { parseSnpPolicy } from '../snp/policy.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';

// Certificates are created "now" = CREATED and checked at NOW; no test reads the clock.
const CREATED = new Date('2026-05-01T00:00:00Z');
const NOW = new Date('2026-06-01T00:00:00Z');
const RD = new Uint8Array(64).fill(7);
const MEAS_HEX = toHex(SIM_TEST_MEASUREMENT);

async function codeOf(p: Promise<unknown>): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

let tmp: string;
let sim: SimulatedSnp;
let other: SimulatedSnp;

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cir-sim-'));
  [sim, other] = await Promise.all([
    SimulatedSnp.open(path.join(tmp, 'state'), { now: CREATED }),
    SimulatedSnp.open(path.join(tmp, 'other'), { now: CREATED }),
  ]);
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('SimulatedSnp state', () => {
  it('persists exactly the public state and the VCEK key (0600); no ARK/ASK private keys', async () => {
    const dir = path.join(tmp, 'state');
    expect((await readdir(dir)).sort()).toEqual(Object.values(SIM_FILES).sort());
    expect((await stat(path.join(dir, SIM_FILES.vcekKey))).mode & 0o777).toBe(0o600);
    const chip = JSON.parse(await readFile(path.join(dir, SIM_FILES.chip), 'utf8'));
    expect(chip.chipId).toBe(sim.chip.chipId);
    expect(chip.product).toBe('Genoa');
    expect(sim.arkPem).toBe(await readFile(path.join(dir, SIM_FILES.ark), 'utf8').then((s) => s.trim()));
  });

  it('names every certificate SIMULATED and uses the AMD algorithms', () => {
    const ark = new x509.X509Certificate(sim.arkDer);
    const ask = new x509.X509Certificate(sim.askDer);
    const vcek = new x509.X509Certificate(sim.vcekDer);
    for (const c of [ark, ask, vcek]) {
      expect(c.subject).toMatch(/Simulated/);
      expect(c.subject).toMatch(/SIMULATED/);
      expect(c.signatureAlgorithm).toMatchObject({ name: 'RSA-PSS', hash: { name: 'SHA-384' }, saltLength: 48 });
    }
    expect(ark.subject).toMatch(/CN=ARK-Simulated/);
    expect(vcek.publicKey.algorithm).toMatchObject({ name: 'ECDSA', namedCurve: 'P-384' });
  });

  it('reuses existing state on a later open', async () => {
    const again = await SimulatedSnp.open(path.join(tmp, 'state'));
    expect(Buffer.compare(again.arkDer, sim.arkDer)).toBe(0);
    expect(again.chip).toEqual(sim.chip);
  });

  it('two concurrent first opens agree on one state', async () => {
    const dir = path.join(tmp, 'race');
    await mkdir(dir); // an existing empty directory is fine too
    const [a, b] = await Promise.all([SimulatedSnp.open(dir, { now: CREATED }), SimulatedSnp.open(dir, { now: CREATED })]);
    expect(Buffer.compare(a.arkDer, b.arkDer)).toBe(0);
    expect(Buffer.compare(a.vcekDer, b.vcekDer)).toBe(0);
    expect((await readdir(tmp)).filter((n) => n.includes('.tmp-'))).toEqual([]);
    const ev = await a.provider({ measurement: SIM_TEST_MEASUREMENT }).collect(RD);
    await expect(verifySnpEvidence(ev, { now: NOW, expectedReportData: RD, trust: b.trustOptions() })).resolves.toBeTruthy();
  });

  it('refuses an incomplete or inconsistent state directory', async () => {
    const broken = path.join(tmp, 'broken');
    await cp(path.join(tmp, 'state'), broken, { recursive: true });
    await unlink(path.join(broken, SIM_FILES.ask));
    expect(await codeOf(SimulatedSnp.open(broken))).toBe('ERR_ATT_SIM_STATE_CORRUPT');

    const mismatched = path.join(tmp, 'mismatched');
    await cp(path.join(tmp, 'state'), mismatched, { recursive: true });
    await cp(path.join(tmp, 'other', SIM_FILES.vcekKey), path.join(mismatched, SIM_FILES.vcekKey));
    expect(await codeOf(SimulatedSnp.open(mismatched))).toBe('ERR_ATT_SIM_STATE_CORRUPT');

    const badChip = path.join(tmp, 'bad-chip');
    await cp(path.join(tmp, 'state'), badChip, { recursive: true });
    const chip = JSON.parse(await readFile(path.join(badChip, SIM_FILES.chip), 'utf8'));
    chip.tcb.snp += 1;
    await writeFile(path.join(badChip, SIM_FILES.chip), JSON.stringify(chip));
    expect(await codeOf(SimulatedSnp.open(badChip))).toBe('ERR_ATT_SIM_STATE_CORRUPT');
  });
});

describe('simulated evidence round trip', () => {
  it('collect -> verify -> claims (simulated, Genoa, byte-exact v3 report)', async () => {
    const hostData = new Uint8Array(32).fill(0xab);
    const ev = await sim.provider({ measurement: SIM_TEST_MEASUREMENT, hostData }).collect(RD);
    const report = parseSnpReport(Buffer.from(ev.report, 'base64'));
    expect(report.version).toBe(3);
    expect(report.cpuid).toEqual({ family: 0x19, model: 0x11, stepping: 1 });
    expect(report.product).toBe('Genoa');
    expect(report.policy.raw).toBe(0x30000n);
    expect(report.signingKey).toBe('vcek');

    const claims = await verifySnpEvidence(ev, { now: NOW, expectedReportData: RD, trust: sim.trustOptions() });
    expect(claims.simulated).toBe(true);
    expect(claims.product).toBe('Genoa');
    expect(claims.relaxations).toEqual(['simulated-root']);
    expect(claims.measurement).toBe(MEAS_HEX);
    expect(claims.hostData).toBe('ab'.repeat(32));
    expect(claims.reportData).toBe('07'.repeat(64));
    expect(claims.chipId).toBe(sim.chip.chipId);
    expect(claims.reportedTcb).toEqual(sim.chip.tcb);
    expect(claims.policy.debug).toBe(false);
    expect(claims.policy.smt).toBe(true);
    expect(claims.firmware.current).toBe(`${sim.chip.firmware.major}.${sim.chip.firmware.minor}.${sim.chip.firmware.build}`);
  });

  it('each report has a fresh report_id', async () => {
    const p = sim.provider({ measurement: SIM_TEST_MEASUREMENT });
    const a = parseSnpReport(Buffer.from((await p.collect(RD)).report, 'base64'));
    const b = parseSnpReport(Buffer.from((await p.collect(RD)).report, 'base64'));
    expect(toHex(a.reportId)).not.toBe(toHex(b.reportId));
  });

  it('the provider checks its inputs', async () => {
    expect(() => sim.provider({ measurement: new Uint8Array(47) })).toThrow(expect.objectContaining({ code: 'ERR_ATT_BAD_ARGUMENT' }));
    expect(await codeOf(sim.provider({ measurement: SIM_TEST_MEASUREMENT }).collect(new Uint8Array(63)))).toBe('ERR_ATT_BAD_ARGUMENT');
  });
});

describe('simulated evidence: negative table', () => {
  const trust = () => sim.trustOptions();
  const otherTcb = encodeTcb({ bootloader: 10, tee: 0, snp: 22, microcode: 84 }, 'milan-genoa');
  const cases: [string, () => Promise<unknown>, AttestationErrorCode][] = [
    [
      'no simulatedRoot configured',
      async () => verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD }), { now: NOW, expectedReportData: RD }),
      'ERR_ATT_SNP_UNTRUSTED_ROOT',
    ],
    [
      'simulatedRoot configured but allowSimulated false',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD }), {
          now: NOW,
          expectedReportData: RD,
          trust: { simulatedRoot: { arkDer: sim.arkDer } },
        }),
      'ERR_ATT_SNP_SIMULATED_NOT_ALLOWED',
    ],
    [
      'VCEK/ASK of another simulator (not signed by the configured ARK)',
      async () => verifySnpEvidence(mintSnpEvidence(other, { reportData: RD }), { now: NOW, expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_CHAIN_INVALID',
    ],
    [
      'own VCEK with the other simulator’s ASK',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, certs: { ask: Buffer.from(other.askDer).toString('base64') } }), {
          now: NOW,
          expectedReportData: RD,
          trust: trust(),
        }),
      'ERR_ATT_SNP_CHAIN_INVALID',
    ],
    [
      'evidence ARK is not the configured one',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, certs: { ark: Buffer.from(other.arkDer).toString('base64') } }), {
          now: NOW,
          expectedReportData: RD,
          trust: trust(),
        }),
      'ERR_ATT_SNP_ARK_PIN_MISMATCH',
    ],
    [
      'ASK missing',
      async () => verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, certs: { ask: null } }), { now: NOW, expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_MISSING_CERT',
    ],
    [
      'reported TCB differs from the VCEK (re-signed)',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, fields: { reportedTcb: otherTcb } }), { now: NOW, expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_TCB_MISMATCH',
    ],
    [
      'chip_id differs from the VCEK hwID (re-signed)',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, fields: { chipId: new Uint8Array(64).fill(1) } }), {
          now: NOW,
          expectedReportData: RD,
          trust: trust(),
        }),
      'ERR_ATT_SNP_CHIP_ID_MISMATCH',
    ],
    [
      'VLEK flag on a VCEK-signed report (re-signed)',
      async () => verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, fields: { flags: 1 << 2 } }), { now: NOW, expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_SIGNING_KEY_MISMATCH',
    ],
    [
      'Turin CPUID with a Genoa VCEK (re-signed)',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, fields: { cpuid: { family: 0x1a, model: 2, stepping: 1 } } }), {
          now: NOW,
          expectedReportData: RD,
          trust: trust(),
        }),
      'ERR_ATT_SNP_PRODUCT_MISMATCH',
    ],
    [
      'measurement changed after signing',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, tamper: (b) => void (b[0x90] = b[0x90]! ^ 1) }), {
          now: NOW,
          expectedReportData: RD,
          trust: trust(),
        }),
      'ERR_ATT_SNP_BAD_SIGNATURE',
    ],
    [
      'report_data is not the expected one',
      async () => verifySnpEvidence(mintSnpEvidence(sim, { reportData: new Uint8Array(64) }), { now: NOW, expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_REPORT_DATA_MISMATCH',
    ],
    [
      'verified before the simulated certificates exist',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD }), { now: new Date('2026-01-01T00:00:00Z'), expectedReportData: RD, trust: trust() }),
      'ERR_ATT_SNP_CERT_NOT_YET_VALID',
    ],
    [
      'simulatedRoot is not a certificate',
      async () =>
        verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD }), {
          now: NOW,
          expectedReportData: RD,
          trust: { simulatedRoot: { arkDer: new Uint8Array(8) }, allowSimulated: true },
        }),
      'ERR_ATT_SNP_BAD_TRUST',
    ],
  ];
  for (const [name, run, code] of cases) {
    it(`${name} -> ${code}`, async () => {
      expect(await codeOf(run())).toBe(code);
    });
  }
});

describe('simulated evidence: policy', () => {
  const verify = (opts: Parameters<typeof mintSnpEvidence>[1] = {}) =>
    verifySnpEvidence(mintSnpEvidence(sim, { reportData: RD, ...opts }), { now: NOW, expectedReportData: RD, trust: sim.trustOptions() });

  it('measurement allow-list: pass and fail', async () => {
    const claims = await verify();
    expect(validateSnpClaims(claims, parseSnpPolicy({ allowSimulated: true, measurements: [MEAS_HEX.toUpperCase()] }))).toEqual([]);
    const other = 'cd'.repeat(48);
    expect(validateSnpClaims(claims, parseSnpPolicy({ allowSimulated: true, measurements: [other] }))).toEqual([
      { field: 'measurement', expected: `one of [${other}]`, observed: MEAS_HEX },
    ]);
  });

  it('a simulated claim fails unless allowSimulated', async () => {
    const claims = await verify();
    expect(validateSnpClaims(claims, parseSnpPolicy({ measurements: [MEAS_HEX] }))).toEqual([
      { field: 'simulated', expected: 'false', observed: 'true' },
    ]);
  });

  it('reports ALL failures at once, each with field/expected/observed', async () => {
    const claims = await verify({
      policy: 0xb0000n | (1n << 18n), // debug + migration agent
      vmpl: 2,
      guestSvn: 1,
      hostData: new Uint8Array(32).fill(1),
      measurement: new Uint8Array(48).fill(2),
    });
    const failures = validateSnpClaims(
      claims,
      parseSnpPolicy({
        measurements: [MEAS_HEX],
        vmpl: 0,
        hostData: ['00'.repeat(32)],
        minGuestSvn: 2,
        minTcb: { bootloader: 11, tee: 0, snp: 23, microcode: 84 },
        minFirmware: '1.56',
        allowSmt: false,
        chipIds: ['00'.repeat(64)],
      }),
    );
    expect(failures.map((f) => f.field)).toEqual([
      'simulated',
      'policy.debug',
      'policy.migrationAgent',
      'platform.smtEnabled',
      'vmpl',
      'measurement',
      'hostData',
      'chipId',
      'reportedTcb.bootloader',
      'committedTcb.bootloader',
      'launchTcb.bootloader',
      'guestSvn',
      'firmware.current',
    ]);
    for (const f of failures) {
      expect(f.expected).not.toBe('');
      expect(f.observed).not.toBe('');
    }
    expect(failures.find((f) => f.field === 'reportedTcb.bootloader')).toEqual({ field: 'reportedTcb.bootloader', expected: '>= 11', observed: '10' });
    expect(failures.find((f) => f.field === 'firmware.current')).toEqual({ field: 'firmware.current', expected: '>= 1.56', observed: '1.55.40' });
  });

  it('provisional firmware (committed older than current) fails unless allowed', async () => {
    const older = encodeTcb({ bootloader: 10, tee: 0, snp: 22, microcode: 84 }, 'milan-genoa');
    const claims = await verify({ fields: { committedTcb: older, committedFirmware: { major: 1, minor: 55, build: 39 } } });
    const failures = validateSnpClaims(claims, parseSnpPolicy({ allowSimulated: true, measurements: [MEAS_HEX] }));
    expect(failures).toEqual([
      { field: 'committedTcb', expected: '>= currentTcb (bl=10 tee=0 snp=23 ucode=84)', observed: 'bl=10 tee=0 snp=22 ucode=84' },
      { field: 'firmware.committed', expected: '>= 1.55.40', observed: '1.55.39' },
    ]);
    expect(validateSnpClaims(claims, parseSnpPolicy({ allowSimulated: true, measurements: [MEAS_HEX], allowProvisionalFirmware: true }))).toEqual([]);
  });

  it('evaluateSnpEvidence: verify + validate, relaxations recorded in claims', async () => {
    const ev = await sim.provider({ measurement: SIM_TEST_MEASUREMENT }).collect(RD);
    const ok = await evaluateSnpEvidence(ev, {
      now: NOW,
      expectedReportData: RD,
      trust: sim.trustOptions(),
      policy: { allowSimulated: true, measurements: [MEAS_HEX], minTcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 } },
    });
    expect(ok.failures).toEqual([]);
    expect(ok.claims.relaxations).toEqual(['simulated-root', 'allow-simulated']);
    const denied = await evaluateSnpEvidence(ev, {
      now: NOW,
      expectedReportData: RD,
      trust: sim.trustOptions(),
      policy: { measurements: [MEAS_HEX] },
    });
    expect(denied.failures).toEqual([{ field: 'simulated', expected: 'false', observed: 'true' }]);
  });
});
