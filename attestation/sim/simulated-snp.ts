import { createPrivateKey, createPublicKey, randomBytes, webcrypto, type KeyObject } from 'node:crypto';
import { mkdir, readFile, rename, rm, open as openFile } from 'node:fs/promises';
import path from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../common/atomic-file.js';
import { fromHex, toHex } from '../../common/bytes.js';
import { AttestationError } from '../codes.js';
import type { EvidenceProvider, SnpEvidence, SnpTcb } from '../types.js';
import { parseCertificate, readSnpKeyCertInfo } from '../snp/certs.js';
import type { SnpTrustOptions } from '../snp/verify.js';
import { x509 } from '../../common/x509.js';
import { generateVcekKeys, mintIntermediateCa, mintRootCa, mintVcek, SIM_NAMES } from './pki.js';
import { encodeSnpReport, encodeTcb, signSnpReport, type SnpReportFields } from './report.js';

/**
 * The simulated SEV-SNP TEE: a persistent fake AMD chain (ARK -> ASK -> VCEK) and a
 * provider that emits byte-exact v3 Genoa ATTESTATION_REPORTs signed by the VCEK key.
 *
 * SECURITY: simulated evidence is only accepted by a verifier configured with this ARK
 * as `trust.simulatedRoot` AND `allowSimulated: true`, and by a policy with
 * `allowSimulated: true`; its claims always say `simulated: true`. The ARK and ASK
 * private keys are discarded after creation, so nothing new can be issued under this
 * root later; only the VCEK key (vcek-key.pem, mode 0600) is kept.
 */

export const SIM_FILES = Object.freeze({
  ark: 'ark.pem',
  ask: 'ask.pem',
  vcek: 'vcek.pem',
  vcekKey: 'vcek-key.pem',
  chip: 'chip.json',
});

/** Simulated product: Genoa, CPUID family 0x19 model 0x11 stepping 1. */
export const SIM_PRODUCT_NAME = 'Genoa';
export const SIM_CPUID = Object.freeze({ family: 0x19, model: 0x11, stepping: 1 });
/** Default guest policy: bit 17 (reserved, must be one) + bit 16 (SMT allowed); debug off. */
export const SIM_DEFAULT_POLICY = 0x30000n;
/** PLATFORM_INFO: SMT_EN. */
export const SIM_PLATFORM_INFO = 0x1n;

const ChipSchema = z.strictObject({
  product: z.literal(SIM_PRODUCT_NAME),
  chipId: z.string().regex(/^[0-9a-f]{128}$/),
  tcb: z.strictObject({
    bootloader: z.number().int().min(0).max(255),
    tee: z.number().int().min(0).max(255),
    snp: z.number().int().min(0).max(255),
    microcode: z.number().int().min(0).max(255),
  }),
  firmware: z.strictObject({
    major: z.number().int().min(0).max(255),
    minor: z.number().int().min(0).max(255),
    build: z.number().int().min(0).max(255),
  }),
});
export type SimChip = z.infer<typeof ChipSchema>;

const DEFAULT_TCB: SnpTcb = Object.freeze({ bootloader: 10, tee: 0, snp: 23, microcode: 84 });
const DEFAULT_FIRMWARE = Object.freeze({ major: 1, minor: 55, build: 40 });
const DAY_MS = 86_400_000;
const YEAR_MS = 365 * DAY_MS;

export interface SimulatedSnpOpenOptions {
  /** Creation time for certificate validity (default: the clock). Unused when state exists. */
  readonly now?: Date;
}

export interface SimProviderOptions {
  /** 48-byte launch measurement the simulated guest reports. */
  readonly measurement: Uint8Array;
  /** 32-byte HOST_DATA (default zeros). */
  readonly hostData?: Uint8Array;
  /** Guest policy (default 0x30000: SMT allowed, reserved bit, debug off). */
  readonly policy?: bigint;
  /** VMPL (default 0). */
  readonly vmpl?: number;
  readonly guestSvn?: number;
}

const signingKeys = new WeakMap<SimulatedSnp, KeyObject>();

/** Internal: the VCEK private key, for the test mint (attestation/sim/testing.ts). */
export function simVcekKey(sim: SimulatedSnp): KeyObject {
  const k = signingKeys.get(sim);
  if (!k) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'not a SimulatedSnp' });
  return k;
}

function corrupt(detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SIM_STATE_CORRUPT', { detail, cause });
}

function pemToDer(pem: string, file: string): Uint8Array {
  try {
    const ders = x509.PemConverter.decode(pem);
    if (ders.length !== 1) throw new Error('expected one certificate');
    return new Uint8Array(ders[0]!);
  } catch (e) {
    throw corrupt(`${file} is not a PEM certificate`, e);
  }
}

export class SimulatedSnp {
  readonly stateDir: string;
  readonly arkDer: Uint8Array;
  readonly arkPem: string;
  readonly askDer: Uint8Array;
  readonly vcekDer: Uint8Array;
  readonly chip: SimChip;

