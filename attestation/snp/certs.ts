import { AttestationError } from '../codes.js';
import { decodeSmallUint, decodeIa5String, decodeSingle, TAG_OCTET_STRING } from '../der.js';
import { x509 } from '../../common/x509.js';
import { parseCertificate as parsePkiCertificate, translatePkiFailure, type Certificate } from '../pki/index.js';
import type { SnpProduct } from './abi.js';

/**
 * Certificate parsing for SEV-SNP (internal): DER -> ParsedCert (with the shared X.509
 * decoder in ../pki), and the AMD VCEK/VLEK extensions -> typed values. No signature is
 * checked here (chain.ts does that).
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

export { OID_BASIC_CONSTRAINTS, OID_KEY_USAGE, normalizeSerialHex } from '../pki/index.js';

/** hwID length: 64 bytes, 8 on Turin (MANIFEST.md, "VCEK/VLEK X.509 extensions"). */
export const HWID_LENGTH = 64;
export const HWID_LENGTH_TURIN = 8;

/**
 * A certificate decoded once, eagerly, by pki/cert.ts: every value the verifier needs is
 * read at parse time, so nothing afterwards touches @peculiar/x509's lazily-decoded
 * getters (which throw untyped errors on hostile bytes). `signatureAlgorithm` is the
 * recognised algorithm ('rsa-pss-sha384' for AMD's chains) or undefined.
 */
export type ParsedCert = Certificate;

function badCert(label: string, detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CERT', { detail: `${label}: ${detail}`, cause });
}

/**
 * Parses one DER certificate (pki/cert.ts parseCertificate), decoding eagerly every field
 * the verifier uses: extensions (duplicates rejected), basicConstraints, keyUsage,
 * validity, signature algorithm, serial, subject and public key. Throws
 * ERR_ATT_SNP_BAD_CERT on anything malformed, including a malformed value inside a known
 * extension. Checks no signature or date (chain.ts) and reads no AMD extension
 * (readSnpKeyCertInfo).
 */
export function parseCertificate(der: Uint8Array, label: string): ParsedCert {
  return translatePkiFailure(
    () => parsePkiCertificate(der, label),
    (f) => new AttestationError('ERR_ATT_SNP_BAD_CERT', { detail: f.detail, cause: f }),
  );
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
