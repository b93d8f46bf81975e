/**
 * Release rules: condition trees over normalized TEE claims (schema.ts), their claim view
 * (claims.ts), CEL conditions (cel.ts), evaluation with an explanation (evaluate.ts) and
 * explanations for the per-TEE policy documents (legacy.ts). kms-broker/policy.ts is the
 * entry point the broker uses.
 */
export {
  RulesPolicySchema,
  looksLikeRules,
  isParsedRules,
  COMPARISON_OPS,
  MAX_RULE_DEPTH,
  MAX_RULE_NODES,
  MAX_RULE_CHILDREN,
  MAX_RULE_LIST,
  MAX_RULE_STRING,
  MAX_RULE_HEX,
  MAX_CEL_CONDITIONS,
  MAX_DESCRIPTION,
  type RulesPolicy,
  type Condition,
  type Comparison,
  type ComparisonOp,
  type Scalar,
} from './schema.js';
export { claimView, lookupClaim, claimPathIssue, MAX_CLAIM_PATH_LENGTH, MAX_CLAIM_PATH_SEGMENTS, type ClaimView, type Lookup } from './claims.js';
export { compileCel, MAX_CEL_LENGTH, MAX_CEL_COMPREHENSIONS } from './cel.js';
export { evaluateRules, compare, showValue, type RuleResult, type RulesEvaluation } from './evaluate.js';
export { explainLegacy } from './legacy.js';
