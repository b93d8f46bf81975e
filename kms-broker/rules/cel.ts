import { Environment, type ASTNode, type ParseResult } from '@marcbachmann/cel-js';
import { plainCopy, type ClaimView } from './claims.js';

/**
 * CEL conditions (`{cel: "<expression>"}`), evaluated with `@marcbachmann/cel-js` with the
 * claim view (claims.ts) bound as the variable `claims`, e.g.
 * `claims.reportedTcb.snp >= 8 && !claims.policy.debug`.
 *
 * Compiled once, when the policy is parsed; an expression that does not parse or
 * type-check, or that is over a bound, makes the policy invalid. Bounds: the expression
 * length, the AST size and depth (cel-js limits), list and map literal sizes, at most
 * `MAX_CEL_COMPREHENSIONS` comprehension macros (`all`, `exists`, `exists_one`, `map`,
 * `filter`), and no `matches()`.
 *
 * Does NOT make CEL total: a runtime error (a missing claim, a type mismatch) makes the
 * condition fail, never pass (`runCel`).
 */

/** Longest CEL expression accepted, characters. */
export const MAX_CEL_LENGTH = 1024;
/** Comprehension macros allowed in one expression (each iterates a list). */
export const MAX_CEL_COMPREHENSIONS = 2;

const CEL_LIMITS = { maxAstNodes: 256, maxDepth: 24, maxListElements: 64, maxMapEntries: 32, maxCallArguments: 8 } as const;
const COMPREHENSIONS: ReadonlySet<string> = new Set(['all', 'exists', 'exists_one', 'map', 'filter']);
// SECURITY: `matches` runs a policy-supplied regular expression on claim strings with a
// backtracking engine; a pathological pattern would stall the broker's event loop.
const FORBIDDEN_FUNCTIONS: ReadonlySet<string> = new Set(['matches']);

const env = new Environment({ limits: CEL_LIMITS }).registerVariable('claims', 'map');

export type CelProgram = ParseResult;
export type CelCompile = { readonly ok: true; readonly program: CelProgram } | { readonly ok: false; readonly reason: string };

/**
 * Parses and type-checks `expr`. The reason of a failure is the library's first message
 * line (it names a token or a function of the expression, which is policy text, not a
 * secret), bounded to 160 characters.
 */
export function compileCel(expr: string): CelCompile {
  if (expr.length === 0 || expr.length > MAX_CEL_LENGTH) return { ok: false, reason: `must be 1..${MAX_CEL_LENGTH} characters` };
  let program: CelProgram;
  try {
    program = env.parse(expr);
  } catch (e) {
    return { ok: false, reason: firstLine(e) };
  }
  const checked = program.check();
  if (!checked.valid) return { ok: false, reason: firstLine(checked.error) };
  if (checked.type !== 'bool' && checked.type !== 'dyn') return { ok: false, reason: `must be a bool expression, not ${checked.type ?? 'unknown'}` };
  const calls = callsIn(program.ast);
  const banned = calls.find((c) => FORBIDDEN_FUNCTIONS.has(c));
  if (banned !== undefined) return { ok: false, reason: `function ${banned}() is not allowed` };
  if (calls.filter((c) => COMPREHENSIONS.has(c)).length > MAX_CEL_COMPREHENSIONS) {
    return { ok: false, reason: `at most ${MAX_CEL_COMPREHENSIONS} comprehension macros (all, exists, exists_one, map, filter)` };
  }
  return { ok: true, program };
}

export interface CelOutcome {
  readonly pass: boolean;
  /** `true`, `false`, or why the condition failed closed. */
  readonly observed: string;
}

/**
 * Runs a compiled expression on the claim view. Passes only on the boolean `true`; a
 * non-boolean result or an evaluation error fails (fail closed), and `observed` says why.
 */
export function runCel(program: CelProgram, view: ClaimView): CelOutcome {
  let r: unknown;
  try {
    // SECURITY: a prototype-less deep copy: the expression sees claim data and nothing else.
    r = program({ claims: plainCopy(view) });
  } catch (e) {
    return { pass: false, observed: `error: ${firstLine(e)}` };
  }
  if (r === true) return { pass: true, observed: 'true' };
  if (r === false) return { pass: false, observed: 'false' };
  return { pass: false, observed: `error: result is ${r === null ? 'null' : typeof r}, not bool` };
}

function firstLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : 'invalid expression';
  // Control characters out; bounded.
  return (msg.split('\n')[0] ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim().slice(0, 160) || 'invalid expression';
}

/** Names of every function and macro called in an AST (bounded by the AST limits). */
function callsIn(root: ASTNode): string[] {
  const out: string[] = [];
  const stack: unknown[] = [root];
  while (stack.length > 0) {
    const n = stack.pop();
    if (Array.isArray(n)) {
      stack.push(...n);
      continue;
    }
    if (typeof n !== 'object' || n === null || !('op' in n)) continue;
    const node = n as ASTNode;
    if ((node.op === 'call' || node.op === 'rcall') && typeof node.args[0] === 'string') out.push(node.args[0]);
    if (node.op !== 'value' && node.op !== 'id' && Array.isArray(node.args)) stack.push(...(node.args as unknown[]));
  }
  return out;
}
