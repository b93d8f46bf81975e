import { constants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import { AttestationError, type AttestationErrorCode } from '../codes.js';
import { x509 } from '../../common/x509.js';
import { OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, type ParsedCert } from './certs.js';
import { cachedSignatureCheck } from './cert-cache.js';

/**
 * Certificate chain verification for SEV-SNP (internal): leaf (VCEK/VLEK) <- intermediate
 * (ASK/ASVK) <- root (ARK). @peculiar/x509's chain builder checks neither CA flags, key
 * usage, validity nor pins, so every rule is written out here.
 *
 * Spec: AMD KDS interface spec (pub. 57230), "Certificate chain": RSA-4096 ARK and
 * ASK/ASVK, every link signed RSASSA-PSS with SHA-384, MGF1-SHA-384, salt length 48.
 * RFC 5280 for validity (inclusive bounds), basicConstraints, keyUsage, critical
 * extensions and name chaining.
 */

/** Minimum RSA modulus for ARK/ASK/ASVK keys: AMD uses 4096 bits. */
export const MIN_CA_RSA_BITS = 4096;
export const PSS_SALT_LENGTH = 48;

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

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && Buffer.compare(a, b) === 0;
}

/** Inclusive validity check (RFC 5280 §4.1.2.5). */
export function checkValidity(c: ParsedCert, now: Date): void {
  const t = now.getTime();
  if (t < c.notBefore.getTime()) {
    throw err('ERR_ATT_SNP_CERT_NOT_YET_VALID', c, `notBefore ${c.notBefore.toISOString()}`);
  }
  if (t > c.notAfter.getTime()) {
    throw err('ERR_ATT_SNP_CERT_EXPIRED', c, `notAfter ${c.notAfter.toISOString()}`);
  }
}

const KNOWN_CRITICAL = new Set([OID_BASIC_CONSTRAINTS, OID_KEY_USAGE]);

function checkCriticalExtensions(c: ParsedCert): void {
  for (const [oid, ext] of c.extensions) {
    // SECURITY: RFC 5280 §4.2: an unrecognised critical extension makes the cert unusable.
    if (ext.critical && !KNOWN_CRITICAL.has(oid)) throw err('ERR_ATT_SNP_CHAIN_INVALID', c, `unknown critical extension ${oid}`);
  }
}

function checkCa(c: ParsedCert, minPathLen: number): void {
  const bc = c.basicConstraints;
  if (!bc || !bc.ca) throw err('ERR_ATT_SNP_BAD_CA', c, 'basicConstraints cA is not set');
  if (bc.pathLength !== undefined && bc.pathLength < minPathLen) {
    throw err('ERR_ATT_SNP_BAD_CA', c, `pathLenConstraint ${bc.pathLength} too small`);
  }
  const ku = c.keyUsage;
  if (ku !== undefined && (ku & x509.KeyUsageFlags.keyCertSign) === 0) throw err('ERR_ATT_SNP_BAD_CA', c, 'keyUsage lacks keyCertSign');
  const d = c.publicKey.asymmetricKeyDetails;
  const type = c.publicKey.asymmetricKeyType;
  if ((type !== 'rsa' && type !== 'rsa-pss') || (d?.modulusLength ?? 0) < MIN_CA_RSA_BITS) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', c, `CA key must be RSA >= ${MIN_CA_RSA_BITS} bits`);
  }
}

function checkLeafProfile(c: ParsedCert): void {
  if (c.basicConstraints?.ca) throw err('ERR_ATT_SNP_CHAIN_INVALID', c, 'leaf certificate must not be a CA');
  const ku = c.keyUsage;
  if (ku !== undefined && (ku & x509.KeyUsageFlags.digitalSignature) === 0) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', c, 'keyUsage lacks digitalSignature');
  }
  // SECURITY: the report signature algorithm is fixed (ECDSA P-384); so is the leaf key.
  if (c.publicKey.asymmetricKeyType !== 'ec' || c.publicKey.asymmetricKeyDetails?.namedCurve !== 'secp384r1') {
    throw err('ERR_ATT_SNP_BAD_CERT', c, 'leaf key must be ECDSA P-384');
  }
}

