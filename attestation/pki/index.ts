/**
 * Generic X.509 helpers shared by the TEE verifiers (internal to attestation/): parse
 * certificates and CRLs, verify a path to a pinned root key, verify CRLs. Failures are
 * PkiFailure with a fixed `reason`; each verifier maps reasons to its own error codes.
 */
export { PkiFailure, isPkiFailure, translatePkiFailure, type PkiFailureReason } from './failure.js';
export { decodeOidContent, oidAt, signatureAlgorithmOf, TAG_OID, TAG_ENUMERATED, type SignatureAlgorithm } from './asn1.js';
export {
  parseCertificate,
  pemCertificates,
  normalizeSerialHex,
  KeyUsage,
  OID_BASIC_CONSTRAINTS,
  OID_KEY_USAGE,
  MAX_PEM_CERTS,
  MAX_PEM_CHAIN_CHARS,
  type Certificate,
} from './cert.js';
export { checkValidity, checkSignedBy, checkCa, checkLeaf, checkCriticalExtensions, signatureVerifies, verifyPath, type PathInput, type SignatureMemo } from './path.js';
export { parseCrl, parseCrlDer, verifyCrl, isRevoked, checkNotRevoked, crlDer, MAX_CRL_BYTES, type Crl } from './crl.js';
