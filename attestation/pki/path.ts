import { constants, verify as cryptoVerify, type KeyObject } from 'node:crypto';
import type { SignatureAlgorithm } from './asn1.js';
import { KeyUsage, OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, type Certificate } from './cert.js';
import { PkiFailure } from './failure.js';

/**
 * Generic certification-path checks (RFC 5280 §6, reduced to what pinned-root TEE chains
 * need). @peculiar/x509's verify() returns false instead of throwing and its chain builder
 * checks neither CA flags, path length, key usage, validity nor revocation, so every rule
 * is written out here. Trust comes only from the caller's pinned SubjectPublicKeyInfo
 * hashes, never from names.
 */

/** Inclusive validity (RFC 5280 §4.1.2.5): notBefore <= now <= notAfter. */
export function checkValidity(c: Certificate, now: Date): void {
  const t = now.getTime();
  if (t < c.notBefore.getTime()) throw new PkiFailure('not-yet-valid', `${c.label}: notBefore ${c.notBefore.toISOString()}`);
  if (t > c.notAfter.getTime()) throw new PkiFailure('expired', `${c.label}: notAfter ${c.notAfter.toISOString()}`);
}

/**
 * Verifies `signature` over `data` with `key` under `alg`, with the parameters fixed here
 * whatever the signed object declares. ECDSA signatures are DER (X.509 form) unless
 * `encoding` says 'ieee-p1363' (r||s). Never throws: false on any failure.
 */
export function signatureVerifies(
  key: KeyObject,
  alg: SignatureAlgorithm,
  data: Uint8Array,
  signature: Uint8Array,
  encoding: 'der' | 'ieee-p1363' = 'der',
): boolean {
  try {
    switch (alg) {
      case 'ecdsa-sha256':
      case 'ecdsa-sha384':
        if (key.asymmetricKeyType !== 'ec') return false;
        return cryptoVerify(alg === 'ecdsa-sha256' ? 'sha256' : 'sha384', data, { key, dsaEncoding: encoding }, signature);
      case 'rsa-pss-sha384':
        if (key.asymmetricKeyType !== 'rsa' && key.asymmetricKeyType !== 'rsa-pss') return false;
        return cryptoVerify('sha384', data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: 48 }, signature);
    }
  } catch {
    return false;
  }
}

/**
 * Memo of signature checks that succeeded: answers true for a (issuer SubjectPublicKeyInfo,
 * signed bytes, signature) triple it has seen verify, and otherwise runs `verify` and may
 * remember a success. The algorithm is fixed by the caller's allow-list, so the answer
 * depends on these byte strings only. A verifier with its own bounded cache (SEV-SNP's
 * cert-cache.ts) passes it here.
 */
export type SignatureMemo = (issuerSpki: Uint8Array, tbs: Uint8Array, signature: Uint8Array, verify: () => boolean) => boolean;

// The default memo. Key: `${child DER sha256}|${issuer SPKI sha256}|${alg}`: it covers the
// whole signed certificate and the whole issuer key, so a hit is exactly as good as
// re-running the verification. Bounded; oldest entries are dropped first.
const verifiedLinks = new Set<string>();
const MAX_VERIFIED_LINKS = 1024;

function defaultMemo(child: Certificate, issuer: Certificate, alg: SignatureAlgorithm, verify: () => boolean): boolean {
  const key = `${child.derSha256}|${issuer.spkiSha256}|${alg}`;
  if (verifiedLinks.has(key)) return true;
  if (!verify()) return false;
  if (verifiedLinks.size >= MAX_VERIFIED_LINKS) verifiedLinks.delete(verifiedLinks.values().next().value!);
  verifiedLinks.add(key);
  return true;
}

/**
 * Checks that `issuer` signed `child`: names chain (byte-equal DER), the algorithm is on
 * the allow-list, the outer and TBS algorithm fields agree, and the signature verifies
 * over the exact TBS bytes with the issuer's key (parameters fixed by signatureVerifies).
 * Successes are remembered by `memo` when given, else by a built-in bounded memo.
 */
export function checkSignedBy(child: Certificate, issuer: Certificate, algorithms: readonly SignatureAlgorithm[], memo?: SignatureMemo): void {
  if (Buffer.compare(child.parts.issuer, issuer.parts.subject) !== 0) {
    throw new PkiFailure('chain-invalid', `${child.label}: issuer is not the subject of ${issuer.label}`);
  }
  const alg = child.signatureAlgorithm;
  if (alg === undefined || !algorithms.includes(alg)) {
    throw new PkiFailure('bad-algorithm', `${child.label}: signature algorithm not allowed`);
  }
  if (Buffer.compare(child.parts.signatureAlgorithm, child.parts.tbsSignatureAlgorithm) !== 0) {
    throw new PkiFailure('bad-algorithm', `${child.label}: signature algorithm fields disagree`);
  }
  const { tbs, signature } = child.parts;
  const verify = () => signatureVerifies(issuer.publicKey, alg, tbs, signature);
  const ok = memo ? memo(issuer.parts.subjectPublicKeyInfo, tbs, signature, verify) : defaultMemo(child, issuer, alg, verify);
  if (!ok) throw new PkiFailure('chain-invalid', `${child.label}: signature does not verify with ${issuer.label}`);
}

