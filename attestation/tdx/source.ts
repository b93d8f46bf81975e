import { mkdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.js';
import { TdxError } from './codes.js';
import { MAX_COLLATERAL_JSON_CHARS, parseTdxCollateralJson, tdxCollateralFromPcs, type TdxCollateral } from './collateral.js';
import { topLevelValues } from './json.js';

/**
 * Where TDX collateral comes from: an injected Intel PCS fetcher, an on-disk cache and an
 * offline bundle directory. The library does no network I/O itself.
 *
 * Layouts accepted by loadTdxCollateral:
 *  (a) a directory with tcb_info.json, tcb_info_issuer_chain.pem, qe_identity.json,
 *      qe_identity_issuer_chain.pem, pck_crl.der|pck_crl.pem, pck_crl_issuer_chain.pem,
 *      root_ca_crl.der|root_ca_crl.pem (the JSON files are PCS response bodies
 *      {"tcbInfo":...,"signature":...} / {"enclaveIdentity":...,"signature":...});
 *  (b) one JSON file in the dcap-qvl collateral format (parseTdxCollateralJson).
 * An offline bundle / cache directory holds one layout-(a) directory per FMSPC
 * (lower-case hex), optionally suffixed "-processor" for Processor-CA PCKs.
 */

export type PckCaKind = 'platform' | 'processor';

export interface CollateralRequest {
  /** Lower-case hex, 6 bytes, from the PCK certificate. */
  readonly fmspc: string;
  /** Which PCK CA issued the PCK (selects the PCK CRL). */
  readonly pckCa: PckCaKind;
}

/** Anything that provides collateral for a quote's platform. */
export interface TdxCollateralSource {
  collateralFor(req: CollateralRequest): Promise<TdxCollateral>;
}

/**
 * Intel PCS API v4, injected (no default network implementation in the library). Each
 * method returns the response body and the issuer-chain header value, URL-decoded.
 * Throwing is "unavailable" (ERR_ATT_TDX_COLLATERAL_UNAVAILABLE), never a verdict.
 */
export interface PcsFetcher {
  /** GET /tdx/certification/v4/tcb?fmspc=…; header TCB-Info-Issuer-Chain. */
  tcbInfo(fmspc: string): Promise<{ readonly body: Uint8Array | string; readonly issuerChain: string }>;
  /** GET /tdx/certification/v4/qe/identity; header SGX-Enclave-Identity-Issuer-Chain. */
  qeIdentity(): Promise<{ readonly body: Uint8Array | string; readonly issuerChain: string }>;
  /** GET /sgx/certification/v4/pckcrl?ca=…&encoding=der; header SGX-PCK-CRL-Issuer-Chain. */
  pckCrl(ca: PckCaKind): Promise<{ readonly crl: Uint8Array; readonly issuerChain: string }>;
  /** The Intel SGX Root CA CRL (its CRL distribution point), DER. */
  rootCaCrl(): Promise<Uint8Array>;
}

export const FILES = {
  tcbInfo: 'tcb_info.json',
  tcbInfoIssuerChain: 'tcb_info_issuer_chain.pem',
  qeIdentity: 'qe_identity.json',
  qeIdentityIssuerChain: 'qe_identity_issuer_chain.pem',
  pckCrl: 'pck_crl',
  pckCrlIssuerChain: 'pck_crl_issuer_chain.pem',
  rootCaCrl: 'root_ca_crl',
} as const;

const MAX_FILE_BYTES = MAX_COLLATERAL_JSON_CHARS;

function bad(detail: string, cause?: unknown): TdxError {
  return new TdxError('ERR_ATT_TDX_BAD_COLLATERAL', { detail, cause });
}

async function readBounded(file: string): Promise<Buffer | undefined> {
  let s;
  try {
    s = await stat(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw bad(`cannot read ${path.basename(file)}`, e);
  }
  if (!s.isFile()) throw bad(`${path.basename(file)} is not a file`);
  if (s.size > MAX_FILE_BYTES) throw bad(`${path.basename(file)} is too large`);
  return readFile(file);
}

async function required(dir: string, name: string): Promise<Buffer> {
  const b = await readBounded(path.join(dir, name));
  if (!b) throw bad(`${name} missing`);
  return b;
}

/** A CRL stored as <base>.der or <base>.pem (not both). */
async function derOrPem(dir: string, base: string): Promise<Uint8Array | undefined> {
  const der = await readBounded(path.join(dir, `${base}.der`));
  const pem = await readBounded(path.join(dir, `${base}.pem`));
  if (der && pem) throw bad(`both ${base}.der and ${base}.pem present`);
  const b = der ?? pem;
  return b ? new Uint8Array(b) : undefined;
}

async function loadDir(dir: string): Promise<TdxCollateral> {
  const pckCrl = await derOrPem(dir, FILES.pckCrl);
  const rootCaCrl = await derOrPem(dir, FILES.rootCaCrl);
  const pckChain = await readBounded(path.join(dir, FILES.pckCrlIssuerChain));
  return tdxCollateralFromPcs({
    tcbInfoBody: new Uint8Array(await required(dir, FILES.tcbInfo)),
    tcbInfoIssuerChain: (await required(dir, FILES.tcbInfoIssuerChain)).toString('latin1'),
    qeIdentityBody: new Uint8Array(await required(dir, FILES.qeIdentity)),
    qeIdentityIssuerChain: (await required(dir, FILES.qeIdentityIssuerChain)).toString('latin1'),
    ...(pckCrl ? { pckCrl } : {}),
    ...(pckChain ? { pckCrlIssuerChain: pckChain.toString('latin1') } : {}),
    ...(rootCaCrl ? { rootCaCrl } : {}),
  });
}

/**
 * Loads collateral from a layout-(a) directory or a layout-(b) JSON file. Parses only
 * (verifyTdxQuote verifies). Throws ERR_ATT_TDX_BAD_COLLATERAL on a missing or malformed
 * file.
 */
export async function loadTdxCollateral(dirOrFile: string): Promise<TdxCollateral> {
  if (typeof dirOrFile !== 'string' || dirOrFile.length === 0) throw new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail: 'path required' });
  let s;
  try {
    s = await stat(dirOrFile);
  } catch (e) {
    throw bad('collateral path does not exist', e);
  }
  if (s.isDirectory()) return loadDir(dirOrFile);
  const b = await readBounded(dirOrFile);
  if (!b) throw bad('collateral file does not exist');
  return parseTdxCollateralJson(new Uint8Array(b));
}

