import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { SnpPolicySchema } from '../attestation/snp/policy.js';
import { sha256 } from '../common/bytes.js';
import { canonicalJson, evaluatePolicy, parseReleasePolicy, policyHash, policyTee } from './policy.js';
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
