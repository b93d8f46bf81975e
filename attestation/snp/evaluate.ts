import type { PolicyFailure, SnpClaims } from '../types.js';
import type { EvidenceVerifier, EvidenceVerifyOptions } from '../verifier.js';
import { parseSnpPolicy, relaxationsFor, type SnpPolicy, type SnpPolicyInput } from './policy.js';
import { validateSnpClaims } from './validate.js';
import type { SnpCollateralSource } from './collateral.js';
import {
  prepareSnpTrust,
  verifySnpEvidenceWithTrust,
  type ANY_REPORT_DATA,
  type PreparedSnpTrust,
  type SnpTrustOptions,
} from './verify.js';

export interface SnpEvaluateOptions extends Omit<EvidenceVerifyOptions, 'expectedReportData'> {
  /** As in SnpVerifyOptions: 64 bytes, or ANY_REPORT_DATA (recorded as a relaxation). */
  readonly expectedReportData: Uint8Array | typeof ANY_REPORT_DATA;
  readonly trust?: SnpTrustOptions;
  readonly policy: SnpPolicy | SnpPolicyInput;
  /** As in SnpVerifyOptions. */
  readonly crls?: readonly Uint8Array[];
  /** As in SnpVerifyOptions. */
  readonly collateral?: SnpCollateralSource;
}

/** Revocation and collateral settings a long-lived SnpEvidenceVerifier applies to every call. */
export interface SnpVerifierCollateral {
  readonly crls?: readonly Uint8Array[];
  readonly collateral?: SnpCollateralSource;
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
  const verified = await verifySnpEvidenceWithTrust(
    evidence,
    {
      now: opts.now,
      expectedReportData: opts.expectedReportData,
      ...(opts.crls !== undefined ? { crls: opts.crls } : {}),
      ...(opts.collateral !== undefined ? { collateral: opts.collateral } : {}),
    },
    prepareSnpTrust(opts.trust),
  );
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
  readonly #extra: SnpVerifierCollateral;

  /** `extra`: CRLs and/or a collateral source used on every verify (see SnpVerifyOptions). */
  constructor(trust?: SnpTrustOptions, extra: SnpVerifierCollateral = {}) {
    this.#trust = prepareSnpTrust(trust);
    this.#extra = Object.freeze({
      ...(extra.crls !== undefined ? { crls: Object.freeze([...extra.crls]) } : {}),
      ...(extra.collateral !== undefined ? { collateral: extra.collateral } : {}),
    });
  }

  async verify(evidence: unknown, opts: EvidenceVerifyOptions): Promise<SnpClaims> {
    return verifySnpEvidenceWithTrust(evidence, { now: opts.now, expectedReportData: opts.expectedReportData, ...this.#extra }, this.#trust);
  }
}
