import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.js';
import { toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';
import { AttestationError, isAttestationError } from '../codes.js';
import type { SnpProduct, SnpSigningKey, SnpTcbVersion } from './abi.js';
import { HWID_LENGTH_TURIN, parseCertificate, readSnpKeyCertInfo } from './certs.js';
import { checkCrlIssuedBy, CRL_PEM_LABELS, MAX_CRL_BYTES, parseSnpCrl } from './crl.js';
import { amdChain } from './roots.js';

/**
 * SEV-SNP collateral: the VCEK for a chip and TCB, and AMD's CRLs, from an offline bundle
 * directory or from AMD KDS through an injected fetcher with an on-disk cache.
 *
 * Spec: AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
 * Specification" (pub. 57230): `GET /vcek/v1/{product}/{hwid}?blSPL&teeSPL&snpSPL&ucodeSPL`
 * (+ fmcSPL on Turin, whose hwid is 8 bytes), `/{vcek|vlek}/v1/{product}/crl`,
 * `/{vcek|vlek}/v1/{product}/cert_chain`.
 *
 * SECURITY: nothing fetched or read here is trusted by itself: the verifier still chains
 * every VCEK to a pinned ARK and checks every CRL's signature. The chip ID and TCB come
 * from an unverified report, i.e. they are attacker-chosen: paths are built only from
 * fixed product names and hex we encode ourselves, and KdsCollateral bounds fetches per
 * chip, overall, and in the number of chips it tracks.
 */

export const SNP_PRODUCTS: readonly SnpProduct[] = Object.freeze(['Milan', 'Genoa', 'Turin']);
export const SNP_SIGNERS: readonly SnpSigningKey[] = Object.freeze(['vcek', 'vlek']);
export const KDS_BASE_URL = 'https://kdsintf.amd.com';
/** The report's CHIP_ID size. */
export const CHIP_ID_LENGTH = 64;
/** Bound on a VCEK file or KDS answer (AMD VCEKs are under 2 KiB). */
export const MAX_VCEK_BYTES = 64 * 1024;

/** The only network seam: fetch a URL, resolve to the body bytes, reject on any failure. */
export interface KdsFetcher {
  fetch(url: string, signal?: AbortSignal): Promise<Uint8Array>;
}

/**
 * Where the verifier gets collateral the evidence does not carry. Both methods resolve to
 * DER bytes, or undefined when the source has none; they throw AttestationError
 * (ERR_ATT_SNP_COLLATERAL_UNAVAILABLE, ERR_ATT_SNP_COLLATERAL_LIMIT,
 * ERR_ATT_SNP_BAD_COLLATERAL) when they cannot answer.
 */
export interface SnpCollateralSource {
  vcek(product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion): Promise<Uint8Array | undefined>;
  crl(product: SnpProduct, signer: SnpSigningKey): Promise<Uint8Array | undefined>;
}

function badArg(detail: string): never {
  throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail });
}

function checkProduct(product: SnpProduct): void {
  if (!SNP_PRODUCTS.includes(product)) badArg('product must be Milan, Genoa or Turin');
}

function checkSigner(signer: SnpSigningKey): void {
  if (!SNP_SIGNERS.includes(signer)) badArg('signer must be vcek or vlek');
}

/**
 * The KDS hwid for a report's CHIP_ID: lower-case hex of all 64 bytes, or of the first 8
 * on Turin. Throws ERR_ATT_BAD_ARGUMENT unless chipId is 64 bytes.
 */
export function kdsHwId(product: SnpProduct, chipId: Uint8Array): string {
  checkProduct(product);
  if (!(chipId instanceof Uint8Array) || chipId.length !== CHIP_ID_LENGTH) badArg(`chipId must be ${CHIP_ID_LENGTH} bytes`);
  return toHex(product === 'Turin' ? chipId.subarray(0, HWID_LENGTH_TURIN) : chipId);
}

