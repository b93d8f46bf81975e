import { createPublicKey, type KeyObject } from 'node:crypto';
import { AttestationError } from '../codes.js';
import { splitCertificate, decodeSmallUint, decodeIa5String, decodeSingle, TAG_OCTET_STRING, type CertificateParts } from '../der.js';
import { sha256, toHex } from '../../common/bytes.js';
import { x509 } from '../../common/x509.js';
import type { SnpProduct } from './abi.js';

/**
 * Certificate parsing for SEV-SNP (internal): DER -> ParsedCert, and the AMD VCEK/VLEK
 * extensions -> typed values. No signature is checked here (chain.ts does that).
 *
 * Spec: AMD "Versioned Chip Endorsement Key (VCEK) Certificate and KDS Interface
 * Specification" (pub. 57230), table "VCEK Certificate Extensions", and the VLEK
 * equivalent; OIDs 1.3.6.1.4.1.3704.1.*.
 */

export const OID_STRUCT_VERSION = '1.3.6.1.4.1.3704.1.1';
export const OID_PRODUCT_NAME = '1.3.6.1.4.1.3704.1.2';
export const OID_BL_SPL = '1.3.6.1.4.1.3704.1.3.1';
export const OID_TEE_SPL = '1.3.6.1.4.1.3704.1.3.2';
export const OID_SNP_SPL = '1.3.6.1.4.1.3704.1.3.3';
export const OID_UCODE_SPL = '1.3.6.1.4.1.3704.1.3.8';
export const OID_FMC_SPL = '1.3.6.1.4.1.3704.1.3.9';
export const OID_HWID = '1.3.6.1.4.1.3704.1.4';
export const OID_CSP_ID = '1.3.6.1.4.1.3704.1.5';

export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_KEY_USAGE = '2.5.29.15';

/** hwID length: 64 bytes, 8 on Turin (MANIFEST.md, "VCEK/VLEK X.509 extensions"). */
export const HWID_LENGTH = 64;
export const HWID_LENGTH_TURIN = 8;

export interface ParsedCert {
  /** What the certificate is, for error details ("VCEK", "bundled ARK", ...). */
  readonly label: string;
  readonly der: Uint8Array;
  readonly parts: CertificateParts;
  readonly cert: x509.X509Certificate;
  readonly publicKey: KeyObject;
  /** Lower-case hex SHA-256 of the SubjectPublicKeyInfo DER. */
  readonly spkiSha256: string;
  /** Extension OIDs, each present at most once. */
  readonly extensions: ReadonlyMap<string, { readonly critical: boolean; readonly value: Uint8Array }>;
}

function badCert(label: string, detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CERT', { detail: `${label}: ${detail}`, cause });
}

/** Parses one DER certificate. Throws ERR_ATT_SNP_BAD_CERT on anything malformed. */
export function parseCertificate(derIn: Uint8Array, label: string): ParsedCert {
  const der = new Uint8Array(derIn); // SECURITY: private copy
  const parts = splitCertificate(der);
  if (!parts) throw badCert(label, 'not a DER X.509 certificate');
  let cert: x509.X509Certificate;
  let publicKey: KeyObject;
  try {
    cert = new x509.X509Certificate(der);
    publicKey = createPublicKey({ key: Buffer.from(parts.subjectPublicKeyInfo), format: 'der', type: 'spki' });
  } catch (e) {
    throw badCert(label, 'unparseable certificate or public key', e);
  }
  const extensions = new Map<string, { critical: boolean; value: Uint8Array }>();
  for (const ext of cert.extensions) {
    // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
    if (extensions.has(ext.type)) throw badCert(label, `duplicate extension ${ext.type}`);
    extensions.set(ext.type, { critical: ext.critical, value: new Uint8Array(ext.value) });
  }
  return Object.freeze({
    label,
    der,
    parts,
    cert,
    publicKey,
    spkiSha256: toHex(sha256(parts.subjectPublicKeyInfo)),
    extensions,
  });
}

/** Parses a PEM or DER certificate given as bytes or text (used for configuration input). */
export function certificateDer(input: Uint8Array | string, label: string): Uint8Array {
  if (typeof input !== 'string') return new Uint8Array(input);
  let ders: ArrayBuffer[];
  try {
    ders = x509.PemConverter.decode(input);
  } catch (e) {
    throw badCert(label, 'bad PEM', e);
  }
  if (ders.length !== 1) throw badCert(label, 'expected exactly one PEM certificate');
  return new Uint8Array(ders[0]!);
}

