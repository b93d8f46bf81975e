import { z } from 'zod';
import { relaxationsFor, SnpPolicySchema } from '../attestation/snp/policy.js';
import { validateSnpClaims } from '../attestation/snp/validate.js';
import { TdxPolicySchema, tdxRelaxationsFor, validateTdxClaims, type TdxClaims } from '../attestation/tdx/index.js';
import type { PolicyFailure, SnpClaims, TeeType } from '../attestation/types.js';
import { sha256 } from '../common/bytes.js';
import { KmsError } from './codes.js';
import { issuesDetail } from '../common/config.js';
import { claimView } from './rules/claims.js';
import { evaluateRules, type RuleResult } from './rules/evaluate.js';
import { explainLegacy } from './rules/legacy.js';
import { isParsedRules, looksLikeRules, RulesPolicySchema, type RulesPolicy } from './rules/schema.js';

export type { RuleResult } from './rules/evaluate.js';
export type { RulesPolicy, Condition } from './rules/schema.js';

/**
 * Release and attestation policies of the broker. A policy is data, of one of three kinds:
 *
 * - SEV-SNP: a document without `tee` (every policy stored before TDX support) or with
 *   `tee: "sev-snp"`; the rest is `SnpPolicySchema`, evaluated by `validateSnpClaims`.
 * - Intel TDX: `{ tee: "tdx", ...TdxPolicySchema fields }`, evaluated by `validateTdxClaims`.
 * - Release rules: a document with `version: 1` (kms-broker/rules): a condition tree
 *   (allOf / anyOf / not, equals / in / gte / lte / hexEquals / hexIn, CEL) over the
 *   normalized claims of any TEE, for one TEE (`tee`) or for any.
 *
 * This module adds what the broker needs around them: parsing with typed errors, the
 * production rule on the simulated TEE, a stable hash (over the whole document, `tee`
 * included) that names a policy in logs and tokens, the TEE match, and an explanation of
 * every decision.
 */
export type SnpReleasePolicy = z.output<typeof SnpPolicySchema> & { readonly tee?: 'sev-snp' };
export type TdxReleasePolicy = z.output<typeof TdxPolicySchema> & { readonly tee: 'tdx' };
export type RulesReleasePolicy = RulesPolicy;
export type ReleasePolicy = SnpReleasePolicy | TdxReleasePolicy | RulesReleasePolicy;

/** Claims the broker decides on: whatever one of its verifiers returns. */
export type BrokerClaims = SnpClaims | TdxClaims;

/** TEEs the broker can decide on. */
export const BROKER_TEES = ['sev-snp', 'tdx'] as const satisfies readonly TeeType[];

export interface PolicyOptions {
  /** True when NODE_ENV=production: policies that trust the simulated TEE are refused. */
  readonly production: boolean;
}

/** True for a parsed release-rules document (`version: 1`), false for a per-TEE policy. */
export function isRulesPolicy(policy: ReleasePolicy): policy is RulesReleasePolicy {
  return (policy as { version?: unknown }).version === 1;
}

/**
 * The TEE slot a parsed policy fills: `tdx` when it says so, SEV-SNP otherwise. A rules
 * policy without `tee` fills the SEV-SNP slot (the historical meaning of "no tee", so
 * `attestation.policy` lists keep at most one policy per slot and the lookup
 * `find(p => policyTee(p) === claims.tee) ?? policies[0]` still finds one policy per TEE)
 * but APPLIES to claims of every TEE: `evaluatePolicy` never fails it on `tee`
 * (`policyAppliesTo`).
 */
export function policyTee(policy: ReleasePolicy): TeeType {
  return policy.tee === 'tdx' ? 'tdx' : 'sev-snp';
}

/** Whether `policy` decides on claims of `tee` (false: it fails them on `tee` alone). */
export function policyAppliesTo(policy: ReleasePolicy, tee: TeeType): boolean {
  if (isRulesPolicy(policy) && policy.tee === undefined) return true;
  return policyTee(policy) === tee;
}

const TeeSchema = z.enum(BROKER_TEES);

