import { randomBytes } from 'node:crypto';
import * as nodeFs from 'node:fs/promises';
import path from 'node:path';
import { constantTimeEqual } from '../../common/bytes.js';
import { AttestationError, isAttestationError } from '../codes.js';
import type { EvidenceProvider, SnpEvidence, TdxEvidence } from '../types.js';
import { parseSnpReport, type SnpReport } from '../snp/abi.js';
import { REPORT_SIZE } from '../snp/layout.js';
import { parseTdxQuote, type TdxQuote } from '../tdx/parse.js';

/**
 * Guest-side SEV-SNP and Intel TDX evidence through the Linux configfs-tsm report interface.
 *
 * Spec: Linux Documentation/ABI/testing/configfs-tsm (drivers/virt/coco/tsm.c): a report
 * is requested by creating a directory under `/sys/kernel/config/tsm/report/`, writing
 * up to 64 bytes to `inblob`, and reading `outblob` and, for some providers, `auxblob`.
 * - `sev_guest` (drivers/virt/coco/sev-guest): `outblob` is the 1184-byte
 *   ATTESTATION_REPORT (AMD SEV-SNP Firmware ABI pub. 56860), `auxblob` the certificate
 *   table of the extended guest request (GHCB spec pub. 56421 "SNP Extended Guest Request").
 * - `tdx_guest` (drivers/virt/coco/tdx-guest): `outblob` is a DCAP quote (v4 or v5, Intel
 *   TDX DCAP Quoting Library API A.3/A.4) produced by the host's quoting enclave; there is
 *   no `auxblob` and no `privlevel`.
 * `generation` counts writes to `inblob` and to every option (`privlevel`, ...); a reader
 * that sees more writes than its own raced another writer of the same entry and must not
 * trust what it read.
 *
 * Checks: the entry's provider is the expected one (`sev_guest` or `tdx_guest`);
 * `generation` advanced by exactly our own writes (else retried, bounded); `outblob` is a
 * well-formed report (parseSnpReport) or quote (parseTdxQuote) whose report_data equals
 * the bytes written (constant time).
 *
 * Does NOT check: signatures, certificate chains, the certificate table, the quote's PCK
 * chain or TCB status (the relying party verifies those; a guest cannot vouch for
 * itself), nor `privlevel_floor` (the kernel refuses a `privlevel` below it).
 */

/** Default configfs-tsm report directory. */
export const TSM_REPORT_ROOT = '/sys/kernel/config/tsm/report';
/** `provider` of the AMD SEV-SNP guest driver (drivers/virt/coco/sev-guest). */
export const TSM_PROVIDER_SEV_GUEST = 'sev_guest';
/** `provider` of the Intel TDX guest driver (drivers/virt/coco/tdx-guest). */
export const TSM_PROVIDER_TDX_GUEST = 'tdx_guest';
/** The configfs-tsm providers this module collects evidence from. */
export type TsmGuestProvider = typeof TSM_PROVIDER_SEV_GUEST | typeof TSM_PROVIDER_TDX_GUEST;
/** The evidence a provider's collect() returns. */
export type TsmEvidenceFor<P extends TsmGuestProvider> = P extends typeof TSM_PROVIDER_TDX_GUEST ? TdxEvidence : SnpEvidence;
/** The TEE type (EvidenceProvider.tee) a provider's evidence is for. */
export type TsmTeeFor<P extends TsmGuestProvider> = P extends typeof TSM_PROVIDER_TDX_GUEST ? 'tdx' : 'sev-snp';
/** `inblob` size for SEV-SNP and TDX alike: REPORT_DATA is exactly 64 bytes in both. */
export const TSM_INBLOB_SIZE = 64;
/** Default retries after a generation race (so at most 1 + 3 attempts). */
export const TSM_DEFAULT_MAX_RETRIES = 3;
const MAX_RETRIES_LIMIT = 100;
/** SEV-SNP VMPLs 0..3 (`privlevel` for sev_guest). */
const MAX_PRIVLEVEL = 3;

/**
 * The file operations the provider needs. The default is node:fs/promises; tests inject
 * a fake whose `writeFile` of `inblob` plays the kernel (plain files cannot react).
 */
export interface TsmFs {
  mkdir(dir: string): Promise<void>;
  /** Removes an entry. On configfs, rmdir(2) of an entry also drops its attributes. */
  rmdir(dir: string): Promise<void>;
  readFile(file: string): Promise<Uint8Array>;
  writeFile(file: string, data: Uint8Array): Promise<void>;
}

