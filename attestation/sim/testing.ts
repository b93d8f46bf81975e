import { KeyObject, randomBytes } from 'node:crypto';
import { x509 } from '../../common/x509.js';
import type { SnpTrustOptions } from '../snp/verify.js';
import type { SnpEvidence, SnpTcb } from '../types.js';
import { SimulatedSnp, simVcekKey, type SimProviderOptions } from './simulated-snp.js';
import { encodeSnpReport, encodeTcb, signSnpReport, type SnpReportFields } from './report.js';
import {
  generateVcekKeys,
  mintIntermediateCa,
  mintRootCa,
  mintVcek,
  RSA_PSS_SHA384,
  SIM_NAMES,
  type CaKeyPair,
  type Validity,
} from './pki.js';

/**
 * Test mint (tests only, never imported by production code): simulated evidence with
 * chosen field overrides, re-signed by the simulator's VCEK key, so a negative test can
 * change exactly one thing (debug on, another measurement, wrong TCB, VLEK flag ...) and
 * still present a validly signed report. Certificates can be replaced or removed.
 */

export { encodeTcb };
export type { SnpReportFields } from './report.js';
export { mintRootCa, mintIntermediateCa, mintVcek, generateVcekKeys, SIM_NAMES, type CaKeyPair, type Validity };

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

// --- whole test chains with their CA keys, and CRLs ------------------------------------

export interface TestChainOptions {
  /** Validity of the ARK and ASK (default 2020-01-01 .. 2045-01-01). */
  readonly caValidity?: Validity;
  /** Validity of the VCEK (default 2024-01-01 .. 2031-01-01). */
  readonly vcekValidity?: Validity;
  /** ARK subject (default SIM_NAMES.ark); a second root with the same name mints a look-alike. */
  readonly arkName?: string;
  /** Reuse an existing root instead of minting one. */
  readonly ark?: CaKeyPair;
}

/**
 * A minted ARK -> ASK -> VCEK chain (simulated names, Genoa profile) whose keys are all
 * kept, so tests can issue CRLs under the ARK and sign reports with the VCEK key. It goes
 * through verifySnpEvidence with `trust` (the ARK as simulated root, allowSimulated).
 */
export interface TestChain {
  readonly ark: CaKeyPair;
  readonly ask: CaKeyPair;
  readonly arkDer: Uint8Array;
  readonly askDer: Uint8Array;
  readonly vcekDer: Uint8Array;
  readonly vcekKey: KeyObject;
  readonly chipId: Uint8Array;
  readonly tcb: SnpTcb;
  readonly trust: SnpTrustOptions;
  /** Raw report bytes for `reportData`, signed by the VCEK key, with field overrides. */
  report(reportData: Uint8Array, fields?: Partial<SnpReportFields>): Uint8Array;
  /** Evidence: the report plus the VCEK and ASK (base64), with certificate overrides (`null` removes). */
  evidence(reportData: Uint8Array, opts?: { fields?: Partial<SnpReportFields>; certs?: Partial<Record<'vcek' | 'ask' | 'ark' | 'certTable', string | null>> }): SnpEvidence;
}

const TEST_TCB: SnpTcb = Object.freeze({ bootloader: 10, tee: 0, snp: 23, microcode: 84 });

export async function mintTestChain(opts: TestChainOptions = {}): Promise<TestChain> {
  const caValidity = opts.caValidity ?? { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2045-01-01T00:00:00Z') };
  const vcekValidity = opts.vcekValidity ?? { notBefore: new Date('2024-01-01T00:00:00Z'), notAfter: new Date('2031-01-01T00:00:00Z') };
  const ark = opts.ark ?? (await mintRootCa(opts.arkName ?? SIM_NAMES.ark, caValidity));
  const ask = await mintIntermediateCa(SIM_NAMES.ask, ark, caValidity);
  const keys = await generateVcekKeys();
  const chipId = new Uint8Array(randomBytes(64));
  const vcek = await mintVcek(SIM_NAMES.vcek, ask, keys.publicKey, { productName: 'Genoa', structVersion: 0, tcb: TEST_TCB, hwId: chipId }, vcekValidity);
  const vcekKey = KeyObject.from(keys.privateKey);
  const arkDer = new Uint8Array(ark.cert.rawData);
  const askDer = new Uint8Array(ask.cert.rawData);
  const vcekDer = new Uint8Array(vcek.rawData);
  const tcb = encodeTcb(TEST_TCB, 'milan-genoa');
  const report = (reportData: Uint8Array, fields: Partial<SnpReportFields> = {}): Uint8Array => {
    const z = (n: number) => new Uint8Array(n);
    const base: SnpReportFields = {
      version: 3,
      guestSvn: 0,
      policy: 0x30000n,
      familyId: z(16),
      imageId: z(16),
      vmpl: 0,
      signatureAlgo: 1,
      currentTcb: tcb,
      platformInfo: 1n,
      flags: 0,
      reportData: new Uint8Array(reportData),
      measurement: new Uint8Array(SIM_TEST_MEASUREMENT),
      hostData: z(32),
      idKeyDigest: z(48),
      authorKeyDigest: z(48),
      reportId: z(32),
      reportIdMa: new Uint8Array(32).fill(0xff),
      reportedTcb: tcb,
      cpuid: { family: 0x19, model: 0x11, stepping: 1 },
      chipId: new Uint8Array(chipId),
      committedTcb: tcb,
      currentFirmware: { major: 1, minor: 55, build: 40 },
      committedFirmware: { major: 1, minor: 55, build: 40 },
      launchTcb: tcb,
      launchMitVector: 0n,
      currentMitVector: 0n,
    };
    return signSnpReport(encodeSnpReport({ ...base, ...fields }), vcekKey);
  };
  const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
  return Object.freeze({
    ark,
    ask,
    arkDer,
    askDer,
    vcekDer,
    vcekKey,
    chipId,
    tcb: TEST_TCB,
    trust: { simulatedRoot: { arkDer }, allowSimulated: true },
    report,
    evidence(reportData: Uint8Array, o: { fields?: Partial<SnpReportFields>; certs?: Partial<Record<'vcek' | 'ask' | 'ark' | 'certTable', string | null>> } = {}): SnpEvidence {
      const certs: Record<string, string> = { vcek: b64(vcekDer), ask: b64(askDer) };
      for (const [k, v] of Object.entries(o.certs ?? {})) {
        if (v === null) delete certs[k];
        else if (v !== undefined) certs[k] = v;
      }
      return { tee: 'sev-snp', report: b64(report(reportData, o.fields)), certs };
    },
  });
}

/** Serial number (hex, as @peculiar/x509 prints it) of a minted certificate. */
export function serialOf(der: Uint8Array): string {
  return new x509.X509Certificate(der).serialNumber;
}

/**
 * An X.509 v2 CRL issued by `issuer` (its subject as the CRL issuer, signed RSASSA-PSS
 * SHA-384 salt 48 with its private key) listing `revokedSerials` (hex). Returns DER.
 */
export async function mintCrl(issuer: CaKeyPair, revokedSerials: readonly string[], thisUpdate: Date, nextUpdate: Date): Promise<Uint8Array> {
  const crl = await x509.X509CrlGenerator.create({
    issuer: issuer.cert.subjectName,
    thisUpdate,
    nextUpdate,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: RSA_PSS_SHA384,
    entries: revokedSerials.map((serialNumber) => ({ serialNumber, revocationDate: thisUpdate })),
  });
  return new Uint8Array(crl.rawData);
}
