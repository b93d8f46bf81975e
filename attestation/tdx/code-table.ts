import type { CodeTable } from '../../common/errors.js';

/**
 * Error codes of Intel TDX attestation (attestation/tdx): data only, merged into the
 * package table in attestation/codes.ts so that TDX errors are AttestationErrors.
 * Categories follow the pipeline stage as for SEV-SNP: hostile bytes and malformed
 * collateral -> 'bad-input'; signatures, chains, validity, revocation, bindings and TCB
 * matching -> 'verification'; policy on verified claims -> 'policy'; operator
 * configuration -> 'config'; collateral that cannot be had right now -> 'unavailable';
 * caller bugs -> 'internal'. Documented in attestation/tdx/ERRORS.md.
 */
export const TDX_CODES = {
  // --- parse (bad-input) -------------------------------------------------------------
  ERR_ATT_TDX_BAD_QUOTE: { category: 'bad-input', message: 'TDX quote is malformed' },
  ERR_ATT_TDX_UNSUPPORTED_VERSION: { category: 'bad-input', message: 'TDX quote version or body type is not supported' },
  ERR_ATT_TDX_UNSUPPORTED_TEE: { category: 'bad-input', message: 'TDX quote tee_type is not TDX' },
  ERR_ATT_TDX_UNSUPPORTED_KEY_TYPE: { category: 'bad-input', message: 'TDX quote attestation key type is not ECDSA P-256' },
  ERR_ATT_TDX_UNKNOWN_QE_VENDOR: { category: 'bad-input', message: 'TDX quote QE vendor id is not Intel' },
  ERR_ATT_TDX_BAD_CERT_DATA: { category: 'bad-input', message: 'TDX quote certification data is malformed' },
  ERR_ATT_TDX_BAD_CERT: { category: 'bad-input', message: 'TDX certificate is malformed' },
  ERR_ATT_TDX_BAD_PCK_EXTENSION: { category: 'bad-input', message: 'TDX PCK certificate SGX extension is malformed or missing' },
  ERR_ATT_TDX_BAD_CRL: { category: 'bad-input', message: 'TDX certificate revocation list is malformed' },
  ERR_ATT_TDX_BAD_COLLATERAL: { category: 'bad-input', message: 'TDX collateral is malformed' },
  // --- verification ------------------------------------------------------------------
  ERR_ATT_TDX_REPORT_DATA_MISMATCH: { category: 'verification', message: 'TDX report_data does not match' },
  ERR_ATT_TDX_BAD_QUOTE_SIGNATURE: { category: 'verification', message: 'TDX quote signature is invalid' },
  ERR_ATT_TDX_QE_BINDING_MISMATCH: {
    category: 'verification',
    message: 'TDX QE report does not bind the attestation key and QE auth data',
  },
  ERR_ATT_TDX_BAD_QE_SIGNATURE: { category: 'verification', message: 'TDX QE report signature does not verify with the PCK key' },
  ERR_ATT_TDX_ROOT_PIN_MISMATCH: { category: 'verification', message: 'TDX chain root key is not the pinned Intel SGX Root CA' },
  ERR_ATT_TDX_CHAIN_INVALID: { category: 'verification', message: 'TDX certificate chain is invalid' },
  ERR_ATT_TDX_CERT_EXPIRED: { category: 'verification', message: 'TDX certificate has expired' },
  ERR_ATT_TDX_CERT_NOT_YET_VALID: { category: 'verification', message: 'TDX certificate is not yet valid' },
  ERR_ATT_TDX_CRL_MISSING: { category: 'verification', message: 'TDX revocation list required but not supplied' },
  ERR_ATT_TDX_CRL_INVALID: { category: 'verification', message: 'TDX certificate revocation list does not verify' },
  ERR_ATT_TDX_CRL_EXPIRED: { category: 'verification', message: 'TDX certificate revocation list has expired' },
  ERR_ATT_TDX_CRL_NOT_YET_VALID: { category: 'verification', message: 'TDX certificate revocation list is not yet valid' },
  ERR_ATT_TDX_REVOKED: { category: 'verification', message: 'TDX certificate has been revoked' },
  ERR_ATT_TDX_BAD_COLLATERAL_SIGNATURE: {
    category: 'verification',
    message: 'TDX TCB Info or QE Identity signature does not verify',
  },
  ERR_ATT_TDX_COLLATERAL_EXPIRED: { category: 'verification', message: 'TDX TCB Info or QE Identity has expired' },
  ERR_ATT_TDX_COLLATERAL_NOT_YET_VALID: { category: 'verification', message: 'TDX TCB Info or QE Identity is not yet valid' },
  ERR_ATT_TDX_FMSPC_MISMATCH: { category: 'verification', message: 'TDX PCK FMSPC or PCE id does not match the TCB Info' },
  ERR_ATT_TDX_QE_IDENTITY_MISMATCH: { category: 'verification', message: 'TDX QE report does not match the QE Identity' },
  ERR_ATT_TDX_TDX_MODULE_MISMATCH: { category: 'verification', message: 'TDX module signer or attributes do not match the TCB Info' },
  ERR_ATT_TDX_UNKNOWN_TDX_MODULE: { category: 'verification', message: 'TDX module is not among the TCB Info module identities' },
  ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND: { category: 'verification', message: 'TDX TCB matches no TCB level' },
  ERR_ATT_TDX_UNVERIFIABLE: { category: 'verification', message: 'TDX quote could not be verified' },
  ERR_ATT_TDX_COLLATERAL_UNAVAILABLE: { category: 'unavailable', message: 'TDX collateral could not be obtained' },
  // --- policy ------------------------------------------------------------------------
  ERR_ATT_TDX_POLICY_FAILED: { category: 'policy', message: 'TDX claims do not satisfy the policy' },
  ERR_ATT_TDX_BAD_POLICY: { category: 'config', message: 'TDX policy is invalid' },
  // --- caller bugs -------------------------------------------------------------------
  ERR_ATT_TDX_BAD_ARGUMENT: { category: 'internal', message: 'TDX attestation API called with an invalid argument' },
} as const satisfies CodeTable<string>;
