/**
 * `cir attest verify` as a user runs it (the compiled entry point in a child process; `npm
 * test` builds first), plus an in-process property test of its evidence handling.
 */
import { cir, CLI, REPO_ROOT, STACK_TRACE, type Run } from './helpers/cli.js';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  evaluateAttestation,
  evaluateTdxAttestation,
  parseMinTcb,
  buildPolicy,
  buildTdxPolicy,
  certificatesInFile,
  detectTee,
  parseRtmrs,
  parseTcbStatuses,
  type AttestVerifyInput,
} from '../cli/attest.js';
import { isCirError } from '../common/errors.js';
import { SimulatedSnp, SIM_FILES } from '../attestation/sim/index.js';
import { mintSnpReport, SIM_TEST_MEASUREMENT } from '../attestation/sim/testing.js';
import { toHex } from '../common/bytes.js';
import { loadTdxCollateral, parseSnpReport, writeVcekToBundle, type TdxCollateral } from '../attestation/index.js';

const root = REPO_ROOT;
const V = path.join(root, 'test', 'data', 'vectors');
const vec = (p: string): string => path.join(V, p);

const TURIN = { report: vec('sev-snp/microsoft/turin_attestation_report.bin'), vcek: vec('sev-snp/microsoft/turin_vcek.pem') };
const TURIN_AT = '2026-06-01T00:00:00Z';
// MANIFEST.md, "Key facts": turin_attestation_report.bin.
const TURIN_MEASUREMENT = '6d6c354511d6f7c6d7504668903dc5bdc066a048b651840d8d03fb85299ebfa142fccf1d1b0baca496841bdf243619d4';
const VLEK = { report: vec('sev-snp/trustee/test-vlek-report.bin'), vlek: vec('sev-snp/trustee/test-vlek.der'), at: '2025-06-01T00:00:00Z' };
const DEBUG = { report: vec('sev-snp/go-sev-guest/attestation.bin'), vcek: vec('sev-snp/go-sev-guest/vcek.der'), at: '2022-09-24T01:00:00Z' };


/** stdout must be exactly one JSON object (one line). */
function oneJson(r: Run): Record<string, unknown> {
  const lines = r.stdout.split('\n').filter((l) => l.length > 0);
  expect(lines, `stdout: ${r.stdout}\nstderr: ${r.stderr}`).toHaveLength(1);
  const o = JSON.parse(lines[0]!) as unknown;
  expect(o).toBeTypeOf('object');
  return o as Record<string, unknown>;
}

const verify = (...args: string[]): string[] => ['attest', 'verify', ...args];
const fields = (o: Record<string, unknown>): string[] => (o['failures'] as { field: string }[]).map((f) => f.field);

let tmp: string;

