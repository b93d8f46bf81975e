import { X509Certificate } from 'node:crypto';
import { readFile, readdir, stat } from 'node:fs/promises';
import { z } from 'zod';
import { SnpEvidenceVerifier } from '../attestation/snp/evaluate.js';
import {
  loadTdxCollateral,
  OfflineTdxCollateral,
  TdxError,
  verifyTdxQuote,
  type CollateralRequest,
  type TdxClaims,
  type TdxCollateral,
  type TdxCollateralSource,
} from '../attestation/tdx/index.js';
import { issuesDetail } from '../common/config.js';
import { fromBase64 } from '../common/bytes.js';
import type { EvidenceVerifier } from './app.js';
import { KmsError } from './codes.js';
import { isProduction, type BrokerConfig } from './config.js';
import type { BrokerClaims } from './policy.js';

/** Largest TDX quote accepted, bytes (as attestation/tdx's parser: 64 KiB). */
export const MAX_TDX_QUOTE_BYTES = 64 * 1024;

/**
 * TDX evidence on the wire (`TdxEvidence`): exactly `{tee: "tdx", quote}`, the DCAP quote
 * in standard padded base64, at most `MAX_TDX_QUOTE_BYTES` decoded.
 */
export const TdxEvidenceSchema = z.strictObject({
  tee: z.literal('tdx'),
  quote: z
    .string()
    .min(4)
    .max(Math.ceil(MAX_TDX_QUOTE_BYTES / 3) * 4)
    .regex(/^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/, 'must be standard base64'),
});

/**
 * The evidence verifier `startBroker` uses unless one is injected. Dispatches on
 * `evidence.tee`:
 *
 * - `"tdx"`: Intel TDX (`verifyTdxQuote`), only when `attestation.tdxCollateral` is set
 *   (otherwise `ERR_KMS_TEE_NOT_CONFIGURED`, naming the setting). The envelope must be
 *   `TdxEvidenceSchema` (`ERR_KMS_EVIDENCE_MALFORMED`). Trust: the pinned Intel SGX Root CA
 *   only; collateral from disk, read on every verification so a refreshed bundle needs no
 *   restart; no network. CRLs are required unless `attestation.tdxAllowMissingCrls`.
 * - anything else: the attestation package's SEV-SNP verifier (`SnpEvidenceVerifier`), as
 *   before, trusting the pinned AMD roots and, only when `attestation.allowSimulated` is on
 *   (never in production), the simulated TEE's ARK read from `attestation.simulatedRootFile`.
 *
 * Throws `ERR_KMS_CONFIG_INVALID` for an unreadable or unusable root file or TDX collateral.
 */
export async function createDefaultVerifier(
  config: BrokerConfig,
  opts: { env?: Readonly<Record<string, string | undefined>> } = {},
): Promise<EvidenceVerifier> {
  const snp = await createSnpVerifier(config, opts);
  const { tdxCollateral, tdxAllowMissingCrls } = config.attestation;
  const tdx = tdxCollateral === undefined ? undefined : await openTdxCollateral(tdxCollateral);
  return new BrokerEvidenceVerifier(snp, tdx && { collateral: tdx, allowMissingCrls: tdxAllowMissingCrls });
}

class BrokerEvidenceVerifier implements EvidenceVerifier {
  readonly #snp: SnpEvidenceVerifier;
  readonly #tdx: { collateral: TdxCollateralSource; allowMissingCrls: boolean } | undefined;

  constructor(snp: SnpEvidenceVerifier, tdx: { collateral: TdxCollateralSource; allowMissingCrls: boolean } | undefined) {
    this.#snp = snp;
    this.#tdx = tdx;
  }

  async verify(evidence: unknown, opts: { now: Date; expectedReportData: Uint8Array }): Promise<BrokerClaims> {
    if (typeof evidence === 'object' && evidence !== null && (evidence as { tee?: unknown }).tee === 'tdx') {
      return this.#verifyTdx(evidence, opts);
    }
    return this.#snp.verify(evidence, opts);
  }

  async #verifyTdx(evidence: object, opts: { now: Date; expectedReportData: Uint8Array }): Promise<TdxClaims> {
    // SECURITY: fail closed. No collateral, no TCB status and no revocation: refuse the TEE
    // with an answer that says which setting is missing, rather than a 500 or a bare 400.
    if (this.#tdx === undefined) {
      throw new KmsError('ERR_KMS_TEE_NOT_CONFIGURED', { detail: 'tdx: attestation.tdxCollateral is not configured' });
    }
    const env = TdxEvidenceSchema.safeParse(evidence);
    if (!env.success) {
      // Bounded: an unknown member's name is the caller's own text.
      throw new KmsError('ERR_KMS_EVIDENCE_MALFORMED', { detail: `tdx: ${issuesDetail(env.error.issues)}`.slice(0, 256) });
    }
    const quote = fromBase64(env.data.quote);
    if (!quote || quote.length > MAX_TDX_QUOTE_BYTES) {
      throw new KmsError('ERR_KMS_EVIDENCE_MALFORMED', { detail: 'tdx: quote: must be standard base64 of at most 65536 bytes' });
    }
    return verifyTdxQuote(new Uint8Array(quote), {
      now: opts.now,
      expectedReportData: opts.expectedReportData,
      collateral: this.#tdx.collateral,
      allowMissingCrls: this.#tdx.allowMissingCrls,
    });
  }
}

