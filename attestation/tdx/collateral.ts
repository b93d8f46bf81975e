import { z } from 'zod';
import { fromHex } from '../../common/bytes.js';
import { TdxError } from './codes.js';
import { topLevelValues, utf8 } from './json.js';

/**
 * Intel PCS collateral for TDX: TCB Info, QE Identity (each a signed JSON object with its
 * issuer chain), the PCK CRL and the Intel SGX Root CA CRL. This module only parses and
 * normalises collateral; verify.ts checks signatures, chains, CRLs and dates.
 *
 * Spec: Intel "Provisioning Certification Service for ECDSA Attestation" API v4:
 * GET /tdx/certification/v4/tcb (TCB Info v3, header TCB-Info-Issuer-Chain),
 * GET /tdx/certification/v4/qe/identity (QE Identity v2, header
 * SGX-Enclave-Identity-Issuer-Chain), GET /sgx/certification/v4/pckcrl (header
 * SGX-PCK-CRL-Issuer-Chain); the root CA CRL from the Root CA's CRL distribution point.
 * Intel "TDX TCB Info" and "Enclave Identity" JSON schema documents for the fields.
 */

/** A signed JSON object exactly as transmitted: the object text and its r||s signature. */
export interface SignedJson {
  /** The exact text of the `tcbInfo` / `enclaveIdentity` value, as signed. */
  readonly raw: string;
  /** ECDSA P-256 signature, r||s (64 bytes). */
  readonly signature: Uint8Array;
}

/** Everything needed to appraise a quote's TCB. All fields are as Intel serves them. */
export interface TdxCollateral {
  readonly tcbInfo: SignedJson;
  /** PEM: Intel SGX TCB Signing certificate, then the Root CA. */
  readonly tcbInfoIssuerChain: string;
  readonly qeIdentity: SignedJson;
  /** PEM: Intel SGX TCB Signing certificate, then the Root CA. */
  readonly qeIdentityIssuerChain: string;
  /** PCK CRL (DER or PEM bytes) of the CA that issued the PCK (Platform or Processor CA). */
  readonly pckCrl?: Uint8Array;
  /** PEM: the PCK CRL issuer, then the Root CA (informational: the quote's chain decides). */
  readonly pckCrlIssuerChain?: string;
  /** Intel SGX Root CA CRL (DER or PEM bytes). */
  readonly rootCaCrl?: Uint8Array;
}

/** Bounds on collateral sizes: real TCB Info is under 16 KiB, CRLs a few KiB. */
export const MAX_COLLATERAL_JSON_CHARS = 1024 * 1024;

function bad(detail: string, cause?: unknown): TdxError {
  return new TdxError('ERR_ATT_TDX_BAD_COLLATERAL', { detail, cause });
}

function signatureHex(v: unknown, what: string): Uint8Array {
  const b = typeof v === 'string' && v.length === 128 ? fromHex(v) : undefined;
  if (!b) throw bad(`${what}: signature must be 128 hex digits (r||s)`);
  return new Uint8Array(b);
}

/**
 * Splits a PCS response body `{"<key>": {...}, "signature": "<hex>"}` into the exact
 * object text and the signature. Accepts bytes (strict UTF-8) or text.
 */
export function signedJsonFromBody(body: string | Uint8Array, key: 'tcbInfo' | 'enclaveIdentity'): SignedJson {
  const text = typeof body === 'string' ? body : utf8(body);
  if (text === undefined) throw bad(`${key} body is not UTF-8`);
  if (text.length > MAX_COLLATERAL_JSON_CHARS) throw bad(`${key} body too large`);
  const values = topLevelValues(text);
  if (!values) throw bad(`${key} body is not a JSON object with unique keys`);
  const raw = values.get(key);
  const sig = values.get('signature');
  if (raw === undefined || !raw.startsWith('{')) throw bad(`${key} body lacks the "${key}" object`);
  if (sig === undefined) throw bad(`${key} body lacks "signature"`);
  let sigValue: unknown;
  try {
    sigValue = JSON.parse(sig);
  } catch (e) {
    throw bad(`${key} signature is not JSON`, e);
  }
  return Object.freeze({ raw, signature: signatureHex(sigValue, key) });
}

export interface PcsCollateralParts {
  readonly tcbInfoBody: string | Uint8Array;
  readonly tcbInfoIssuerChain: string;
  readonly qeIdentityBody: string | Uint8Array;
  readonly qeIdentityIssuerChain: string;
  readonly pckCrl?: Uint8Array;
  readonly pckCrlIssuerChain?: string;
  readonly rootCaCrl?: Uint8Array;
}