type PolicyParse = { success: true; data: ReleasePolicy } | { success: false; issues: z.core.$ZodIssue[] };

/**
 * Parses a policy document of either TEE without throwing: `tee` selects the schema and
 * is kept in the result exactly as written (absent stays absent, so the hash of a stored
 * SEV-SNP policy never changes). Issues name fields, never values.
 */
export function safeParseReleasePolicy(input: unknown): PolicyParse {
  if (looksLikeRules(input)) {
    // A `version` member selects the rules schema; the per-TEE schemas are strict and have
    // no such member, so no stored document changes meaning.
    const r = RulesPolicySchema.safeParse(input);
    return r.success ? { success: true, data: r.data } : { success: false, issues: r.error.issues };
  }
  if (typeof input !== 'object' || input === null || Array.isArray(input) || !Object.hasOwn(input, 'tee')) {
    const r = SnpPolicySchema.safeParse(input);
    return r.success ? { success: true, data: r.data } : { success: false, issues: r.error.issues };
  }
  const { tee, ...rest } = input as Record<string, unknown>;
  const t = TeeSchema.safeParse(tee);
  if (!t.success) return { success: false, issues: t.error.issues.map((i) => ({ ...i, path: ['tee', ...i.path] })) };
  if (t.data === 'tdx') {
    // SECURITY: the TDX schema is strict, so an SEV-SNP field (measurements, allowSimulated,
    // ...) in a TDX policy is an error rather than a rule that is silently never checked.
    const r = TdxPolicySchema.safeParse(rest);
    return r.success ? { success: true, data: { tee: 'tdx', ...r.data } } : { success: false, issues: r.error.issues };
  }
  const r = SnpPolicySchema.safeParse(rest);
  return r.success ? { success: true, data: { tee: 'sev-snp', ...r.data } } : { success: false, issues: r.error.issues };
}

/**
 * zod schema of a policy document of either TEE (see `safeParseReleasePolicy`), for
 * configuration files. Does not apply the production rule; `parseReleasePolicy` does.
 */
export const ReleasePolicySchema = z.unknown().transform((input, ctx): ReleasePolicy => {
  const r = safeParseReleasePolicy(input);
  if (r.success) return r.data;
  for (const i of r.issues) ctx.addIssue({ code: 'custom', message: issueMessage(i), path: [...i.path], input });
  return z.NEVER;
});

function issueMessage(i: z.core.$ZodIssue): string {
  return i.code === 'unrecognized_keys' ? `unknown field(s) ${i.keys.join(', ')}` : i.message;
}

/**
 * Parses a policy. Throws `ERR_KMS_POLICY_INVALID` (detail: each bad field and why, never
 * the value) or `ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION`.
 */
export function parseReleasePolicy(input: unknown, opts: PolicyOptions): ReleasePolicy {
  const parsed = safeParseReleasePolicy(input);
  if (!parsed.success) {
    throw new KmsError('ERR_KMS_POLICY_INVALID', { detail: issuesDetail(parsed.issues) });
  }
  if (opts.production && allowsSimulated(parsed.data)) {
    // SECURITY: the simulated TEE's root key is not secret; trusting it in production gives keys away.
    throw new KmsError('ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION', { detail: 'allowSimulated' });
  }
  return parsed.data;
}

/** True for a policy with `allowSimulated: true` (SEV-SNP or rules; a TDX policy has no such knob). */
export function allowsSimulated(policy: ReleasePolicy): boolean {
  return (policy as Readonly<Record<string, unknown>>).allowSimulated === true;
}

