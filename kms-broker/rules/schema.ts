import { z } from 'zod';
import { deepFreeze } from '../../common/config.js';
import { claimPathIssue } from './claims.js';
import { compileCel, type CelProgram } from './cel.js';

/**
 * Release rules: a release policy written as a condition tree over claims (claims.ts),
 * JSON or YAML:
 *
 *   { version: 1, tee?: "sev-snp" | "tdx", description?: string, allowSimulated?: boolean,
 *     rule: Condition }
 *
 * Condition is exactly one of
 *   {allOf: [Condition, ...]}  {anyOf: [Condition, ...]}  {not: Condition}
 *   {claim: PATH, equals: v}   {claim: PATH, in: [v, ...]}   (v: string, number or boolean)
 *   {claim: PATH, gte: n}      {claim: PATH, lte: n}
 *   {claim: PATH, hexEquals: "hex"}   {claim: PATH, hexIn: ["hex", ...]}
 *   {cel: "<expression>"}              (cel.ts)
 *
 * Everything is bounded (the constants below) and checked before anything recurses, so a
 * hostile document costs at most `MAX_RULE_NODES` node checks. Hex operands are stored
 * lower-case (hash stable under case). `allOf` and `anyOf` need at least one member: an
 * empty `allOf` would allow everything.
 *
 * Does NOT check that a claim path exists for the policy's TEE: a path that names no claim
 * fails at evaluation (fail closed) and the explanation says "(missing)".
 */

/** Deepest nesting of conditions (`rule` itself is depth 1). */
export const MAX_RULE_DEPTH = 16;
/** Most condition nodes (combinators, comparisons and CEL conditions) in one policy. */
export const MAX_RULE_NODES = 256;
/** Most members of one `allOf` / `anyOf`. */
export const MAX_RULE_CHILDREN = 64;
/** Most values in one `in` / `hexIn` list. */
export const MAX_RULE_LIST = 256;
/** Longest string operand, characters. */
export const MAX_RULE_STRING = 256;
/** Longest hex operand, hex digits (128 bytes; the longest claim, reportData, is 64). */
export const MAX_RULE_HEX = 256;
/** Most CEL conditions in one policy. */
export const MAX_CEL_CONDITIONS = 16;
/** Longest `description`, characters. */
export const MAX_DESCRIPTION = 1024;

export const COMPARISON_OPS = ['equals', 'in', 'gte', 'lte', 'hexEquals', 'hexIn'] as const;
export type ComparisonOp = (typeof COMPARISON_OPS)[number];

export type Scalar = string | number | boolean;

export type Comparison =
  | { readonly claim: string; readonly equals: Scalar }
  | { readonly claim: string; readonly in: readonly Scalar[] }
  | { readonly claim: string; readonly gte: number }
  | { readonly claim: string; readonly lte: number }
  | { readonly claim: string; readonly hexEquals: string }
  | { readonly claim: string; readonly hexIn: readonly string[] };

export type Condition =
  | { readonly allOf: readonly Condition[] }
  | { readonly anyOf: readonly Condition[] }
  | { readonly not: Condition }
  | { readonly cel: string }
  | Comparison;

/** A parsed rules document (release policy of the rules kind). */
export interface RulesPolicy {
  readonly version: 1;
  /** Absent: the rule applies to claims of any TEE. */
  readonly tee?: 'sev-snp' | 'tdx';
  readonly description?: string;
  /** Admit simulated claims (never in production). Absent means false. */
  readonly allowSimulated?: boolean;
  readonly rule: Condition;
}

/** True when a raw document is meant as a rules document (it has an own `version` member). */
export function looksLikeRules(input: unknown): boolean {
  return typeof input === 'object' && input !== null && !Array.isArray(input) && Object.hasOwn(input, 'version');
}

// Compiled CEL programs, keyed by the parsed `{cel}` node they belong to (no global cache to bound).
const programs = new WeakMap<object, CelProgram>();
// Documents this module produced, so evaluation can skip re-validating them.
const parsedDocs = new WeakSet<object>();

