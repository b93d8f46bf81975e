import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isCirError } from '../../common/errors.js';
import { canonicalJson, evaluatePolicy, parseReleasePolicy, policyHash, safeParseReleasePolicy, type RulesPolicy } from '../policy.js';
import { makeClaims, makeTdxClaims, MEASUREMENT_A, MEASUREMENT_B, TDX_MRTD } from '../testdata/harness.js';
import { claimPathIssue, claimView, lookupClaim } from './claims.js';
import { compileCel } from './cel.js';
import { evaluateRules } from './evaluate.js';
import { MAX_CEL_CONDITIONS, MAX_RULE_DEPTH, MAX_RULE_LIST, MAX_RULE_NODES, type Condition } from './schema.js';

const DEV = { production: false };
const rules = (rule: unknown, extra: Record<string, unknown> = {}): RulesPolicy =>
  parseReleasePolicy({ version: 1, ...extra, rule }, DEV) as RulesPolicy;
const snpView = (over = {}) => claimView(makeClaims(over));
const decide = (rule: unknown, view = snpView()) => evaluateRules(rules(rule).rule, view);
const invalid = (input: unknown): { code?: string; detail?: string } => {
  try {
    parseReleasePolicy(input, DEV);
  } catch (e) {
    return e as { code?: string; detail?: string };
  }
  return {};
};

describe('comparison operators (pass and fail)', () => {
  it.each([
    [{ claim: 'vmpl', equals: 0 }, true],
    [{ claim: 'vmpl', equals: 1 }, false],
    [{ claim: 'policy.debug', equals: false }, true],
    [{ claim: 'policy.debug', equals: true }, false],
    [{ claim: 'product', equals: 'Genoa' }, true],
    [{ claim: 'product', in: ['Milan', 'Genoa'] }, true],
    [{ claim: 'product', in: ['Milan', 'Turin'] }, false],
    [{ claim: 'reportedTcb.snp', gte: 23 }, true],
    [{ claim: 'reportedTcb.snp', gte: 24 }, false],
    [{ claim: 'reportedTcb.snp', lte: 23 }, true],
    [{ claim: 'reportedTcb.snp', lte: 22 }, false],
    [{ claim: 'measurement', hexEquals: MEASUREMENT_A.toUpperCase() }, true],
    [{ claim: 'measurement', hexEquals: MEASUREMENT_B }, false],
    [{ claim: 'measurement', hexEquals: 'aa' }, false],
    [{ claim: 'measurement', hexIn: [MEASUREMENT_B, MEASUREMENT_A] }, true],
    [{ claim: 'measurement', hexIn: [MEASUREMENT_B] }, false],
  ])('%j -> %s', (rule, pass) => {
    const r = decide(rule);
    expect(r.pass).toBe(pass);
    expect(r.explanation).toHaveLength(1);
    expect(r.explanation[0]).toMatchObject({ path: 'rule', claim: rule.claim, pass });
    expect(r.failures).toHaveLength(pass ? 0 : 1);
  });

  it('the explanation carries expected and observed values', () => {
    const r = decide({ claim: 'reportedTcb.snp', gte: 24 });
    expect(r.explanation[0]).toEqual({ path: 'rule', claim: 'reportedTcb.snp', op: 'gte', expected: '>= 24', observed: '23', pass: false });
    expect(r.failures).toEqual([{ field: 'reportedTcb.snp', expected: '>= 24', observed: '23' }]);
  });

  it.each([
    [{ claim: 'product', gte: 1 }, /type mismatch: string/],
    [{ claim: 'vmpl', hexEquals: '00' }, /type mismatch: number/],
    [{ claim: 'policy', equals: true }, /type mismatch: object/],
    [{ claim: 'relaxations', in: ['x'] }, /type mismatch: list/],
    [{ claim: 'reportedTcb.fmc', gte: 0 }, /^\(missing\)$/],
    [{ claim: 'no.such.claim', equals: 1 }, /^\(missing\)$/],
    [{ claim: 'vmpl', equals: '0' }, /^0$/],
  ])('a type mismatch or missing claim fails closed: %j', (rule, observed) => {
    const r = decide(rule);
    expect(r.pass).toBe(false);
    expect(r.explanation[0]!.observed).toMatch(observed);
  });
});

