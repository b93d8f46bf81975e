/**
 * `cir attest verify`: verify one piece of attestation evidence offline and print the
 * claims, as a relying party would see them. Two TEEs, one contract:
 *
 *   SEV-SNP: cir attest verify --evidence FILE [--tee sev-snp] [--cert FILE]... [--collateral DIR]
 *       [--at ISO-8601] [--allow-debug] [--expect-measurement HEX]... [--expect-report-data HEX]
 *       [--min-tcb bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]] [--allow-provisional-firmware]
 *       [--policy FILE] [--allow-simulated] [--json]
 *   TDX:     cir attest verify --evidence FILE [--tee tdx] --collateral DIR|FILE
 *       [--at ISO-8601] [--allow-debug] [--expect-mrtd HEX]... [--expect-rtmr N=HEX]...
 *       [--accept-tcb-status S[,S...]] [--allow-missing-crls] [--expect-report-data HEX]
 *       [--policy FILE] [--json]
 *
 * Pipeline (SEV-SNP): read files -> detect the TEE -> sort the certificates into
 * VCEK/VLEK/ASK/ASVK/ARK -> verifySnpEvidence (chain to the pinned AMD ARK, signature, TCB
 * and chip binding, report_data) -> validateSnpClaims (policy) -> claims.
 * Pipeline (TDX): read files -> detect the TEE -> load the collateral -> evaluateTdxQuote
 * (PCK chain to the pinned Intel SGX Root CA, QE and quote signatures, CRLs, TCB Info / QE
 * Identity, TCB status, report_data; then TdxPolicy) -> claims.
 *
 * Decisions a user should know (also in `--help`):
 * - TEE detection without `--tee`: 1184 bytes with SEV-SNP report version 2, 3 or 5 ->
 *   sev-snp; a quote header with version 4 or 5 and tee_type 0x81 -> tdx; else rejected
 *   (ERR_CLI_UNKNOWN_EVIDENCE). Flags of the other TEE are usage errors.
 * - Measurement: without `--expect-measurement` (SEV-SNP) / `--expect-mrtd` (TDX), and
 *   without them in `--policy`, any measurement is accepted and the claims list the
 *   relaxation `any-measurement` / `any-mrtd`.
 * - report_data: without `--expect-report-data` it is not compared (ANY_REPORT_DATA) and
 *   the claims list `report-data-unchecked`. This tool checks a report's provenance; it
 *   cannot check freshness, which only the party that chose the nonce can.
 * - VMPL (SEV-SNP): the library default (VMPL 0 only). A report from another VMPL needs a
 *   `--policy` file with `vmpl: N` or `anyVmpl: true`. There is deliberately no flag for it.
 * - Simulated evidence (SEV-SNP) needs `--allow-simulated` AND a simulated root: the
 *   self-signed, non-AMD ARK passed with `--cert`, or else the PEM file named by
 *   $CIR_SIMULATED_ROOT (the same variable `cir verify` reads). The root is only read with
 *   `--allow-simulated`. There is no simulated TDX.
 * - TDX collateral is required (this tool does no network I/O): a layout-(a) directory, a
 *   dcap-qvl collateral JSON file, or an offline bundle directory holding one layout-(a)
 *   directory per FMSPC (attestation/tdx/README.md). A missing PCK or root CA CRL fails
 *   unless `--allow-missing-crls` (recorded as `pck-crl-unchecked` / `root-ca-crl-unchecked`).
 * - TDX TCB status: only UpToDate unless `--accept-tcb-status` lists more (each extra status
 *   is recorded as `accept-tcb-status:<S>`).
 * - Flags override the `--policy` file field by field (`--expect-measurement` /
 *   `--expect-mrtd` replace the file's list; `--expect-rtmr N=...` replaces rtmrN;
 *   `--min-tcb` replaces minTcb; `--accept-tcb-status` replaces acceptedTcbStatuses).
 *
 * Exit codes (the project-wide mapping of error categories, as in the README error table):
 * 0 accepted; 1 rejected by verification or policy; 2 usage, unreadable or malformed files,
 * malformed evidence or certificates, invalid policy or collateral bundle; 3 anything
 * else (an internal error: a bug). With `--json`, stdout
 * holds exactly one JSON object in every case the command itself handles (commander's own
 * usage errors, such as an unknown option, are printed on stderr).
 */
import { stat } from 'node:fs/promises';
import path from 'node:path';
import type { Command } from 'commander';
import {
  ANY_REPORT_DATA,
  AMD_ARK_SPKI_SHA256,
  OfflineBundle,
  RELAXATION_REPORT_DATA_UNCHECKED,
  SNP_REPORT_SIZE,
  isAttestationError,
  parseSnpPolicy,
  relaxationsFor,
  validateSnpClaims,
  verifySnpEvidence,
  type PolicyFailure,
  type SnpClaims,
  type SnpCollateralSource,
  type SnpPolicy,
  type SnpTrustOptions,
  TCB_STATUSES,
  OfflineTdxCollateral,
  evaluateTdxQuote,
  loadTdxCollateral,
  parseTdxPolicy,
  type TcbStatus,
  type TdxClaims,
  type TdxCollateral,
  type TdxCollateralSource,
  type TdxPolicy,
} from '../attestation/index.js';
import { readConfigFile } from '../common/config.js';
import { exitCodeFor, isCirError, type ErrorCategory } from '../common/errors.js';
import { sha256, toHex } from '../common/bytes.js';
import { x509 } from '../common/x509.js';
import { ClientError } from '../client/codes.js';
import { MAX_SMALL_FILE_BYTES, readArgFile } from '../client/arg-file.js';
import { mark } from './output.js';