/**
 * Deterministic JSON: object keys sorted, no whitespace. Used to hash policies so the same
 * policy always gets the same hash whatever the key order it was written in.
 * Accepts plain JSON data only (throws TypeError on anything else).
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError('non-finite number');
    return JSON.stringify(value);
  }
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  throw new TypeError(`not JSON data: ${typeof value}`);
}

/** SHA-256 of the canonical JSON of a parsed policy (the whole document, `tee` included), lower-case hex. */
export function policyHash(policy: ReleasePolicy): string {
  // A deep-frozen policy (the key store's and the attestation policies are) cannot change,
  // so its hash is computed once: it is needed on every decision.
  if (Object.isFrozen(policy)) {
    const cached = HASH_CACHE.get(policy);
    if (cached !== undefined) return cached;
  }
  const h = sha256(Buffer.from(canonicalJson(policy), 'utf8')).toString('hex');
  if (Object.isFrozen(policy)) HASH_CACHE.set(policy, h);
  return h;
}

/** Hashes of frozen policies. Callers that freeze a policy freeze it deeply (`deepFreeze`). */
const HASH_CACHE = new WeakMap<object, string>();

export interface PolicyDecision {
  readonly allowed: boolean;
  /** Every failing rule; empty when allowed. */
  readonly failures: readonly PolicyFailure[];
  /**
   * Every rule, pass or fail, expected vs observed (public claim values only): the rules of
   * a rules policy in document order (combinators with their members), the checks a per-TEE
   * policy switches on (`op: "check"`), then the broker's own rules (`op: "broker"`).
   */
  readonly explanation: readonly RuleResult[];
  readonly policyHash: string;
  /**
   * Relaxations the policy enables (`relaxationsFor` / `tdxRelaxationsFor`, e.g.
   * 'allow-debug', 'any-mrtd'), recorded with the decision.
   */
  readonly relaxations: readonly string[];
}

/**
 * Evaluates `policy` against verified `claims`: claims of another TEE than the policy's
 * fail on `tee` (and nothing else is checked; a rules policy without `tee` applies to every
 * TEE); otherwise that TEE's validator (`validateSnpClaims` / `validateTdxClaims`) or the
 * rule tree (kms-broker/rules) decides. Then the broker's own fail-closed rules: simulated
 * claims are refused unless the policy sets `allowSimulated: true`; in production,
 * simulated claims are always refused and so is a policy that would admit them, whatever
 * else the policy says; simulated TDX claims do not exist and are refused everywhere.
 * Every decision carries an explanation (`PolicyDecision.explanation`).
 * Does not verify anything: `claims` must come from a verifier (or from a token the
 * broker signed itself). A rules document that did not come from this module's parser is
 * re-validated first; an invalid one is denied (`field: "policy"`), never evaluated.
 */
