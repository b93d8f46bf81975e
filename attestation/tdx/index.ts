/**
 * Intel TDX public API: parse -> verify -> validate -> evaluate (the whole pipeline), plus
 * collateral loading and sources. The lead wires this into attestation/index.ts.
 */
export { TDX_CODES, TdxError, isTdxError, type TdxErrorCode } from './codes.js';
export { parseTdxQuote, type TdxQuote, type TdxQuoteHeader, type TdReportBody, type QeReport, type TdxQuoteVersion } from './parse.js';
export {
  verifyTdxQuote,
  ANY_REPORT_DATA,
  RELAXATION_REPORT_DATA_UNCHECKED,
  RELAXATION_PCK_CRL_UNCHECKED,
  RELAXATION_ROOT_CRL_UNCHECKED,
  type TdxVerifyOptions,
} from './verify.js';
export { TdxPolicySchema, parseTdxPolicy, tdxRelaxationsFor, DEFAULT_TD_ATTRIBUTES_ALLOW_MASK, type TdxPolicy, type TdxPolicyInput } from './policy.js';
export { validateTdxClaims, tdxPolicyError } from './validate.js';
export { evaluateTdxQuote, type TdxEvaluateOptions, type TdxEvaluation } from './evaluate.js';
export {
  tdxCollateralFromPcs,
  parseTdxCollateralJson,
  signedJsonFromBody,
  parseTcbInfo,
  parseQeIdentity,
  TCB_STATUSES,
  type TdxCollateral,
  type SignedJson,
  type PcsCollateralParts,
  type TcbStatus,
  type TdxTcbInfo,
  type TdxQeIdentity,
} from './collateral.js';
export {
  loadTdxCollateral,
  writeTdxCollateralDir,
  bundleDirFor,
  OfflineTdxCollateral,
  PcsCollateralSource,
  type PcsFetcher,
  type PcsFetchedCollateral,
  type PcsCollateralOptions,
  type TdxCollateralSource,
  type CollateralRequest,
  type PckCaKind,
} from './source.js';
export { INTEL_SGX_ROOT_CA_PEM, INTEL_SGX_ROOT_CA_SPKI_SHA256, INTEL_SGX_ROOT_CA_DER_SHA256 } from './roots.js';
export type { TdxClaims } from './types.js';