export interface PcsFetchedCollateral {
  readonly tcbInfoBody: Uint8Array | string;
  readonly tcbInfoIssuerChain: string;
  readonly qeIdentityBody: Uint8Array | string;
  readonly qeIdentityIssuerChain: string;
  readonly pckCrl: Uint8Array;
  readonly pckCrlIssuerChain: string;
  readonly rootCaCrl: Uint8Array;
}

/** Writes collateral in layout (a) into `dir` (created), each file atomically. */
export async function writeTdxCollateralDir(dir: string, p: PcsFetchedCollateral): Promise<void> {
  tdxCollateralFromPcs(p); // refuse to store something that does not even parse
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const w = (name: string, data: Uint8Array | string) => writeFileAtomic(path.join(dir, name), data, 0o644);
  await w(FILES.tcbInfo, p.tcbInfoBody);
  await w(FILES.tcbInfoIssuerChain, p.tcbInfoIssuerChain);
  await w(FILES.qeIdentity, p.qeIdentityBody);
  await w(FILES.qeIdentityIssuerChain, p.qeIdentityIssuerChain);
  await w(`${FILES.pckCrl}.der`, p.pckCrl);
  await w(FILES.pckCrlIssuerChain, p.pckCrlIssuerChain);
  await w(`${FILES.rootCaCrl}.der`, p.rootCaCrl);
}

const FMSPC_RE = /^[0-9a-f]{12}$/;

/** The bundle subdirectory for a request: "<fmspc>" or "<fmspc>-processor". */
export function bundleDirFor(root: string, req: CollateralRequest): string {
  if (!FMSPC_RE.test(req.fmspc)) throw new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail: 'fmspc must be 12 lower-case hex digits' });
  if (req.pckCa !== 'platform' && req.pckCa !== 'processor') throw new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail: 'pckCa' });
  return path.join(root, req.pckCa === 'platform' ? req.fmspc : `${req.fmspc}-processor`);
}

/** Offline bundle: one layout-(a) directory per FMSPC under `dir`. No network, ever. */
export class OfflineTdxCollateral implements TdxCollateralSource {
  readonly dir: string;
  constructor(dir: string) {
    if (typeof dir !== 'string' || dir.length === 0) throw new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail: 'bundle directory required' });
    this.dir = path.resolve(dir);
  }
  async collateralFor(req: CollateralRequest): Promise<TdxCollateral> {
    return loadDir(bundleDirFor(this.dir, req));
  }
}

export interface PcsCollateralOptions {
  readonly fetcher: PcsFetcher;
  /** On-disk cache in the offline-bundle layout (so a warm cache is also a bundle). */
  readonly cacheDir?: string;
  /** Clock for cache freshness (the verifier still checks every date itself). */
  readonly now: () => Date;
  /** In-memory entries kept (bounded). Default 64. */
  readonly maxEntries?: number;
}