export const nodeTsmFs: TsmFs = Object.freeze({
  mkdir: async (dir: string) => {
    await nodeFs.mkdir(dir);
  },
  rmdir: (dir: string) => nodeFs.rmdir(dir),
  readFile: async (file: string) => new Uint8Array(await nodeFs.readFile(file)),
  writeFile: (file: string, data: Uint8Array) => nodeFs.writeFile(file, data),
});

export interface ConfigfsTsmOptions<P extends TsmGuestProvider = TsmGuestProvider> {
  /** The configfs-tsm report directory (default `/sys/kernel/config/tsm/report`). */
  readonly root?: string;
  /**
   * The provider the entry must report (default `sev_guest`); it decides the evidence
   * type: `sev_guest` -> SnpEvidence, `tdx_guest` -> TdxEvidence.
   */
  readonly expect?: P;
  /**
   * SEV-SNP VMPL to request (0..3), written to `privlevel`; the kernel's default when
   * absent. `sev_guest` only: with `tdx_guest` it is ERR_ATT_BAD_ARGUMENT.
   */
  readonly privlevel?: number;
  /** Retries after a generation race (default 3, at most 100). */
  readonly maxRetries?: number;
  /** File operations (tests). */
  readonly fs?: TsmFs;
}

function errnoOf(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && typeof (e as { code?: unknown }).code === 'string'
    ? (e as { code: string }).code
    : undefined;
}

/** Unique per process and call: two collectors never share an entry (and its generation). */
function entryName(): string {
  return `cir-${process.pid}-${randomBytes(8).toString('hex')}`;
}

async function readText(fs: TsmFs, file: string, what: string): Promise<string> {
  try {
    return Buffer.from(await fs.readFile(file)).toString('utf8').trim();
  } catch (cause) {
    throw new AttestationError('ERR_ATT_TSM_IO', { detail: `cannot read ${what} (${errnoOf(cause) ?? 'error'})`, cause });
  }
}

async function readGeneration(fs: TsmFs, entry: string): Promise<bigint> {
  const s = await readText(fs, path.join(entry, 'generation'), 'generation');
  if (!/^[0-9]{1,20}$/.test(s)) throw new AttestationError('ERR_ATT_TSM_IO', { detail: 'generation is not a decimal number' });
  return BigInt(s);
}

async function writeAttr(fs: TsmFs, entry: string, name: string, data: Uint8Array): Promise<void> {
  try {
    await fs.writeFile(path.join(entry, name), data);
  } catch (cause) {
    throw new AttestationError('ERR_ATT_TSM_IO', { detail: `cannot write ${name} (${errnoOf(cause) ?? 'error'})`, cause });
  }
}

async function readBlob(fs: TsmFs, entry: string, name: string, optional: boolean): Promise<Uint8Array> {
  try {
    return await fs.readFile(path.join(entry, name));
  } catch (cause) {
    // auxblob is absent on kernels before 6.8 and empty when the host supplies no certificates.
    if (optional && errnoOf(cause) === 'ENOENT') return new Uint8Array(0);
    throw new AttestationError('ERR_ATT_TSM_IO', { detail: `cannot read ${name} (${errnoOf(cause) ?? 'error'})`, cause });
  }
}

async function makeEntry(fs: TsmFs, root: string): Promise<string> {
  const entry = path.join(root, entryName());
  try {
    await fs.mkdir(entry);
  } catch (cause) {
    throw new AttestationError('ERR_ATT_TSM_UNAVAILABLE', {
      detail: `cannot create a report entry under ${root} (${errnoOf(cause) ?? 'error'})`,
      cause,
    });
  }
  return entry;
}

async function removeEntry(fs: TsmFs, entry: string): Promise<void> {
  try {
    await fs.rmdir(entry);
  } catch {
    // Best effort, like go-configfs-tsm: the evidence (or the primary error) matters more
    // than a leftover entry, which holds no secret (report_data is public).
  }
}

/** Result of probing a configfs-tsm root, with the reason when it cannot be used. */
export type TsmProbe =
  | { readonly state: 'present'; readonly provider: string }
  | { readonly state: 'absent' | 'not-writable' | 'no-provider'; readonly reason: string };

/**
 * Probes `root`: creates a probe entry, reads its `provider` (configfs-tsm shows the
 * provider only inside an entry) and removes the entry. Never throws: a missing root is
 * 'absent', a root that refuses mkdir 'not-writable', a provider read that fails (ENXIO:
 * the tsm module is loaded but no TEE driver registered) 'no-provider'.
 */