/** True when a WebCrypto algorithm object is RSA-PSS with SHA-384 and salt length 48. */
export function isAmdPssAlgorithm(alg: ParsedCert['signatureAlgorithm']): boolean {
  return alg?.name === 'RSA-PSS' && alg.hash?.name === 'SHA-384' && alg.saltLength === PSS_SALT_LENGTH;
}

/**
 * RSASSA-PSS / SHA-384 / MGF1-SHA-384 / salt 48 verification with the parameters fixed
 * here, whatever the signed object declares. False (never a throw) on any failure.
 */
export function rsaPssSha384Verifies(key: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return cryptoVerify('sha384', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: PSS_SALT_LENGTH }, signature);
  } catch {
    return false;
  }
}

/**
 * Verifies that `issuer` signed `child` with RSASSA-PSS/SHA-384/MGF1-SHA-384/salt 48 and
 * that the names chain. SECURITY: algorithm allow-list: the declared algorithm must be
 * RSA-PSS with SHA-384 and salt 48, the inner and outer algorithm fields must agree, and
 * node verifies with those parameters fixed, whatever the certificate claims.
 */
export function checkSignedBy(child: ParsedCert, issuer: ParsedCert): void {
  if (!sameBytes(child.parts.issuer, issuer.parts.subject)) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', child, `issuer does not match the subject of ${issuer.label}`);
  }
  const alg = child.signatureAlgorithm;
  if (!alg) throw err('ERR_ATT_SNP_CHAIN_INVALID', child, 'unknown signature algorithm');
  if (!isAmdPssAlgorithm(alg)) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', child, 'signature algorithm must be RSASSA-PSS SHA-384 salt 48');
  }
  if (!sameBytes(child.parts.signatureAlgorithm, child.parts.tbsSignatureAlgorithm)) {
    throw err('ERR_ATT_SNP_CHAIN_INVALID', child, 'signature algorithm fields disagree');
  }
  // Only a byte-identical (issuer key, signed data, signature) triple that verified before
  // is answered from the cache; everything else is verified afresh.
  const ok = cachedSignatureCheck(issuer.parts.subjectPublicKeyInfo, child.parts.tbs, child.parts.signature, () =>
    rsaPssSha384Verifies(issuer.publicKey, child.parts.tbs, child.parts.signature),
  );
  if (!ok) throw err('ERR_ATT_SNP_CHAIN_INVALID', child, `signature does not verify with ${issuer.label}`);
}

/**
 * Verifies leaf <- intermediate <- root at `now`:
 * - root: SPKI SHA-256 equals the pin; self-issued and self-signed; CA; valid at now;
 * - intermediate: signed by root; CA; keyCertSign if keyUsage present; valid at now;
 * - leaf: signed by intermediate; not a CA; ECDSA P-384 key; valid at now;
 * - every link RSASSA-PSS SHA-384 salt 48; no unknown critical extension anywhere.
 * Does NOT check revocation (crl.ts, called by verify.ts when CRLs are supplied) or
 * anything about the report.
 */
export function verifyCertChain(input: ChainInput): void {
  const { leaf, intermediate, root, now } = input;
  // SECURITY: trust comes only from the pinned key, never from a chain that merely builds.
  if (root.spkiSha256 !== input.rootSpkiSha256) {
    throw err('ERR_ATT_SNP_ARK_PIN_MISMATCH', root, `key ${root.spkiSha256} is not the pinned root key`);
  }
  for (const c of [root, intermediate, leaf]) checkCriticalExtensions(c);
  checkCa(root, 1);
  checkSignedBy(root, root);
  checkValidity(root, now);

  checkCa(intermediate, 0);
  checkSignedBy(intermediate, root);
  checkValidity(intermediate, now);

  checkLeafProfile(leaf);
  checkSignedBy(leaf, intermediate);
  checkValidity(leaf, now);
}