/**
 * SECURITY: an unrecognised critical extension makes a certificate unusable (RFC 5280
 * §4.2). `known` lists the critical extensions the caller processes besides
 * basicConstraints and keyUsage.
 */
export function checkCriticalExtensions(c: Certificate, known: ReadonlySet<string> = new Set()): void {
  for (const [oid, ext] of c.extensions) {
    if (ext.critical && oid !== OID_BASIC_CONSTRAINTS && oid !== OID_KEY_USAGE && !known.has(oid)) {
      throw new PkiFailure('chain-invalid', `${c.label}: unknown critical extension ${oid}`);
    }
  }
}

/**
 * An issuing certificate: basicConstraints cA, pathLenConstraint (when present) at
 * least `below` (the number of CA certificates under it), keyCertSign when keyUsage is
 * present.
 */
export function checkCa(c: Certificate, below: number): void {
  const bc = c.basicConstraints;
  if (!bc || !bc.ca) throw new PkiFailure('not-ca', `${c.label}: basicConstraints cA is not set`);
  if (bc.pathLength !== undefined && bc.pathLength < below) {
    throw new PkiFailure('not-ca', `${c.label}: pathLenConstraint ${bc.pathLength} exceeded`);
  }
  if (c.keyUsage !== undefined && (c.keyUsage & KeyUsage.keyCertSign) === 0) {
    throw new PkiFailure('not-ca', `${c.label}: keyUsage lacks keyCertSign`);
  }
}

/** An end-entity certificate: not a CA; digitalSignature when keyUsage is present. */
export function checkLeaf(c: Certificate): void {
  if (c.basicConstraints?.ca) throw new PkiFailure('bad-leaf', `${c.label}: end-entity certificate is a CA`);
  if (c.keyUsage !== undefined && (c.keyUsage & KeyUsage.digitalSignature) === 0) {
    throw new PkiFailure('bad-leaf', `${c.label}: keyUsage lacks digitalSignature`);
  }
}

export interface PathInput {
  /** Leaf first, then the intermediates in issuing order (may be only the leaf). */
  readonly chain: readonly Certificate[];
  /** The trust anchor. Must be self-signed and its key must be one of `pins`. */
  readonly root: Certificate;
  /** Lower-case hex SHA-256 of the SubjectPublicKeyInfo of each acceptable root key. */
  readonly pins: readonly string[];
  readonly now: Date;
  readonly algorithms: readonly SignatureAlgorithm[];
  /** Critical extensions the caller processes itself (beyond basicConstraints/keyUsage). */
  readonly knownCritical?: ReadonlySet<string>;
  /**
   * The caller's own profile of each certificate (key type and size, ...): run right
   * after that certificate's CA or end-entity checks and before its signature check,
   * root first. It throws the caller's own error.
   */
  readonly profile?: (c: Certificate, role: 'root' | 'intermediate' | 'leaf') => void;
  /** Memo for the signature checks (checkSignedBy); the built-in one when absent. */
  readonly memo?: SignatureMemo;
}

/**
 * Verifies chain[0] <- chain[1] <- ... <- root at `now`:
 * - the root's key is pinned (compared by SPKI hash, never by name), it is a CA,
 *   self-issued and self-signed, and valid at now;
 * - every intermediate is a CA (pathLen respected, keyCertSign), signed by the next
 *   certificate, valid at now;
 * - the leaf is an end-entity certificate, signed by the next one, valid at now;
 * - every signature algorithm is on the allow-list; no unknown critical extension;
 * - the caller's `profile`, if any, accepts each certificate.
 *
 * Does NOT check revocation (crl.ts) or any application extension. Throws PkiFailure.
 */
export function verifyPath(input: PathInput): void {
  const { chain, root, now, algorithms, profile, memo } = input;
  if (chain.length === 0) throw new PkiFailure('chain-invalid', 'empty chain');
  // SECURITY: trust comes only from the pinned key.
  if (!input.pins.includes(root.spkiSha256)) throw new PkiFailure('pin-mismatch', `${root.label}: key ${root.spkiSha256} is not pinned`);
  const all = [...chain, root];
  for (const c of all) checkCriticalExtensions(c, input.knownCritical);
  checkCa(root, chain.length - 1);
  profile?.(root, 'root');
  checkSignedBy(root, root, algorithms, memo);
  checkValidity(root, now);
  for (let i = chain.length - 1; i >= 0; i--) {
    const c = chain[i]!;
    const issuer = all[i + 1]!;
    if (i === 0) checkLeaf(c);
    else checkCa(c, i - 1);
    profile?.(c, i === 0 ? 'leaf' : 'intermediate');
    checkSignedBy(c, issuer, algorithms, memo);
    checkValidity(c, now);
  }
}