async function createSnpVerifier(config: BrokerConfig, opts: { env?: Readonly<Record<string, string | undefined>> }): Promise<SnpEvidenceVerifier> {
  const { allowSimulated, simulatedRootFile } = config.attestation;
  if (!allowSimulated) return new SnpEvidenceVerifier();
  // SECURITY: loadBrokerConfig refuses this already; checked again where trust is built.
  if (isProduction(opts.env ?? process.env)) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.allowSimulated: refused when NODE_ENV=production' });
  }
  if (simulatedRootFile === undefined) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.simulatedRootFile: required when allowSimulated is true' });
  }
  let arkDer: Buffer;
  try {
    arkDer = new X509Certificate(await readFile(simulatedRootFile)).raw;
  } catch (cause) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'attestation.simulatedRootFile: not a readable PEM certificate', cause });
  }
  try {
    return new SnpEvidenceVerifier({ simulatedRoot: { arkDer }, allowSimulated: true });
  } catch (cause) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `attestation.simulatedRootFile: ${codeOf(cause)}`, cause });
  }
}

/** Which `tdxCollateral` layout a path holds (attestation/tdx/README.md, "Collateral layouts"). */
export type TdxCollateralLayout = 'file' | 'directory' | 'bundle';

/**
 * Opens `attestation.tdxCollateral`: a regular file is dcap-qvl JSON (layout b), a
 * directory holding `tcb_info.json` is one platform's collateral (layout a), any other
 * directory is an offline bundle root (`OfflineTdxCollateral`: one layout-(a) directory per
 * FMSPC). File and single-directory collateral is loaded once here, so a broken one stops
 * the start (`ERR_KMS_CONFIG_INVALID`), and then again on every verification.
 * A bundle's per-FMSPC directories are read only when a quote needs them.
 */
async function openTdxCollateral(where: string): Promise<TdxCollateralSource> {
  const fail = (what: string, cause?: unknown) =>
    new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `attestation.tdxCollateral: ${what}`, ...(cause !== undefined ? { cause } : {}) });
  let layout: TdxCollateralLayout;
  try {
    const s = await stat(where);
    if (s.isFile()) layout = 'file';
    else if (!s.isDirectory()) throw fail('neither a file nor a directory');
    else layout = (await readdir(where)).includes('tcb_info.json') ? 'directory' : 'bundle';
  } catch (cause) {
    if (cause instanceof KmsError) throw cause;
    throw fail('not readable', cause);
  }
  if (layout === 'bundle') return new CollateralFromDisk(new OfflineTdxCollateral(where));
  try {
    await loadTdxCollateral(where);
  } catch (cause) {
    throw fail(`${layout} rejected (${codeOf(cause)})`, cause);
  }
  return new CollateralFromDisk({ collateralFor: (): Promise<TdxCollateral> => loadTdxCollateral(where) });
}

/**
 * Collateral read from disk on every verification. Any failure to produce it (a bundle
 * without the quote's FMSPC, a file being replaced) is the broker's problem, not the
 * attester's: `ERR_ATT_TDX_COLLATERAL_UNAVAILABLE` (503), with public values only (FMSPC,
 * CA kind, the inner code; never a path).
 */
class CollateralFromDisk implements TdxCollateralSource {
  readonly #inner: TdxCollateralSource;
  constructor(inner: TdxCollateralSource) {
    this.#inner = inner;
  }
  async collateralFor(req: CollateralRequest): Promise<TdxCollateral> {
    try {
      return await this.#inner.collateralFor(req);
    } catch (cause) {
      const fmspc = /^[0-9a-f]{12}$/.test(req.fmspc) ? req.fmspc : '(invalid)';
      throw new TdxError('ERR_ATT_TDX_COLLATERAL_UNAVAILABLE', { detail: `fmspc ${fmspc} (${req.pckCa} CA): ${codeOf(cause)}`, cause });
    }
  }
}

function codeOf(e: unknown): string {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && /^[A-Z][A-Z0-9_]{0,63}$/.test(code) ? code : 'rejected';
}