function str(v: unknown, what: string): string {
  if (typeof v !== 'string' || v.length > MAX_COLLATERAL_JSON_CHARS) throw bad(`${what} must be a string`);
  return v;
}

/** Builds TdxCollateral from PCS response bodies and header values (layout (a) in memory). */
export function tdxCollateralFromPcs(p: PcsCollateralParts): TdxCollateral {
  if (typeof p !== 'object' || p === null) throw bad('collateral parts must be an object');
  const bytesOrUndef = (v: unknown, what: string): Uint8Array | undefined => {
    if (v === undefined) return undefined;
    if (!(v instanceof Uint8Array)) throw bad(`${what} must be bytes`);
    return new Uint8Array(v);
  };
  const pckCrl = bytesOrUndef(p.pckCrl, 'pckCrl');
  const rootCaCrl = bytesOrUndef(p.rootCaCrl, 'rootCaCrl');
  return Object.freeze({
    tcbInfo: signedJsonFromBody(p.tcbInfoBody, 'tcbInfo'),
    tcbInfoIssuerChain: str(p.tcbInfoIssuerChain, 'tcbInfoIssuerChain'),
    qeIdentity: signedJsonFromBody(p.qeIdentityBody, 'enclaveIdentity'),
    qeIdentityIssuerChain: str(p.qeIdentityIssuerChain, 'qeIdentityIssuerChain'),
    ...(pckCrl ? { pckCrl } : {}),
    ...(p.pckCrlIssuerChain !== undefined ? { pckCrlIssuerChain: str(p.pckCrlIssuerChain, 'pckCrlIssuerChain') } : {}),
    ...(rootCaCrl ? { rootCaCrl } : {}),
  });
}

/**
 * Parses the single-file JSON collateral format (dcap-qvl's QuoteCollateralV3
 * serialisation): string fields `tcb_info` and `qe_identity` hold the exact signed object
 * text, `tcb_info_signature` / `qe_identity_signature` are r||s hex, `*_issuer_chain` are
 * PEM, `pck_crl` / `root_ca_crl` are hex DER. Unknown fields are rejected.
 */
export function parseTdxCollateralJson(input: string | Uint8Array): TdxCollateral {
  const text = typeof input === 'string' ? input : utf8(input);
  if (text === undefined) throw bad('collateral file is not UTF-8');
  if (text.length > MAX_COLLATERAL_JSON_CHARS * 4) throw bad('collateral file too large');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw bad('collateral file is not JSON', e);
  }
  const r = DcapCollateralSchema.safeParse(v);
  if (!r.success) throw bad(`collateral file: invalid field(s) ${r.error.issues.map((i) => i.path.join('.') || '(root)').join(', ')}`);
  const d = r.data;
  const crl = (h: string | undefined, what: string): Uint8Array | undefined => {
    if (h === undefined) return undefined;
    const b = fromHex(h);
    if (!b || b.length === 0) throw bad(`${what} must be hex DER`);
    return new Uint8Array(b);
  };
  const pckCrl = crl(d.pck_crl, 'pck_crl');
  const rootCaCrl = crl(d.root_ca_crl, 'root_ca_crl');
  const obj = (raw: string, what: string): string => {
    const t = raw.trim();
    if (t !== raw || !t.startsWith('{') || topLevelValues(t) === undefined) throw bad(`${what} must be the exact JSON object text`);
    return raw;
  };
  return Object.freeze({
    tcbInfo: Object.freeze({ raw: obj(d.tcb_info, 'tcb_info'), signature: signatureHex(d.tcb_info_signature, 'tcb_info') }),
    tcbInfoIssuerChain: d.tcb_info_issuer_chain,
    qeIdentity: Object.freeze({ raw: obj(d.qe_identity, 'qe_identity'), signature: signatureHex(d.qe_identity_signature, 'qe_identity') }),
    qeIdentityIssuerChain: d.qe_identity_issuer_chain,
    ...(pckCrl ? { pckCrl } : {}),
    ...(d.pck_crl_issuer_chain !== undefined ? { pckCrlIssuerChain: d.pck_crl_issuer_chain } : {}),
    ...(rootCaCrl ? { rootCaCrl } : {}),
  });
}

const s = z.string().max(MAX_COLLATERAL_JSON_CHARS);
const DcapCollateralSchema = z.strictObject({
  pck_crl_issuer_chain: s.optional(),
  root_ca_crl: s.optional(),
  pck_crl: s.optional(),
  tcb_info_issuer_chain: s,
  tcb_info: s,
  tcb_info_signature: s,
  qe_identity_issuer_chain: s,
  qe_identity: s,
  qe_identity_signature: s,
});

// --- TCB Info v3 and QE Identity v2 (the signed objects) ---------------------------------