/** True for a document returned by `RulesPolicySchema` (not a look-alike built by hand). */
export function isParsedRules(doc: object): boolean {
  return parsedDocs.has(doc);
}

/** The compiled program of a parsed `{cel}` node; compiles (and caches) a hand-built one. */
export function celProgramFor(node: { readonly cel: string }): CelProgram | undefined {
  const cached = programs.get(node);
  if (cached) return cached;
  const c = compileCel(node.cel);
  if (!c.ok) return undefined;
  programs.set(node, c.program);
  return c.program;
}

type Path = (string | number)[];
interface ParseState {
  nodes: number;
  cel: number;
  readonly issues: { path: Path; message: string }[];
}

const HEX_RE = /^(?:[0-9a-fA-F]{2})+$/;

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function scalar(v: unknown): v is Scalar {
  return (typeof v === 'string' && v.length <= MAX_RULE_STRING) || typeof v === 'boolean' || (typeof v === 'number' && Number.isFinite(v));
}

function hex(v: unknown): v is string {
  return typeof v === 'string' && v.length <= MAX_RULE_HEX && HEX_RE.test(v);
}

const SCALAR_MSG = `must be a string (at most ${MAX_RULE_STRING} characters), a finite number or a boolean`;
const HEX_MSG = `must be hex bytes (an even number of hex digits, at most ${MAX_RULE_HEX})`;
const SHAPE_MSG =
  'must be exactly one of allOf, anyOf, not, cel, or claim with one operator (equals, in, gte, lte, hexEquals, hexIn)';

function list(v: unknown, path: Path, st: ParseState, max: number): unknown[] | undefined {
  if (!Array.isArray(v) || v.length === 0 || v.length > max) {
    st.issues.push({ path, message: `must be a list of 1..${max} entries` });
    return undefined;
  }
  return v;
}

/**
 * One condition. Recursion is bounded by `MAX_RULE_DEPTH` (checked before descending) and
 * the whole walk by `MAX_RULE_NODES`; lists are length-checked before they are iterated.
 */
function parseCondition(input: unknown, path: Path, depth: number, st: ParseState): Condition | undefined {
  if (++st.nodes > MAX_RULE_NODES) {
    if (st.nodes === MAX_RULE_NODES + 1) st.issues.push({ path, message: `more than ${MAX_RULE_NODES} conditions in the policy` });
    return undefined;
  }
  if (depth > MAX_RULE_DEPTH) {
    st.issues.push({ path, message: `conditions nest deeper than ${MAX_RULE_DEPTH}` });
    return undefined;
  }
  if (!isPlainObject(input)) {
    st.issues.push({ path, message: 'must be a condition object' });
    return undefined;
  }
  const keys = Object.keys(input);
  const only = (k: string): boolean => keys.length === 1 && keys[0] === k;

  for (const comb of ['allOf', 'anyOf'] as const) {
    if (!only(comb)) continue;
    const items = list(input[comb], [...path, comb], st, MAX_RULE_CHILDREN);
    if (!items) return undefined;
    const out: Condition[] = [];
    for (let i = 0; i < items.length; i++) {
      const c = parseCondition(items[i], [...path, comb, i], depth + 1, st);
      if (c) out.push(c);
    }
    return out.length === items.length ? (comb === 'allOf' ? { allOf: out } : { anyOf: out }) : undefined;
  }
  if (only('not')) {
    const c = parseCondition(input['not'], [...path, 'not'], depth + 1, st);
    return c ? { not: c } : undefined;
  }
  if (only('cel')) {
    const expr = input['cel'];
    if (typeof expr !== 'string') {
      st.issues.push({ path: [...path, 'cel'], message: 'must be a CEL expression string' });
      return undefined;
    }
    if (++st.cel > MAX_CEL_CONDITIONS) {
      st.issues.push({ path: [...path, 'cel'], message: `more than ${MAX_CEL_CONDITIONS} CEL conditions in the policy` });
      return undefined;
    }
    const compiled = compileCel(expr);
    if (!compiled.ok) {
      st.issues.push({ path: [...path, 'cel'], message: `invalid CEL: ${compiled.reason}` });
      return undefined;
    }
    const node = { cel: expr };
    programs.set(node, compiled.program);
    return node;
  }
  if (keys.length === 2 && keys.includes('claim')) {
    const op = keys.find((k) => k !== 'claim') as string;
    if (!(COMPARISON_OPS as readonly string[]).includes(op)) {
      st.issues.push({ path, message: SHAPE_MSG });
      return undefined;
    }
    const claim = input['claim'];
    const pathIssue = typeof claim === 'string' ? claimPathIssue(claim) : 'must be a claim path string';
    if (pathIssue !== undefined) {
      st.issues.push({ path: [...path, 'claim'], message: pathIssue });
      return undefined;
    }
    return comparison(claim as string, op as ComparisonOp, input[op], [...path, op], st);
  }
  st.issues.push({ path, message: SHAPE_MSG });
  return undefined;
}

