import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SnpPolicySchema } from '../attestation/snp/policy.js';
import { sha256 } from '../common/bytes.js';
import {
  canonicalJson,
  evaluatePolicy,
  isRulesPolicy,
  parseReleasePolicy,
  policyAppliesTo,
  policyHash,
  policyRelaxations,
  policyTee,
  type ReleasePolicy,
} from './policy.js';
import { makeClaims, makeTdxClaims, MEASUREMENT_A, MEASUREMENT_B, TDX_MRTD, TDX_MRTD_OTHER } from './testdata/harness.js';

const DEV = { production: false };
const PROD = { production: true };

describe('release policy', () => {
  it('hashes independently of key order and hex case', () => {
    const a = parseReleasePolicy({ measurements: [MEASUREMENT_A], minGuestSvn: 2 }, DEV);
    const b = parseReleasePolicy({ minGuestSvn: 2, measurements: [MEASUREMENT_A.toUpperCase()] }, DEV);
    expect(policyHash(a)).toBe(policyHash(b));
    expect(policyHash(parseReleasePolicy({ measurements: [MEASUREMENT_B] }, DEV))).not.toBe(policyHash(a));
  });

  it('canonicalJson sorts keys at every depth and round-trips JSON', () => {
    expect(canonicalJson({ b: 1, a: { d: [true, null], c: 'x' } })).toBe('{"a":{"c":"x","d":[true,null]},"b":1}');
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const s = canonicalJson(v);
        expect(canonicalJson(JSON.parse(s))).toBe(s);
      }),
    );
  });

  it('allows matching claims and lists each failing rule otherwise', () => {
    const p = parseReleasePolicy({ measurements: [MEASUREMENT_A], minGuestSvn: 3 }, DEV);
    expect(evaluatePolicy(makeClaims({ guestSvn: 3 }), p, DEV)).toMatchObject({ allowed: true, failures: [] });
    const d = evaluatePolicy(makeClaims({ measurement: MEASUREMENT_B, guestSvn: 1 }), p, DEV);
    expect(d.allowed).toBe(false);
    expect(d.failures.map((f) => f.field).sort()).toEqual(['guestSvn', 'measurement']);
    expect(d.failures.find((f) => f.field === 'measurement')).toMatchObject({ observed: MEASUREMENT_B });
    expect(d.policyHash).toBe(policyHash(p));
  });

  it('refuses simulated claims unless allowed, and always in production', () => {
    const strict = parseReleasePolicy({ anyMeasurement: true }, DEV);
    expect(evaluatePolicy(makeClaims({ simulated: true }), strict, DEV).failures).toEqual([
      { field: 'simulated', expected: 'false', observed: 'true' },
    ]);
    const sim = parseReleasePolicy({ anyMeasurement: true, allowSimulated: true }, DEV);
    const dev = evaluatePolicy(makeClaims({ simulated: true }), sim, DEV);
    expect(dev.allowed).toBe(true);
    expect(dev.relaxations).toContain('allow-simulated');
    const prod = evaluatePolicy(makeClaims({ simulated: true }), sim, PROD);
    expect(prod.allowed).toBe(false);
    expect(prod.failures.map((f) => f.field)).toEqual(expect.arrayContaining(['policy.allowSimulated', 'simulated']));
  });

  it('parse errors are typed and name the field', () => {
    expect(() => parseReleasePolicy({ measurements: ['zz'] }, DEV)).toThrow(expect.objectContaining({ code: 'ERR_KMS_POLICY_INVALID' }));
    expect(() => parseReleasePolicy({ anyMeasurement: true, allowSimulated: true }, PROD)).toThrow(
      expect.objectContaining({ code: 'ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION' }),
    );
  });
});