export const TCB_STATUSES = [
  'UpToDate',
  'SWHardeningNeeded',
  'ConfigurationNeeded',
  'ConfigurationAndSWHardeningNeeded',
  'OutOfDate',
  'OutOfDateConfigurationNeeded',
  'Revoked',
] as const;
export type TcbStatus = (typeof TCB_STATUSES)[number];

const ISO_RE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?Z$/;
const isoDate = z
  .string()
  .regex(ISO_RE, 'must be an ISO 8601 UTC time')
  .transform((v, ctx) => {
    const d = new Date(v);
    if (Number.isNaN(d.getTime())) {
      ctx.addIssue({ code: 'custom', message: 'invalid date' });
      return z.NEVER;
    }
    return d;
  });
const hex = (bytes: number) =>
  z
    .string()
    .regex(new RegExp(`^[0-9a-fA-F]{${bytes * 2}}$`))
    .transform((v) => v.toLowerCase());
const svn = z.number().int().min(0).max(255);
const u16 = z.number().int().min(0).max(0xffff);
const status = z.enum(TCB_STATUSES);
const advisories = z.array(z.string().regex(/^[A-Za-z0-9-]{1,64}$/)).max(256).optional();
const component = z.object({ svn, category: z.string().max(128).optional(), type: z.string().max(128).optional() });

const TdxTcbLevelSchema = z.object({
  tcb: z.object({
    sgxtcbcomponents: z.array(component).length(16),
    pcesvn: u16,
    tdxtcbcomponents: z.array(component).length(16),
  }),
  tcbDate: isoDate,
  tcbStatus: status,
  advisoryIDs: advisories,
});

const IsvLevelSchema = z.object({
  tcb: z.object({ isvsvn: u16 }),
  tcbDate: isoDate,
  tcbStatus: status,
  advisoryIDs: advisories,
});

const TdxModuleSchema = z.object({ mrsigner: hex(48), attributes: hex(8), attributesMask: hex(8) });

export const TdxTcbInfoSchema = z.object({
  id: z.literal('TDX'),
  version: z.literal(3),
  issueDate: isoDate,
  nextUpdate: isoDate,
  fmspc: hex(6),
  pceId: hex(2),
  tcbType: z.literal(0),
  tcbEvaluationDataNumber: z.number().int().min(0),
  tdxModule: TdxModuleSchema,
  tdxModuleIdentities: z
    .array(
      TdxModuleSchema.extend({
        id: z.string().regex(/^TDX_[0-9A-F]{2}$/),
        tcbLevels: z.array(IsvLevelSchema).min(1).max(256),
      }),
    )
    .max(256)
    .optional(),
  tcbLevels: z.array(TdxTcbLevelSchema).min(1).max(256),
});
export type TdxTcbInfo = z.infer<typeof TdxTcbInfoSchema>;
export type TdxTcbLevel = z.infer<typeof TdxTcbLevelSchema>;
export type IsvTcbLevel = z.infer<typeof IsvLevelSchema>;

export const TdxQeIdentitySchema = z.object({
  id: z.literal('TD_QE'),
  version: z.literal(2),
  issueDate: isoDate,
  nextUpdate: isoDate,
  tcbEvaluationDataNumber: z.number().int().min(0),
  miscselect: hex(4),
  miscselectMask: hex(4),
  attributes: hex(16),
  attributesMask: hex(16),
  mrsigner: hex(32),
  isvprodid: u16,
  tcbLevels: z.array(IsvLevelSchema).min(1).max(256),
});
export type TdxQeIdentity = z.infer<typeof TdxQeIdentitySchema>;

function parseSigned<T>(raw: string, schema: z.ZodType<T>, what: string): T {
  let v: unknown;
  try {
    v = JSON.parse(raw);
  } catch (e) {
    throw bad(`${what} is not JSON`, e);
  }
  const r = schema.safeParse(v);
  if (!r.success) {
    throw bad(`${what}: invalid field(s) ${r.error.issues.slice(0, 8).map((i) => i.path.join('.') || '(root)').join(', ')}`);
  }
  return r.data;
}

/** Parses the (already signature-checked) TCB Info object text. Throws ERR_ATT_TDX_BAD_COLLATERAL. */
export function parseTcbInfo(raw: string): TdxTcbInfo {
  return parseSigned(raw, TdxTcbInfoSchema, 'tcbInfo');
}

/** Parses the (already signature-checked) QE Identity object text. Throws ERR_ATT_TDX_BAD_COLLATERAL. */
export function parseQeIdentity(raw: string): TdxQeIdentity {
  return parseSigned(raw, TdxQeIdentitySchema, 'enclaveIdentity');
}