describe('combinators', () => {
  const T = { claim: 'vmpl', equals: 0 };
  const F = { claim: 'vmpl', equals: 1 };
  it.each([
    [{ allOf: [T, T] }, true],
    [{ allOf: [T, F] }, false],
    [{ anyOf: [F, T] }, true],
    [{ anyOf: [F, F] }, false],
    [{ not: F }, true],
    [{ not: T }, false],
    [{ not: { allOf: [T, F] } }, true],
    [{ anyOf: [{ allOf: [T, F] }, { not: F }] }, true],
  ])('%j -> %s', (rule, pass) => {
    expect(decide(rule).pass).toBe(pass);
  });

  it('every node is explained in document order with its path; failures are the leaves that decided', () => {
    const r = decide({ allOf: [T, F, { anyOf: [F, T] }, { not: T }] });
    expect(r.explanation.map((e) => [e.path, e.op, e.pass])).toEqual([
      ['rule', 'allOf', false],
      ['rule.allOf[0]', 'equals', true],
      ['rule.allOf[1]', 'equals', false],
      ['rule.allOf[2]', 'anyOf', true],
      ['rule.allOf[2].anyOf[0]', 'equals', false],
      ['rule.allOf[2].anyOf[1]', 'equals', true],
      ['rule.allOf[3]', 'not', false],
      ['rule.allOf[3].not', 'equals', true],
    ]);
    expect(r.explanation[0]).toMatchObject({ expected: 'all 4 pass', observed: '2 of 4 pass' });
    // The failing anyOf member inside a passing anyOf is not blamed; the leaf under `not` is, negated.
    expect(r.failures).toEqual([
      { field: 'vmpl', expected: '1', observed: '0' },
      { field: 'vmpl', expected: 'not (0)', observed: '0' },
    ]);
  });

  it('an allowed decision has no failures even when some anyOf member failed', () => {
    const r = decide({ anyOf: [F, T] });
    expect(r.pass).toBe(true);
    expect(r.failures).toEqual([]);
  });
});

describe('the issue example: measurement in {...} and reportedTcb.snp >= 8 and policy.debug = false', () => {
  const rule = {
    allOf: [
      { claim: 'measurement', hexIn: [MEASUREMENT_A, MEASUREMENT_B] },
      { claim: 'reportedTcb.snp', gte: 8 },
      { claim: 'policy.debug', equals: false },
    ],
  };
  it('allows, and denies naming each failing rule', () => {
    expect(decide(rule).pass).toBe(true);
    const tcb = { bootloader: 1, tee: 0, snp: 7, microcode: 1 };
    const d = decide(rule, snpView({ measurement: 'c'.repeat(96), reportedTcb: tcb, policy: { ...makeClaims().policy, debug: true } }));
    expect(d.failures.map((f) => f.field)).toEqual(['measurement', 'reportedTcb.snp', 'policy.debug']);
  });
  it('the common aliases work on TDX claims', () => {
    const portable = { allOf: [{ claim: 'measurement', hexEquals: TDX_MRTD }, { claim: 'debug', equals: false }, { claim: 'tee', equals: 'tdx' }] };
    expect(decide(portable, claimView(makeTdxClaims())).pass).toBe(true);
    expect(decide(portable, claimView(makeTdxClaims({ tdAttributes: { ...makeTdxClaims().tdAttributes, debug: true } }))).pass).toBe(false);
    expect(decide({ claim: 'rtmr.1', hexEquals: makeTdxClaims().rtmr[1] }, claimView(makeTdxClaims())).pass).toBe(true);
  });
});

