import type { PolicyFailure } from '../../attestation/types.js';
import { constantTimeEqual } from '../../common/bytes.js';
import { lookupClaim, type ClaimView } from './claims.js';
import { runCel } from './cel.js';
import { celProgramFor, type Comparison, type Condition, type Scalar } from './schema.js';

/**
 * Evaluation of a condition tree (schema.ts) on a claim view (claims.ts). No I/O, no crypto
 * beyond constant-time comparison. Every node is evaluated (no short-circuit), so the
 * explanation shows every rule, pass or fail; the cost is bounded by the parser's limits.
 *
 * Fail closed: a missing claim, a value of the wrong type (gte on a string, hexEquals on a
 * number), a CEL error or a non-boolean CEL result makes that comparison FAIL, and
 * `observed` says why. (Under `not` such a failure turns into a pass, as written: `not` is
 * the policy author's explicit negation.)
 */

/** How one node of the tree decided. Values are public claim values (hex, numbers, booleans). */
export interface RuleResult {
  /** Where the node is in the document, e.g. `rule.allOf[2].not`. */
  readonly path: string;
  /** The claim path a comparison reads (absent for combinators and CEL). */
  readonly claim?: string;
  /** `allOf`, `anyOf`, `not`, `cel`, a comparison operator, or for legacy policies `check`, or `broker` for the broker's own rules. */
  readonly op: string;
  readonly expected: string;
  readonly observed: string;
  readonly pass: boolean;
}

export interface RulesEvaluation {
  readonly pass: boolean;
  /** Every node, in document order (a combinator before its members). */
  readonly explanation: readonly RuleResult[];
  /** The leaves that made the decision fail (empty when it passes). */
  readonly failures: readonly PolicyFailure[];
}

const MISSING = '(missing)';
const MAX_SHOWN = 256;

/** A claim or operand value as text: strings as they are (bounded), others by JSON. */
export function showValue(v: unknown): string {
  if (typeof v === 'string') return v.length > MAX_SHOWN ? `${v.slice(0, MAX_SHOWN)}...` : v;
  if (typeof v === 'number' || typeof v === 'boolean' || v === null) return String(v);
  if (Array.isArray(v)) return `(list of ${v.length})`;
  return `(${typeof v})`;
}

function oneOf(list: readonly unknown[]): string {
  const shown = list.slice(0, 8).map(showValue).join(', ');
  return list.length > 8 ? `one of [${shown}, ... (${list.length} total)]` : `one of [${shown}]`;
}

const typeOf = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'list' : typeof v);

function hexBytesEqual(observed: string, want: string): boolean {
  // SECURITY: constant time for equal lengths (lengths are public); both sides lower-case ASCII.
  return constantTimeEqual(Buffer.from(observed, 'latin1'), Buffer.from(want, 'latin1'));
}

const OBSERVED_HEX_RE = /^[0-9a-fA-F]*$/;

interface Decided {
  readonly pass: boolean;
  readonly expected: string;
  readonly observed: string;
}

/** One comparison on the view. Exported for tests. */
export function compare(c: Comparison, view: ClaimView): Decided & { readonly op: string } {
  const got = lookupClaim(view, c.claim);
  const mismatch = (op: string, expected: string, want: string): Decided & { op: string } => ({
    op,
    expected,
    observed: got.found ? `${showValue(got.value)} (type mismatch: ${typeOf(got.value)}, want ${want})` : MISSING,
    pass: false,
  });
  const isScalar = (v: unknown): v is Scalar => typeof v === 'string' || typeof v === 'number' || typeof v === 'boolean';
  if ('equals' in c) {
    const expected = showValue(c.equals);
    if (!got.found || !isScalar(got.value)) return mismatch('equals', expected, typeOf(c.equals));
    return { op: 'equals', expected, observed: showValue(got.value), pass: got.value === c.equals };
  }
  if ('in' in c) {
    const expected = oneOf(c.in);
    if (!got.found || !isScalar(got.value)) return mismatch('in', expected, 'string, number or boolean');
    const v = got.value;
    return { op: 'in', expected, observed: showValue(v), pass: c.in.some((x) => x === v) };
  }
  if ('gte' in c || 'lte' in c) {
    const op = 'gte' in c ? 'gte' : 'lte';
    const bound = 'gte' in c ? c.gte : c.lte;
    const expected = `${op === 'gte' ? '>=' : '<='} ${bound}`;
    if (!got.found || typeof got.value !== 'number' || !Number.isFinite(got.value)) return mismatch(op, expected, 'number');
    return { op, expected, observed: String(got.value), pass: op === 'gte' ? got.value >= bound : got.value <= bound };
  }
  const op = 'hexEquals' in c ? 'hexEquals' : 'hexIn';
  const wants = 'hexEquals' in c ? [c.hexEquals] : c.hexIn;
  const expected = 'hexEquals' in c ? c.hexEquals : oneOf(c.hexIn);
  if (!got.found || typeof got.value !== 'string' || !OBSERVED_HEX_RE.test(got.value)) return mismatch(op, expected, 'hex string');
  const observed = got.value.toLowerCase();
  // No early exit: every candidate is compared.
  let pass = false;
  for (const w of wants) pass = hexBytesEqual(observed, w) || pass;
  return { op, expected, observed: showValue(observed), pass };
}

