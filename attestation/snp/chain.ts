import { AttestationError, type AttestationErrorCode } from '../codes.js';
import {
  checkSignedBy as pkiCheckSignedBy,
  checkValidity as pkiCheckValidity,
  translatePkiFailure,
  verifyPath,
  type PkiFailure,
  type PkiFailureReason,
  type SignatureAlgorithm,
} from '../pki/index.js';
import type { ParsedCert } from './certs.js';
import { cachedSignatureCheck } from './cert-cache.js';

/**
 * Certificate chain verification for SEV-SNP (internal): leaf (VCEK/VLEK) <- intermediate
 * (ASK/ASVK) <- root (ARK). The generic RFC 5280 path rules (pin, CA flags, path length,
 * key usage, critical extensions, name chaining, signatures, inclusive validity) are
 * pki/path.ts verifyPath; this file adds AMD's profile (RSA-4096 CAs, an ECDSA P-384
 * leaf, RSASSA-PSS only) and maps every PkiFailure to an ERR_ATT_SNP_* code.
 *
 * Spec: AMD KDS interface spec (pub. 57230), "Certificate chain": RSA-4096 ARK and
 * ASK/ASVK, every link signed RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48.
 * RFC 5280 for validity (inclusive bounds), basicConstraints, keyUsage, critical
 * extensions and name chaining.
 */

/** Minimum RSA modulus for ARK/ASK/ASVK keys: AMD uses 4096 bits. */
export const MIN_CA_RSA_BITS = 4096;

/**
 * SECURITY: the algorithm allow-list for every AMD chain link and CRL: RSASSA-PSS with
 * SHA-384, MGF1-SHA-384, salt 48 (pki/asn1.ts recognises exactly that parameter set and
 * pki/path.ts verifies with those parameters fixed, whatever the certificate declares).
 */
export const AMD_SIGNATURE_ALGORITHMS: readonly SignatureAlgorithm[] = Object.freeze(['rsa-pss-sha384']);

/**
 * How each generic PKI failure reads as an SEV-SNP error code (ERRORS.md), for chains;
 * crl.ts reads 'bad-algorithm' as ERR_ATT_SNP_CRL_INVALID instead.
 */
export const SNP_PKI_CODES: Readonly<Record<PkiFailureReason, AttestationErrorCode>> = Object.freeze({
  'malformed-cert': 'ERR_ATT_SNP_BAD_CERT',
  'malformed-crl': 'ERR_ATT_SNP_BAD_CRL',
  'pin-mismatch': 'ERR_ATT_SNP_ARK_PIN_MISMATCH',
  'chain-invalid': 'ERR_ATT_SNP_CHAIN_INVALID',
  'bad-algorithm': 'ERR_ATT_SNP_CHAIN_INVALID',
  'not-ca': 'ERR_ATT_SNP_BAD_CA',
  'bad-leaf': 'ERR_ATT_SNP_CHAIN_INVALID',
  expired: 'ERR_ATT_SNP_CERT_EXPIRED',
  'not-yet-valid': 'ERR_ATT_SNP_CERT_NOT_YET_VALID',
  'crl-invalid': 'ERR_ATT_SNP_CRL_INVALID',
  'crl-expired': 'ERR_ATT_SNP_CRL_EXPIRED',
  'crl-not-yet-valid': 'ERR_ATT_SNP_CRL_NOT_YET_VALID',
  revoked: 'ERR_ATT_SNP_REVOKED',
});

/** The AttestationError for a PkiFailure under `codes` (SNP_PKI_CODES by default). */
export function snpPkiError(f: PkiFailure, codes: Readonly<Record<PkiFailureReason, AttestationErrorCode>> = SNP_PKI_CODES): AttestationError {
  return new AttestationError(codes[f.reason], { detail: f.detail, cause: f });
}

const chainError = (f: PkiFailure) => snpPkiError(f);

export interface ChainInput {
  readonly leaf: ParsedCert;
  readonly intermediate: ParsedCert;
  readonly root: ParsedCert;
  /** Lower-case hex SHA-256 of the root's SubjectPublicKeyInfo that trust is pinned to. */
  readonly rootSpkiSha256: string;
  readonly now: Date;
}

