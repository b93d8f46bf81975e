/**
 * `cir attest verify` as a user runs it (the compiled entry point in a child process; `npm
 * test` builds first), plus an in-process property test of its evidence handling.
 */
import { cir, CLI, REPO_ROOT, STACK_TRACE, type Run } from './helpers/cli.js';
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import fc from 'fast-check';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { evaluateAttestation, parseMinTcb, buildPolicy, certificatesInFile, type AttestVerifyInput } from '../cli/attest.js';
import { isCirError } from '../common/errors.js';
import { SimulatedSnp, SIM_FILES } from '../attestation/sim/index.js';
import { mintSnpReport, SIM_TEST_MEASUREMENT } from '../attestation/sim/testing.js';
import { toHex } from '../common/bytes.js';
import { parseSnpReport, writeVcekToBundle } from '../attestation/index.js';

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
    ['unsupported --tee', ['--tee', 'tdx']],
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
    for (const flag of ['--evidence', '--cert', '--collateral', '--at', '--allow-debug', '--expect-measurement', '--expect-report-data', '--min-tcb', '--allow-provisional-firmware', '--policy', '--allow-simulated', '--json']) {
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