function spl(n: number | undefined, name: string): number {
  if (n === undefined || !Number.isInteger(n) || n < 0 || n > 0xff) badArg(`TCB ${name} must be 0..255`);
  return n;
}

/** The TCB_VERSION as 16 lower-case hex digits of its little-endian u64 value (bundle file names). */
export function tcbHex(tcb: SnpTcbVersion): string {
  if (typeof tcb?.raw !== 'bigint' || tcb.raw < 0n || tcb.raw > 0xffffffffffffffffn) badArg('TCB raw must be a u64');
  return tcb.raw.toString(16).padStart(16, '0');
}

/** `https://kdsintf.amd.com/vcek/v1/{product}/{hwid}?...SPL=..` for a report's chip ID and reported TCB. */
export function kdsVcekUrl(product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion): string {
  const hw = kdsHwId(product, chipId);
  const q = [
    ...(product === 'Turin' ? [`fmcSPL=${spl(tcb.fmc, 'fmc')}`] : []),
    `blSPL=${spl(tcb.bootloader, 'bootloader')}`,
    `teeSPL=${spl(tcb.tee, 'tee')}`,
    `snpSPL=${spl(tcb.snp, 'snp')}`,
    `ucodeSPL=${spl(tcb.microcode, 'microcode')}`,
  ];
  return `${KDS_BASE_URL}/vcek/v1/${product}/${hw}?${q.join('&')}`;
}

/** `https://kdsintf.amd.com/{vcek|vlek}/v1/{product}/crl`. */
export function kdsCrlUrl(product: SnpProduct, signer: SnpSigningKey): string {
  checkProduct(product);
  checkSigner(signer);
  return `${KDS_BASE_URL}/${signer}/v1/${product}/crl`;
}

/** `https://kdsintf.amd.com/{vcek|vlek}/v1/{product}/cert_chain` (ASK/ASVK + ARK, PEM). */
export function kdsCertChainUrl(product: SnpProduct, signer: SnpSigningKey): string {
  checkProduct(product);
  checkSigner(signer);
  return `${KDS_BASE_URL}/${signer}/v1/${product}/cert_chain`;
}

// --- offline bundle -----------------------------------------------------------------

/**
 * Bundle layout (relative to the bundle directory; the KDS cache uses the same layout, so
 * a cache directory can be copied to an air-gapped host as a bundle):
 *
 *   vcek/<Product>/<hwid>/<tcb>.der   (or .pem)   VCEK for that chip and reported TCB
 *   crl/<Product>-<signer>.der         (or .pem)   AMD CRL, signer = vcek | vlek
 *
 * <Product> is Milan, Genoa or Turin; <hwid> is kdsHwId (128 hex digits, 16 on Turin);
 * <tcb> is tcbHex (16 hex digits). A .der file wins over a .pem file.
 */
export function bundleVcekPath(dir: string, product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion, ext: 'der' | 'pem' = 'der'): string {
  // SECURITY: every component is a fixed name or hex we encoded; no caller string reaches the path.
  return path.join(dir, 'vcek', product, kdsHwId(product, chipId), `${tcbHex(tcb)}.${ext}`);
}

export function bundleCrlPath(dir: string, product: SnpProduct, signer: SnpSigningKey, ext: 'der' | 'pem' = 'der'): string {
  checkProduct(product);
  checkSigner(signer);
  return path.join(dir, 'crl', `${product}-${signer}.${ext}`);
}

function badCollateral(detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_COLLATERAL', { detail, cause });
}