/** Evaluates `rule` on `view`; see the module comment. */
export function evaluateRules(rule: Condition, view: ClaimView): RulesEvaluation {
  const explanation: RuleResult[] = [];
  const failures: PolicyFailure[] = [];

  interface Node {
    readonly index: number;
    readonly pass: boolean;
    readonly children: readonly Node[];
    readonly negated?: boolean;
    readonly leaf?: RuleResult;
  }

  const visit = (c: Condition, path: string): Node => {
    const index = explanation.length;
    explanation.push(undefined as unknown as RuleResult); // placeholder: pre-order slot
    const set = (r: RuleResult): void => void (explanation[index] = Object.freeze(r));
    if ('allOf' in c || 'anyOf' in c) {
      const all = 'allOf' in c;
      const members = all ? c.allOf : c.anyOf;
      const op = all ? 'allOf' : 'anyOf';
      const children = members.map((m, i) => visit(m, `${path}.${op}[${i}]`));
      const passing = children.filter((ch) => ch.pass).length;
      const pass = all ? passing === children.length : passing > 0;
      set({ path, op, expected: all ? `all ${children.length} pass` : `at least 1 of ${children.length} passes`, observed: `${passing} of ${children.length} pass`, pass });
      return { index, pass, children };
    }
    if ('not' in c) {
      const child = visit(c.not, `${path}.not`);
      const pass = !child.pass;
      set({ path, op: 'not', expected: 'the condition fails', observed: child.pass ? 'it passes' : 'it fails', pass });
      return { index, pass, children: [child], negated: true };
    }
    if ('cel' in c) {
      const program = celProgramFor(c);
      const r = program ? runCel(program, view) : { pass: false, observed: 'error: expression does not compile' };
      const leaf: RuleResult = { path, op: 'cel', expected: `true: ${showValue(c.cel)}`, observed: r.observed, pass: r.pass };
      set(leaf);
      return { index, pass: r.pass, children: [], leaf };
    }
    const d = compare(c, view);
    const leaf: RuleResult = { path, claim: c.claim, op: d.op, expected: d.expected, observed: d.observed, pass: d.pass };
    set(leaf);
    return { index, pass: d.pass, children: [], leaf };
  };

  /**
   * The leaves responsible for `node` not being `want`: for a failing allOf its failing
   * members, for a failing anyOf all members; under `not` the roles swap, and a leaf
   * reported there says its expectation negated.
   */
  const blame = (node: Node, want: boolean): void => {
    if (node.pass === want) return;
    if (node.leaf) {
      const l = node.leaf;
      failures.push(Object.freeze({ field: l.claim ?? l.path, expected: want ? l.expected : `not (${l.expected})`, observed: l.observed }));
      return;
    }
    if (node.negated) return blame(node.children[0]!, !want);
    const op = explanation[node.index]!.op;
    // A node that is not `want`: allOf(want=true) / anyOf(want=false) -> members that are not `want`;
    // anyOf(want=true) / allOf(want=false) -> every member (none of them is `want`).
    const each = (op === 'allOf') === want ? node.children.filter((ch) => ch.pass !== want) : node.children;
    for (const ch of each) blame(ch, want);
  };

  const root = visit(rule, 'rule');
  blame(root, true);
  return Object.freeze({ pass: root.pass, explanation: Object.freeze(explanation), failures: Object.freeze(failures) });
}
