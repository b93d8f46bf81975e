import type { SnpEvidence } from '../types.js';
import { SimulatedSnp, simVcekKey, type SimProviderOptions } from './simulated-snp.js';
import { encodeSnpReport, signSnpReport, type SnpReportFields } from './report.js';

/**
 * Test mint (tests only, never imported by production code): simulated evidence with
 * chosen field overrides, re-signed by the simulator's VCEK key, so a negative test can
 * change exactly one thing (debug on, another measurement, wrong TCB, VLEK flag ...) and
 * still present a validly signed report. Certificates can be replaced or removed.
 */

export { encodeTcb } from './report.js';
export type { SnpReportFields } from './report.js';
export { mintRootCa, mintIntermediateCa, mintVcek, generateVcekKeys, SIM_NAMES } from './pki.js';

export interface MintOptions extends Partial<SimProviderOptions> {
  /** 64 bytes; default zeros. */
  readonly reportData?: Uint8Array;
  /** Field overrides applied on top of the simulator's defaults. */
  readonly fields?: Partial<SnpReportFields>;
  /** Raw byte patch applied after encoding and BEFORE signing (the signature stays valid). */
  readonly patch?: (report: Uint8Array) => void;
  /** Raw byte patch applied AFTER signing (invalidates the signature when it hits 0x000..0x29F). */
  readonly tamper?: (report: Uint8Array) => void;
  /** Certificate overrides (base64 DER); `null` removes the entry. */
  readonly certs?: Partial<Record<'vcek' | 'vlek' | 'ask' | 'asvk' | 'ark', string | null>>;
}

export const SIM_TEST_MEASUREMENT = new Uint8Array(48).fill(0x5a);

/** Mints a report (raw bytes) with overrides, signed by the simulator's VCEK key. */
export function mintSnpReport(sim: SimulatedSnp, opts: MintOptions = {}): Uint8Array {
  const reportData = opts.reportData ?? new Uint8Array(64);
  const base = sim.defaultReportFields(reportData, { ...opts, measurement: opts.measurement ?? SIM_TEST_MEASUREMENT });
  const bytes = encodeSnpReport({ ...base, ...opts.fields });
  opts.patch?.(bytes);
  const signed = signSnpReport(bytes, simVcekKey(sim));
  opts.tamper?.(signed);
  return signed;
}

/** Mints complete evidence (report + VCEK + ASK) with overrides. */
export function mintSnpEvidence(sim: SimulatedSnp, opts: MintOptions = {}): SnpEvidence {
  const report = mintSnpReport(sim, opts);
  const certs: Record<string, string> = {
    vcek: Buffer.from(sim.vcekDer).toString('base64'),
    ask: Buffer.from(sim.askDer).toString('base64'),
  };
  for (const [k, v] of Object.entries(opts.certs ?? {})) {
    if (v === null) delete certs[k];
    else if (v !== undefined) certs[k] = v;
  }
  return { tee: 'sev-snp', report: Buffer.from(report).toString('base64'), certs };
}

/** Re-signs arbitrary report bytes with the simulator's VCEK key. */
export function resignSnpReport(sim: SimulatedSnp, report: Uint8Array): Uint8Array {
  return signSnpReport(report, simVcekKey(sim));
}
