import type { TcbStatus } from './collateral.js';

/**
 * Flat, documented claim set for Intel TDX (the lead adds it to attestation/types.ts's
 * Claims union). Relying parties decide on these, never on raw bytes. Hex is lower-case
 * and in quote byte order.
 */
export interface TdxClaims {
  readonly tee: 'tdx';
  /** Always false: there is no simulated TDX root; evidence chains to Intel or fails. */
  readonly simulated: false;
  readonly quoteVersion: 4 | 5;
  /** 2 = TD 1.0 body, 3 = TD 1.5 body. */
  readonly bodyType: 2 | 3;
  readonly mrtd: string;
  /** RTMR0..RTMR3. */
  readonly rtmr: readonly [string, string, string, string];
  readonly mrseam: string;
  readonly mrsignerseam: string;
  readonly mrconfigid: string;
  readonly mrowner: string;
  readonly mrownerconfig: string;
  readonly reportData: string;
  readonly tdAttributes: {
    /** The 8 td_attributes bytes as in the quote (little-endian u64), hex. */
    readonly hex: string;
    /** Bit 0 (TUD.DEBUG): the host can read and modify TD state. */
    readonly debug: boolean;
    /** Bit 28: EPT violation #VE disabled for private memory (restricts the TD). */
    readonly septVeDisable: boolean;
    readonly migratable: boolean;
    readonly pks: boolean;
    readonly kl: boolean;
    readonly perfmon: boolean;
  };
  readonly seamAttributes: string;
  /** XFAM (8 bytes, quote order), hex. */
  readonly xfam: string;
  /** tee_tcb_svn (16 bytes), hex: [0] module minor SVN, [1] module major version, ... */
  readonly teeTcbSvn: string;
  /** TD 1.5 bodies only. */
  readonly teeTcbSvn2?: string;
  /** TD 1.5 bodies only. */
  readonly mrservicetd?: string;
  /** From the PCK certificate, lower-case hex (6 bytes). */
  readonly fmspc: string;
  readonly pceId: string;
  /** Combined status of the platform TCB level, the TDX module and the QE. */
  readonly tcbStatus: TcbStatus;
  readonly platformTcbStatus: TcbStatus;
  /** Status of the TDX module identity level (absent for modules with major version 0). */
  readonly tdxModuleTcbStatus?: TcbStatus;
  /** `TDX_%02X` module identity that was matched (absent for major version 0). */
  readonly tdxModuleId?: string;
  readonly qeTcbStatus: TcbStatus;
  /** tcbDate of the matched platform level (ISO 8601). */
  readonly tcbDate: string;
  /** Intel security advisories of the matched levels (platform, module, QE), sorted. */
  readonly advisoryIds: readonly string[];
  /** tcbEvaluationDataNumber of the TCB Info used. */
  readonly tcbEvaluationDataNumber: number;
  /** Relaxations of default checks applied while producing (and, after evaluate, appraising) these claims. */
  readonly relaxations: readonly string[];
}