describe('TDX release policy', () => {
  const code = (f: () => unknown): { code?: string; detail?: string } => {
    try {
      f();
    } catch (e) {
      return e as { code?: string; detail?: string };
    }
    return {};
  };

  it('tee selects the schema; a policy without tee is SEV-SNP and keeps its historical hash', () => {
    const snp = parseReleasePolicy({ measurements: [MEASUREMENT_A] }, DEV);
    expect(policyTee(snp)).toBe('sev-snp');
    expect('tee' in snp).toBe(false);
    // Same bytes as before TDX support: stored records keep verifying.
    const legacy = sha256(Buffer.from(canonicalJson(SnpPolicySchema.parse({ measurements: [MEASUREMENT_A] })), 'utf8')).toString('hex');
    expect(policyHash(snp)).toBe(legacy);
    const explicit = parseReleasePolicy({ tee: 'sev-snp', measurements: [MEASUREMENT_A] }, DEV);
    expect(policyTee(explicit)).toBe('sev-snp');
    expect(policyHash(explicit)).not.toBe(legacy);
    const tdx = parseReleasePolicy({ tee: 'tdx', mrtd: [TDX_MRTD.toUpperCase()] }, DEV);
    expect(tdx).toMatchObject({ tee: 'tdx', mrtd: [TDX_MRTD], acceptedTcbStatuses: ['UpToDate'], allowDebug: false, anyMrtd: false });
    expect(policyHash(tdx)).toBe(policyHash(parseReleasePolicy({ mrtd: [TDX_MRTD], tee: 'tdx' }, DEV)));
    // The hash covers tee: the same fields under another TEE name are another document.
    expect(canonicalJson(tdx)).toContain('"tee":"tdx"');
  });

  it.each([
    [{ tee: 'tdx', mrtd: [TDX_MRTD], measurements: [MEASUREMENT_A] }, 'measurements'],
    [{ tee: 'tdx', anyMrtd: true, allowSimulated: true }, 'allowSimulated'],
    [{ tee: 'tdx', anyMrtd: true, minGuestSvn: 1 }, 'minGuestSvn'],
    [{ tee: 'tdx' }, 'mrtd'],
    [{ tee: 'tdx', mrtd: ['zz'] }, 'mrtd'],
    [{ tee: 'sev-snp', mrtd: [TDX_MRTD], anyMeasurement: true }, 'mrtd'],
    [{ tee: 'sgx', anyMeasurement: true }, 'tee'],
    [{ tee: null, anyMeasurement: true }, 'tee'],
  ])('%j is ERR_KMS_POLICY_INVALID naming %s', (input, field) => {
    const e = code(() => parseReleasePolicy(input, DEV));
    expect(e.code).toBe('ERR_KMS_POLICY_INVALID');
    expect(e.detail).toContain(field);
  });

  it('evaluates TDX claims with validateTdxClaims and reports the TDX relaxations', () => {
    const p = parseReleasePolicy({ tee: 'tdx', mrtd: [TDX_MRTD], acceptedTcbStatuses: ['UpToDate', 'OutOfDate'] }, DEV);
    expect(evaluatePolicy(makeTdxClaims(), p, DEV)).toMatchObject({ allowed: true, failures: [], relaxations: ['accept-tcb-status:OutOfDate'] });
    const d = evaluatePolicy(makeTdxClaims({ mrtd: TDX_MRTD_OTHER, tcbStatus: 'Revoked' }), p, DEV);
    expect(d.failures.map((f) => f.field).sort()).toEqual(['mrtd', 'tcbStatus']);
    expect(d.policyHash).toBe(policyHash(p));
  });

  it('claims of one TEE against a policy of the other fail on tee only', () => {
    const tdx = parseReleasePolicy({ tee: 'tdx', anyMrtd: true }, DEV);
    const snp = parseReleasePolicy({ anyMeasurement: true }, DEV);
    expect(evaluatePolicy(makeClaims(), tdx, DEV).failures).toEqual([{ field: 'tee', expected: 'tdx', observed: 'sev-snp' }]);
    expect(evaluatePolicy(makeTdxClaims(), snp, DEV).failures).toEqual([{ field: 'tee', expected: 'sev-snp', observed: 'tdx' }]);
  });

  it('simulated is SEV-SNP only: TDX claims that say simulated are refused even by an SEV-SNP policy that allows it', () => {
    const sim = parseReleasePolicy({ anyMeasurement: true, allowSimulated: true }, DEV);
    const forged = makeTdxClaims({ simulated: true as false });
    expect(evaluatePolicy(forged, sim, DEV).failures.map((f) => f.field)).toEqual(['tee', 'simulated']);
    const tdx = parseReleasePolicy({ tee: 'tdx', anyMrtd: true }, PROD);
    expect(evaluatePolicy(forged, tdx, PROD).allowed).toBe(false);
  });
});