// --- inputs ----------------------------------------------------------------------------

/** Flags as commander hands them over. */
export interface AttestVerifyFlags {
  readonly evidence?: string;
  readonly tee?: string;
  readonly cert: readonly string[];
  readonly collateral?: string;
  readonly at?: string;
  readonly allowDebug?: boolean;
  readonly expectMeasurement: readonly string[];
  readonly expectReportData?: string;
  readonly minTcb?: string;
  readonly allowProvisionalFirmware?: boolean;
  readonly policy?: string;
  readonly allowSimulated?: boolean;
  readonly json?: boolean;
  // --- TDX ---
  readonly expectMrtd?: readonly string[];
  readonly expectRtmr?: readonly string[];
  readonly acceptTcbStatus?: readonly string[];
  readonly allowMissingCrls?: boolean;
}

/** Everything the SEV-SNP evaluation needs, already read from disk: no I/O beyond this point. */
export interface AttestVerifyInput {
  /** The raw evidence bytes (a 1184-byte SEV-SNP report). */
  readonly evidence: Uint8Array;
  /** `--tee`; detected from the bytes when undefined. */
  readonly tee?: string;
  /** Every certificate from every `--cert` file, DER, with the file it came from. */
  readonly certs: readonly { readonly der: Uint8Array; readonly source: string }[];
  readonly collateral?: SnpCollateralSource;
  readonly now: Date;
  /** 64 bytes; undefined means "not checked" (ANY_REPORT_DATA, recorded in the claims). */
  readonly expectedReportData?: Uint8Array;
  readonly policy: SnpPolicy;
  readonly allowSimulated: boolean;
  /** DER of the simulated ARK from $CIR_SIMULATED_ROOT, used when no --cert supplies one. */
  readonly simulatedRootFromEnv?: Uint8Array;
  /** A certificate table (GUID table, as in `SnpEvidence.certs.certTable`) from JSON evidence. */
  readonly certTable?: Uint8Array;
}

/** Everything the TDX evaluation needs, already read from disk (an offline bundle is read lazily). */
export interface TdxAttestVerifyInput {
  /** The raw quote bytes (v4 or v5). */
  readonly evidence: Uint8Array;
  /** From `--collateral`: required, this tool does no network I/O. */
  readonly collateral: TdxCollateral | TdxCollateralSource;
  readonly now: Date;
  /** 64 bytes; undefined means "not checked" (ANY_REPORT_DATA, recorded in the claims). */
  readonly expectedReportData?: Uint8Array;
  readonly policy: TdxPolicy;
  /** `--allow-missing-crls` (a relaxation recorded in the claims). */
  readonly allowMissingCrls: boolean;
}

/** What prepareAttestInput hands to the evaluation: the TEE decides the input. */
export type PreparedAttest =
  | { readonly tee: 'sev-snp'; readonly input: AttestVerifyInput }
  | { readonly tee: 'tdx'; readonly input: TdxAttestVerifyInput };

/** The claims as printed: the library's claim set plus `version` (= reportVersion). */
export type AttestClaims = SnpClaims & { readonly version: number };
/** TDX claims as printed: the library's claim set plus `version` (= quoteVersion). */
export type TdxAttestClaims = TdxClaims & { readonly version: number };

export type AttestOutcome =
  | { readonly ok: true; readonly tee: 'sev-snp'; readonly claims: AttestClaims }
  | { readonly ok: true; readonly tee: 'tdx'; readonly claims: TdxAttestClaims }
  | { readonly ok: false; readonly code: string; readonly detail: string; readonly failures: readonly PolicyFailure[] };

export interface AttestResult {
  readonly outcome: AttestOutcome;
  readonly exitCode: 0 | 1 | 2 | 3;
  /** Verified claims, also when the policy rejected them (for the readable summary). */
  readonly claims?: AttestClaims | TdxAttestClaims;
}

// --- small parsers (usage errors are ERR_CLI_BAD_ARGUMENT, exit 2) ----------------------

const HEX96 = /^[0-9a-fA-F]{96}$/;
const HEX128 = /^[0-9a-fA-F]{128}$/;
const ISO_8601 = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/;
const TCB_KEYS = ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const;
type TcbKey = (typeof TCB_KEYS)[number];

const badArg = (detail: string): ClientError => new ClientError('ERR_CLI_BAD_ARGUMENT', { detail });

/** Parses `bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]` (decimal 0..255, each key once). */
export function parseMinTcb(s: string): Record<TcbKey, number | undefined> {
  const out: Partial<Record<TcbKey, number>> = {};
  for (const part of s.split(',')) {
    const m = /^\s*([a-z]+)\s*=\s*(\d{1,3})\s*$/.exec(part);
    const key = m?.[1] as TcbKey | undefined;
    if (!m || key === undefined || !TCB_KEYS.includes(key)) {
      throw badArg('--min-tcb must be bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]');
    }
    if (out[key] !== undefined) throw badArg(`--min-tcb names ${key} twice`);
    const n = Number(m[2]);
    if (n > 255) throw badArg(`--min-tcb ${key} must be 0..255`);
    out[key] = n;
  }
  for (const k of ['bootloader', 'tee', 'snp', 'microcode'] as const) {
    if (out[k] === undefined) throw badArg(`--min-tcb lacks ${k} (bootloader, tee, snp and microcode are required)`);
  }
  return { bootloader: out.bootloader, tee: out.tee, snp: out.snp, microcode: out.microcode, fmc: out.fmc };
}

