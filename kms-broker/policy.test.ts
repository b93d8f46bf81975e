import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalJson, evaluatePolicy, parseReleasePolicy, policyHash } from './policy.js';
import { makeClaims, MEASUREMENT_A, MEASUREMENT_B } from './testdata/harness.js';

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