describe('explanations of per-TEE policies', () => {
  it('SEV-SNP: each check the policy switches on, pass or fail, from the validator', () => {
    const p = parseReleasePolicy({ measurements: [MEASUREMENT_A], minGuestSvn: 3 }, DEV);
    const ok = evaluatePolicy(makeClaims({ guestSvn: 3 }), p, DEV);
    expect(ok.explanation.every((r) => r.pass)).toBe(true);
    expect(ok.explanation.map((r) => r.claim)).toEqual(
      expect.arrayContaining(['simulated', 'policy.debug', 'vmpl', 'measurement', 'guestSvn', 'committedTcb', 'firmware.committed']),
    );
    expect(ok.explanation.find((r) => r.claim === 'measurement')).toMatchObject({ op: 'check', observed: MEASUREMENT_A, pass: true });
    const bad = evaluatePolicy(makeClaims({ measurement: MEASUREMENT_B, guestSvn: 1 }), p, DEV);
    const failed = bad.explanation.filter((r) => !r.pass && r.op === 'check').map((r) => r.claim);
    expect(failed.sort()).toEqual(bad.failures.map((f) => f.field).sort());
    expect(bad.explanation.find((r) => r.claim === 'guestSvn')).toMatchObject({ expected: '>= 3', observed: '1', pass: false });
  });

  it('TDX: checks with claim paths (rtmr[1] -> rtmr.1)', () => {
    const rtmr1 = makeTdxClaims().rtmr[1];
    const p = parseReleasePolicy({ tee: 'tdx', mrtd: [TDX_MRTD], rtmr1: [rtmr1] }, DEV);
    const d = evaluatePolicy(makeTdxClaims(), p, DEV);
    expect(d.allowed).toBe(true);
    expect(d.explanation.find((r) => r.claim === 'rtmr.1')).toMatchObject({ path: 'policy.rtmr[1]', observed: rtmr1, pass: true });
    const denied = evaluatePolicy(makeTdxClaims({ tcbStatus: 'Revoked' }), p, DEV);
    expect(denied.explanation.find((r) => r.claim === 'tcbStatus')).toMatchObject({ observed: 'Revoked', pass: false });
  });

  it('the broker rules appear too: simulated, pass or fail', () => {
    const p = parseReleasePolicy({ anyMeasurement: true }, DEV);
    expect(evaluatePolicy(makeClaims(), p, DEV).explanation.at(-1)).toMatchObject({ path: 'broker.simulated', pass: true });
    const sim = parseReleasePolicy({ anyMeasurement: true, allowSimulated: true }, DEV);
    const prod = evaluatePolicy(makeClaims({ simulated: true }), sim, PROD);
    expect(prod.explanation.filter((r) => r.op === 'broker' && !r.pass).map((r) => r.path).sort()).toEqual([
      'broker.policy.allowSimulated',
      'broker.simulated',
    ]);
  });
});