export async function probeConfigfsTsm(root: string = TSM_REPORT_ROOT, fs: TsmFs = nodeTsmFs): Promise<TsmProbe> {
  const entry = path.join(root, `${entryName()}-probe`);
  try {
    await fs.mkdir(entry);
  } catch (e) {
    const code = errnoOf(e) ?? 'error';
    if (code === 'ENOENT' || code === 'ENOTDIR') return { state: 'absent', reason: `${root} does not exist (${code})` };
    return { state: 'not-writable', reason: `cannot create an entry under ${root} (${code})` };
  }
  try {
    const provider = Buffer.from(await fs.readFile(path.join(entry, 'provider'))).toString('utf8').trim();
    if (provider.length === 0) return { state: 'no-provider', reason: `${root}: provider is empty` };
    return { state: 'present', provider };
  } catch (e) {
    return { state: 'no-provider', reason: `${root}: cannot read provider (${errnoOf(e) ?? 'error'})` };
  } finally {
    await removeEntry(fs, entry);
  }
}

/**
 * The configfs-tsm provider name at `root` ('sev_guest', 'tdx_guest', ...), or undefined
 * when configfs-tsm is absent, not writable by this process, or has no provider. See
 * probeConfigfsTsm for the reason.
 */
export async function detectConfigfsTsm(root: string = TSM_REPORT_ROOT, fs: TsmFs = nodeTsmFs): Promise<'sev_guest' | 'tdx_guest' | string | undefined> {
  const p = await probeConfigfsTsm(root, fs);
  return p.state === 'present' ? p.provider : undefined;
}

/**
 * EvidenceProvider for a real SEV-SNP or TDX guest through configfs-tsm (`expect` picks
 * which; `tee` follows it). See the module comment for what collect() checks. Each
 * collect() uses its own entry and removes it afterwards (also on failure). Throws
 * AttestationError: ERR_ATT_BAD_ARGUMENT (reportData not 64 bytes), ERR_ATT_TSM_UNAVAILABLE
 * (no entry can be created), ERR_ATT_TSM_PROVIDER_MISMATCH, ERR_ATT_TSM_IO,
 * ERR_ATT_TSM_GENERATION_RACE (after maxRetries), ERR_ATT_TSM_BAD_OUTBLOB,
 * ERR_ATT_TSM_REPORT_DATA_MISMATCH.
 */
export class ConfigfsTsmProvider<P extends TsmGuestProvider = typeof TSM_PROVIDER_SEV_GUEST> implements EvidenceProvider<TsmEvidenceFor<P>> {
  readonly tee: TsmTeeFor<P>;
  readonly simulated = false;
  readonly root: string;
  /** The provider every entry must report. */
  readonly expect: P;
  readonly #privlevel: number | undefined;
  readonly #maxRetries: number;
  readonly #fs: TsmFs;