/** TCB security patch levels carried in a VCEK/VLEK. */
export interface SnpCertTcb {
  readonly bootloader: number;
  readonly tee: number;
  readonly snp: number;
  readonly microcode: number;
  readonly fmc?: number;
}

export interface SnpKeyCertInfo {
  readonly structVersion?: number;
  /** productName as written, e.g. "Milan-B0", "Genoa", "Turin". */
  readonly productName: string;
  readonly product: SnpProduct;
  readonly tcb: SnpCertTcb;
  /** VCEK only: the chip's hwID (64 bytes; 8 on Turin). */
  readonly hwId?: Uint8Array;
  /** VLEK only: the cloud provider the key was issued to. */
  readonly cspId?: string;
}

const PRODUCT_NAME_RE = /^(Milan|Genoa|Turin)(?:-[A-Z][0-9])?$/;

function badExt(label: string, detail: string): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CERT_EXTENSION', { detail: `${label}: ${detail}` });
}

/**
 * Reads the AMD extensions of a VCEK or VLEK: productName (required, Milan/Genoa/Turin
 * with an optional stepping suffix), blSPL, teeSPL, snpSPL, ucodeSPL (required, 0..255),
 * fmcSPL (required for Turin), hwID (raw or OCTET STRING-wrapped, length 64 or 8 on
 * Turin) and cspID. Does not compare them with a report (verify.ts does).
 */
export function readSnpKeyCertInfo(c: ParsedCert): SnpKeyCertInfo {
  const raw = (oid: string): Uint8Array | undefined => c.extensions.get(oid)?.value;
  const productRaw = raw(OID_PRODUCT_NAME);
  const productName = productRaw && decodeIa5String(productRaw);
  const m = productName === undefined ? null : PRODUCT_NAME_RE.exec(productName);
  if (!productName || !m) throw badExt(c.label, 'productName missing or not Milan/Genoa/Turin');
  const product = m[1] as SnpProduct;

  const spl = (oid: string, name: string): number => {
    const v = raw(oid);
    const n = v && decodeSmallUint(v);
    if (n === undefined || n > 0xff) throw badExt(c.label, `${name} missing or not an INTEGER 0..255`);
    return n;
  };
  const tcb: SnpCertTcb = Object.freeze({
    bootloader: spl(OID_BL_SPL, 'blSPL'),
    tee: spl(OID_TEE_SPL, 'teeSPL'),
    snp: spl(OID_SNP_SPL, 'snpSPL'),
    microcode: spl(OID_UCODE_SPL, 'ucodeSPL'),
    ...(product === 'Turin' ? { fmc: spl(OID_FMC_SPL, 'fmcSPL') } : {}),
  });

  let hwId: Uint8Array | undefined;
  const hw = raw(OID_HWID);
  if (hw) {
    const want = product === 'Turin' ? HWID_LENGTH_TURIN : HWID_LENGTH;
    // Real KDS certificates store hwID raw; some tools wrap it in an OCTET STRING. The
    // length decides, so the two readings can never be confused.
    if (hw.length === want) hwId = hw;
    else if (hw.length === want + 2) hwId = decodeSingle(hw, TAG_OCTET_STRING);
    if (!hwId || hwId.length !== want) throw badExt(c.label, `hwID must be ${want} bytes`);
  }

  let cspId: string | undefined;
  const csp = raw(OID_CSP_ID);
  if (csp) {
    cspId = decodeIa5String(csp);
    if (cspId === undefined) throw badExt(c.label, 'cspID is not an IA5String');
  }

  const sv = raw(OID_STRUCT_VERSION);
  let structVersion: number | undefined;
  if (sv) {
    structVersion = decodeSmallUint(sv);
    if (structVersion === undefined) throw badExt(c.label, 'structVersion is not an INTEGER');
  }

  return Object.freeze({
    ...(structVersion !== undefined ? { structVersion } : {}),
    productName,
    product,
    tcb,
    ...(hwId ? { hwId } : {}),
    ...(cspId !== undefined ? { cspId } : {}),
  });
}
