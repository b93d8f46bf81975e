import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { appraisalPolicyId, appraiseCpu, attestationPolicyId, earStatus, EarAppraisalSchema, tierOf, TRUST_CLAIMS, type TrustVector } from './ear.js';
import { makeClaims, makeTdxClaims } from './testdata/harness.js';

const POLICY = appraisalPolicyId('attestation/sev-snp', '0'.repeat(64));
const CLEAN: TrustVector = {
  'instance-identity': 2,
  configuration: 2,
  executables: 2,
  'file-system': 0,
  hardware: 2,
  'runtime-opaque': 2,
  'storage-opaque': 0,
  'sourced-data': 0,
};

describe('tierOf / earStatus (AR4SI tiers)', () => {
  it.each([
    [-1, 'none'],
    [0, 'none'],
    [1, 'none'],
    [2, 'affirming'],
    [31, 'affirming'],
    [32, 'warning'],
    [95, 'warning'],
    [96, 'contraindicated'],
    [127, 'contraindicated'],
    [-96, 'contraindicated'],
  ] as const)('%i is %s', (v, t) => {
    expect(tierOf(v)).toBe(t);
  });

  it('is the worst tier over the claims made, none when nothing was claimed', () => {
    expect(earStatus(CLEAN)).toBe('affirming');
    expect(earStatus({ ...CLEAN, hardware: 32 })).toBe('warning');
    expect(earStatus({ ...CLEAN, hardware: 32, configuration: 96 })).toBe('contraindicated');
    const none = Object.fromEntries(TRUST_CLAIMS.map((k) => [k, 0])) as unknown as TrustVector;
    expect(earStatus(none)).toBe('none');
  });
});

describe('appraiseCpu (the table in ear.ts)', () => {
  const base = { relaxations: [] as string[], allowed: true, policyId: POLICY };

  it('clean SEV-SNP and TDX evidence: affirming, the exact vector', () => {
    for (const claims of [makeClaims(), makeTdxClaims()]) {
      const a = appraiseCpu({ ...base, claims });
      expect(a).toEqual({ 'ear.status': 'affirming', 'ear.trustworthiness-vector': CLEAN, 'ear.appraisal-policy-id': POLICY });
      expect(EarAppraisalSchema.parse(a)).toEqual(a);
    }
  });

  type Row = [string, Parameters<typeof appraiseCpu>[0], Partial<TrustVector>, string];
  const rows: Row[] = [
    ['simulated root', { ...base, claims: makeClaims({ simulated: true }), relaxations: ['simulated-root', 'allow-simulated'] }, { 'instance-identity': 0, hardware: 32 }, 'warning'],
    ['simulated claims without the relaxation name', { ...base, claims: makeClaims({ simulated: true }) }, { 'instance-identity': 0, hardware: 32 }, 'warning'],
    ['debug allowed by policy (guest not in debug)', { ...base, claims: makeClaims(), relaxations: ['allow-debug'] }, { configuration: 32 }, 'warning'],
    [
      'debug guest',
      { ...base, claims: makeClaims({ policy: { abiMajor: 1, abiMinor: 0, smt: true, migrationAgent: false, debug: true, singleSocket: false } }), relaxations: ['allow-debug'] },
      { configuration: 32, 'runtime-opaque': 96 },
      'contraindicated',
    ],
    ['any measurement: no executables claim', { ...base, claims: makeClaims(), relaxations: ['any-measurement'] }, { executables: 0 }, 'affirming'],
    ['any MRTD', { ...base, claims: makeTdxClaims(), relaxations: ['any-mrtd'] }, { executables: 0 }, 'affirming'],
    ['provisional firmware', { ...base, claims: makeClaims(), relaxations: ['allow-provisional-firmware'] }, { hardware: 32 }, 'warning'],
    ['TDX OutOfDate accepted', { ...base, claims: makeTdxClaims({ tcbStatus: 'OutOfDate' }), relaxations: ['accept-tcb-status:OutOfDate'] }, { hardware: 32 }, 'warning'],
    ['TDX tcbStatus not UpToDate, no relaxation named', { ...base, claims: makeTdxClaims({ tcbStatus: 'SWHardeningNeeded' }) }, { hardware: 32 }, 'warning'],
    ['CRL unchecked', { ...base, claims: makeTdxClaims(), relaxations: ['pck-crl-unchecked'] }, { hardware: 32 }, 'warning'],
    ['TD attributes mask widened', { ...base, claims: makeTdxClaims(), relaxations: ['td-attributes-allow-mask:ffffffffffffffff'] }, { configuration: 32 }, 'warning'],
    ['unknown relaxation (fail closed)', { ...base, claims: makeClaims(), relaxations: ['something-new'] }, { configuration: 32 }, 'warning'],
    ['denied by the attestation policy', { ...base, claims: makeClaims(), allowed: false }, { configuration: 96 }, 'contraindicated'],
  ];
  it.each(rows)('%s', (_name, input, changed, status) => {
    const a = appraiseCpu(input);
    expect(a['ear.trustworthiness-vector']).toEqual({ ...CLEAN, ...changed });
    expect(a['ear.status']).toBe(status);
  });

  it('property: every non-empty relaxation moves the vector off the clean one; only measurement waivers keep it affirming', () => {
    fc.assert(
      fc.property(fc.array(fc.string({ minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 5 }), (relaxations) => {
        const a = appraiseCpu({ ...base, claims: makeClaims(), relaxations });
        expect(a['ear.trustworthiness-vector']).not.toEqual(CLEAN);
        const onlyWaivers = relaxations.every((r) => r === 'any-measurement' || r === 'any-mrtd');
        expect(a['ear.status'] === 'affirming').toBe(onlyWaivers);
      }),
    );
  });

  it('policy ids', () => {
    expect(attestationPolicyId('tdx')).toBe('attestation/tdx');
    expect(appraisalPolicyId('attestation/tdx', 'ab'.repeat(32))).toBe(`policy:attestation/tdx@sha256:${'ab'.repeat(32)}`);
  });
});