export function parseAt(s: string | undefined): Date {
  if (s === undefined) return new Date();
  const d = new Date(s);
  if (!ISO_8601.test(s) || Number.isNaN(d.getTime())) throw badArg('--at must be an ISO 8601 time, e.g. 2026-06-01T00:00:00Z');
  return d;
}

/**
 * The effective policy: the `--policy` file (if any) overlaid with the flags, then parsed
 * by SnpPolicySchema (ERR_ATT_SNP_BAD_POLICY names the field). Without measurements from
 * either source, `anyMeasurement: true`: this is a verifier tool, and the relaxation is
 * recorded in the claims.
 */
export type PolicyFlags = Pick<AttestVerifyFlags, 'allowDebug' | 'expectMeasurement' | 'minTcb' | 'allowProvisionalFirmware' | 'allowSimulated'>;

export function buildPolicy(file: unknown, f: PolicyFlags): SnpPolicy {
  if (file !== undefined && (file === null || typeof file !== 'object' || Array.isArray(file))) {
    throw badArg('--policy file must hold a mapping (an SnpPolicy object)');
  }
  const p: Record<string, unknown> = { ...(file as Record<string, unknown> | undefined) };
  if (f.allowDebug) p['allowDebug'] = true;
  if (f.allowProvisionalFirmware) p['allowProvisionalFirmware'] = true;
  if (f.allowSimulated) p['allowSimulated'] = true;
  if (f.minTcb !== undefined) {
    const t = parseMinTcb(f.minTcb);
    p['minTcb'] = Object.fromEntries(Object.entries(t).filter(([, v]) => v !== undefined));
  }
  if (f.expectMeasurement.length > 0) {
    for (const m of f.expectMeasurement) if (!HEX96.test(m)) throw badArg('--expect-measurement must be 96 hex characters (48 bytes)');
    p['measurements'] = [...f.expectMeasurement];
    delete p['anyMeasurement'];
  } else if (p['measurements'] === undefined && p['anyMeasurement'] === undefined) {
    p['anyMeasurement'] = true;
  }
  return parseSnpPolicy(p);
}

// --- TDX policy -------------------------------------------------------------------------

const RTMR_ARG = /^\s*([0-3])\s*=\s*([0-9a-fA-F]{96})\s*$/;

/** Splits repeated, comma-separated `--accept-tcb-status` values; each must be a known status, once. */
export function parseTcbStatuses(values: readonly string[]): TcbStatus[] {
  const out: TcbStatus[] = [];
  for (const v of values.flatMap((x) => x.split(','))) {
    const s = v.trim();
    if (!(TCB_STATUSES as readonly string[]).includes(s)) {
      throw badArg(`--accept-tcb-status: ${JSON.stringify(s.slice(0, 40))} is not one of ${TCB_STATUSES.join(', ')}`);
    }
    if (out.includes(s as TcbStatus)) throw badArg(`--accept-tcb-status names ${s} twice`);
    out.push(s as TcbStatus);
  }
  if (out.length === 0) throw badArg('--accept-tcb-status needs at least one status');
  return out;
}

/** Parses repeated `--expect-rtmr N=HEX` (N 0..3, 96 hex chars) into per-index allow-lists. */
export function parseRtmrs(values: readonly string[]): Partial<Record<'rtmr0' | 'rtmr1' | 'rtmr2' | 'rtmr3', string[]>> {
  const out: Partial<Record<'rtmr0' | 'rtmr1' | 'rtmr2' | 'rtmr3', string[]>> = {};
  for (const v of values) {
    const m = RTMR_ARG.exec(v);
    if (!m) throw badArg('--expect-rtmr must be N=HEX with N 0..3 and 96 hex characters (48 bytes)');
    const key = `rtmr${m[1]}` as 'rtmr0' | 'rtmr1' | 'rtmr2' | 'rtmr3';
    (out[key] ??= []).push(m[2]!.toLowerCase());
  }
  return out;
}

export type TdxPolicyFlags = Pick<AttestVerifyFlags, 'allowDebug' | 'expectMrtd' | 'expectRtmr' | 'acceptTcbStatus'>;

/**
 * The effective TDX policy: the `--policy` file (a TdxPolicy, if any) overlaid with the
 * flags, then parsed by TdxPolicySchema (ERR_ATT_TDX_BAD_POLICY names the field). Without
 * MRTDs from either source, `anyMrtd: true`: this is a verifier tool, and the relaxation
 * is recorded in the claims.
 */
export function buildTdxPolicy(file: unknown, f: TdxPolicyFlags): TdxPolicy {
  if (file !== undefined && (file === null || typeof file !== 'object' || Array.isArray(file))) {
    throw badArg('--policy file must hold a mapping (a TdxPolicy object)');
  }
  const p: Record<string, unknown> = { ...(file as Record<string, unknown> | undefined) };
  if (f.allowDebug) p['allowDebug'] = true;
  if (f.acceptTcbStatus !== undefined && f.acceptTcbStatus.length > 0) p['acceptedTcbStatuses'] = parseTcbStatuses(f.acceptTcbStatus);
  if (f.expectRtmr !== undefined && f.expectRtmr.length > 0) Object.assign(p, parseRtmrs(f.expectRtmr));
  const mrtd = f.expectMrtd ?? [];
  if (mrtd.length > 0) {
    for (const m of mrtd) if (!HEX96.test(m)) throw badArg('--expect-mrtd must be 96 hex characters (48 bytes)');
    p['mrtd'] = mrtd.map((m) => m.toLowerCase());
    delete p['anyMrtd'];
  } else if (p['mrtd'] === undefined && p['anyMrtd'] === undefined) {
    p['anyMrtd'] = true;
  }
  return parseTdxPolicy(p);
}