  private constructor(stateDir: string, ark: Uint8Array, ask: Uint8Array, vcek: Uint8Array, key: KeyObject, chip: SimChip) {
    this.stateDir = stateDir;
    this.arkDer = ark;
    this.arkPem = x509.PemConverter.encode(ark, 'CERTIFICATE');
    this.askDer = ask;
    this.vcekDer = vcek;
    this.chip = Object.freeze({ ...chip, tcb: Object.freeze({ ...chip.tcb }), firmware: Object.freeze({ ...chip.firmware }) });
    signingKeys.set(this, key);
    Object.freeze(this);
  }

  /**
   * Opens the simulator state in `stateDir`, creating it on first use. Creation builds
   * the complete state in a sibling temporary directory (each file written with
   * writeFileAtomic) and renames the directory into place, so concurrent first opens
   * never see a partial state: the loser of the rename race discards its copy and loads
   * the winner's. An existing `stateDir` must be empty or hold a complete state.
   */
  static async open(stateDir: string, opts: SimulatedSnpOpenOptions = {}): Promise<SimulatedSnp> {
    const dir = path.resolve(stateDir);
    const existing = await SimulatedSnp.#tryLoad(dir);
    if (existing) return existing;
    const tmp = `${dir}.tmp-${randomBytes(6).toString('hex')}`;
    await mkdir(path.dirname(dir), { recursive: true });
    await mkdir(tmp, { mode: 0o700 });
    try {
      await SimulatedSnp.#create(tmp, opts.now ?? new Date());
      try {
        // rename(2) replaces a missing or empty directory atomically, and fails if the
        // target already holds a state (another process won the race).
        await rename(tmp, dir);
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code !== 'ENOTEMPTY' && code !== 'EEXIST') throw e;
      }
    } finally {
      await rm(tmp, { recursive: true, force: true });
    }
    await fsyncDir(path.dirname(dir));
    const loaded = await SimulatedSnp.#tryLoad(dir);
    if (!loaded) throw corrupt('state directory is empty after creation');
    return loaded;
  }

  static async #create(dir: string, now: Date): Promise<void> {
    const caValidity = { notBefore: new Date(now.getTime() - DAY_MS), notAfter: new Date(now.getTime() + 25 * YEAR_MS) };
    const vcekValidity = { notBefore: new Date(now.getTime() - DAY_MS), notAfter: new Date(now.getTime() + 7 * YEAR_MS) };
    const ark = await mintRootCa(SIM_NAMES.ark, caValidity);
    const ask = await mintIntermediateCa(SIM_NAMES.ask, ark, caValidity);
    const vcekKeys = await generateVcekKeys();
    const chipId = randomBytes(64);
    const vcek = await mintVcek(
      SIM_NAMES.vcek,
      ask,
      vcekKeys.publicKey,
      { productName: SIM_PRODUCT_NAME, structVersion: 0, tcb: DEFAULT_TCB, hwId: chipId },
      vcekValidity,
    );
    const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', vcekKeys.privateKey));
    const chip: SimChip = { product: SIM_PRODUCT_NAME, chipId: toHex(chipId), tcb: { ...DEFAULT_TCB }, firmware: { ...DEFAULT_FIRMWARE } };
    await writeFileAtomic(path.join(dir, SIM_FILES.ark), ark.cert.toString('pem') + '\n', 0o644);
    await writeFileAtomic(path.join(dir, SIM_FILES.ask), ask.cert.toString('pem') + '\n', 0o644);
    await writeFileAtomic(path.join(dir, SIM_FILES.vcek), vcek.toString('pem') + '\n', 0o644);
    await writeFileAtomic(path.join(dir, SIM_FILES.vcekKey), x509.PemConverter.encode(pkcs8, 'PRIVATE KEY') + '\n', 0o600);
    await writeFileAtomic(path.join(dir, SIM_FILES.chip), JSON.stringify(chip, null, 2) + '\n', 0o644);
    // The ARK and ASK private keys go out of scope here and are never written.
  }

  /** Loads a complete state; undefined if `dir` is missing or empty; throws if partial. */
  static async #tryLoad(dir: string): Promise<SimulatedSnp | undefined> {
    const read = async (f: string): Promise<string | undefined> => {
      try {
        return await readFile(path.join(dir, f), 'utf8');
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw corrupt(`cannot read ${f}`, e);
      }
    };
    const files = await Promise.all(Object.values(SIM_FILES).map(read));
    if (files.every((f) => f === undefined)) return undefined;
    const [arkPem, askPem, vcekPem, keyPem, chipJson] = files;
    if (arkPem === undefined || askPem === undefined || vcekPem === undefined || keyPem === undefined || chipJson === undefined) {
      throw corrupt('incomplete state');
    }
    let chip: SimChip;
    try {
      chip = ChipSchema.parse(JSON.parse(chipJson));
    } catch (e) {
      throw corrupt(`${SIM_FILES.chip} is invalid`, e);
    }
    const ark = pemToDer(arkPem, SIM_FILES.ark);
    const ask = pemToDer(askPem, SIM_FILES.ask);
    const vcek = pemToDer(vcekPem, SIM_FILES.vcek);
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: keyPem, format: 'pem' });
    } catch (e) {
      throw corrupt(`${SIM_FILES.vcekKey} is not a private key`, e);
    }
    // Consistency: the key belongs to the VCEK, and chip.json agrees with the VCEK.
    const parsed = parseCertificate(vcek, 'simulated VCEK');
    const spkiOfKey = createPublicKey(key).export({ format: 'der', type: 'spki' });
    if (Buffer.compare(spkiOfKey, parsed.parts.subjectPublicKeyInfo) !== 0) throw corrupt('vcek-key.pem does not match vcek.pem');
    const info = readSnpKeyCertInfo(parsed);
    const t = info.tcb;
    if (
      !info.hwId ||
      toHex(info.hwId) !== chip.chipId ||
      t.bootloader !== chip.tcb.bootloader ||
      t.tee !== chip.tcb.tee ||
      t.snp !== chip.tcb.snp ||
      t.microcode !== chip.tcb.microcode
    ) {
      throw corrupt('chip.json does not match vcek.pem');
    }
    return new SimulatedSnp(dir, ark, ask, vcek, key, chip);
  }

  /** Trust options that accept this simulator's evidence (tests and local development). */
  trustOptions(): SnpTrustOptions {
    return { simulatedRoot: { arkDer: this.arkDer }, allowSimulated: true };
  }

  /** The report fields the provider would use; the test mint starts from these. */
  defaultReportFields(reportData: Uint8Array, opts: SimProviderOptions): SnpReportFields {
    const tcb = encodeTcb(this.chip.tcb, 'milan-genoa');
    const zeros = (n: number) => new Uint8Array(n);
    return {
      version: 3,
      guestSvn: opts.guestSvn ?? 0,
      policy: opts.policy ?? SIM_DEFAULT_POLICY,
      familyId: zeros(16),
      imageId: zeros(16),
      vmpl: opts.vmpl ?? 0,
      signatureAlgo: 1,
      currentTcb: tcb,
      platformInfo: SIM_PLATFORM_INFO,
      flags: 0,
      reportData: new Uint8Array(reportData),
      measurement: new Uint8Array(opts.measurement),
      hostData: opts.hostData ? new Uint8Array(opts.hostData) : zeros(32),
      idKeyDigest: zeros(48),
      authorKeyDigest: zeros(48),
      reportId: new Uint8Array(randomBytes(32)),
      reportIdMa: new Uint8Array(32).fill(0xff),
      reportedTcb: tcb,
      cpuid: SIM_CPUID,
      chipId: fromHex(this.chip.chipId)!,
      committedTcb: tcb,
      currentFirmware: this.chip.firmware,
      committedFirmware: this.chip.firmware,
      launchTcb: tcb,
      launchMitVector: 0n,
      currentMitVector: 0n,
    };
  }

  /** Evidence for explicit report fields, signed by the VCEK key. */
  evidenceFor(fields: SnpReportFields): SnpEvidence {
    const report = signSnpReport(encodeSnpReport(fields), simVcekKey(this));
    return {
      tee: 'sev-snp',
      report: Buffer.from(report).toString('base64'),
      certs: { vcek: Buffer.from(this.vcekDer).toString('base64'), ask: Buffer.from(this.askDer).toString('base64') },
    };
  }

  /** A guest-side provider emitting simulated evidence for the given launch state. */
  provider(opts: SimProviderOptions): EvidenceProvider<SnpEvidence> {
    if (!(opts.measurement instanceof Uint8Array) || opts.measurement.length !== 48) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'measurement must be 48 bytes' });
    }
    if (opts.hostData !== undefined && (!(opts.hostData instanceof Uint8Array) || opts.hostData.length !== 32)) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'hostData must be 32 bytes' });
    }
    if (opts.vmpl !== undefined && (!Number.isInteger(opts.vmpl) || opts.vmpl < 0 || opts.vmpl > 3)) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'vmpl must be 0..3' });
    }
    const frozen: SimProviderOptions = {
      ...opts,
      measurement: new Uint8Array(opts.measurement),
      ...(opts.hostData ? { hostData: new Uint8Array(opts.hostData) } : {}),
    };
    return Object.freeze({
      tee: 'sev-snp' as const,
      simulated: true,
      collect: async (reportData: Uint8Array): Promise<SnpEvidence> => {
        if (!(reportData instanceof Uint8Array) || reportData.length !== 64) {
          throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'reportData must be 64 bytes' });
        }
        return this.evidenceFor(this.defaultReportFields(reportData, frozen));
      },
    });
  }
}

async function fsyncDir(dir: string): Promise<void> {
  try {
    const fh = await openFile(dir, 'r');
    try {
      await fh.sync();
    } finally {
      await fh.close();
    }
  } catch {
    // Some filesystems refuse fsync on a directory; the rename is still atomic.
  }
}