  constructor(opts: ConfigfsTsmOptions<P> = {}) {
    const root = opts.root ?? TSM_REPORT_ROOT;
    if (typeof root !== 'string' || root.length === 0) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'root must be a non-empty path' });
    }
    const expect = (opts.expect ?? TSM_PROVIDER_SEV_GUEST) as P;
    if (expect !== TSM_PROVIDER_SEV_GUEST && expect !== TSM_PROVIDER_TDX_GUEST) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `expect must be ${TSM_PROVIDER_SEV_GUEST} or ${TSM_PROVIDER_TDX_GUEST}` });
    }
    if (opts.privlevel !== undefined && (!Number.isInteger(opts.privlevel) || opts.privlevel < 0 || opts.privlevel > MAX_PRIVLEVEL)) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `privlevel must be 0..${MAX_PRIVLEVEL}` });
    }
    // tdx_guest has no privilege levels: a configured one would be silently meaningless.
    if (opts.privlevel !== undefined && expect === TSM_PROVIDER_TDX_GUEST) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `privlevel applies to ${TSM_PROVIDER_SEV_GUEST} only` });
    }
    const maxRetries = opts.maxRetries ?? TSM_DEFAULT_MAX_RETRIES;
    if (!Number.isInteger(maxRetries) || maxRetries < 0 || maxRetries > MAX_RETRIES_LIMIT) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `maxRetries must be 0..${MAX_RETRIES_LIMIT}` });
    }
    this.root = root;
    this.expect = expect;
    this.tee = (expect === TSM_PROVIDER_TDX_GUEST ? 'tdx' : 'sev-snp') as TsmTeeFor<P>;
    this.#privlevel = opts.privlevel;
    this.#maxRetries = maxRetries;
    this.#fs = opts.fs ?? nodeTsmFs;
    Object.freeze(this);
  }

  async collect(reportData: Uint8Array): Promise<TsmEvidenceFor<P>> {
    if (!(reportData instanceof Uint8Array) || reportData.length !== TSM_INBLOB_SIZE) {
      throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: `reportData must be ${TSM_INBLOB_SIZE} bytes` });
    }
    // SECURITY: copy first: the caller cannot change the bytes between write and check.
    const data = new Uint8Array(reportData);
    const fs = this.#fs;
    const entry = await makeEntry(fs, this.root);
    try {
      // Before writing anything: report_data must not go to another TEE's driver.
      const provider = await readText(fs, path.join(entry, 'provider'), 'provider');
      if (provider !== this.expect) {
        throw new AttestationError('ERR_ATT_TSM_PROVIDER_MISMATCH', {
          detail: `provider is ${JSON.stringify(provider.slice(0, 32))}, expected ${this.expect}`,
        });
      }
      for (let attempt = 0; ; attempt++) {
        const got = await this.#attempt(entry, data);
        if (got) return got;
        if (attempt >= this.#maxRetries) {
          throw new AttestationError('ERR_ATT_TSM_GENERATION_RACE', { detail: `generation changed on ${attempt + 1} attempt(s)` });
        }
      }
    } catch (e) {
      if (isAttestationError(e)) throw e;
      throw new AttestationError('ERR_ATT_TSM_IO', { cause: e });
    } finally {
      await removeEntry(fs, entry);
    }
  }

  /** One write/read round; undefined when another writer raced us. */
  async #attempt(entry: string, data: Uint8Array): Promise<TsmEvidenceFor<P> | undefined> {
    const fs = this.#fs;
    const tdx = this.expect === TSM_PROVIDER_TDX_GUEST;
    const before = await readGeneration(fs, entry);
    let writes = 1n;
    await writeAttr(fs, entry, 'inblob', data);
    if (this.#privlevel !== undefined) {
      await writeAttr(fs, entry, 'privlevel', Buffer.from(`${this.#privlevel}\n`));
      writes++;
    }
    const outblob = await readBlob(fs, entry, 'outblob', false);
    // tdx_guest has no auxblob; the quote carries its PCK chain itself.
    const auxblob = tdx ? new Uint8Array(0) : await readBlob(fs, entry, 'auxblob', true);
    const after = await readGeneration(fs, entry);
    // SECURITY: any write besides ours means outblob/auxblob may answer someone else's inblob.
    if (after !== before + writes) return undefined;

    const evidence: SnpEvidence | TdxEvidence = tdx ? tdxEvidence(outblob, data) : snpEvidence(outblob, auxblob, data);
    return evidence as TsmEvidenceFor<P>;
  }
}

function snpEvidence(outblob: Uint8Array, auxblob: Uint8Array, data: Uint8Array): SnpEvidence {
  if (outblob.length !== REPORT_SIZE) {
    throw new AttestationError('ERR_ATT_TSM_BAD_OUTBLOB', { detail: `expected ${REPORT_SIZE} bytes, got ${outblob.length}` });
  }
  let report: SnpReport;
  try {
    report = parseSnpReport(outblob);
  } catch (cause) {
    const code = isAttestationError(cause) ? cause.code : 'error';
    throw new AttestationError('ERR_ATT_TSM_BAD_OUTBLOB', { detail: `not an ATTESTATION_REPORT (${code})`, cause });
  }
  // SECURITY: the report must bind exactly what we asked for (constant-time compare).
  if (!constantTimeEqual(report.reportData, data)) throw new AttestationError('ERR_ATT_TSM_REPORT_DATA_MISMATCH');
  return {
    tee: 'sev-snp',
    report: Buffer.from(outblob).toString('base64'),
    certs: auxblob.length > 0 ? { certTable: Buffer.from(auxblob).toString('base64') } : {},
  };
}

function tdxEvidence(outblob: Uint8Array, data: Uint8Array): TdxEvidence {
  let quote: TdxQuote;
  try {
    quote = parseTdxQuote(outblob);
  } catch (cause) {
    const code = isAttestationError(cause) ? cause.code : 'error';
    throw new AttestationError('ERR_ATT_TSM_BAD_OUTBLOB', { detail: `not a TDX quote (${code})`, cause });
  }
  // SECURITY: the quote must bind exactly what we asked for (constant-time compare).
  if (!constantTimeEqual(quote.body.reportData, data)) throw new AttestationError('ERR_ATT_TSM_REPORT_DATA_MISMATCH');
  // The outblob as the kernel returned it: trailing bytes after the signature data are the
  // verifier's to ignore (parseTdxQuote counts them and never reads them).
  return { tee: 'tdx', quote: Buffer.from(outblob).toString('base64') };
}