/** nextUpdate of a PCS body, read without verifying (only to decide when to refetch). */
function nextUpdateOf(body: string, key: string): number | undefined {
  const v = topLevelValues(body)?.get(key);
  if (!v) return undefined;
  try {
    const o = JSON.parse(v) as { nextUpdate?: unknown };
    const t = typeof o.nextUpdate === 'string' ? Date.parse(o.nextUpdate) : NaN;
    return Number.isNaN(t) ? undefined : t;
  } catch {
    return undefined;
  }
}

/**
 * Collateral from Intel PCS through an injected fetcher, cached in memory and (with
 * cacheDir) on disk until the earliest nextUpdate of its TCB Info and QE Identity. On a
 * fetch failure a cached copy, even stale, is returned (the verifier then decides; a
 * stale copy fails with ERR_ATT_TDX_COLLATERAL_EXPIRED); with no copy the failure is
 * ERR_ATT_TDX_COLLATERAL_UNAVAILABLE.
 */
export class PcsCollateralSource implements TdxCollateralSource {
  readonly #opts: PcsCollateralOptions;
  readonly #mem = new Map<string, { c: TdxCollateral; until: number }>();

  constructor(opts: PcsCollateralOptions) {
    if (typeof opts?.fetcher !== 'object' || opts.fetcher === null || typeof opts.now !== 'function') {
      throw new TdxError('ERR_ATT_TDX_BAD_ARGUMENT', { detail: 'fetcher and now are required' });
    }
    this.#opts = opts;
  }

  async collateralFor(req: CollateralRequest): Promise<TdxCollateral> {
    const key = `${req.fmspc}|${req.pckCa}`;
    const now = this.#opts.now().getTime();
    const mem = this.#mem.get(key);
    if (mem && now <= mem.until) return mem.c;
    const dir = this.#opts.cacheDir ? bundleDirFor(this.#opts.cacheDir, req) : undefined;
    let disk: { c: TdxCollateral; until: number } | undefined;
    if (dir && !mem) {
      try {
        disk = await this.#readDisk(dir);
      } catch {
        disk = undefined; // a corrupt cache entry is refetched
      }
      if (disk && now <= disk.until) return this.#remember(key, disk);
    }
    let parts: PcsFetchedCollateral;
    try {
      parts = await this.#fetch(req);
    } catch (e) {
      const stale = mem ?? disk;
      if (stale) return stale.c;
      if (e instanceof TdxError) throw e;
      throw new TdxError('ERR_ATT_TDX_COLLATERAL_UNAVAILABLE', { detail: `FMSPC ${req.fmspc}`, cause: e });
    }
    const c = tdxCollateralFromPcs(parts);
    if (dir) await writeTdxCollateralDir(dir, parts);
    return this.#remember(key, { c, until: this.#until(parts.tcbInfoBody, parts.qeIdentityBody) });
  }

  #until(tcb: Uint8Array | string, qe: Uint8Array | string): number {
    const text = (b: Uint8Array | string) => (typeof b === 'string' ? b : Buffer.from(b).toString('utf8'));
    const a = nextUpdateOf(text(tcb), 'tcbInfo');
    const b = nextUpdateOf(text(qe), 'enclaveIdentity');
    return Math.min(a ?? 0, b ?? 0);
  }

  async #readDisk(dir: string): Promise<{ c: TdxCollateral; until: number }> {
    const c = await loadDir(dir);
    return { c, until: Math.min(nextUpdateOf(`{"tcbInfo":${c.tcbInfo.raw}}`, 'tcbInfo') ?? 0, nextUpdateOf(`{"enclaveIdentity":${c.qeIdentity.raw}}`, 'enclaveIdentity') ?? 0) };
  }

  #remember(key: string, v: { c: TdxCollateral; until: number }): TdxCollateral {
    this.#mem.delete(key);
    if (this.#mem.size >= (this.#opts.maxEntries ?? 64)) this.#mem.delete(this.#mem.keys().next().value!);
    this.#mem.set(key, v);
    return v.c;
  }

  async #fetch(req: CollateralRequest): Promise<PcsFetchedCollateral> {
    const f = this.#opts.fetcher;
    const [tcb, qe, pck, root] = await Promise.all([f.tcbInfo(req.fmspc), f.qeIdentity(), f.pckCrl(req.pckCa), f.rootCaCrl()]);
    return {
      tcbInfoBody: tcb.body,
      tcbInfoIssuerChain: tcb.issuerChain,
      qeIdentityBody: qe.body,
      qeIdentityIssuerChain: qe.issuerChain,
      pckCrl: pck.crl,
      pckCrlIssuerChain: pck.issuerChain,
      rootCaCrl: root,
    };
  }
}