// --- certificates ---------------------------------------------------------------------

const OID_HWID = '1.3.6.1.4.1.3704.1.4';
const OID_CSP_ID = '1.3.6.1.4.1.3704.1.5';
const PEM_HEADER = '-----BEGIN ';
const MAX_CERTS = 16;

type Role = 'vcek' | 'vlek' | 'ask' | 'asvk' | 'ark';

/** Splits the bytes of a `--cert` file into DER certificates: PEM (one or more) or one DER. */
export function certificatesInFile(bytes: Uint8Array, source: string): Uint8Array[] {
  const text = Buffer.from(bytes).toString('latin1');
  if (!text.trimStart().startsWith(PEM_HEADER)) return [new Uint8Array(bytes)];
  let ders: ArrayBuffer[];
  try {
    ders = x509.PemConverter.decode(text);
  } catch (cause) {
    throw new ClientError('ERR_CLI_BAD_CERT_FILE', { detail: `${source}: bad PEM`, cause });
  }
  if (ders.length === 0) throw new ClientError('ERR_CLI_BAD_CERT_FILE', { detail: `${source}: no certificate in the PEM file` });
  return ders.map((d) => new Uint8Array(d));
}

interface Classified {
  readonly role: Role;
  readonly der: Uint8Array;
  readonly source: string;
  /** SHA-256 of the SubjectPublicKeyInfo, hex (for ARKs: AMD pin or not). */
  readonly spkiSha256: string;
}

/**
 * Decides what one certificate is, for slotting only (trust is decided by the verifier):
 * a non-CA certificate is the leaf: VLEK when it has the AMD cspID extension (or "VLEK" in
 * its CN and no hwID), else VCEK. A CA certificate is the ARK when self-issued, the ASVK
 * when its CN names VLEK (AMD: "SEV-VLEK-Milan"), else the ASK.
 */
function classify(der: Uint8Array, source: string): Classified {
  try {
    const c = new x509.X509Certificate(der);
    const ca = c.getExtension(x509.BasicConstraintsExtension)?.ca === true;
    const oids = new Set(c.extensions.map((e) => e.type));
    const cn = /(?:^|,\s*)CN=([^,]*)/.exec(c.subject)?.[1] ?? '';
    const vlekName = /VLEK/i.test(cn);
    let role: Role;
    if (!ca) role = oids.has(OID_CSP_ID) || (vlekName && !oids.has(OID_HWID)) ? 'vlek' : 'vcek';
    else if (c.subject === c.issuer) role = 'ark';
    else role = vlekName ? 'asvk' : 'ask';
    return { role, der, source, spkiSha256: toHex(sha256(new Uint8Array(c.publicKey.rawData))) };
  } catch (cause) {
    throw new ClientError('ERR_CLI_BAD_CERT_FILE', { detail: `${source}: not an X.509 certificate`, cause });
  }
}

interface SortedCerts {
  readonly certs: Partial<Record<Role, Uint8Array>>;
  /** The ARK given with --cert when it is not an AMD ARK (a simulated root candidate). */
  readonly nonAmdArk?: Uint8Array;
}

/** Slots every certificate; the same role twice (with different bytes) is a usage error. */
export function sortCertificates(list: AttestVerifyInput['certs']): SortedCerts {
  if (list.length > MAX_CERTS) throw new ClientError('ERR_CLI_BAD_CERT_FILE', { detail: `more than ${MAX_CERTS} certificates` });
  const certs: Partial<Record<Role, Uint8Array>> = {};
  const from: Partial<Record<Role, string>> = {};
  let nonAmdArk: Uint8Array | undefined;
  const amdPins = new Set(Object.values(AMD_ARK_SPKI_SHA256));
  for (const { der, source } of list) {
    const c = classify(der, source);
    const prev = certs[c.role];
    if (prev) {
      if (Buffer.compare(prev, c.der) === 0) continue;
      throw new ClientError('ERR_CLI_BAD_CERT_FILE', {
        detail: `two different ${c.role.toUpperCase()} certificates (${from[c.role]}, ${source}); pass one`,
      });
    }
    certs[c.role] = c.der;
    from[c.role] = source;
    if (c.role === 'ark' && !amdPins.has(c.spkiSha256)) nonAmdArk = c.der;
  }
  return { certs, ...(nonAmdArk ? { nonAmdArk } : {}) };
}

// --- evaluation -----------------------------------------------------------------------

/** Intel TDX DCAP quote header (Quoting Library API A.3/A.4): u16 version, u16 key type, u32 tee_type. */
const TDX_HEADER_SIZE = 48;
const TDX_TEE_TYPE = 0x81;

/**
 * Evidence format detection, on the first bytes only (no parsing):
 * - a 1184-byte buffer whose u32 version field is 2, 3 or 5 -> 'sev-snp';
 * - at least a quote header (48 bytes) with u16 version 4 or 5 and u32 tee_type 0x81 -> 'tdx'.
 * The two cannot overlap: a TDX header's first u32 is version | key type << 16, never 2, 3 or 5.
 */
