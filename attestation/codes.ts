import { errorFactory, type CodeTable } from '../common/errors.js';
import { TDX_CODES } from './tdx/code-table.js';

/**
 * Error codes of the attestation package. Categories follow the pipeline stage:
 * parsing hostile bytes -> 'bad-input'; signatures, chains, validity and bindings ->
 * 'verification'; policy on verified claims -> 'policy'; operator configuration and the
 * simulator's state directory -> 'config'; caller bugs -> 'internal'.
 *
 * Every code is documented in attestation/ERRORS.md; a test keeps the two in step.
 */
export const ATTESTATION_CODES = {
  // --- parse (bad-input) -------------------------------------------------------------
  ERR_ATT_SNP_BAD_EVIDENCE: { category: 'bad-input', message: 'SEV-SNP evidence envelope is malformed' },
  ERR_ATT_SNP_BAD_SIZE: { category: 'bad-input', message: 'SEV-SNP report has the wrong size' },
  ERR_ATT_SNP_UNSUPPORTED_VERSION: { category: 'bad-input', message: 'SEV-SNP report version is not supported' },
  ERR_ATT_SNP_UNSUPPORTED_SIGNATURE_ALGO: {
    category: 'bad-input',
    message: 'SEV-SNP report signature algorithm is not supported',
  },
  ERR_ATT_SNP_UNSUPPORTED_SIGNING_KEY: { category: 'bad-input', message: 'SEV-SNP report signing key is not supported' },
  ERR_ATT_SNP_BAD_GUEST_POLICY: { category: 'bad-input', message: 'SEV-SNP guest policy has invalid reserved bits' },
  ERR_ATT_SNP_RESERVED_NONZERO: { category: 'bad-input', message: 'SEV-SNP report has a non-zero reserved field' },
  ERR_ATT_SNP_BAD_SIGNATURE_ENCODING: {
    category: 'bad-input',
    message: 'SEV-SNP report signature is not canonically encoded',
  },
  ERR_ATT_SNP_UNSUPPORTED_PRODUCT: { category: 'bad-input', message: 'SEV-SNP processor (CPUID) is not supported' },
  ERR_ATT_SNP_BAD_CERT: { category: 'bad-input', message: 'SEV-SNP certificate is malformed' },
  ERR_ATT_SNP_BAD_CERT_EXTENSION: { category: 'bad-input', message: 'SEV-SNP certificate extension is malformed or missing' },
  ERR_ATT_SNP_BAD_CERT_TABLE: { category: 'bad-input', message: 'SEV-SNP certificate table is malformed' },
  ERR_ATT_SNP_BAD_CRL: { category: 'bad-input', message: 'SEV-SNP certificate revocation list is malformed' },
  // --- verification ------------------------------------------------------------------
  ERR_ATT_SNP_REPORT_DATA_MISMATCH: { category: 'verification', message: 'SEV-SNP report_data does not match' },
  ERR_ATT_SNP_BAD_SIGNATURE: { category: 'verification', message: 'SEV-SNP report signature is invalid' },
  ERR_ATT_SNP_MISSING_CERT: { category: 'verification', message: 'SEV-SNP evidence lacks a required certificate' },
  ERR_ATT_SNP_SIGNING_KEY_MISMATCH: {
    category: 'verification',
    message: 'SEV-SNP certificate kind does not match the report signing key',
  },
  ERR_ATT_SNP_PRODUCT_MISMATCH: { category: 'verification', message: 'SEV-SNP product does not match' },
  ERR_ATT_SNP_UNTRUSTED_ROOT: { category: 'verification', message: 'SEV-SNP certificate does not chain to a trusted root' },
  ERR_ATT_SNP_UNTRUSTED_CERT: {
    category: 'verification',
    message: 'SEV-SNP evidence carries a CA certificate that differs from the trusted one',
  },
  ERR_ATT_SNP_ARK_PIN_MISMATCH: { category: 'verification', message: 'SEV-SNP root key does not match the pinned ARK' },
  ERR_ATT_SNP_CHAIN_INVALID: { category: 'verification', message: 'SEV-SNP certificate chain is invalid' },
  ERR_ATT_SNP_BAD_CA: { category: 'verification', message: 'SEV-SNP CA certificate lacks CA constraints' },
  ERR_ATT_SNP_CERT_EXPIRED: { category: 'verification', message: 'SEV-SNP certificate has expired' },
  ERR_ATT_SNP_CERT_NOT_YET_VALID: { category: 'verification', message: 'SEV-SNP certificate is not yet valid' },
  ERR_ATT_SNP_TCB_MISMATCH: { category: 'verification', message: 'SEV-SNP reported TCB does not match the certificate' },
  ERR_ATT_SNP_CHIP_ID_MISMATCH: { category: 'verification', message: 'SEV-SNP chip_id does not match the certificate' },
  ERR_ATT_SNP_SIMULATED_NOT_ALLOWED: {
    category: 'verification',
    message: 'SEV-SNP evidence is simulated and simulated evidence is not allowed',
  },
  ERR_ATT_SNP_CRL_MISSING: {
    category: 'verification',
    message: 'SEV-SNP revocation check requested but no CRL from the chain root was supplied',
  },
  ERR_ATT_SNP_CRL_INVALID: { category: 'verification', message: 'SEV-SNP certificate revocation list does not verify' },
  ERR_ATT_SNP_CRL_EXPIRED: { category: 'verification', message: 'SEV-SNP certificate revocation list has expired' },
  ERR_ATT_SNP_CRL_NOT_YET_VALID: { category: 'verification', message: 'SEV-SNP certificate revocation list is not yet valid' },
  ERR_ATT_SNP_REVOKED: { category: 'verification', message: 'SEV-SNP certificate has been revoked' },
  ERR_ATT_SNP_UNVERIFIABLE: { category: 'verification', message: 'SEV-SNP evidence could not be verified' },
  // --- policy ------------------------------------------------------------------------
  ERR_ATT_SNP_POLICY_FAILED: { category: 'policy', message: 'SEV-SNP claims do not satisfy the policy' },
  // --- collateral (AMD KDS, offline bundles) -----------------------------------------
  ERR_ATT_SNP_COLLATERAL_UNAVAILABLE: { category: 'unavailable', message: 'SEV-SNP collateral could not be obtained' },
  ERR_ATT_SNP_COLLATERAL_LIMIT: { category: 'overload', message: 'SEV-SNP collateral fetch limit reached' },
  // --- config ------------------------------------------------------------------------
  ERR_ATT_SNP_BAD_COLLATERAL: { category: 'config', message: 'SEV-SNP collateral source is misconfigured or corrupt' },
  ERR_ATT_SNP_BAD_POLICY: { category: 'config', message: 'SEV-SNP policy is invalid' },
  ERR_ATT_SNP_BAD_TRUST: { category: 'config', message: 'SEV-SNP trust configuration is invalid' },
  ERR_ATT_SIM_STATE_CORRUPT: { category: 'config', message: 'simulated TEE state directory is corrupt or incomplete' },
  // --- caller bugs -------------------------------------------------------------------
  ERR_ATT_BAD_ARGUMENT: { category: 'internal', message: 'attestation API called with an invalid argument' },
  // --- guest-side evidence collection: configfs-tsm (attestation/tsm) -----------------
  ERR_ATT_TSM_UNAVAILABLE: { category: 'config', message: 'configfs-tsm report interface is not available' },
  ERR_ATT_TSM_PROVIDER_MISMATCH: { category: 'config', message: 'configfs-tsm provider is not the expected TEE' },
  ERR_ATT_TSM_IO: { category: 'unavailable', message: 'configfs-tsm read or write failed' },
  ERR_ATT_TSM_GENERATION_RACE: {
    category: 'unavailable',
    message: 'configfs-tsm report entry was written concurrently by another writer',
  },
  ERR_ATT_TSM_BAD_OUTBLOB: { category: 'internal', message: 'configfs-tsm outblob is not a valid report or quote for its provider' },
  ERR_ATT_TSM_REPORT_DATA_MISMATCH: {
    category: 'internal',
    message: 'configfs-tsm report does not bind the requested report_data',
  },
  // --- Intel TDX (attestation/tdx/code-table.ts, documented in attestation/tdx/ERRORS.md) ---
  ...TDX_CODES,
} as const satisfies CodeTable<string>;

export type AttestationErrorCode = keyof typeof ATTESTATION_CODES;

/** The one error class of the attestation package. Tests assert on `code`, never on text. */
export const AttestationError = errorFactory<AttestationErrorCode>(ATTESTATION_CODES, 'AttestationError');
export type AttestationError = InstanceType<typeof AttestationError>;

export function isAttestationError(e: unknown): e is AttestationError {
  return e instanceof AttestationError;
}
