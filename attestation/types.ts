/**
 * Public contract of the attestation library: what evidence looks like on the wire, what
 * a verifier turns it into (claims), and the interfaces that providers (guest side) and
 * verifiers (relying-party side) implement. Every TEE family plugs in behind these.
 */

export type TeeType = 'sev-snp' | 'tdx';

/** SEV-SNP evidence as carried over HTTP/gRPC (JSON). All binary fields are standard base64. */
export interface SnpEvidence {
  readonly tee: 'sev-snp';
  /** The 1184-byte ATTESTATION_REPORT. */
  readonly report: string;
  /**
   * Certificates the guest could supply (extended report / cert table), DER, base64.
   * The verifier never trusts these on their own: only a chain to a pinned ARK counts.
   */
  readonly certs?: {
    readonly vcek?: string;
    readonly vlek?: string;
    readonly ask?: string;
    readonly asvk?: string;
    readonly ark?: string;
    readonly certTable?: string;
  };
}

/** Intel TDX evidence: a DCAP quote (v4 or v5), standard base64. */
export interface TdxEvidence {
  readonly tee: 'tdx';
  readonly quote: string;
}

export type Evidence = SnpEvidence | TdxEvidence;

/** Guest side: produces evidence binding the caller's 64-byte report_data. */
export interface EvidenceProvider<E extends Evidence = Evidence> {
  readonly tee: TeeType;
  /** True for the simulated TEE. Claims derived from its evidence say `simulated: true`. */
  readonly simulated: boolean;
  collect(reportData: Uint8Array): Promise<E>;
}

export interface SnpTcb {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  /** Turin and later only. */
  readonly fmc?: number;
}

/**
 * Flat, documented claim set for SEV-SNP. Relying parties (broker, client) decide on
 * these, never on raw bytes. Hex strings are lower-case.
 */
export interface SnpClaims {
  readonly tee: 'sev-snp';
  /** True when the chain ended in the simulated root instead of a pinned AMD ARK. */
  readonly simulated: boolean;
  readonly product: 'Milan' | 'Genoa' | 'Turin';
  readonly reportVersion: number;
  readonly signingKey: 'vcek' | 'vlek';
  readonly measurement: string;
  readonly reportData: string;
  readonly hostData: string;
  readonly idKeyDigest: string;
  readonly authorKeyDigest: string;
  readonly familyId: string;
  readonly imageId: string;
  readonly reportId: string;
  readonly chipId: string;
  readonly guestSvn: number;
  readonly vmpl: number;
  readonly policy: {
    readonly abiMajor: number;
    readonly abiMinor: number;
    readonly smt: boolean;
    readonly migrationAgent: boolean;
    readonly debug: boolean;
    readonly singleSocket: boolean;
  };
  readonly platform: {
    readonly smtEnabled: boolean;
    readonly tsmeEnabled: boolean;
  };
  readonly currentTcb: SnpTcb;
  readonly reportedTcb: SnpTcb;
  readonly committedTcb: SnpTcb;
  readonly launchTcb: SnpTcb;
  readonly firmware: { readonly current: string; readonly committed: string };
  /** Relaxations of default checks that were applied while producing these claims. */
  readonly relaxations: readonly string[];
  // --- optional additions (attestation/snp, 2026): present when the report carries them ---
  /** Product name exactly as in the VCEK/VLEK productName extension, e.g. "Milan-B0". */
  readonly productName?: string;
  /** CPUID family/model/stepping (report v3+). */
  readonly cpuid?: { readonly family: number; readonly model: number; readonly stepping: number };
  /** REPORT_ID_MA, lower-case hex. */
  readonly reportIdMa?: string;
  /** FLAGS bits 0-1: AUTHOR_KEY_EN, MASK_CHIP_KEY. */
  readonly flags?: { readonly authorKeyEnabled: boolean; readonly maskChipKey: boolean };
  /** LAUNCH_MIT_VECTOR / CURRENT_MIT_VECTOR as 16 lower-case hex digits (report v5+). */
  readonly mitigationVectors?: { readonly launch: string; readonly current: string };
  /** VLEK only: the cloud provider the VLEK was issued to (cspID extension). */
  readonly cspId?: string;
}

export type Claims = SnpClaims;

/** One failed policy rule: the field, what the policy wanted, what the evidence said. */
export interface PolicyFailure {
  readonly field: string;
  readonly expected: string;
  readonly observed: string;
}