beforeAll(async () => {
  if (!existsSync(CLI)) throw new Error('dist/cli/main.js missing: run `npm run build` (npm test does)');
  tmp = await mkdtemp(path.join(tmpdir(), 'cir-attest-'));
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('cir attest verify: accepted evidence', () => {
  it('a real Turin report with its VCEK: exit 0, one JSON object with the claim fields', async () => {
    const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(0);
    const o = oneJson(r);
    expect(o['ok']).toBe(true);
    expect(o['tee']).toBe('sev-snp');
    const c = o['claims'] as Record<string, unknown>;
    expect(c['measurement']).toBe(TURIN_MEASUREMENT);
    expect(c['reportData']).toBe('0'.repeat(128));
    expect(c['hostData']).toMatch(/^[0-9a-f]{64}$/);
    expect(c['chipId']).toBe(`59790fb1c39f35c1${'0'.repeat(112)}`);
    expect(c['reportedTcb']).toEqual({ fmc: 1, bootloader: 1, tee: 1, snp: 4, microcode: 81 });
    expect(c['policy']).toMatchObject({ debug: false, smt: true, migrationAgent: false });
    expect(c['vmpl']).toBe(0);
    expect(c['signingKey']).toBe('vcek');
    expect(c['product']).toBe('Turin');
    expect(c['version']).toBe(5);
    expect(c['reportVersion']).toBe(5);
    expect(c['simulated']).toBe(false);
    // Neither a measurement nor report_data was given: both relaxations are on record.
    expect(c['relaxations']).toEqual(expect.arrayContaining(['any-measurement', 'report-data-unchecked']));
    expect(r.stderr).toBe('');
  });

  it('--expect-measurement and --expect-report-data that match: no relaxation for either', async () => {
    const r = await cir(
      verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', '--expect-measurement', TURIN_MEASUREMENT, '--expect-report-data', '0'.repeat(128)),
    );
    expect(r.code).toBe(0);
    const c = oneJson(r)['claims'] as { relaxations: string[] };
    expect(c.relaxations).not.toContain('any-measurement');
    expect(c.relaxations).not.toContain('report-data-unchecked');
  });

  it('without --json prints a readable summary of checks and claims', async () => {
    const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--tee', 'sev-snp'));
    expect(r.code).toBe(0);
    for (const s of ['verify', 'policy', 'measurement', TURIN_MEASUREMENT, 'fmc=1', 'product', 'Turin', 'any-measurement', 'ACCEPTED']) {
      expect(r.stdout).toContain(s);
    }
  });

  it('a PEM bundle (VCEK, ASK, ARK in one file; Azure) is sorted by role', async () => {
    const r = await cir(
      verify('--evidence', vec('sev-snp/azure/az_milan_report_from_hcl.bin'), '--cert', vec('tpm/az-snp-vtpm/vcek.pem'), '--at', TURIN_AT, '--allow-provisional-firmware', '--json'),
    );
    expect(r.code).toBe(0);
    expect((oneJson(r)['claims'] as { product: string }).product).toBe('Milan');
  });
});

describe('cir attest verify: policy outcomes', () => {
  it('VLEK report on provisional firmware: exit 1 naming committedTcb; accepted with --allow-provisional-firmware and a VMPL 1 policy', async () => {
    const base = ['--evidence', VLEK.report, '--cert', VLEK.vlek, '--at', VLEK.at, '--json'];
    const r1 = await cir(verify(...base));
    expect(r1.code).toBe(1);
    const o1 = oneJson(r1);
    expect(o1['ok']).toBe(false);
    expect(o1['code']).toBe('ERR_ATT_SNP_POLICY_FAILED');
    expect(fields(o1)).toContain('committedTcb');
    expect(fields(o1)).toContain('vmpl');

    // The flag alone is not enough: the VMPL default (0) still holds.
    const r2 = await cir(verify(...base, '--allow-provisional-firmware'));
    expect(r2.code).toBe(1);
    expect(fields(oneJson(r2))).toEqual(['vmpl']);

    const policy = path.join(tmp, 'vmpl1.yaml');
    await writeFile(policy, 'vmpl: 1\n');
    const r3 = await cir(verify(...base, '--allow-provisional-firmware', '--policy', policy));
    expect(r3.code).toBe(0);
    const c = oneJson(r3)['claims'] as Record<string, unknown>;
    expect(c['signingKey']).toBe('vlek');
    expect(c['vmpl']).toBe(1);
    expect(c['relaxations']).toEqual(expect.arrayContaining(['allow-provisional-firmware']));
  });

  it('debug guest: exit 1 naming policy.debug, exit 0 with --allow-debug', async () => {
    const base = ['--evidence', DEBUG.report, '--cert', DEBUG.vcek, '--at', DEBUG.at, '--json'];
    const r1 = await cir(verify(...base));
    expect(r1.code).toBe(1);
    const o1 = oneJson(r1);
    expect(o1['ok']).toBe(false);
    expect(o1['failures']).toEqual([{ field: 'policy.debug', expected: 'false', observed: 'true' }]);
    const r2 = await cir(verify(...base, '--allow-debug'));
    expect(r2.code).toBe(0);
    const c = oneJson(r2)['claims'] as Record<string, unknown>;
    expect((c['policy'] as { debug: boolean }).debug).toBe(true);
    expect(c['relaxations']).toEqual(expect.arrayContaining(['allow-debug']));
  });

  it('--expect-measurement that does not match: exit 1 naming measurement', async () => {
    const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', '--expect-measurement', 'ab'.repeat(48)));
    expect(r.code).toBe(1);
    const o = oneJson(r);
    expect(o['ok']).toBe(false);
    expect(o['failures']).toEqual([{ field: 'measurement', expected: `one of [${'ab'.repeat(48)}]`, observed: TURIN_MEASUREMENT }]);
  });

  it('--expect-report-data that does not match: exit 1, ERR_ATT_SNP_REPORT_DATA_MISMATCH, no failures', async () => {
    const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', '--expect-report-data', '01'.repeat(64)));
    expect(r.code).toBe(1);
    const o = oneJson(r);
    expect(o).toMatchObject({ ok: false, code: 'ERR_ATT_SNP_REPORT_DATA_MISMATCH', failures: [] });
    expect(o['detail']).toBeTypeOf('string');
  });

  it('--min-tcb above the reported TCB: exit 1 naming the field', async () => {
    const r = await cir(
      verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', '--min-tcb', 'bootloader=1,tee=1,snp=5,microcode=81,fmc=1'),
    );
    expect(r.code).toBe(1);
    expect(fields(oneJson(r))).toEqual(['reportedTcb.snp', 'committedTcb.snp', 'launchTcb.snp']);
    const ok = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', '--min-tcb', 'bootloader=1,tee=1,snp=4,microcode=81,fmc=1'));
    expect(ok.code).toBe(0);
  });

  it('a certificate outside its validity at --at: exit 1 (the VLEK expired by 2026)', async () => {
    const r = await cir(verify('--evidence', VLEK.report, '--cert', VLEK.vlek, '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_ATT_SNP_CERT_EXPIRED', failures: [] });
  });

  it('the wrong product VCEK: exit 1', async () => {
    const r = await cir(verify('--evidence', TURIN.report, '--cert', vec('sev-snp/microsoft/genoa_vcek.pem'), '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)['code']).toBe('ERR_ATT_SNP_PRODUCT_MISMATCH');
  });
});

describe('cir attest verify: malformed input and usage errors', () => {
  const hostile: [string, () => Buffer][] = [
    ['1184 random bytes', () => randomBytes(1184)],
    ['1184 random bytes with a valid version', () => Buffer.concat([Buffer.from([3, 0, 0, 0]), randomBytes(1180)])],
    ['100 random bytes', () => randomBytes(100)],
    ['a truncated real report', () => readFileSync(TURIN.report).subarray(0, 1000)],
    ['an empty file', () => Buffer.alloc(0)],
  ];
  for (const [name, bytes] of hostile) {
    for (const tee of [[], ['--tee', 'sev-snp']]) {
      it(`${name}${tee.length ? ' (--tee sev-snp)' : ''}: exit 1 or 2, ok:false, no stack trace`, async () => {
        const file = path.join(tmp, `${name.replace(/\W+/g, '-')}.bin`);
        await writeFile(file, bytes());
        const r = await cir(verify('--evidence', file, '--cert', TURIN.vcek, '--at', TURIN_AT, '--json', ...tee));
        expect([1, 2]).toContain(r.code);
        const o = oneJson(r);
        expect(o['ok']).toBe(false);
        expect(o['code']).toMatch(/^ERR_[A-Z0-9_]+$/);
        expect(o['failures']).toEqual([]);
        expect(r.stderr + r.stdout).not.toMatch(STACK_TRACE);
      });
    }
  }

  it('a missing evidence file: exit 2, ERR_CLI_FILE_UNREADABLE', async () => {
    const r = await cir(verify('--evidence', path.join(tmp, 'nope.bin'), '--cert', TURIN.vcek, '--json'));
    expect(r.code).toBe(2);
    expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_CLI_FILE_UNREADABLE' });
    const plain = await cir(verify('--evidence', path.join(tmp, 'nope.bin')));
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/ERR_CLI_FILE_UNREADABLE/);
    expect(plain.stderr).not.toMatch(STACK_TRACE);
  });

  it('a missing --cert file or policy file: exit 2', async () => {
    const r1 = await cir(verify('--evidence', TURIN.report, '--cert', path.join(tmp, 'nope.pem'), '--json'));
    expect(r1.code).toBe(2);
    expect(oneJson(r1)['code']).toBe('ERR_CLI_FILE_UNREADABLE');
    const r2 = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--policy', path.join(tmp, 'nope.yaml'), '--json'));
    expect(r2.code).toBe(2);
    expect(oneJson(r2)['code']).toBe('ERR_CFG_UNREADABLE');
  });

  it('an invalid policy file: exit 2 naming the field', async () => {
    const policy = path.join(tmp, 'bad-policy.yaml');
    await writeFile(policy, 'vmpl: 9\nbogus: 1\n');
    const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', TURIN_AT, '--policy', policy, '--json'));
    expect(r.code).toBe(2);
    const o = oneJson(r);
    expect(o['code']).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(o['detail']).toMatch(/vmpl/);
  });

  it('a --cert file that is not a certificate: exit 2', async () => {
    const bad = path.join(tmp, 'bad.pem');
    await writeFile(bad, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    const r = await cir(verify('--evidence', TURIN.report, '--cert', bad, '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(2);
    expect(oneJson(r)['code']).toBe('ERR_CLI_BAD_CERT_FILE');
  });

  const usage: [string, string[]][] = [
    ['bad --min-tcb syntax', ['--min-tcb', 'bootloader=1,tee=x']],
    ['--min-tcb missing microcode', ['--min-tcb', 'bootloader=1,tee=1,snp=4']],
    ['--min-tcb value above 255', ['--min-tcb', 'bootloader=1,tee=1,snp=4,microcode=256']],
    ['--min-tcb unknown key', ['--min-tcb', 'bootloader=1,tee=1,snp=4,microcode=1,psp=1']],
    ['bad --expect-measurement hex', ['--expect-measurement', 'xyz']],
    ['short --expect-report-data', ['--expect-report-data', '00'.repeat(32)]],
    ['bad --at', ['--at', 'yesterday']],
    ['unsupported --tee', ['--tee', 'sgx']],
    ['a TDX-only flag for SEV-SNP evidence (--expect-mrtd)', ['--expect-mrtd', 'ab'.repeat(48)]],
    ['a TDX-only flag for SEV-SNP evidence (--allow-missing-crls)', ['--allow-missing-crls']],
  ];
  for (const [name, args] of usage) {
    it(`${name}: exit 2, ERR_CLI_BAD_ARGUMENT`, async () => {
      const r = await cir(verify('--evidence', TURIN.report, '--cert', TURIN.vcek, '--json', ...args));
      expect(r.code).toBe(2);
      expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_CLI_BAD_ARGUMENT', failures: [] });
    });
  }

  it('no --evidence: exit 2', async () => {
    const r = await cir(verify('--json'));
    expect(r.code).toBe(2);
    expect(oneJson(r)['code']).toBe('ERR_CLI_BAD_ARGUMENT');
  });

  it('is listed in help', async () => {
    const r = await cir(['attest', 'verify', '--help']);
    expect(r.code).toBe(0);
    for (const flag of [
      '--evidence',
      '--tee',
      '--cert',
      '--collateral',
      '--at',
      '--allow-debug',
      '--expect-measurement',
      '--expect-report-data',
      '--min-tcb',
      '--allow-provisional-firmware',
      '--policy',
      '--allow-simulated',
      '--json',
      '--expect-mrtd',
      '--expect-rtmr',
      '--accept-tcb-status',
      '--allow-missing-crls',
    ]) {
      expect(r.stdout).toContain(flag);
    }
  });
});

describe('cir attest verify: --collateral (offline bundle)', () => {
  it('takes the VCEK from the bundle when no --cert is given', async () => {
    const dir = path.join(tmp, 'bundle');
    const report = parseSnpReport(new Uint8Array(readFileSync(TURIN.report)));
    const [der] = certificatesInFile(new Uint8Array(readFileSync(TURIN.vcek)), 'turin_vcek.pem');
    await writeVcekToBundle(dir, 'Turin', report.chipId, report.reportedTcb, der!);
    const r = await cir(verify('--evidence', TURIN.report, '--collateral', dir, '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(0);
    expect((oneJson(r)['claims'] as { product: string }).product).toBe('Turin');
  });

  it('a bundle without that VCEK: exit 1, ERR_ATT_SNP_MISSING_CERT', async () => {
    const dir = await mkdtemp(path.join(tmp, 'empty-bundle-'));
    const r = await cir(verify('--evidence', TURIN.report, '--collateral', dir, '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)['code']).toBe('ERR_ATT_SNP_MISSING_CERT');
  });
});

describe('cir attest verify: simulated evidence', () => {
  let sim: SimulatedSnp;
  let report: string;
  const rd = new Uint8Array(64).fill(9);

  beforeAll(async () => {
    sim = await SimulatedSnp.open(path.join(tmp, 'sim'), { now: new Date('2026-05-01T00:00:00Z') });
    report = path.join(tmp, 'sim-report.bin');
    await writeFile(report, mintSnpReport(sim, { reportData: rd }));
  });

  const certArgs = (): string[] => ['--cert', path.join(sim.stateDir, SIM_FILES.vcek), '--cert', path.join(sim.stateDir, SIM_FILES.ask)];

  it('is rejected without --allow-simulated', async () => {
    const r = await cir(verify('--evidence', report, ...certArgs(), '--cert', path.join(sim.stateDir, SIM_FILES.ark), '--at', TURIN_AT, '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)['code']).toBe('ERR_ATT_SNP_UNTRUSTED_ROOT');
  });

  it('is accepted with --allow-simulated and the simulated ARK given with --cert', async () => {
    const r = await cir(
      verify('--evidence', report, ...certArgs(), '--cert', path.join(sim.stateDir, SIM_FILES.ark), '--at', TURIN_AT, '--allow-simulated', '--expect-report-data', toHex(rd), '--json'),
    );
    expect(r.code).toBe(0);
    const c = oneJson(r)['claims'] as Record<string, unknown>;
    expect(c['simulated']).toBe(true);
    expect(c['measurement']).toBe(toHex(SIM_TEST_MEASUREMENT));
    expect(c['relaxations']).toEqual(expect.arrayContaining(['simulated-root', 'allow-simulated']));
  });

  it('is accepted with --allow-simulated and $CIR_SIMULATED_ROOT', async () => {
    const r = await cir(verify('--evidence', report, ...certArgs(), '--at', TURIN_AT, '--allow-simulated', '--json'), {
      CIR_SIMULATED_ROOT: path.join(sim.stateDir, SIM_FILES.ark),
    });
    expect(r.code).toBe(0);
    expect((oneJson(r)['claims'] as { simulated: boolean }).simulated).toBe(true);
  });

  it('--allow-simulated without any simulated root: exit 1', async () => {
    const r = await cir(verify('--evidence', report, ...certArgs(), '--at', TURIN_AT, '--allow-simulated', '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)['code']).toBe('ERR_ATT_SNP_UNTRUSTED_ROOT');
  });
});

describe('evidence handling in-process (property)', () => {
  const turinCerts = (): AttestVerifyInput['certs'] =>
    certificatesInFile(new Uint8Array(readFileSync(TURIN.vcek)), 'turin_vcek.pem').map((der) => ({ der, source: 'turin_vcek.pem' }));
  const input = (evidence: Uint8Array, tee?: string): AttestVerifyInput => ({
    evidence,
    ...(tee ? { tee } : {}),
    certs: turinCerts(),
    now: new Date(TURIN_AT),
    policy: buildPolicy(undefined, { expectMeasurement: [] }),
    allowSimulated: false,
  });

  /** Either a typed rejection (exit 1 or 2) or a typed error; never an untyped throw. */
  async function onlyTyped(evidence: Uint8Array, tee?: string): Promise<void> {
    try {
      const r = await evaluateAttestation(input(evidence, tee));
      if (r.outcome.ok) throw new Error('arbitrary bytes were accepted');
      expect(r.outcome.code).toMatch(/^ERR_[A-Z0-9_]+$/);
      expect(r.outcome.code).not.toBe('ERR_INTERNAL');
      expect([1, 2]).toContain(r.exitCode);
    } catch (e) {
      if (!isCirError(e)) throw e;
    }
  }

  it('arbitrary bytes never throw anything but a typed error', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 2048 }), (b) => onlyTyped(b)), { numRuns: 300 });
  });

  it('1184 arbitrary bytes with a supported version, detected or forced, likewise', async () => {
    const arb = fc.tuple(fc.constantFrom(2, 3, 5), fc.uint8Array({ minLength: 1180, maxLength: 1180 })).map(([v, rest]) => {
      const b = new Uint8Array(1184);
      new DataView(b.buffer).setUint32(0, v, true);
      b.set(rest, 4);
      return b;
    });
    await fc.assert(fc.asyncProperty(arb, fc.boolean(), (b, force) => onlyTyped(b, force ? 'sev-snp' : undefined)), { numRuns: 300 });
  });

  it('single-byte corruptions of a real report are rejected with a typed code', async () => {
    const real = new Uint8Array(readFileSync(TURIN.report));
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: real.length - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const b = new Uint8Array(real);
        b[i] = b[i]! ^ x;
        return onlyTyped(b);
      }),
      { numRuns: 100 },
    );
  });
});

describe('flag parsers', () => {
  it('parseMinTcb', () => {
    expect(parseMinTcb('bootloader=1,tee=2,snp=3,microcode=4')).toEqual({ bootloader: 1, tee: 2, snp: 3, microcode: 4, fmc: undefined });
    expect(parseMinTcb('fmc=9, microcode=4,snp=3,tee=2,bootloader=1')).toMatchObject({ fmc: 9 });
    for (const bad of ['', 'bootloader=1', 'bootloader=1,tee=2,snp=3,microcode=4,tee=2', 'bootloader=-1,tee=2,snp=3,microcode=4', 'bootloader=1;tee=2']) {
      expect(() => parseMinTcb(bad)).toThrow(expect.objectContaining({ code: 'ERR_CLI_BAD_ARGUMENT' }));
    }
  });

  it('buildPolicy: flags override the file; no measurements means anyMeasurement', () => {
    expect(buildPolicy(undefined, { expectMeasurement: [] }).anyMeasurement).toBe(true);
    const m = 'ab'.repeat(48);
    const p = buildPolicy({ anyMeasurement: true, vmpl: 1 }, { expectMeasurement: [m], allowDebug: true });
    expect(p.measurements).toEqual([m]);
    expect(p.anyMeasurement).toBe(false);
    expect(p.vmpl).toBe(1);
    expect(p.allowDebug).toBe(true);
    expect(buildPolicy({ measurements: [m] }, { expectMeasurement: [] }).measurements).toEqual([m]);
    expect(() => buildPolicy(['x'], { expectMeasurement: [] })).toThrow(expect.objectContaining({ code: 'ERR_CLI_BAD_ARGUMENT' }));
  });
});

// --- Intel TDX ---------------------------------------------------------------------------
// Quotes, collateral and times from /work/shared/vectors/MANIFEST.md ("Intel TDX" table and
// "Key facts"), copied into test/data/vectors/tdx (PROVENANCE.md); the two assembled
// bundles (trustee-00a06d080000, negative-fake-intel-root-b0c06f000000) are listed there.
const TDX = {
  dcap: { quote: vec('tdx/dcap-qvl/tdx_quote'), collateral: vec('tdx/dcap-qvl/tdx_quote_collateral.json'), at: '2025-07-01T00:00:00Z' },
  outdated: { quote: vec('tdx/dcap-qvl/tdx_quote_outdated'), collateral: vec('tdx/dcap-qvl/tdx_quote_outdated_collateral.json'), at: '2026-03-01T00:00:00Z' },
  debug: { quote: vec('tdx/trustee/tdx_quote_4.dat'), collateral: vec('tdx/bundles/go-tdx-guest-50806f000000'), at: '2023-07-01T01:00:00Z' },
  q6: { quote: vec('tdx/trustee/tdx_quote_6.dat'), collateral: vec('tdx/bundles/trustee-00a06d080000'), at: '2025-11-01T00:00:00Z' },
  fakeRoot: vec('tdx/bundles/negative-fake-intel-root-b0c06f000000'),
};
// MANIFEST.md "Key facts": tdx/dcap-qvl/tdx_quote.
const DCAP = {
  mrtd: '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7',
  rtmr0: '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
  rtmr1: '0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378',
  rtmr2: 'd833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132',
  mrseam: '5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1',
  reportData: '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20',
  xfam: 'e702060000000000',
  teeTcbSvn: '06010300000000000000000000000000',
  fmspc: 'b0c06f000000',
};
const HEX96 = /^[0-9a-f]{96}$/;
const dcapArgs = (...more: string[]): string[] => verify('--evidence', TDX.dcap.quote, '--collateral', TDX.dcap.collateral, '--at', TDX.dcap.at, '--json', ...more);

describe('cir attest verify --tee tdx: accepted quotes', () => {
  it('dcap-qvl/tdx_quote (detected): exit 0, tcbStatus UpToDate, every required claim field', async () => {
    const r = await cir(dcapArgs());
    expect(r.code).toBe(0);
    const o = oneJson(r);
    expect(o['ok']).toBe(true);
    expect(o['tee']).toBe('tdx');
    const c = o['claims'] as Record<string, unknown>;
    expect(c['mrtd']).toBe(DCAP.mrtd);
    const rtmr = c['rtmr'] as string[];
    expect(rtmr).toHaveLength(4);
    for (const x of rtmr) expect(x).toMatch(HEX96);
    expect(rtmr.slice(0, 3)).toEqual([DCAP.rtmr0, DCAP.rtmr1, DCAP.rtmr2]);
    expect(c['mrseam']).toBe(DCAP.mrseam);
    for (const k of ['mrconfigid', 'mrowner', 'mrownerconfig']) expect(c[k]).toBe('0'.repeat(96));
    expect(c['reportData']).toBe(DCAP.reportData);
    expect(c['tdAttributes']).toMatchObject({ hex: '0000001000000000', debug: false });
    expect(c['xfam']).toBe(DCAP.xfam);
    expect(c['teeTcbSvn']).toBe(DCAP.teeTcbSvn);
    expect(c['fmspc']).toBe(DCAP.fmspc);
    expect(c['tcbStatus']).toBe('UpToDate');
    expect(c['qeTcbStatus']).toBe('UpToDate');
    expect(c['advisoryIds']).toEqual([]);
    expect(c['quoteVersion']).toBe(4);
    expect(c['version']).toBe(4);
    expect(c['simulated']).toBe(false);
    // Neither an MRTD nor report_data was given: both relaxations are on record.
    expect(c['relaxations']).toEqual(['report-data-unchecked', 'any-mrtd']);
    expect(r.stderr).toBe('');
  });

  it('--tee tdx with matching --expect-mrtd, --expect-rtmr and --expect-report-data: no relaxations', async () => {
    const r = await cir(
      dcapArgs('--tee', 'tdx', '--expect-mrtd', DCAP.mrtd, '--expect-rtmr', `0=${DCAP.rtmr0}`, '--expect-rtmr', `2=${DCAP.rtmr2.toUpperCase()}`, '--expect-report-data', DCAP.reportData),
    );
    expect(r.code).toBe(0);
    expect((oneJson(r)['claims'] as { relaxations: string[] }).relaxations).toEqual([]);
  });

  it('without --json prints a readable summary of checks and claims', async () => {
    const r = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', TDX.dcap.collateral, '--at', TDX.dcap.at));
    expect(r.code).toBe(0);
    for (const s of ['tdx quote v4', 'Intel SGX Root CA', 'policy', 'mrtd', DCAP.mrtd, 'rtmr[3]', 'tcbStatus', 'UpToDate', 'any-mrtd', 'ACCEPTED']) {
      expect(r.stdout).toContain(s);
    }
  });

  it('a debug TD (trustee/tdx_quote_4): exit 1 naming tdAttributes.debug, exit 0 with --allow-debug', async () => {
    const base = verify('--evidence', TDX.debug.quote, '--collateral', TDX.debug.collateral, '--at', TDX.debug.at, '--json');
    const r1 = await cir(base);
    expect(r1.code).toBe(1);
    const o1 = oneJson(r1);
    expect(o1).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_POLICY_FAILED' });
    expect(o1['failures']).toEqual([{ field: 'tdAttributes.debug', expected: 'false', observed: 'true' }]);
    const r2 = await cir([...base, '--allow-debug']);
    expect(r2.code).toBe(0);
    const c = oneJson(r2)['claims'] as Record<string, unknown>;
    expect((c['tdAttributes'] as { debug: boolean }).debug).toBe(true);
    expect(c['tcbStatus']).toBe('UpToDate');
    expect(c['relaxations']).toEqual(expect.arrayContaining(['allow-debug', 'any-mrtd']));
  });

  it('an offline bundle directory (one layout-(a) directory per FMSPC) is read by the quote FMSPC', async () => {
    const bundle = path.join(tmp, 'tdx-bundle');
    await cp(TDX.debug.collateral, path.join(bundle, '50806f000000'), { recursive: true });
    const r = await cir(verify('--evidence', TDX.debug.quote, '--collateral', bundle, '--at', TDX.debug.at, '--allow-debug', '--json'));
    expect(r.code).toBe(0);
    expect((oneJson(r)['claims'] as { fmspc: string }).fmspc).toBe('50806f000000');
    // The dcap-qvl quote (FMSPC b0c06f000000) has no directory there.
    const miss = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', bundle, '--at', TDX.dcap.at, '--json'));
    expect(miss.code).toBe(2);
    expect(oneJson(miss)['code']).toBe('ERR_ATT_TDX_BAD_COLLATERAL');
  });

  it('a --policy TdxPolicy file, overridden by flags', async () => {
    const policy = path.join(tmp, 'tdx-policy.yaml');
    await writeFile(policy, `mrtd: ["${'ab'.repeat(48)}"]\nrtmr1: ["${DCAP.rtmr1}"]\n`);
    const r1 = await cir(dcapArgs('--policy', policy));
    expect(r1.code).toBe(1);
    expect(fields(oneJson(r1))).toEqual(['mrtd']);
    const r2 = await cir(dcapArgs('--policy', policy, '--expect-mrtd', DCAP.mrtd));
    expect(r2.code).toBe(0);
    expect((oneJson(r2)['claims'] as { relaxations: string[] }).relaxations).toEqual(['report-data-unchecked']);
  });
});

describe('cir attest verify --tee tdx: rejected quotes', () => {
  it('dcap-qvl/tdx_quote_outdated: exit 1, no TCB level matches (ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND)', async () => {
    const r = await cir(verify('--evidence', TDX.outdated.quote, '--collateral', TDX.outdated.collateral, '--at', TDX.outdated.at, '--json'));
    expect(r.code).toBe(1);
    const o = oneJson(r);
    expect(o).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND', failures: [] });
    expect(o['detail']).toMatch(/TCB level|below every level/);
  });

  it('trustee/tdx_quote_6 (OutOfDate): rejected by default; accepted with --accept-tcb-status UpToDate,OutOfDate --allow-missing-crls', async () => {
    const base = verify('--evidence', TDX.q6.quote, '--collateral', TDX.q6.collateral, '--at', TDX.q6.at, '--json');
    // No PCK CRL covers 2025-11: refused unless explicitly allowed.
    const r1 = await cir(base);
    expect(r1.code).toBe(1);
    expect(oneJson(r1)).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_CRL_MISSING' });
    // The CRL relaxation alone: the default policy still refuses OutOfDate.
    const r2 = await cir([...base, '--allow-missing-crls']);
    expect(r2.code).toBe(1);
    const o2 = oneJson(r2);
    expect(o2['code']).toBe('ERR_ATT_TDX_POLICY_FAILED');
    expect(o2['failures']).toEqual([{ field: 'tcbStatus', expected: 'one of [UpToDate]', observed: 'OutOfDate' }]);
    // The status relaxation alone: the missing CRL still fails verification.
    const r3 = await cir([...base, '--accept-tcb-status', 'UpToDate,OutOfDate']);
    expect(r3.code).toBe(1);
    expect(oneJson(r3)['code']).toBe('ERR_ATT_TDX_CRL_MISSING');
    const r4 = await cir([...base, '--accept-tcb-status', 'UpToDate,OutOfDate', '--allow-missing-crls']);
    expect(r4.code).toBe(0);
    const c = oneJson(r4)['claims'] as Record<string, unknown>;
    expect(c['tcbStatus']).toBe('OutOfDate');
    expect(c['fmspc']).toBe('00a06d080000');
    expect(c['relaxations']).toEqual(['report-data-unchecked', 'pck-crl-unchecked', 'accept-tcb-status:OutOfDate', 'any-mrtd']);
  });

  it('--expect-mrtd that does not match: exit 1 naming mrtd', async () => {
    const r = await cir(dcapArgs('--expect-mrtd', 'ab'.repeat(48)));
    expect(r.code).toBe(1);
    const o = oneJson(r);
    expect(o).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_POLICY_FAILED' });
    expect(o['failures']).toEqual([{ field: 'mrtd', expected: `one of [${'ab'.repeat(48)}]`, observed: DCAP.mrtd }]);
  });

  it('--expect-rtmr 0=... that does not match: exit 1 naming rtmr[0]', async () => {
    const r = await cir(dcapArgs('--expect-rtmr', `0=${'cd'.repeat(48)}`));
    expect(r.code).toBe(1);
    expect(oneJson(r)['failures']).toEqual([{ field: 'rtmr[0]', expected: `one of [${'cd'.repeat(48)}]`, observed: DCAP.rtmr0 }]);
  });

  it('--expect-report-data that does not match: exit 1, ERR_ATT_TDX_REPORT_DATA_MISMATCH', async () => {
    const r = await cir(dcapArgs('--expect-report-data', '01'.repeat(64)));
    expect(r.code).toBe(1);
    expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_REPORT_DATA_MISMATCH', failures: [] });
  });

  it('collateral signed under the look-alike Intel root: exit 1, ERR_ATT_TDX_ROOT_PIN_MISMATCH', async () => {
    const r = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', TDX.fakeRoot, '--at', TDX.dcap.at, '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_ATT_TDX_ROOT_PIN_MISMATCH', failures: [] });
  });

  it('collateral outside its validity at --at: exit 1', async () => {
    const r = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', TDX.dcap.collateral, '--at', '2025-07-20T00:00:00Z', '--json'));
    expect(r.code).toBe(1);
    expect(oneJson(r)['code']).toBe('ERR_ATT_TDX_CRL_EXPIRED');
  });
});

describe('cir attest verify --tee tdx: malformed input and usage errors', () => {
  it('--tee tdx without --collateral: exit 2, ERR_CLI_BAD_ARGUMENT (also when TDX is detected)', async () => {
    const r1 = await cir(verify('--evidence', TDX.dcap.quote, '--tee', 'tdx', '--at', TDX.dcap.at, '--json'));
    expect(r1.code).toBe(2);
    expect(oneJson(r1)).toMatchObject({ ok: false, code: 'ERR_CLI_BAD_ARGUMENT', failures: [] });
    expect(oneJson(r1)['detail']).toMatch(/--collateral/);
    const r2 = await cir(verify('--evidence', TDX.dcap.quote, '--at', TDX.dcap.at, '--json'));
    expect(r2.code).toBe(2);
    expect(oneJson(r2)['code']).toBe('ERR_CLI_BAD_ARGUMENT');
    const plain = await cir(verify('--evidence', TDX.dcap.quote, '--tee', 'tdx'));
    expect(plain.code).toBe(2);
    expect(plain.stderr).toMatch(/ERR_CLI_BAD_ARGUMENT/);
    expect(plain.stderr).not.toMatch(STACK_TRACE);
  });

  const hostile: [string, () => Buffer][] = [
    ['5000 random bytes', () => randomBytes(5000)],
    ['random bytes behind a TDX v4 header', () => Buffer.concat([readFileSync(TDX.dcap.quote).subarray(0, 48), randomBytes(4000)])],
    ['a truncated real quote', () => readFileSync(TDX.dcap.quote).subarray(0, 2000)],
    ['a real quote cut inside its header', () => readFileSync(TDX.dcap.quote).subarray(0, 47)],
    ['a real SEV-SNP report', () => readFileSync(TURIN.report)],
  ];
  for (const [name, bytes] of hostile) {
    for (const tee of [[], ['--tee', 'tdx']]) {
      it(`${name}${tee.length ? ' (--tee tdx)' : ''}: exit 1 or 2, ok:false, no stack trace`, async () => {
        const file = path.join(tmp, `tdx-${name.replace(/\W+/g, '-')}.bin`);
        await writeFile(file, bytes());
        const r = await cir(verify('--evidence', file, '--collateral', TDX.dcap.collateral, '--at', TDX.dcap.at, '--json', ...tee));
        expect([1, 2]).toContain(r.code);
        const o = oneJson(r);
        expect(o['ok']).toBe(false);
        expect(o['code']).toMatch(/^ERR_[A-Z0-9_]+$/);
        expect(o['failures']).toEqual([]);
        expect(r.stderr + r.stdout).not.toMatch(STACK_TRACE);
      });
    }
  }

  const usage: [string, string[]][] = [
    ['unknown --accept-tcb-status', ['--accept-tcb-status', 'UpToDate,Fine']],
    ['duplicate --accept-tcb-status', ['--accept-tcb-status', 'OutOfDate,OutOfDate']],
    ['empty --accept-tcb-status', ['--accept-tcb-status', '']],
    ['--expect-rtmr index 4', ['--expect-rtmr', `4=${'ab'.repeat(48)}`]],
    ['--expect-rtmr without index', ['--expect-rtmr', 'ab'.repeat(48)]],
    ['short --expect-rtmr hex', ['--expect-rtmr', '0=abcd']],
    ['bad --expect-mrtd hex', ['--expect-mrtd', 'xyz']],
    ['an SEV-SNP-only flag (--expect-measurement)', ['--expect-measurement', 'ab'.repeat(48)]],
    ['an SEV-SNP-only flag (--min-tcb)', ['--min-tcb', 'bootloader=1,tee=1,snp=1,microcode=1']],
    ['an SEV-SNP-only flag (--cert)', ['--cert', TURIN.vcek]],
    ['an SEV-SNP-only flag (--allow-simulated)', ['--allow-simulated']],
  ];
  for (const [name, args] of usage) {
    it(`${name}: exit 2, ERR_CLI_BAD_ARGUMENT`, async () => {
      const r = await cir(dcapArgs(...args));
      expect(r.code).toBe(2);
      expect(oneJson(r)).toMatchObject({ ok: false, code: 'ERR_CLI_BAD_ARGUMENT', failures: [] });
    });
  }

  it('an invalid TdxPolicy file: exit 2, ERR_ATT_TDX_BAD_POLICY naming the field', async () => {
    const policy = path.join(tmp, 'bad-tdx-policy.yaml');
    await writeFile(policy, 'acceptedTcbStatuses: [Fine]\n');
    const r = await cir(dcapArgs('--policy', policy));
    expect(r.code).toBe(2);
    const o = oneJson(r);
    expect(o['code']).toBe('ERR_ATT_TDX_BAD_POLICY');
    expect(o['detail']).toMatch(/acceptedTcbStatuses/);
  });

  it('a missing or malformed --collateral: exit 2', async () => {
    const r1 = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', path.join(tmp, 'nope'), '--json'));
    expect(r1.code).toBe(2);
    expect(oneJson(r1)['code']).toBe('ERR_CLI_FILE_UNREADABLE');
    const bad = path.join(tmp, 'bad-collateral.json');
    await writeFile(bad, '{"tcb_info": 1}');
    const r2 = await cir(verify('--evidence', TDX.dcap.quote, '--collateral', bad, '--json'));
    expect(r2.code).toBe(2);
    expect(oneJson(r2)['code']).toBe('ERR_ATT_TDX_BAD_COLLATERAL');
  });
});

describe('TDX evidence handling in-process (property)', () => {
  let collateral: TdxCollateral;
  const real = new Uint8Array(readFileSync(TDX.dcap.quote));
  beforeAll(async () => {
    collateral = await loadTdxCollateral(TDX.dcap.collateral);
  });

  /** Either a typed rejection (exit 1 or 2) or a typed error; never an untyped throw, never acceptance. */
  async function onlyTyped(evidence: Uint8Array): Promise<void> {
    try {
      const r = await evaluateTdxAttestation({
        evidence,
        collateral,
        now: new Date(TDX.dcap.at),
        policy: buildTdxPolicy(undefined, {}),
        allowMissingCrls: false,
      });
      if (r.outcome.ok) throw new Error('arbitrary bytes were accepted');
      expect(r.outcome.code).toMatch(/^ERR_ATT_TDX_[A-Z0-9_]+$/);
      expect([1, 2]).toContain(r.exitCode);
    } catch (e) {
      if (!isCirError(e)) throw e;
    }
  }

  it('arbitrary bytes never give anything but a typed rejection', async () => {
    await fc.assert(fc.asyncProperty(fc.uint8Array({ maxLength: 8192 }), (b) => onlyTyped(b)), { numRuns: 300 });
  });

  it('arbitrary bytes behind a real v4 or v5 TDX header, likewise', async () => {
    const arb = fc.tuple(fc.constantFrom(4, 5), fc.uint8Array({ maxLength: 6000 })).map(([v, rest]) => {
      const b = new Uint8Array(48 + rest.length);
      b.set(real.subarray(0, 48));
      new DataView(b.buffer).setUint16(0, v, true);
      b.set(rest, 48);
      return b;
    });
    await fc.assert(fc.asyncProperty(arb, (b) => onlyTyped(b)), { numRuns: 300 });
  });

  it('single-byte corruptions and truncations of a real quote are rejected with a typed code', async () => {
    const sigEnd = 48 + 584 + 4 + 64; // header, body, signature length, quote signature
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 0, max: sigEnd - 1 }), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const b = new Uint8Array(real);
        b[i] = b[i]! ^ x;
        return onlyTyped(b);
      }),
      { numRuns: 100 },
    );
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: real.length - 71 }), (n) => onlyTyped(real.subarray(0, n))), { numRuns: 100 });
  });

  it('detectTee: SEV-SNP by size and version, TDX by header, else undefined', () => {
    expect(detectTee(real)).toBe('tdx');
    expect(detectTee(new Uint8Array(readFileSync(TURIN.report)))).toBe('sev-snp');
    expect(detectTee(real.subarray(0, 47))).toBeUndefined();
    expect(detectTee(Object.assign(new Uint8Array(real), { 4: 0 }))).toBeUndefined(); // tee_type 0 (SGX)
    expect(detectTee(Object.assign(new Uint8Array(real), { 0: 3 }))).toBeUndefined();
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (b) => {
        expect([undefined, 'sev-snp', 'tdx']).toContain(detectTee(b));
      }),
    );
  });
});

