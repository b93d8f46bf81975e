import type { Claims, TeeType } from './types.js';

/** What every verifier needs from its caller: the clock and the expected binding. */
export interface EvidenceVerifyOptions {
  /** Verification time (injected clock). */
  readonly now: Date;
  /** REQUIRED: the 64-byte report_data the evidence must carry (freshness / key binding). */
  readonly expectedReportData: Uint8Array;
}

/**
 * Relying-party side of a TEE: turns untrusted evidence into verified claims, or throws
 * an AttestationError. Policy is not part of verification: pass the claims to the
 * TEE's validate function (validateSnpClaims for SEV-SNP). Implementations hold their
 * trust configuration (pinned roots, simulated root) from construction, so a service
 * can take a verifier by injection and tests can hand it a simulated one.
 */
export interface EvidenceVerifier {
  readonly tee: TeeType;
  verify(evidence: unknown, opts: EvidenceVerifyOptions): Promise<Claims>;
}
