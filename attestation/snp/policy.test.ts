import { describe, it, expect } from 'vitest';
import { SnpPolicySchema, parseSnpPolicy, relaxationsFor } from './policy.js';
import { validateSnpClaims } from './validate.js';
import { isAttestationError } from '../codes.js';
import type { SnpClaims } from '../types.js';

const M = 'ab'.repeat(48);

function badPolicyCode(input: unknown): string | undefined {
  try {
    parseSnpPolicy(input);
    return undefined;
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign';
  }
}

// A hand-written claim set: validate does no crypto, so it can be tested on plain data.
const claims: SnpClaims = {
  tee: 'sev-snp',
  simulated: false,
  product: 'Genoa',
  reportVersion: 3,
  signingKey: 'vcek',
  measurement: M,
  reportData: '00'.repeat(64),
  hostData: '00'.repeat(32),
  idKeyDigest: '00'.repeat(48),
  authorKeyDigest: '00'.repeat(48),
  familyId: '00'.repeat(16),
  imageId: '00'.repeat(16),
  reportId: '11'.repeat(32),
  chipId: '22'.repeat(64),
  guestSvn: 3,
  vmpl: 0,
  policy: { abiMajor: 0, abiMinor: 31, smt: true, migrationAgent: false, debug: false, singleSocket: false },
  platform: { smtEnabled: true, tsmeEnabled: false },
  currentTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
  reportedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
  committedTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
  launchTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219 },
  firmware: { current: '1.55.29', committed: '1.55.29' },
  relaxations: [],
};

describe('SnpPolicySchema', () => {
  it('applies strict defaults', () => {
    const p = parseSnpPolicy({ measurements: [M.toUpperCase()] });
    expect(p).toMatchObject({
      allowSimulated: false,
      allowDebug: false,
      allowMigrationAgent: false,
      allowSmt: true,
      anyMeasurement: false,
      allowProvisionalFirmware: false,
      measurements: [M],
    });
    expect(Object.isFrozen(p)).toBe(true);
    expect(relaxationsFor(p)).toEqual([]);
  });

  it('requires measurements unless anyMeasurement, and not both', () => {
    expect(badPolicyCode({})).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(badPolicyCode({ measurements: [] })).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(badPolicyCode({ anyMeasurement: true, measurements: [M] })).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(badPolicyCode({ anyMeasurement: true })).toBeUndefined();
  });

  it('rejects unknown keys and malformed values', () => {
    for (const bad of [
      { measurements: [M], allowDebugg: true },
      { measurements: ['ab'] },
      { measurements: [M], hostData: ['zz'.repeat(32)] },
      { measurements: [M], vmpl: 4 },
      { measurements: [M], minTcb: { bootloader: 1, tee: 0, snp: 1 } },
      { measurements: [M], minTcb: { bootloader: 256, tee: 0, snp: 1, microcode: 1 } },
      { measurements: [M], minFirmware: '1' },
      { measurements: [M], minFirmware: '1.256' },
      { measurements: [M], reportData: '00' },
      null,
    ]) {
      expect(badPolicyCode(bad)).toBe('ERR_ATT_SNP_BAD_POLICY');
    }
    expect(SnpPolicySchema.safeParse({ measurements: [M], minFirmware: '1.55.3' }).success).toBe(true);
  });

  it('lists relaxations', () => {
    const p = parseSnpPolicy({
      anyMeasurement: true,
      allowDebug: true,
      allowSimulated: true,
      allowMigrationAgent: true,
      allowProvisionalFirmware: true,
      anyVmpl: true,
    });
    expect(relaxationsFor(p)).toEqual([
      'allow-simulated',
      'allow-debug',
      'allow-migration-agent',
      'any-measurement',
      'allow-provisional-firmware',
      'any-vmpl',
    ]);
    expect(relaxationsFor(parseSnpPolicy({ measurements: [M], anyVmpl: false }))).toEqual([]);
  });

  it('vmpl together with anyVmpl: true is contradictory', () => {
    expect(badPolicyCode({ measurements: [M], vmpl: 0, anyVmpl: true })).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(badPolicyCode({ measurements: [M], vmpl: 2, anyVmpl: true })).toBe('ERR_ATT_SNP_BAD_POLICY');
    expect(badPolicyCode({ measurements: [M], vmpl: 2, anyVmpl: false })).toBeUndefined();
    expect(badPolicyCode({ measurements: [M], anyVmpl: 'yes' })).toBe('ERR_ATT_SNP_BAD_POLICY');
  });

  it('does not add anyVmpl to a parsed policy that does not mention it (policy hashes stay stable)', () => {
    expect(Object.keys(parseSnpPolicy({ measurements: [M] }))).not.toContain('anyVmpl');
  });
});