function err(code: AttestationErrorCode, c: ParsedCert, detail: string): AttestationError {
  return new AttestationError(code, { detail: `${c.label}: ${detail}` });
}

/** Inclusive validity check (RFC 5280 §4.1.2.5): ERR_ATT_SNP_CERT_NOT_YET_VALID / _EXPIRED. */
export function checkValidity(c: ParsedCert, now: Date): void {
  translatePkiFailure(() => pkiCheckValidity(c, now), chainError);
}

/**
 * Verifies that `issuer` signed `child` with RSASSA-PSS/SHA-384/MGF1-SHA-384/salt 48 and
 * that the names chain (pki/path.ts checkSignedBy with AMD_SIGNATURE_ALGORITHMS): the
 * declared algorithm must be on the allow-list and both algorithm fields must agree.
 * Every failure is ERR_ATT_SNP_CHAIN_INVALID. Only a byte-identical (issuer key, signed
 * data, signature) triple that verified before is answered from cert-cache.ts.
 */
export function checkSignedBy(child: ParsedCert, issuer: ParsedCert): void {
  translatePkiFailure(() => pkiCheckSignedBy(child, issuer, AMD_SIGNATURE_ALGORITHMS, cachedSignatureCheck), chainError);
}

/**
 * AMD's key profile, run by verifyPath right after each certificate's CA / end-entity
 * checks: ARK and ASK/ASVK keys are RSA of at least MIN_CA_RSA_BITS
 * (ERR_ATT_SNP_CHAIN_INVALID); the leaf key is ECDSA P-384 (ERR_ATT_SNP_BAD_CERT).
 */
function checkAmdKeyProfile(c: ParsedCert, role: 'root' | 'intermediate' | 'leaf'): void {
  const key = c.publicKey;
  if (role === 'leaf') {
    // SECURITY: the report signature algorithm is fixed (ECDSA P-384); so is the leaf key.
    if (key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
      throw err('ERR_ATT_SNP_BAD_CERT', c, 'leaf key must be ECDSA P-384');
    }
    return;
  }
  const type = key.asymmetricKeyType;
  if ((type !== 'rsa' && type !== 'rsa-pss') || (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_CA_RSA_BITS) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', c, `CA key must be RSA >= ${MIN_CA_RSA_BITS} bits`);
  }
}

/**
 * Verifies leaf <- intermediate <- root at `now` (pki/path.ts verifyPath plus AMD's
 * profile), in this order, so that the first failing rule names the error:
 * - root: SPKI SHA-256 equals the pin (ERR_ATT_SNP_ARK_PIN_MISMATCH);
 * - no unknown critical extension anywhere (ERR_ATT_SNP_CHAIN_INVALID);
 * - root: CA (ERR_ATT_SNP_BAD_CA), RSA-4096, self-issued and self-signed, valid at now;
 * - intermediate: CA with keyCertSign if keyUsage present (ERR_ATT_SNP_BAD_CA),
 *   RSA-4096, signed by root, valid at now;
 * - leaf: not a CA, digitalSignature if keyUsage present (ERR_ATT_SNP_CHAIN_INVALID),
 *   ECDSA P-384 key (ERR_ATT_SNP_BAD_CERT), signed by intermediate, valid at now;
 * - every link RSASSA-PSS SHA-384 salt 48 (ERR_ATT_SNP_CHAIN_INVALID); validity
 *   failures are ERR_ATT_SNP_CERT_EXPIRED / _NOT_YET_VALID.
 * Does NOT check revocation (crl.ts, called by verify.ts when CRLs are supplied) or
 * anything about the report.
 */
export function verifyCertChain(input: ChainInput): void {
  const { leaf, intermediate, root, now } = input;
  translatePkiFailure(
    () =>
      verifyPath({
        chain: [leaf, intermediate],
        root,
        // SECURITY: trust comes only from the pinned key, never from a chain that merely builds.
        pins: [input.rootSpkiSha256],
        now,
        algorithms: AMD_SIGNATURE_ALGORITHMS,
        profile: checkAmdKeyProfile,
        memo: cachedSignatureCheck,
      }),
    chainError,
  );
}