describe('CEL conditions', () => {
  it('valid expressions decide on claims', () => {
    expect(decide({ cel: 'claims.reportedTcb.snp >= 8 && !claims.policy.debug' }).pass).toBe(true);
    expect(decide({ cel: 'claims.measurement in ["' + MEASUREMENT_B + '"]' }).pass).toBe(false);
    expect(decide({ cel: 'claims.relaxations.all(r, r != "allow-debug")' }).pass).toBe(true);
  });

  it.each([
    ['claims.nope == 1', /^error: /],
    ['claims.product + 1 == 2', /^error: /],
    ['claims.__proto__ == null', /^error: /],
    ['claims.constructor == null', /^error: /],
  ])('a runtime error fails closed: %s', (cel, observed) => {
    const r = decide({ cel });
    expect(r.pass).toBe(false);
    expect(r.explanation[0]!.observed).toMatch(observed);
    // ... and `not` of an erroring expression is the author's explicit negation.
    expect(decide({ not: { cel } }).pass).toBe(true);
  });

  it.each([
    ['1 +', 'rule.cel'],
    ['foo == 1', 'rule.cel'],
    ['"x"', 'rule.cel'],
    ['claims.product.matches("^(a+)+$")', 'rule.cel'],
    ['[1].all(a, [1].all(b, [1].all(c, true)))', 'rule.cel'],
    ['x'.repeat(2000), 'rule.cel'],
  ])('an invalid or unbounded expression is ERR_KMS_POLICY_INVALID naming the path: %s', (cel, path) => {
    const e = invalid({ version: 1, rule: { cel } });
    expect(e.code).toBe('ERR_KMS_POLICY_INVALID');
    expect(e.detail).toContain(path);
  });

  it('a CEL error names the nested path', () => {
    const e = invalid({ version: 1, rule: { allOf: [{ claim: 'vmpl', equals: 0 }, { not: { cel: '1 +' } }] } });
    expect(e.detail).toContain('rule.allOf.1.not.cel');
  });

  it('compileCel is exported for tools', () => {
    expect(compileCel('claims.vmpl == 0').ok).toBe(true);
    expect(compileCel('').ok).toBe(false);
  });
});

describe('claim paths and prototypes', () => {
  it.each(['__proto__', 'constructor', 'policy.__proto__', 'prototype', 'policy.constructor.name', 'a..b', '.a', '0', 'a b', 'x'.repeat(200)])(
    'path %j is refused at parse time',
    (claim) => {
      expect(claimPathIssue(claim)).toBeDefined();
      const e = invalid({ version: 1, rule: { claim, equals: 1 } });
      expect(e.code).toBe('ERR_KMS_POLICY_INVALID');
      expect(e.detail).toContain('rule.claim');
    },
  );

  it('lookup uses own properties only', () => {
    const view = snpView();
    for (const p of ['toString', 'hasOwnProperty', 'policy.toString', 'relaxations.length', 'relaxations.map', '__proto__', 'constructor']) {
      expect(lookupClaim(view, p).found).toBe(false);
    }
    expect(lookupClaim(view, 'policy.debug')).toEqual({ found: true, value: false });
    expect(lookupClaim(claimView(makeTdxClaims()), 'rtmr.3').found).toBe(true);
    expect(lookupClaim(claimView(makeTdxClaims()), 'rtmr.4').found).toBe(false);
    expect(Object.getPrototypeOf(view)).toBe(null);
  });

  it('a JSON document with a __proto__ member is refused, not merged', () => {
    const doc = JSON.parse('{"version":1,"rule":{"claim":"vmpl","equals":0,"__proto__":{"x":1}}}') as unknown;
    expect(invalid(doc).code).toBe('ERR_KMS_POLICY_INVALID');
  });
});

