import type { PolicyFailure, SnpClaims } from '../types.js';
import type { EvidenceVerifier, EvidenceVerifyOptions } from '../verifier.js';
import { parseSnpPolicy, relaxationsFor, type SnpPolicy, type SnpPolicyInput } from './policy.js';
import { validateSnpClaims } from './validate.js';
import { prepareSnpTrust, verifySnpEvidenceWithTrust, type PreparedSnpTrust, type SnpTrustOptions } from './verify.js';

export interface SnpEvaluateOptions extends EvidenceVerifyOptions {
  readonly trust?: SnpTrustOptions;
  readonly policy: SnpPolicy | SnpPolicyInput;
}

export interface SnpEvaluation {
  /** Verified claims; `relaxations` also lists the policy's relaxations. */
  readonly claims: SnpClaims;
  /** Empty when the policy accepts the claims. */
  readonly failures: readonly PolicyFailure[];
}

/**
 * The whole SEV-SNP pipeline: verify (throws AttestationError on any parse or
 * verification failure) then validate (never throws for policy failures: returns them
 * all). The caller accepts the evidence only when `failures` is empty.
 */
export async function evaluateSnpEvidence(evidence: unknown, opts: SnpEvaluateOptions): Promise<SnpEvaluation> {
  const policy = parseSnpPolicy(opts.policy);
  const verified = await new SnpEvidenceVerifier(opts.trust).verify(evidence, opts);
  const failures = validateSnpClaims(verified, policy);
  const relaxations = [...verified.relaxations, ...relaxationsFor(policy)];
  const claims: SnpClaims = Object.freeze({ ...verified, relaxations: Object.freeze(relaxations) });
  return Object.freeze({ claims, failures: Object.freeze(failures) });
}

/**
 * EvidenceVerifier for SEV-SNP. Trust options are validated and parsed once, here
 * (ERR_ATT_SNP_BAD_TRUST on a bad configuration). `verify` is verifySnpEvidence (throws
 * only AttestationError).
 */
export class SnpEvidenceVerifier implements EvidenceVerifier {
  readonly tee = 'sev-snp' as const;
  readonly #trust: PreparedSnpTrust;

  constructor(trust?: SnpTrustOptions) {
    this.#trust = prepareSnpTrust(trust);
  }

  async verify(evidence: unknown, opts: EvidenceVerifyOptions): Promise<SnpClaims> {
    return verifySnpEvidenceWithTrust(evidence, { now: opts.now, expectedReportData: opts.expectedReportData }, this.#trust);
  }
}