describe('validateSnpClaims on plain claims', () => {
  it('passes a matching policy', () => {
    expect(
      validateSnpClaims(
        claims,
        parseSnpPolicy({
          measurements: [M],
          vmpl: 0,
          hostData: ['00'.repeat(32)],
          idKeyDigests: ['00'.repeat(48)],
          authorKeyDigests: ['00'.repeat(48)],
          familyId: ['00'.repeat(16)],
          imageId: ['00'.repeat(16)],
          chipIds: ['22'.repeat(64)],
          minTcb: { bootloader: 4, tee: 0, snp: 24, microcode: 219, fmc: 9 },
          minGuestSvn: 3,
          minFirmware: '1.55.29',
          reportData: '00'.repeat(64),
        }),
      ),
    ).toEqual([]);
  });

  it('applies fmc only where the TCB has one', () => {
    const turin: SnpClaims = {
      ...claims,
      product: 'Turin',
      reportedTcb: { ...claims.reportedTcb, fmc: 1 },
      committedTcb: { ...claims.committedTcb, fmc: 1 },
      launchTcb: { ...claims.launchTcb, fmc: 1 },
      currentTcb: { ...claims.currentTcb, fmc: 1 },
    };
    const f = validateSnpClaims(turin, parseSnpPolicy({ measurements: [M], minTcb: { bootloader: 0, tee: 0, snp: 0, microcode: 0, fmc: 2 } }));
    expect(f.map((x) => x.field)).toEqual(['reportedTcb.fmc', 'committedTcb.fmc', 'launchTcb.fmc']);
  });

  it('fails each allow-list and exact field with field/expected/observed', () => {
    const f = validateSnpClaims(
      claims,
      parseSnpPolicy({
        measurements: [M],
        idKeyDigests: ['01'.repeat(48)],
        authorKeyDigests: ['01'.repeat(48)],
        familyId: ['01'.repeat(16)],
        imageId: ['01'.repeat(16)],
        reportData: '01'.repeat(64),
        minFirmware: '1.55.30',
      }),
    );
    expect(f).toEqual([
      { field: 'idKeyDigest', expected: `one of [${'01'.repeat(48)}]`, observed: '00'.repeat(48) },
      { field: 'authorKeyDigest', expected: `one of [${'01'.repeat(48)}]`, observed: '00'.repeat(48) },
      { field: 'familyId', expected: `one of [${'01'.repeat(16)}]`, observed: '00'.repeat(16) },
      { field: 'imageId', expected: `one of [${'01'.repeat(16)}]`, observed: '00'.repeat(16) },
      { field: 'firmware.current', expected: '>= 1.55.30', observed: '1.55.29' },
      { field: 'reportData', expected: '01'.repeat(64), observed: '00'.repeat(64) },
    ]);
  });

  // Security review: VMPL was unchecked unless the policy named one, so a report requested
  // from a less privileged VMPL (SVSM/paravisor) with its own report_data was accepted.
  it('VMPL fails closed: an absent vmpl means VMPL 0', () => {
    const p = parseSnpPolicy({ measurements: [M] });
    expect(validateSnpClaims(claims, p)).toEqual([]);
    for (const vmpl of [1, 2, 3]) {
      expect(validateSnpClaims({ ...claims, vmpl }, p)).toEqual([{ field: 'vmpl', expected: '0', observed: String(vmpl) }]);
    }
  });

  it('an explicit vmpl is matched exactly', () => {
    const p = parseSnpPolicy({ measurements: [M], vmpl: 1 });
    expect(validateSnpClaims({ ...claims, vmpl: 1 }, p)).toEqual([]);
    expect(validateSnpClaims({ ...claims, vmpl: 0 }, p)).toEqual([{ field: 'vmpl', expected: '1', observed: '0' }]);
    expect(validateSnpClaims({ ...claims, vmpl: 2 }, p)).toEqual([{ field: 'vmpl', expected: '1', observed: '2' }]);
  });

  it('anyVmpl: true accepts every VMPL; anyVmpl: false is the default', () => {
    const any = parseSnpPolicy({ measurements: [M], anyVmpl: true });
    const strict = parseSnpPolicy({ measurements: [M], anyVmpl: false });
    for (const vmpl of [0, 1, 2, 3]) {
      expect(validateSnpClaims({ ...claims, vmpl }, any)).toEqual([]);
      expect(validateSnpClaims({ ...claims, vmpl }, strict).map((f) => f.field)).toEqual(vmpl === 0 ? [] : ['vmpl']);
    }
  });

  it('re-parses the policy: a hand-made object without measurements is a config error', () => {
    expect(() => validateSnpClaims(claims, {} as never)).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_BAD_POLICY' }));
  });
});

describe('snpPolicyError', () => {
  it('wraps failures in ERR_ATT_SNP_POLICY_FAILED (policy category) with structured details', async () => {
    const { snpPolicyError } = await import('./validate.js');
    const failures = validateSnpClaims({ ...claims, policy: { ...claims.policy, debug: true } }, parseSnpPolicy({ measurements: [M] }));
    const e = snpPolicyError(failures);
    expect(e.code).toBe('ERR_ATT_SNP_POLICY_FAILED');
    expect(e.category).toBe('policy');
    expect(e.details).toEqual({ failures: [{ field: 'policy.debug', expected: 'false', observed: 'true' }] });
  });
});
