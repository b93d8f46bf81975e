/**
 * The one failure type of the generic X.509 helpers in this folder.
 *
 * The helpers are shared by several TEE verifiers, each with its own error codes, so they
 * do not pick a code themselves: they throw a PkiFailure whose `reason` is a fixed literal,
 * and each caller maps every reason to one of its own codes with a total table
 * (`Record<PkiFailureReason, Code>`), so adding a reason is a compile error until every
 * caller maps it. A PkiFailure must never escape a verifier.
 *
 * SECURITY: `detail` names certificates by label and public values only.
 */
export type PkiFailureReason =
  | 'malformed-cert' // not a DER X.509 v3 certificate, or a malformed extension we read
  | 'malformed-crl' // not a DER X.509 v2 CRL
  | 'pin-mismatch' // the root's public key is not the pinned key
  | 'chain-invalid' // names do not chain, a signature does not verify, unknown critical extension
  | 'bad-algorithm' // signature algorithm not on the caller's allow-list, or the two fields disagree
  | 'not-ca' // an issuing certificate lacks cA / keyCertSign, or its path length is exceeded
  | 'bad-leaf' // the leaf is a CA, or lacks digitalSignature
  | 'expired' // now > notAfter
  | 'not-yet-valid' // now < notBefore
  | 'crl-invalid' // CRL issuer, cRLSign or signature wrong
  | 'crl-expired' // now > nextUpdate
  | 'crl-not-yet-valid' // now < thisUpdate
  | 'revoked'; // a serial is listed in a verified, current CRL

export class PkiFailure extends Error {
  readonly reason: PkiFailureReason;
  readonly detail: string;
  constructor(reason: PkiFailureReason, detail: string, options?: { cause?: unknown }) {
    super(`${reason}: ${detail}`, options);
    this.name = 'PkiFailure';
    this.reason = reason;
    this.detail = detail;
  }
}

export function isPkiFailure(e: unknown): e is PkiFailure {
  return e instanceof PkiFailure;
}

/**
 * Runs `f`; a PkiFailure it throws becomes `toError(failure)`, the caller's own error
 * (looked up in its total reason table); anything else passes through unchanged.
 */
export function translatePkiFailure<T>(f: () => T, toError: (failure: PkiFailure) => Error): T {
  try {
    return f();
  } catch (e) {
    if (e instanceof PkiFailure) throw toError(e);
    throw e;
  }
}