export function detectTee(evidence: Uint8Array): 'sev-snp' | 'tdx' | undefined {
  const dv = new DataView(evidence.buffer, evidence.byteOffset, evidence.byteLength);
  if (evidence.length === SNP_REPORT_SIZE) {
    const version = dv.getUint32(0, true);
    if (version === 2 || version === 3 || version === 5) return 'sev-snp';
  }
  if (evidence.length >= TDX_HEADER_SIZE) {
    const version = dv.getUint16(0, true);
    if ((version === 4 || version === 5) && dv.getUint32(4, true) === TDX_TEE_TYPE) return 'tdx';
  }
  return undefined;
}

/** The project-wide mapping (README error table): 1 verification/policy, 2 bad input/config, 3 other. */
function exitCodeOf(category: ErrorCategory): 1 | 2 | 3 {
  return exitCodeFor(category) as 1 | 2 | 3;
}

/** Turns any error into a rejection outcome. Only typed errors carry their detail. */
export function errorResult(e: unknown): AttestResult {
  if (isCirError(e)) {
    return {
      outcome: { ok: false, code: e.code, detail: e.detail ?? e.message, failures: [] },
      exitCode: exitCodeOf(e.category),
    };
  }
  // SECURITY: an untyped error is a bug; its message is not shown (it may quote input).
  return { outcome: { ok: false, code: 'ERR_INTERNAL', detail: 'unexpected internal error', failures: [] }, exitCode: 3 };
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

/**
 * The whole SEV-SNP evaluation on bytes already in memory: detect the TEE, sort the
 * certificates, verify (throws AttestationError, turned into a rejection here), validate
 * the policy.
 *
 * Returns a result for every evidence input. Throws only typed CirErrors, and only for
 * problems with the other inputs (ambiguous or malformed certificates, a bad `--tee`, or
 * TDX evidence given SEV-SNP inputs).
 */
export async function evaluateAttestation(input: AttestVerifyInput): Promise<AttestResult> {
  const tee = input.tee ?? detectTee(input.evidence);
  if (tee === undefined) return errorResult(unknownEvidence(input.evidence));
  if (tee !== 'sev-snp') throw badArg(`SEV-SNP inputs given for ${JSON.stringify(tee).slice(0, 40)} evidence`);

  let verified: SnpClaims;
  try {
    verified = await verifySnpInput(input);
  } catch (e) {
    if (isAttestationError(e)) return errorResult(e);
    throw e;
  }
  const failures = validateSnpClaims(verified, input.policy);
  const claims: AttestClaims = Object.freeze({
    ...verified,
    relaxations: Object.freeze([...verified.relaxations, ...relaxationsFor(input.policy)]),
    version: verified.reportVersion,
  });
  if (failures.length > 0) {
    return {
      outcome: {
        ok: false,
        code: 'ERR_ATT_SNP_POLICY_FAILED',
        detail: failures.map((f) => f.field).join(', '),
        failures: failures.map((f) => ({ field: f.field, expected: f.expected, observed: f.observed })),
      },
      exitCode: 1,
      claims,
    };
  }
  return { outcome: { ok: true, tee: 'sev-snp', claims }, exitCode: 0, claims };
}

/**
 * SEV-SNP verification only (no policy): sorts the certificates, picks the simulated root
 * (only with `allowSimulated`), builds the evidence envelope and runs verifySnpEvidence
 * with `input.expectedReportData` (ANY_REPORT_DATA when undefined). Returns the verifier's
 * claims; throws AttestationError on rejected evidence and ClientError on bad certificates.
 * Also used by `cir broker policy test`.
 */
export async function verifySnpInput(input: AttestVerifyInput): Promise<SnpClaims> {
  const sorted = sortCertificates(input.certs);
  let trust: SnpTrustOptions | undefined;
  if (input.allowSimulated) {
    const root = sorted.nonAmdArk ?? input.simulatedRootFromEnv;
    trust = { allowSimulated: true, ...(root ? { simulatedRoot: { arkDer: root } } : {}) };
  }
  const { ark, ...rest } = sorted.certs;
  // SECURITY: a non-AMD ARK becomes the simulated root only with --allow-simulated; it is
  // then the anchor, not evidence, so it is not also passed as the evidence ARK.
  const evidenceCerts = { ...rest, ...(ark && !(trust?.simulatedRoot?.arkDer === ark) ? { ark } : {}) };
  const envelope = {
    tee: 'sev-snp' as const,
    report: b64(input.evidence),
    certs: {
      ...Object.fromEntries(Object.entries(evidenceCerts).map(([k, v]) => [k, b64(v)])),
      ...(input.certTable ? { certTable: b64(input.certTable) } : {}),
    },
  };
  return verifySnpEvidence(envelope, {
    now: input.now,
    expectedReportData: input.expectedReportData ?? ANY_REPORT_DATA,
    ...(trust ? { trust } : {}),
    ...(input.collateral ? { collateral: input.collateral } : {}),
  });
}

function unknownEvidence(evidence: Uint8Array): ClientError {
  return new ClientError('ERR_CLI_UNKNOWN_EVIDENCE', { detail: `${evidence.length} bytes` });
}

/**
 * The whole TDX evaluation: evaluateTdxQuote (parse, verify against the collateral and the
 * pinned Intel root, then the policy). Verification and parse errors become rejections
 * with their exit code; policy failures are ERR_ATT_TDX_POLICY_FAILED (exit 1) with the
 * verified claims attached. Returns a result for every evidence input; throws nothing but
 * typed CirErrors.
 */
export async function evaluateTdxAttestation(input: TdxAttestVerifyInput): Promise<AttestResult> {
  let claims: TdxAttestClaims;
  let failures: readonly PolicyFailure[];
  try {
    const r = await evaluateTdxQuote(input.evidence, {
      now: input.now,
      expectedReportData: input.expectedReportData ?? ANY_REPORT_DATA,
      collateral: input.collateral,
      allowMissingCrls: input.allowMissingCrls,
      policy: input.policy,
    });
    claims = Object.freeze({ ...r.claims, version: r.claims.quoteVersion });
    failures = r.failures;
  } catch (e) {
    if (isAttestationError(e)) return errorResult(e);
    throw e;
  }
  if (failures.length > 0) {
    return {
      outcome: {
        ok: false,
        code: 'ERR_ATT_TDX_POLICY_FAILED',
        detail: failures.map((f) => f.field).join(', '),
        failures: failures.map((f) => ({ field: f.field, expected: f.expected, observed: f.observed })),
      },
      exitCode: 1,
      claims,
    };
  }
  return { outcome: { ok: true, tee: 'tdx', claims }, exitCode: 0, claims };
}

/** Runs the evaluation that prepareAttestInput chose. */
export function evaluatePrepared(p: PreparedAttest): Promise<AttestResult> {
  return p.tee === 'tdx' ? evaluateTdxAttestation(p.input) : evaluateAttestation(p.input);
}

// --- I/O: flags -> input ---------------------------------------------------------------

const MAX_EVIDENCE_BYTES = 64 * 1024;

/** Flags that only one TEE understands: given for the other TEE's evidence they are usage errors. */
const SNP_ONLY_FLAGS: readonly [string, (f: AttestVerifyFlags) => boolean][] = [
  ['--cert', (f) => f.cert.length > 0],
  ['--expect-measurement', (f) => f.expectMeasurement.length > 0],
  ['--min-tcb', (f) => f.minTcb !== undefined],
  ['--allow-provisional-firmware', (f) => f.allowProvisionalFirmware === true],
  ['--allow-simulated', (f) => f.allowSimulated === true],
];
const TDX_ONLY_FLAGS: readonly [string, (f: AttestVerifyFlags) => boolean][] = [
  ['--expect-mrtd', (f) => (f.expectMrtd ?? []).length > 0],
  ['--expect-rtmr', (f) => (f.expectRtmr ?? []).length > 0],
  ['--accept-tcb-status', (f) => (f.acceptTcbStatus ?? []).length > 0],
  ['--allow-missing-crls', (f) => f.allowMissingCrls === true],
];

function refuseFlags(f: AttestVerifyFlags, flags: typeof SNP_ONLY_FLAGS, tee: string): void {
  const given = flags.filter(([, set]) => set(f)).map(([name]) => name);
  if (given.length > 0) throw badArg(`not for ${tee} evidence: ${given.join(', ')}`);
}

/**
 * TDX `--collateral`: a dcap-qvl JSON file, a layout-(a) directory (it holds
 * tcb_info.json), or else an offline bundle directory (one layout-(a) directory per FMSPC,
 * read when the quote's FMSPC is known).
 */
async function tdxCollateralFrom(p: string): Promise<TdxCollateral | TdxCollateralSource> {
  let st;
  try {
    st = await stat(p);
  } catch (cause) {
    throw new ClientError('ERR_CLI_FILE_UNREADABLE', { detail: `--collateral ${p}: ${(cause as NodeJS.ErrnoException).code ?? 'error'}`, cause });
  }
  if (!st.isDirectory()) return loadTdxCollateral(p);
  const single = await stat(path.join(p, 'tcb_info.json')).then(
    () => true,
    () => false,
  );
  return single ? loadTdxCollateral(p) : new OfflineTdxCollateral(p);
}

/**
 * Validates the flags, reads every file they name and decides the TEE (`--tee`, else
 * detected from the evidence bytes). Throws typed errors (exit 2).
 */
export async function prepareAttestInput(
  f: AttestVerifyFlags,
  env: NodeJS.ProcessEnv = process.env,
  /** Evidence bytes the caller already read (and decoded); `f.evidence` is then not read. */
  evidenceBytes?: Uint8Array,
): Promise<PreparedAttest> {
  if (!f.evidence && !evidenceBytes) throw badArg('--evidence FILE is required');
  if (f.tee !== undefined && f.tee !== 'sev-snp' && f.tee !== 'tdx') throw badArg('--tee must be sev-snp or tdx');
  const now = parseAt(f.at);
  let expectedReportData: Uint8Array | undefined;
  if (f.expectReportData !== undefined) {
    if (!HEX128.test(f.expectReportData)) throw badArg('--expect-report-data must be 128 hex characters (64 bytes)');
    expectedReportData = new Uint8Array(Buffer.from(f.expectReportData, 'hex'));
  }
  const needCollateral = '--collateral DIR|FILE is required for TDX evidence (TCB Info, QE Identity, CRLs; this tool does no network I/O)';
  if (f.tee === 'tdx' && f.collateral === undefined) throw badArg(needCollateral);
  const evidence = evidenceBytes ?? (await readArgFile('--evidence', f.evidence!, { max: MAX_EVIDENCE_BYTES, regularFile: true }));
  const tee = f.tee ?? detectTee(evidence);
  if (tee === undefined) throw unknownEvidence(evidence);
  const policyFile = f.policy ? await readConfigFile(f.policy) : undefined;

  if (tee === 'tdx') {
    refuseFlags(f, SNP_ONLY_FLAGS, 'TDX');
    if (f.collateral === undefined) throw badArg(needCollateral);
    const policy = buildTdxPolicy(policyFile, f);
    return {
      tee: 'tdx',
      input: {
        evidence,
        collateral: await tdxCollateralFrom(f.collateral),
        now,
        ...(expectedReportData ? { expectedReportData } : {}),
        policy,
        allowMissingCrls: f.allowMissingCrls === true,
      },
    };
  }

  refuseFlags(f, TDX_ONLY_FLAGS, 'SEV-SNP');
  const policy = buildPolicy(policyFile, f);
  const certs: { der: Uint8Array; source: string }[] = [];
  for (const file of f.cert) {
    for (const der of certificatesInFile(await readArgFile('--cert', file, { max: MAX_SMALL_FILE_BYTES, regularFile: true }), file)) certs.push({ der, source: file });
  }
  let simulatedRootFromEnv: Uint8Array | undefined;
  const envRoot = env['CIR_SIMULATED_ROOT'];
  if (f.allowSimulated && envRoot) {
    const ders = certificatesInFile(await readArgFile('CIR_SIMULATED_ROOT', envRoot, { max: MAX_SMALL_FILE_BYTES, regularFile: true }), envRoot);
    if (ders.length !== 1) throw new ClientError('ERR_CLI_BAD_CERT_FILE', { detail: `${envRoot}: expected exactly one certificate` });
    simulatedRootFromEnv = ders[0];
  }
  return {
    tee: 'sev-snp',
    input: {
      evidence,
      tee,
      certs,
      ...(f.collateral !== undefined ? { collateral: new OfflineBundle(f.collateral) } : {}),
      now,
      ...(expectedReportData ? { expectedReportData } : {}),
      policy,
      allowSimulated: f.allowSimulated === true,
      ...(simulatedRootFromEnv ? { simulatedRootFromEnv } : {}),
    },
  };
}

/** Flags -> result; never throws (every error becomes a rejection with its exit code). */
export async function runAttestVerify(f: AttestVerifyFlags, env: NodeJS.ProcessEnv = process.env): Promise<AttestResult> {
  try {
    return await evaluatePrepared(await prepareAttestInput(f, env));
  } catch (e) {
    if (process.env['CIR_DEBUG'] === '1' && !isCirError(e)) process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
    return errorResult(e);
  }
}

// --- output ---------------------------------------------------------------------------

const tcbText = (t: SnpClaims['reportedTcb']): string =>
  [t.fmc !== undefined ? `fmc=${t.fmc}` : '', `bootloader=${t.bootloader}`, `tee=${t.tee}`, `snp=${t.snp}`, `microcode=${t.microcode}`]
    .filter(Boolean)
    .join(' ');

const isTdxClaims = (c: AttestClaims | TdxAttestClaims): c is TdxAttestClaims => c.tee === 'tdx';

/** The readable summary: each check, the main claims, relaxations and failures. */
export function formatSummary(r: AttestResult): string {
  const lines: string[] = [];
  const row = (ok: boolean, name: string, detail: string): void => void lines.push(`${mark(ok)} ${name.padEnd(12)} ${detail}`);
  const claim = (k: string, v: string | number | boolean): void => void lines.push(`  ${k.padEnd(14)} ${String(v)}`);
  const c = r.claims;
  const o = r.outcome;
  if (!c) {
    if (!o.ok) row(false, 'verify', `${o.code}: ${o.detail}`);
  } else {
    if (isTdxClaims(c)) {
      row(true, 'evidence', `tdx quote v${c.version}, FMSPC ${c.fmspc}, TCB evaluation data ${c.tcbEvaluationDataNumber}`);
      row(true, 'verify', 'PCK chain to the pinned Intel SGX Root CA, QE and quote signatures, collateral, TCB status');
    } else {
      const product = c.productName && c.productName !== c.product ? `${c.product} (${c.productName})` : c.product;
      row(true, 'evidence', `sev-snp report v${c.version}, ${product}, signed by the ${c.signingKey.toUpperCase()}`);
      const anchor = c.simulated ? 'the SIMULATED root' : 'the pinned AMD ARK';
      row(true, 'verify', `chain to ${anchor}, signature, TCB and chip binding`);
    }
    if (c.relaxations.includes(RELAXATION_REPORT_DATA_UNCHECKED)) {
      lines.push(`${'--'.padEnd(3)} ${'report_data'.padEnd(12)} not checked (no --expect-report-data)`);
    } else {
      row(true, 'report_data', 'equals --expect-report-data');
    }
    const failures = o.ok ? [] : o.failures;
    row(failures.length === 0, 'policy', failures.length === 0 ? 'all rules hold' : `${failures.length} rule(s) failed`);
    for (const f of failures) lines.push(`     - ${f.field}: expected ${f.expected}, observed ${f.observed}`);
    lines.push('claims:');
    if (isTdxClaims(c)) {
      claim('mrtd', c.mrtd);
      c.rtmr.forEach((v, i) => claim(`rtmr[${i}]`, v));
      claim('mrseam', c.mrseam);
      claim('mrconfigid', c.mrconfigid);
      claim('mrowner', c.mrowner);
      claim('mrownerconfig', c.mrownerconfig);
      claim('reportData', c.reportData);
      claim('tdAttributes', `${c.tdAttributes.hex} (debug=${c.tdAttributes.debug})`);
      claim('xfam', c.xfam);
      claim('teeTcbSvn', c.teeTcbSvn);
      claim('fmspc', c.fmspc);
      claim('tcbStatus', c.tcbStatus);
      claim('qeTcbStatus', c.qeTcbStatus);
      claim('advisoryIds', c.advisoryIds.length > 0 ? c.advisoryIds.join(', ') : 'none');
      claim('version', c.version);
    } else {
      claim('measurement', c.measurement);
      claim('reportData', c.reportData);
      claim('hostData', c.hostData);
      claim('chipId', c.chipId);
      claim('reportedTcb', tcbText(c.reportedTcb));
      claim('committedTcb', tcbText(c.committedTcb));
      claim('firmware', `${c.firmware.current} (committed ${c.firmware.committed})`);
      claim('policy', `debug=${c.policy.debug} smt=${c.policy.smt} migrationAgent=${c.policy.migrationAgent}`);
      claim('vmpl', c.vmpl);
      claim('guestSvn', c.guestSvn);
      claim('signingKey', c.signingKey);
      claim('product', c.product);
      claim('version', c.version);
      if (c.cspId !== undefined) claim('cspId', c.cspId);
    }
    claim('simulated', c.simulated);
    lines.push(`relaxations: ${c.relaxations.length > 0 ? c.relaxations.join(', ') : 'none'}`);
  }
  lines.push(o.ok ? 'ACCEPTED' : `REJECTED [${o.code}]`);
  return `${lines.join('\n')}\n`;
}

function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

export function registerAttestCommand(program: Command): void {
  const attest = program.command('attest').description('offline attestation tools');
  attest
    .command('verify')
    .description(
      'verify one piece of evidence (a raw SEV-SNP report against the pinned AMD roots, or an Intel TDX quote against ' +
        'offline collateral and the pinned Intel SGX root) and a policy; print the claims. ' +
        'Exit 0 accepted, 1 rejected by verification or policy, 2 usage, I/O or malformed input, 3 internal error.',
    )
    .option('--evidence <file>', 'the evidence: a raw 1184-byte SEV-SNP ATTESTATION_REPORT or an Intel TDX quote (v4/v5)')
    .option('--tee <type>', 'TEE type: sev-snp or tdx; detected from the evidence when omitted')
    .option('--cert <file>', 'SEV-SNP: PEM or DER certificate(s): the VCEK or VLEK, optionally ASK/ASVK/ARK (repeatable)', collect, [])
    .option(
      '--collateral <dir|file>',
      'SEV-SNP: offline collateral bundle directory (VCEKs, chains, CRLs). TDX (required): a collateral directory, ' +
        'a dcap-qvl collateral JSON file, or an offline bundle with one directory per FMSPC',
    )
    .option('--at <iso-time>', 'verify as of this time instead of now')
    .option('--allow-debug', 'accept a debug guest (SEV-SNP guest policy / TDX td_attributes.DEBUG) (relaxation)')
    .option(
      '--expect-measurement <hex>',
      'SEV-SNP: accepted launch measurement, 96 hex chars (repeatable); without it any measurement is accepted and the claims say so',
      collect,
      [],
    )
    .option(
      '--expect-report-data <hex>',
      'required report_data, 128 hex chars; without it report_data is not checked and the claims say so',
    )
    .option('--min-tcb <spec>', 'SEV-SNP: minimum TCB: bootloader=N,tee=N,snp=N,microcode=N[,fmc=N]')
    .option('--allow-provisional-firmware', 'SEV-SNP: accept a committed TCB/firmware older than the running one (relaxation)')
    .option(
      '--expect-mrtd <hex>',
      'TDX: accepted MRTD, 96 hex chars (repeatable); without it any MRTD is accepted and the claims say so (any-mrtd)',
      collect,
      [],
    )
    .option('--expect-rtmr <n=hex>', 'TDX: accepted RTMR value, N 0..3 and 96 hex chars (repeatable; several for one N form an allow-list)', collect, [])
    .option(
      '--accept-tcb-status <s,...>',
      `TDX: accepted TCB statuses (default UpToDate; others are relaxations): ${TCB_STATUSES.join(', ')}`,
      collect,
      [],
    )
    .option('--allow-missing-crls', 'TDX: accept collateral without a PCK or root CA CRL; revocation is then not checked (relaxation)')
    .option(
      '--policy <file>',
      'SnpPolicy or TdxPolicy (YAML or JSON) that flags override field by field; SEV-SNP VMPL other than 0 is only accepted here (vmpl: N or anyVmpl: true)',
    )
    .option(
      '--allow-simulated',
      'SEV-SNP: accept simulated evidence; the simulated ARK comes from --cert or $CIR_SIMULATED_ROOT (never for production)',
    )
    .option('--json', 'print exactly one JSON object on stdout')
    .action(async (f: AttestVerifyFlags) => {
      const r = await runAttestVerify(f);
      const o = r.outcome;
      if (f.json) process.stdout.write(`${JSON.stringify(o)}\n`);
      else if (o.ok || r.exitCode === 1) process.stdout.write(formatSummary(r));
      else process.stderr.write(`error [${o.code}]: ${o.detail}\n`);
      process.exitCode = r.exitCode;
    });
}