describe('TDX flag parsers', () => {
  it('parseTcbStatuses', () => {
    expect(parseTcbStatuses(['UpToDate,OutOfDate', ' SWHardeningNeeded '])).toEqual(['UpToDate', 'OutOfDate', 'SWHardeningNeeded']);
    for (const bad of [[''], ['uptodate'], ['UpToDate', 'UpToDate'], []]) {
      expect(() => parseTcbStatuses(bad)).toThrow(expect.objectContaining({ code: 'ERR_CLI_BAD_ARGUMENT' }));
    }
  });

  it('parseRtmrs: per-index allow-lists, lower-cased', () => {
    const a = 'AB'.repeat(48);
    const b = 'cd'.repeat(48);
    expect(parseRtmrs([`0=${a}`, `0=${b}`, ` 3 = ${b}`])).toEqual({ rtmr0: [a.toLowerCase(), b], rtmr3: [b] });
    for (const bad of [`4=${b}`, `-1=${b}`, b, `0=${b}00`, '0=']) {
      expect(() => parseRtmrs([bad])).toThrow(expect.objectContaining({ code: 'ERR_CLI_BAD_ARGUMENT' }));
    }
  });

  it('buildTdxPolicy: flags override the file; no MRTD means anyMrtd', () => {
    expect(buildTdxPolicy(undefined, {}).anyMrtd).toBe(true);
    const m = 'ab'.repeat(48);
    const p = buildTdxPolicy({ anyMrtd: true, rtmr1: [m] }, { expectMrtd: [m.toUpperCase()], allowDebug: true, acceptTcbStatus: ['UpToDate,OutOfDate'] });
    expect(p.mrtd).toEqual([m]);
    expect(p.anyMrtd).toBe(false);
    expect(p.rtmr1).toEqual([m]);
    expect(p.allowDebug).toBe(true);
    expect(p.acceptedTcbStatuses).toEqual(['UpToDate', 'OutOfDate']);
    expect(buildTdxPolicy({ mrtd: [m] }, {}).mrtd).toEqual([m]);
    expect(() => buildTdxPolicy(['x'], {})).toThrow(expect.objectContaining({ code: 'ERR_CLI_BAD_ARGUMENT' }));
    expect(() => buildTdxPolicy({ bogus: 1 }, {})).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_POLICY' }));
  });
});