describe('limits', () => {
  const leaf = { claim: 'vmpl', equals: 0 };
  const nest = (n: number): unknown => (n <= 1 ? leaf : { not: { not: nest(n - 2) } });
  it('depth', () => {
    expect(invalid({ version: 1, rule: nest(MAX_RULE_DEPTH - 1) })).toEqual({});
    expect(invalid({ version: 1, rule: nest(MAX_RULE_DEPTH + 1) }).detail).toMatch(/deeper than/);
    // Hostile depth is a typed error, not a stack overflow.
    let deep: unknown = leaf;
    for (let i = 0; i < 100_000; i++) deep = { not: deep };
    expect(invalid({ version: 1, rule: deep }).code).toBe('ERR_KMS_POLICY_INVALID');
  });
  it('node count, list sizes, CEL count, empty combinators, strings', () => {
    const many = Array.from({ length: 60 }, () => leaf);
    const wide = { allOf: Array.from({ length: 5 }, () => ({ allOf: many })) };
    expect(MAX_RULE_NODES).toBeLessThan(5 * 60);
    expect(invalid({ version: 1, rule: wide }).detail).toMatch(/more than 256 conditions/);
    expect(invalid({ version: 1, rule: { allOf: Array.from({ length: 65 }, () => leaf) } }).detail).toMatch(/1\.\.64/);
    expect(invalid({ version: 1, rule: { claim: 'vmpl', in: Array.from({ length: MAX_RULE_LIST + 1 }, (_, i) => i) } }).code).toBe('ERR_KMS_POLICY_INVALID');
    const cels = Array.from({ length: MAX_CEL_CONDITIONS + 1 }, () => ({ cel: 'true' }));
    expect(invalid({ version: 1, rule: { allOf: cels } }).detail).toMatch(/CEL conditions/);
    expect(invalid({ version: 1, rule: { allOf: [] } }).code).toBe('ERR_KMS_POLICY_INVALID');
    expect(invalid({ version: 1, rule: { anyOf: [] } }).code).toBe('ERR_KMS_POLICY_INVALID');
    expect(invalid({ version: 1, rule: { claim: 'product', equals: 'x'.repeat(257) } }).code).toBe('ERR_KMS_POLICY_INVALID');
    expect(invalid({ version: 1, rule: { claim: 'measurement', hexEquals: 'abc' } }).code).toBe('ERR_KMS_POLICY_INVALID');
    expect(invalid({ version: 1, description: 'd'.repeat(1025), rule: leaf }).code).toBe('ERR_KMS_POLICY_INVALID');
  });
  it.each([
    [{ version: 2, rule: leaf }, 'version'],
    [{ version: 1 }, 'rule'],
    [{ version: 1, rule: leaf, measurements: [] }, 'measurements'],
    [{ version: 1, tee: 'sgx', rule: leaf }, 'tee'],
    [{ version: 1, rule: { claim: 'vmpl', equals: 0, gte: 1 } }, 'rule'],
    [{ version: 1, rule: { claim: 'vmpl', between: 1 } }, 'rule'],
    [{ version: 1, rule: { claim: 'vmpl', gte: '1' } }, 'rule.gte'],
    [{ version: 1, rule: { claim: 'vmpl', equals: null } }, 'rule.equals'],
    [{ version: 1, rule: [leaf] }, 'rule'],
  ])('%j is ERR_KMS_POLICY_INVALID naming %s', (input, field) => {
    const e = invalid(input);
    expect(e.code).toBe('ERR_KMS_POLICY_INVALID');
    expect(e.detail).toContain(field);
  });
});

// --- properties ------------------------------------------------------------------------

const claimArb = fc.constantFrom('vmpl', 'guestSvn', 'product', 'policy.debug', 'measurement', 'reportedTcb.snp', 'nope', 'chipId');
const scalarArb = fc.oneof(fc.integer({ min: -2, max: 30 }), fc.boolean(), fc.constantFrom('Genoa', 'Milan', MEASUREMENT_A, 'x'));
const leafArb: fc.Arbitrary<Condition> = fc.oneof(
  fc.record({ claim: claimArb, equals: scalarArb }),
  fc.record({ claim: claimArb, in: fc.array(scalarArb, { minLength: 1, maxLength: 4 }) }),
  fc.record({ claim: claimArb, gte: fc.integer({ min: -2, max: 30 }) }),
  fc.record({ claim: claimArb, lte: fc.integer({ min: -2, max: 30 }) }),
  fc.record({ claim: claimArb, hexEquals: fc.constantFrom(MEASUREMENT_A, MEASUREMENT_B, '00') }),
  fc.record({ cel: fc.constantFrom('claims.vmpl == 0', 'claims.nope', 'claims.guestSvn > 1') }),
);
const condArb: fc.Arbitrary<Condition> = fc.letrec<{ c: Condition }>((tie) => ({
  c: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    leafArb,
    fc.record({ allOf: fc.array(tie('c'), { minLength: 1, maxLength: 3 }) }),
    fc.record({ anyOf: fc.array(tie('c'), { minLength: 1, maxLength: 3 }) }),
    fc.record({ not: tie('c') }),
  ),
})).c;