/** Reads a file of at most `max` bytes; undefined when it does not exist. */
async function readBounded(file: string, max: number): Promise<Uint8Array | undefined> {
  let fh;
  try {
    // Non-blocking, so a FIFO in the bundle cannot hold the open forever; fstat then refuses it.
    fh = await open(file, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw badCollateral(`cannot open ${path.basename(file)}`, e);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw badCollateral(`${path.basename(file)} is not a regular file`);
    if (st.size > max) throw badCollateral(`${path.basename(file)} is larger than ${max} bytes`);
    const buf = Buffer.alloc(st.size);
    const { bytesRead } = await fh.read(buf, 0, st.size, 0);
    return new Uint8Array(buf.subarray(0, bytesRead));
  } catch (e) {
    if (isAttestationError(e)) throw e;
    throw badCollateral(`cannot read ${path.basename(file)}`, e);
  } finally {
    await fh.close().catch(() => undefined);
  }
}

const CERT_PEM_LABELS: readonly string[] = Object.freeze(['CERTIFICATE']);

function pemToDer(bytes: Uint8Array, labels: readonly string[], what: string): Uint8Array {
  try {
    const blocks = x509.PemConverter.decodeWithHeaders(Buffer.from(bytes).toString('latin1'));
    if (blocks.length !== 1 || !labels.includes(blocks[0]!.type)) throw new Error(`expected one ${labels[0]} block`);
    return new Uint8Array(blocks[0]!.rawData);
  } catch (e) {
    throw badCollateral(`${what} is not a single PEM "${labels[0]}"`, e);
  }
}

async function readDerOrPem(derPath: string, pemPath: string, max: number, labels: readonly string[], what: string): Promise<Uint8Array | undefined> {
  const der = await readBounded(derPath, max);
  if (der) return der;
  const pem = await readBounded(pemPath, max * 2);
  return pem ? pemToDer(pem, labels, what) : undefined;
}

/**
 * Collateral from a bundle directory (layout at bundleVcekPath); no network at all.
 * Returns what the files hold, unverified; a missing file is `undefined`; an unreadable,
 * oversized or malformed PEM file is ERR_ATT_SNP_BAD_COLLATERAL.
 */
export class OfflineBundle implements SnpCollateralSource {
  readonly dir: string;

  constructor(dir: string) {
    if (typeof dir !== 'string' || dir.length === 0) throw badCollateral('bundle directory must be a non-empty path');
    this.dir = path.resolve(dir);
  }

  async vcek(product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion): Promise<Uint8Array | undefined> {
    return readDerOrPem(
      bundleVcekPath(this.dir, product, chipId, tcb, 'der'),
      bundleVcekPath(this.dir, product, chipId, tcb, 'pem'),
      MAX_VCEK_BYTES,
      CERT_PEM_LABELS,
      'bundled VCEK',
    );
  }

  async crl(product: SnpProduct, signer: SnpSigningKey): Promise<Uint8Array | undefined> {
    return readDerOrPem(
      bundleCrlPath(this.dir, product, signer, 'der'),
      bundleCrlPath(this.dir, product, signer, 'pem'),
      MAX_CRL_BYTES,
      CRL_PEM_LABELS,
      'bundled CRL',
    );
  }
}

/** Writes a VCEK (DER) into a bundle or cache directory, atomically. Returns the path. */
export async function writeVcekToBundle(dir: string, product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion, der: Uint8Array): Promise<string> {
  const file = bundleVcekPath(dir, product, chipId, tcb, 'der');
  await writeFileAtomic(file, der, 0o644);
  return file;
}

/** Writes a CRL (DER) into a bundle or cache directory, atomically. Returns the path. */
export async function writeCrlToBundle(dir: string, product: SnpProduct, signer: SnpSigningKey, der: Uint8Array): Promise<string> {
  const file = bundleCrlPath(dir, product, signer, 'der');
  await writeFileAtomic(file, der, 0o644);
  return file;
}

// --- AMD KDS with cache and limits ---------------------------------------------------

export interface KdsCollateralOptions {
  /** The injected network seam. There is no default: tests pass a fake. */
  readonly fetcher: KdsFetcher;
  /** On-disk cache, in the bundle layout. Created on first write. */
  readonly cacheDir: string;
  /** Clock for rate windows, negative caching and CRL freshness. Default: the system clock. */
  readonly now?: () => Date;
  /** Fetches per chip (hwid) per rolling hour. Default 4. */
  readonly perChipMaxFetchesPerHour?: number;
  /** Fetches in total per rolling hour, whatever the chip. Default 120. */
  readonly maxFetchesPerHour?: number;
  /** Chips (and CRL keys) tracked by the per-chip limiter at once. Default 10 000. */
  readonly maxChips?: number;
  /** How long a failed URL is not retried. Default 5 minutes. */
  readonly negativeCacheMs?: number;
  /** Timeout handed to the fetcher as an AbortSignal. Default 10 seconds. */
  readonly fetchTimeoutMs?: number;
  /**
   * Whether crl() fetches AMD's CRLs (default true). When true, a CRL that cannot be
   * obtained makes verification fail (unavailable), never silently skip revocation;
   * false makes crl() answer undefined (revocation then only from explicit `crls`).
   */
  readonly fetchCrls?: boolean;
}

const HOUR_MS = 3_600_000;

function posInt(v: number | undefined, dflt: number, name: string): number {
  if (v === undefined) return dflt;
  if (!Number.isSafeInteger(v) || v < 1) throw badCollateral(`${name} must be a positive integer`);
  return v;
}

/**
 * Collateral from AMD KDS: cache first (the bundle layout under `cacheDir`, written
 * atomically), then one fetch through the injected fetcher.
 *
 * Bounds (the chip ID and TCB in a report are attacker-chosen, and a report without a
 * VCEK reaches this before any signature can be checked): at most
 * `perChipMaxFetchesPerHour` fetches per hwid, `maxFetchesPerHour` in total, `maxChips`
 * hwids tracked (a new chip beyond that is refused until older windows expire); a failed
 * URL is not retried for `negativeCacheMs`; concurrent requests for one URL share a fetch.
 * A bound reached is ERR_ATT_SNP_COLLATERAL_LIMIT; a failed, timed-out or negatively
 * cached fetch is ERR_ATT_SNP_COLLATERAL_UNAVAILABLE.
 *
 * Before caching, a fetched VCEK must parse and name the requested product, hwid and TCB,
 * and a fetched CRL must verify with the bundled AMD ARK, so a bad answer cannot poison
 * the cache; this is not trust (the verifier still checks everything). A cached CRL is
 * used until its nextUpdate; after that it is refetched, and if that fails the stale one
 * is returned so the verifier reports ERR_ATT_SNP_CRL_EXPIRED. An all-zero chip ID
 * (MASK_CHIP_KEY) is never fetched. Cache write failures are ignored (the next request
 * fetches again, within the bounds).
 */
export class KdsCollateral implements SnpCollateralSource {
  readonly #fetcher: KdsFetcher;
  readonly #cache: OfflineBundle;
  readonly #cacheDir: string;
  readonly #now: () => Date;
  readonly #perChip: number;
  readonly #global: number;
  readonly #maxChips: number;
  readonly #negativeMs: number;
  readonly #timeoutMs: number;
  readonly #fetchCrls: boolean;
  readonly #windows = new Map<string, number[]>();
  #globalWindow: number[] = [];
  readonly #failedUntil = new Map<string, number>();
  readonly #inflight = new Map<string, Promise<Uint8Array>>();

  constructor(opts: KdsCollateralOptions) {
    if (typeof opts !== 'object' || opts === null) throw badCollateral('options required');
    if (typeof opts.fetcher?.fetch !== 'function') throw badCollateral('fetcher.fetch must be a function');
    if (typeof opts.cacheDir !== 'string' || opts.cacheDir.length === 0) throw badCollateral('cacheDir must be a non-empty path');
    if (opts.now !== undefined && typeof opts.now !== 'function') throw badCollateral('now must be a function');
    this.#fetcher = opts.fetcher;
    this.#cacheDir = path.resolve(opts.cacheDir);
    this.#cache = new OfflineBundle(this.#cacheDir);
    this.#now = opts.now ?? (() => new Date());
    this.#perChip = posInt(opts.perChipMaxFetchesPerHour, 4, 'perChipMaxFetchesPerHour');
    this.#global = posInt(opts.maxFetchesPerHour, 120, 'maxFetchesPerHour');
    this.#maxChips = posInt(opts.maxChips, 10_000, 'maxChips');
    this.#negativeMs = posInt(opts.negativeCacheMs, 5 * 60_000, 'negativeCacheMs');
    this.#timeoutMs = posInt(opts.fetchTimeoutMs, 10_000, 'fetchTimeoutMs');
    if (opts.fetchCrls !== undefined && typeof opts.fetchCrls !== 'boolean') throw badCollateral('fetchCrls must be a boolean');
    this.#fetchCrls = opts.fetchCrls ?? true;
  }

  async vcek(product: SnpProduct, chipId: Uint8Array, tcb: SnpTcbVersion): Promise<Uint8Array | undefined> {
    const hw = kdsHwId(product, chipId);
    const url = kdsVcekUrl(product, chipId, tcb);
    if (/^0+$/.test(hw)) return undefined; // MASK_CHIP_KEY: there is no chip to ask about
    const cached = await this.#cache.vcek(product, chipId, tcb);
    if (cached) return cached;
    const der = await this.#fetchOnce(url, `vcek:${product}:${hw}`, (bytes) => {
      const c = parseCertificate(toDer(bytes, CERT_PEM_LABELS, MAX_VCEK_BYTES), 'KDS VCEK');
      const info = readSnpKeyCertInfo(c);
      const t = info.tcb;
      const sameTcb =
        t.bootloader === tcb.bootloader && t.tee === tcb.tee && t.snp === tcb.snp && t.microcode === tcb.microcode && t.fmc === tcb.fmc;
      if (info.product !== product || !info.hwId || toHex(info.hwId) !== hw || !sameTcb) {
        throw new Error('KDS answer is not the requested VCEK');
      }
      return c.der;
    });
    await writeVcekToBundle(this.#cacheDir, product, chipId, tcb, der).catch(() => undefined);
    return der;
  }

  async crl(product: SnpProduct, signer: SnpSigningKey): Promise<Uint8Array | undefined> {
    const url = kdsCrlUrl(product, signer);
    if (!this.#fetchCrls) return undefined;
    let stale: Uint8Array | undefined;
    try {
      const cached = await this.#cache.crl(product, signer);
      if (cached) {
        const c = parseSnpCrl(cached);
        if (this.#now().getTime() <= c.nextUpdate.getTime()) return cached;
        stale = cached;
      }
    } catch {
      stale = undefined; // an unreadable cache entry is refetched and overwritten
    }
    let der: Uint8Array;
    try {
      der = await this.#fetchOnce(url, `crl:${product}:${signer}`, (bytes) => {
        const c = parseSnpCrl(toDer(bytes, CRL_PEM_LABELS, MAX_CRL_BYTES));
        checkCrlIssuedBy(c, amdChain(product, signer).ark, this.#now());
        return c.der;
      });
    } catch (e) {
      if (stale) return stale;
      throw e;
    }
    await writeCrlToBundle(this.#cacheDir, product, signer, der).catch(() => undefined);
    return der;
  }

  /** One bounded, deduplicated, negatively cached fetch whose answer must pass `check`. */
  async #fetchOnce(url: string, limitKey: string, check: (bytes: Uint8Array) => Uint8Array): Promise<Uint8Array> {
    const running = this.#inflight.get(url);
    if (running) return running;
    const nowMs = this.#now().getTime();
    const until = this.#failedUntil.get(url);
    if (until !== undefined && nowMs < until) {
      throw new AttestationError('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE', { detail: 'recent fetch failed (negative cache)' });
    }
    if (until !== undefined) this.#failedUntil.delete(url);
    this.#take(limitKey, nowMs);
    const p = (async () => {
      try {
        const bytes = await this.#fetcher.fetch(url, AbortSignal.timeout(this.#timeoutMs));
        if (!(bytes instanceof Uint8Array)) throw new Error('fetcher did not return bytes');
        return check(new Uint8Array(bytes));
      } catch (e) {
        this.#remember(url);
        throw new AttestationError('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE', { detail: url.replace(/\?.*$/, ''), cause: e });
      } finally {
        this.#inflight.delete(url);
      }
    })();
    this.#inflight.set(url, p);
    return p;
  }

  #remember(url: string): void {
    // Bounded like the chip windows: the oldest failure is forgotten first.
    if (this.#failedUntil.size >= this.#maxChips) {
      const oldest = this.#failedUntil.keys().next();
      if (!oldest.done) this.#failedUntil.delete(oldest.value);
    }
    this.#failedUntil.set(url, this.#now().getTime() + this.#negativeMs);
  }

  /** Takes one fetch from the global and the per-key budget, or throws ERR_ATT_SNP_COLLATERAL_LIMIT. */
  #take(key: string, nowMs: number): void {
    const since = nowMs - HOUR_MS;
    this.#globalWindow = this.#globalWindow.filter((t) => t > since);
    if (this.#globalWindow.length >= this.#global) {
      throw new AttestationError('ERR_ATT_SNP_COLLATERAL_LIMIT', { detail: `more than ${this.#global} fetches per hour` });
    }
    let w = this.#windows.get(key);
    if (w) {
      w = w.filter((t) => t > since);
    } else {
      if (this.#windows.size >= this.#maxChips) {
        for (const [k, ts] of this.#windows) if (!ts.some((t) => t > since)) this.#windows.delete(k);
      }
      if (this.#windows.size >= this.#maxChips) {
        throw new AttestationError('ERR_ATT_SNP_COLLATERAL_LIMIT', { detail: `more than ${this.#maxChips} chips tracked` });
      }
      w = [];
    }
    if (w.length >= this.#perChip) {
      this.#windows.set(key, w);
      throw new AttestationError('ERR_ATT_SNP_COLLATERAL_LIMIT', { detail: `more than ${this.#perChip} fetches per hour for one chip` });
    }
    w.push(nowMs);
    this.#windows.set(key, w);
    this.#globalWindow.push(nowMs);
  }
}

