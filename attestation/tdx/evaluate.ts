import type { PolicyFailure } from '../types.js';
import { parseTdxPolicy, tdxRelaxationsFor, type TdxPolicy, type TdxPolicyInput } from './policy.js';
import type { TdxClaims } from './types.js';
import { validateTdxClaims } from './validate.js';
import { verifyTdxQuote, type TdxVerifyOptions } from './verify.js';

export interface TdxEvaluateOptions extends TdxVerifyOptions {
  readonly policy: TdxPolicy | TdxPolicyInput;
}

export interface TdxEvaluation {
  /** Verified claims; `relaxations` also lists the policy's relaxations. */
  readonly claims: TdxClaims;
  /** Empty when the policy accepts the claims. */
  readonly failures: readonly PolicyFailure[];
}

/**
 * The whole TDX pipeline: parse the policy (ERR_ATT_TDX_BAD_POLICY), verify (throws
 * TdxError on any parse or verification failure), then validate (returns every policy
 * failure, never throws for them). Accept the quote only when `failures` is empty.
 */
export async function evaluateTdxQuote(quoteBytes: Uint8Array, opts: TdxEvaluateOptions): Promise<TdxEvaluation> {
  const policy = parseTdxPolicy(opts.policy);
  const verified = await verifyTdxQuote(quoteBytes, {
    now: opts.now,
    expectedReportData: opts.expectedReportData,
    collateral: opts.collateral,
    ...(opts.allowMissingCrls !== undefined ? { allowMissingCrls: opts.allowMissingCrls } : {}),
  });
  const failures = validateTdxClaims(verified, policy);
  const claims: TdxClaims = Object.freeze({ ...verified, relaxations: Object.freeze([...verified.relaxations, ...tdxRelaxationsFor(policy)]) });
  return Object.freeze({ claims, failures: Object.freeze(failures) });
}