describe('rules release policies through evaluatePolicy', () => {
  const snpRule = {
    allOf: [
      { claim: 'measurement', hexIn: [MEASUREMENT_A] },
      { claim: 'reportedTcb.snp', gte: 8 },
      { claim: 'policy.debug', equals: false },
    ],
  };
  const doc = (extra: Record<string, unknown> = {}) => ({ version: 1, tee: 'sev-snp', rule: snpRule, ...extra });

  it('allow and deny with explanation, failures and the hash', () => {
    const p = parseReleasePolicy(doc(), DEV);
    expect(isRulesPolicy(p)).toBe(true);
    const ok = evaluatePolicy(makeClaims(), p, DEV);
    expect(ok).toMatchObject({ allowed: true, failures: [], policyHash: policyHash(p), relaxations: [] });
    expect(ok.explanation.map((r) => r.path)).toEqual(['rule', 'rule.allOf[0]', 'rule.allOf[1]', 'rule.allOf[2]', 'broker.simulated']);
    const d = evaluatePolicy(makeClaims({ measurement: MEASUREMENT_B }), p, DEV);
    expect(d.allowed).toBe(false);
    expect(d.failures).toEqual([{ field: 'measurement', expected: `one of [${MEASUREMENT_A}]`, observed: MEASUREMENT_B }]);
  });

  it('tee scopes the rule; without tee it applies to every TEE and records any-tee', () => {
    const snp = parseReleasePolicy(doc(), DEV);
    expect(evaluatePolicy(makeTdxClaims(), snp, DEV).failures).toEqual([{ field: 'tee', expected: 'sev-snp', observed: 'tdx' }]);
    const tdx = parseReleasePolicy({ version: 1, tee: 'tdx', rule: { claim: 'measurement', hexEquals: TDX_MRTD } }, DEV);
    expect(policyTee(tdx)).toBe('tdx');
    expect(evaluatePolicy(makeTdxClaims(), tdx, DEV).allowed).toBe(true);
    expect(evaluatePolicy(makeClaims(), tdx, DEV).failures.map((f) => f.field)).toEqual(['tee']);
    const any = parseReleasePolicy({ version: 1, rule: { claim: 'debug', equals: false } }, DEV);
    expect(policyTee(any)).toBe('sev-snp');
    expect(policyAppliesTo(any, 'tdx') && policyAppliesTo(any, 'sev-snp')).toBe(true);
    expect(policyAppliesTo(snp, 'tdx')).toBe(false);
    expect(evaluatePolicy(makeTdxClaims(), any, DEV).allowed).toBe(true);
    expect(evaluatePolicy(makeClaims(), any, DEV).allowed).toBe(true);
    expect(policyRelaxations(any)).toEqual(['any-tee']);
  });

  it('simulated claims fail unless allowSimulated, and always in production', () => {
    const strict = parseReleasePolicy(doc(), DEV);
    expect(evaluatePolicy(makeClaims({ simulated: true }), strict, DEV).failures).toEqual([{ field: 'simulated', expected: 'false', observed: 'true' }]);
    const sim = parseReleasePolicy(doc({ allowSimulated: true }), DEV);
    const dev = evaluatePolicy(makeClaims({ simulated: true }), sim, DEV);
    expect(dev).toMatchObject({ allowed: true, relaxations: ['allow-simulated'] });
    expect(() => parseReleasePolicy(doc({ allowSimulated: true }), PROD)).toThrow(expect.objectContaining({ code: 'ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION' }));
    const prod = evaluatePolicy(makeClaims({ simulated: true }), sim, PROD);
    expect(prod.allowed).toBe(false);
    expect(prod.failures.map((f) => f.field)).toEqual(expect.arrayContaining(['policy.allowSimulated', 'simulated']));
    // A rule that itself admits simulated claims does not lift the broker rule.
    const ruleOnly = parseReleasePolicy({ version: 1, rule: { claim: 'simulated', equals: true } }, DEV);
    expect(evaluatePolicy(makeClaims({ simulated: true }), ruleOnly, DEV).allowed).toBe(false);
  });

  it('a hand-built rules object that never went through the parser is validated, and denied when invalid', () => {
    const forged = { version: 1, rule: { allOf: [] } } as unknown as ReleasePolicy;
    const d = evaluatePolicy(makeClaims(), forged, DEV);
    expect(d.allowed).toBe(false);
    expect(d.failures[0]).toMatchObject({ field: 'policy' });
    const copied = { ...parseReleasePolicy(doc(), DEV) } as ReleasePolicy;
    expect(evaluatePolicy(makeClaims(), copied, DEV).allowed).toBe(true);
  });

  it('the rules document hashes what was written: key order and hex case do not matter, tee does', () => {
    const a = parseReleasePolicy(doc(), DEV);
    const b = parseReleasePolicy({ rule: snpRule, tee: 'sev-snp', version: 1 }, DEV);
    expect(policyHash(a)).toBe(policyHash(b));
    expect(policyHash(parseReleasePolicy({ version: 1, rule: snpRule }, DEV))).not.toBe(policyHash(a));
    expect(canonicalJson(a)).not.toContain('allowSimulated');
  });

  it('YAML and JSON documents parse alike (the YAML of the README example)', async () => {
    const { parse } = await import('yaml');
    const y = parse(`version: 1\ntee: sev-snp\nrule:\n  allOf:\n    - claim: measurement\n      hexIn: ["${MEASUREMENT_A}"]\n    - claim: reportedTcb.snp\n      gte: 8\n    - claim: policy.debug\n      equals: false\n`) as unknown;
    expect(policyHash(parseReleasePolicy(y, DEV))).toBe(policyHash(parseReleasePolicy(doc(), DEV)));
  });
});
