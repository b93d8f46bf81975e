import type { z } from 'zod';
import { relaxationsFor, SnpPolicySchema } from '../attestation/snp/policy.js';
import { validateSnpClaims } from '../attestation/snp/validate.js';
import type { Claims, PolicyFailure } from '../attestation/types.js';
import { sha256 } from '../common/bytes.js';
import { KmsError } from './codes.js';
import { issuesDetail } from '../common/config.js';

/**
 * Release and attestation policies of the broker. A policy is data: the SEV-SNP policy of
 * the attestation package (`SnpPolicySchema`), checked against verified claims by
 * `validateSnpClaims`. This module adds what the broker needs around it: parsing with
 * typed errors, the production rule on the simulated TEE, a stable hash that names a
 * policy in logs and tokens, and an explanation of every decision.
 */
export type ReleasePolicy = z.output<typeof SnpPolicySchema>;

export interface PolicyOptions {
  /** True when NODE_ENV=production: policies that trust the simulated TEE are refused. */
  readonly production: boolean;
}

/**
 * Parses a policy. Throws `ERR_KMS_POLICY_INVALID` (detail: each bad field and why, never
 * the value) or `ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION`.
 */
export function parseReleasePolicy(input: unknown, opts: PolicyOptions): ReleasePolicy {
  const parsed = SnpPolicySchema.safeParse(input);
  if (!parsed.success) {
    throw new KmsError('ERR_KMS_POLICY_INVALID', { detail: issuesDetail(parsed.error.issues) });
  }
  if (opts.production && allowsSimulated(parsed.data)) {
    // SECURITY: the simulated TEE's root key is not secret; trusting it in production gives keys away.
    throw new KmsError('ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION', { detail: 'allowSimulated' });
  }
  return parsed.data;
}

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

/** SHA-256 of the canonical JSON of a parsed policy, lower-case hex. */
export function policyHash(policy: ReleasePolicy): string {
  return sha256(Buffer.from(canonicalJson(policy), 'utf8')).toString('hex');
}

export interface PolicyDecision {
  readonly allowed: boolean;
  /** Every failing rule; empty when allowed. */
  readonly failures: readonly PolicyFailure[];
  readonly policyHash: string;
  /** Relaxations the policy enables (`relaxationsFor`, e.g. 'allow-debug'), recorded with the decision. */
  readonly relaxations: readonly string[];
}

/**
 * Evaluates `policy` against verified `claims` (`validateSnpClaims`), then applies the
 * broker's own fail-closed rules: in production, simulated claims are always refused and
 * so is a policy that would admit them, whatever else the policy says.
 * Does not verify anything: `claims` must come from a verifier (or from a token the
 * broker signed itself).
 */
export function evaluatePolicy(claims: Claims, policy: ReleasePolicy, opts: PolicyOptions): PolicyDecision {
  const failures: PolicyFailure[] = validateSnpClaims(claims, policy).map((f) => ({
    field: f.field,
    expected: f.expected,
    observed: f.observed,
  }));
  const hasSimulatedFailure = () => failures.some((f) => f.field === 'simulated');
  // SECURITY: belt and braces around the policy engine for the one relaxation that must
  // never reach production (and must never pass by accident anywhere).
  if (claims.simulated && !allowsSimulated(policy) && !hasSimulatedFailure()) {
    failures.push({ field: 'simulated', expected: 'false', observed: 'true' });
  }
  if (opts.production && allowsSimulated(policy)) {
    failures.push({ field: 'policy.allowSimulated', expected: 'false (NODE_ENV=production)', observed: 'true' });
  }
  if (opts.production && claims.simulated && !hasSimulatedFailure()) {
    failures.push({ field: 'simulated', expected: 'false (NODE_ENV=production)', observed: 'true' });
  }
  return Object.freeze({
    allowed: failures.length === 0,
    failures: Object.freeze(failures),
    policyHash: policyHash(policy),
    relaxations: Object.freeze(relaxationsFor(policy)),
  });
}
