/** Public API of the attestation library. Internals (der, chain, layout, x509) are not exported. */
export * from './types.js';
export * from './binding.js';
export type { EvidenceVerifier, EvidenceVerifyOptions } from './verifier.js';
export { AttestationError, ATTESTATION_CODES, isAttestationError, type AttestationErrorCode } from './codes.js';
export * from './snp/index.js';
export * from './sim/index.js';
export * from './tsm/index.js';
export * from './tdx/index.js';