function comparison(claim: string, op: ComparisonOp, v: unknown, path: Path, st: ParseState): Comparison | undefined {
  const bad = (message: string): undefined => void st.issues.push({ path, message });
  switch (op) {
    case 'equals':
      return scalar(v) ? { claim, equals: v } : bad(SCALAR_MSG);
    case 'in': {
      const items = list(v, path, st, MAX_RULE_LIST);
      if (!items) return undefined;
      return items.every(scalar) ? { claim, in: [...items] } : bad(`every entry ${SCALAR_MSG}`);
    }
    case 'gte':
    case 'lte':
      if (typeof v !== 'number' || !Number.isFinite(v)) return bad('must be a finite number');
      return op === 'gte' ? { claim, gte: v } : { claim, lte: v };
    case 'hexEquals':
      return hex(v) ? { claim, hexEquals: v.toLowerCase() } : bad(HEX_MSG);
    case 'hexIn': {
      const items = list(v, path, st, MAX_RULE_LIST);
      if (!items) return undefined;
      return items.every(hex) ? { claim, hexIn: items.map((h) => (h as string).toLowerCase()) } : bad(`every entry ${HEX_MSG}`);
    }
  }
}

/**
 * The condition tree, as a zod schema (issues are relative to `rule`). Bounded; see above.
 */
const ConditionSchema = z.unknown().transform((input, ctx): Condition => {
  const st: ParseState = { nodes: 0, cel: 0, issues: [] };
  const c = parseCondition(input, [], 1, st);
  for (const i of st.issues) ctx.addIssue({ code: 'custom', message: i.message, path: i.path, input });
  if (!c || st.issues.length > 0) {
    if (st.issues.length === 0) ctx.addIssue({ code: 'custom', message: 'invalid condition', input });
    return z.NEVER;
  }
  return c;
});

/**
 * zod schema of a rules document. Strict: unknown members are errors. The output is a
 * fresh, deeply frozen object (recognised by `isParsedRules`), with hex operands lower-case
 * and optional members absent when the input omits them (so the hash covers exactly what
 * was written, modulo key order and hex case).
 */
export const RulesPolicySchema = z
  .strictObject({
    version: z.literal(1),
    tee: z.enum(['sev-snp', 'tdx']).optional(),
    description: z.string().max(MAX_DESCRIPTION).optional(),
    allowSimulated: z.boolean().optional(),
    rule: ConditionSchema,
  })
  .transform((d): RulesPolicy => {
    const out: RulesPolicy = {
      version: 1,
      ...(d.tee !== undefined ? { tee: d.tee } : {}),
      ...(d.description !== undefined ? { description: d.description } : {}),
      ...(d.allowSimulated !== undefined ? { allowSimulated: d.allowSimulated } : {}),
      rule: d.rule,
    };
    deepFreeze(out);
    parsedDocs.add(out);
    return out;
  });