function toDer(bytes: Uint8Array, labels: readonly string[], max: number): Uint8Array {
  if (bytes.length > max) throw new Error(`answer larger than ${max} bytes`);
  const head = Buffer.from(bytes.subarray(0, 64)).toString('latin1').trimStart();
  return head.startsWith('-----BEGIN') ? pemToDer(bytes, labels, 'KDS answer') : bytes;
}

export interface HttpsKdsFetcherOptions {
  /** Largest body accepted. Default 1 MiB. */
  readonly maxBytes?: number;
}

/**
 * A KdsFetcher over the global `fetch`, for production wiring only (never a default):
 * refuses any URL outside https://kdsintf.amd.com/, follows no redirects, and rejects
 * non-200 answers and bodies over `maxBytes`.
 */
export function httpsKdsFetcher(opts: HttpsKdsFetcherOptions = {}): KdsFetcher {
  const maxBytes = posInt(opts.maxBytes, 1024 * 1024, 'maxBytes');
  return {
    async fetch(url: string, signal?: AbortSignal): Promise<Uint8Array> {
      if (typeof url !== 'string' || !url.startsWith(`${KDS_BASE_URL}/`)) throw new Error('refusing a URL outside AMD KDS');
      const res = await fetch(url, { redirect: 'error', ...(signal ? { signal } : {}) });
      if (res.status !== 200) throw new Error(`KDS answered HTTP ${res.status}`);
      const len = Number(res.headers.get('content-length') ?? '0');
      if (len > maxBytes) throw new Error('KDS answer too large');
      // Read the body in chunks so an endless or lying body stops at maxBytes.
      const chunks: Uint8Array[] = [];
      let total = 0;
      const reader = res.body?.getReader();
      if (!reader) throw new Error('KDS answer has no body');
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        if (total > maxBytes) {
          await reader.cancel().catch(() => undefined);
          throw new Error('KDS answer too large');
        }
        chunks.push(value);
      }
      return new Uint8Array(Buffer.concat(chunks));
    },
  };
}
