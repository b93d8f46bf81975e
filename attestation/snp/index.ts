/**
 * SEV-SNP public API: parse -> verify -> validate -> evaluate (the whole pipeline).
 */
export {
  parseSnpReport,
  snpSignedRegion,
  productFromCpuid,
  SNP_REPORT_SIZE,
  SNP_SIGNED_REGION_END,
  type SnpReport,
  type SnpProduct,
  type SnpSigningKey,
  type SnpTcbLayout,
  type SnpTcbVersion,
  type SnpGuestPolicy,
  type SnpPlatformInfo,
  type SnpFirmwareVersion,
  type SnpCpuid,
} from './abi.js';
export {
  verifySnpEvidence,
  verifySnpReport,
  decodeSnpEvidence,
  RELAXATION_SIMULATED_ROOT,
  type SnpTrustOptions,
  type SnpVerifyOptions,
  type SnpCertificates,
} from './verify.js';
export {
  SnpPolicySchema,
  SnpMinTcbSchema,
  parseSnpPolicy,
  relaxationsFor,
  POLICY_RELAXATIONS,
  type SnpPolicy,
  type SnpPolicyInput,
} from './policy.js';
export { validateSnpClaims, snpPolicyError } from './validate.js';
export { evaluateSnpEvidence, SnpEvidenceVerifier, type SnpEvaluateOptions, type SnpEvaluation } from './evaluate.js';
export { AMD_ARK_SPKI_SHA256, AMD_ARK_DER_SHA256 } from './roots.js';