export function evaluatePolicy(claims: BrokerClaims, policy: ReleasePolicy, opts: PolicyOptions): PolicyDecision {
  const failures: PolicyFailure[] = [];
  const explanation: RuleResult[] = [];
  const observedTee = String((claims as { tee?: unknown }).tee);
  if (isRulesPolicy(policy)) {
    const checked = isParsedRules(policy) ? { success: true as const, data: policy } : RulesPolicySchema.safeParse(policy);
    if (!checked.success) {
      // SECURITY: fail closed on a policy object that was never validated.
      failures.push({ field: 'policy', expected: 'a valid release policy', observed: 'invalid' });
      explanation.push({ path: 'policy', op: 'broker', expected: 'a valid release policy', observed: 'invalid', pass: false });
    } else if (!policyAppliesTo(checked.data, claims.tee)) {
      // SECURITY: as for per-TEE policies: a rule written for one TEE is not tried on another's claims.
      failures.push({ field: 'tee', expected: policyTee(checked.data), observed: observedTee });
      explanation.push({ path: 'tee', claim: 'tee', op: 'equals', expected: policyTee(checked.data), observed: observedTee, pass: false });
    } else {
      const r = evaluateRules(checked.data.rule, claimView(claims));
      failures.push(...r.failures);
      explanation.push(...r.explanation);
    }
  } else {
    const want = policyTee(policy);
    // SECURITY: a policy only speaks for its own TEE. Evaluating SEV-SNP rules on TDX claims
    // (or the reverse) would test fields that are absent and could pass by omission.
    if (claims.tee !== want) {
      failures.push({ field: 'tee', expected: want, observed: observedTee });
      explanation.push({ path: 'tee', claim: 'tee', op: 'equals', expected: want, observed: observedTee, pass: false });
    } else if (claims.tee === 'tdx') {
      const { tee: _tee, ...tdx } = policy as TdxReleasePolicy;
      const f = validateTdxClaims(claims, tdx).map(copyFailure);
      failures.push(...f);
      explanation.push(...explainLegacy(claims, tdx, f));
    } else {
      const { tee: _tee, ...snp } = policy as SnpReleasePolicy;
      const f = validateSnpClaims(claims, snp).map(copyFailure);
      failures.push(...f);
      explanation.push(...explainLegacy(claims, snp, f));
    }
  }
  const policyFailures = failures.length;
  const hasSimulatedFailure = () => failures.some((f) => f.field === 'simulated');
  // SECURITY: belt and braces around the policy engine for the one relaxation that must
  // never reach production (and must never pass by accident anywhere). Simulated is
  // SEV-SNP only: TDX claims that say otherwise are refused whatever the policy.
  if (claims.tee === 'tdx' && (claims.simulated as boolean) !== false && !hasSimulatedFailure()) {
    failures.push({ field: 'simulated', expected: 'false (no simulated TDX)', observed: String(claims.simulated) });
  }
  if (claims.simulated && !allowsSimulated(policy) && !hasSimulatedFailure()) {
    failures.push({ field: 'simulated', expected: 'false', observed: 'true' });
  }
  if (opts.production && allowsSimulated(policy)) {
    failures.push({ field: 'policy.allowSimulated', expected: 'false (NODE_ENV=production)', observed: 'true' });
  }
  if (opts.production && claims.simulated && !hasSimulatedFailure()) {
    failures.push({ field: 'simulated', expected: 'false (NODE_ENV=production)', observed: 'true' });
  }
  const brokerFailures = failures.slice(policyFailures);
  for (const f of brokerFailures) {
    explanation.push({ path: `broker.${f.field}`, claim: f.field === 'policy.allowSimulated' ? undefined : f.field, op: 'broker', expected: f.expected, observed: f.observed, pass: false });
  }
  if (!brokerFailures.some((f) => f.field === 'simulated')) {
    const admits = allowsSimulated(policy) && !opts.production;
    explanation.push({
      path: 'broker.simulated',
      claim: 'simulated',
      op: 'broker',
      expected: admits ? 'false, or true (allowSimulated)' : 'false',
      observed: String(claims.simulated),
      pass: true,
    });
  }
  return Object.freeze({
    allowed: failures.length === 0,
    failures: Object.freeze(failures),
    explanation: Object.freeze(explanation.map(freezeResult)),
    policyHash: policyHash(policy),
    relaxations: Object.freeze(policyRelaxations(policy)),
  });
}

function freezeResult(r: RuleResult): RuleResult {
  const { claim, ...rest } = r;
  return Object.freeze(claim === undefined ? rest : { ...rest, claim });
}

/** The relaxations a parsed policy enables, in that TEE's fixed order. */
export function policyRelaxations(policy: ReleasePolicy): string[] {
  if (isRulesPolicy(policy)) {
    // A rules policy has no relaxation knobs: its rule says what it checks. Recorded: the
    // simulated TEE, and a rule that applies to any TEE.
    const out: string[] = [];
    if (policy.allowSimulated === true) out.push('allow-simulated');
    if (policy.tee === undefined) out.push('any-tee');
    return out;
  }
  if (policy.tee === 'tdx') {
    const { tee: _tee, ...tdx } = policy;
    return tdxRelaxationsFor(tdx);
  }
  const { tee: _tee, ...snp } = policy;
  return relaxationsFor(snp);
}

/** The launch measurement of either TEE's claims (SEV-SNP MEASUREMENT, TDX MRTD), for logs. */
export function measurementOf(claims: BrokerClaims): string {
  return claims.tee === 'tdx' ? claims.mrtd : claims.measurement;
}

function copyFailure(f: PolicyFailure): PolicyFailure {
  return { field: f.field, expected: f.expected, observed: f.observed };
}