function shuffleKeys(v: unknown, seed: number): unknown {
  if (Array.isArray(v)) return v.map((x, i) => shuffleKeys(x, seed + i));
  if (typeof v === 'object' && v !== null) {
    const entries = Object.entries(v);
    if (seed % 2 === 1) entries.reverse();
    return Object.fromEntries(entries.map(([k, x], i) => [k, shuffleKeys(x, seed + i + 1)]));
  }
  return v;
}

describe('parser and evaluator properties', () => {
  it('arbitrary JSON never throws anything but ERR_KMS_POLICY_INVALID', () => {
    const docArb = fc.oneof(fc.jsonValue(), fc.record({ version: fc.constantFrom(1, 2, '1'), rule: fc.jsonValue() }, { requiredKeys: [] }));
    fc.assert(
      fc.property(docArb, (doc) => {
        try {
          parseReleasePolicy(doc, DEV);
        } catch (e) {
          expect(isCirError(e) && (e as { code: string }).code).toBe('ERR_KMS_POLICY_INVALID');
        }
        const r = safeParseReleasePolicy(doc);
        expect(typeof r.success).toBe('boolean');
      }),
      { numRuns: 500 },
    );
  });

  it('not(not(c)) decides as c', () => {
    const views = [snpView(), snpView({ vmpl: 1, measurement: MEASUREMENT_B, guestSvn: 7 }), claimView(makeTdxClaims())];
    fc.assert(
      fc.property(condArb, fc.constantFrom(0, 1, 2), (c, v) => {
        const p = safeParseReleasePolicy({ version: 1, rule: c });
        fc.pre(p.success);
        const pp = parseReleasePolicy({ version: 1, rule: { not: { not: c } } }, DEV) as RulesPolicy;
        const plain = evaluateRules((p as { data: RulesPolicy }).data.rule, views[v]!);
        expect(evaluateRules(pp.rule, views[v]!).pass).toBe(plain.pass);
      }),
      { numRuns: 300 },
    );
  });

  it('the hash is stable under key reordering and hex case', () => {
    fc.assert(
      fc.property(condArb, fc.integer({ min: 0, max: 1000 }), (c, seed) => {
        const a = safeParseReleasePolicy({ version: 1, tee: 'sev-snp', description: 'd', rule: c });
        fc.pre(a.success);
        const b = parseReleasePolicy(shuffleKeys({ rule: c, description: 'd', tee: 'sev-snp', version: 1 }, seed), DEV);
        expect(policyHash(b)).toBe(policyHash((a as { data: RulesPolicy }).data));
        expect(canonicalJson(b)).toBe(canonicalJson((a as { data: RulesPolicy }).data));
      }),
      { numRuns: 200 },
    );
    const upper = rules({ claim: 'measurement', hexEquals: MEASUREMENT_A.toUpperCase() });
    expect(policyHash(upper)).toBe(policyHash(rules({ claim: 'measurement', hexEquals: MEASUREMENT_A })));
  });

  it('evaluatePolicy never throws on a parsed rules policy and allowed == (no failures)', () => {
    fc.assert(
      fc.property(condArb, fc.boolean(), (c, sim) => {
        const p = safeParseReleasePolicy({ version: 1, rule: c });
        fc.pre(p.success);
        const d = evaluatePolicy(makeClaims({ simulated: sim }), (p as { data: RulesPolicy }).data, DEV);
        expect(d.allowed).toBe(d.failures.length === 0);
        expect(d.explanation.length).toBeGreaterThan(0);
      }),
      { numRuns: 200 },
    );
  });
});
