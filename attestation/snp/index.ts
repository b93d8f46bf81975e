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
  ANY_REPORT_DATA,
  MAX_CRLS,
  RELAXATION_SIMULATED_ROOT,
  RELAXATION_REPORT_DATA_UNCHECKED,
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
export {
  evaluateSnpEvidence,
  SnpEvidenceVerifier,
  type SnpEvaluateOptions,
  type SnpEvaluation,
  type SnpVerifierCollateral,
} from './evaluate.js';
export { AMD_ARK_SPKI_SHA256, AMD_ARK_DER_SHA256 } from './roots.js';
export {
  parseSnpCertTable,
  encodeSnpCertTable,
  guidToBytes,
  SNP_CERT_TABLE_GUIDS,
  CERT_TABLE_ENTRY_SIZE,
  CERT_TABLE_MAX_ENTRIES,
  CERT_TABLE_MAX_BYTES,
  type SnpCertTable,
  type SnpCertTableEntry,
  type SnpCertTableKind,
} from './certtable.js';
export { parseSnpCrl, verifySnpCrl, MAX_CRL_BYTES, type ParsedSnpCrl } from './crl.js';
export { normalizeSerialHex } from './certs.js';
export {
  KdsCollateral,
  OfflineBundle,
  httpsKdsFetcher,
  kdsVcekUrl,
  kdsCrlUrl,
  kdsCertChainUrl,
  kdsHwId,
  tcbHex,
  bundleVcekPath,
  bundleCrlPath,
  writeVcekToBundle,
  writeCrlToBundle,
  KDS_BASE_URL,
  SNP_PRODUCTS,
  SNP_SIGNERS,
  CHIP_ID_LENGTH,
  MAX_VCEK_BYTES,
  type KdsFetcher,
  type SnpCollateralSource,
  type KdsCollateralOptions,
  type HttpsKdsFetcherOptions,
} from './collateral.js';
