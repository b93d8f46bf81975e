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

/** basicConstraints (RFC 5280 §4.2.1.9) as decoded at parse time. */
export interface ParsedBasicConstraints {
  readonly ca: boolean;
  readonly pathLength?: number;
}

/**
 * A certificate decoded once, eagerly. Every value the verifier needs is read here, so
 * nothing after parseCertificate touches @peculiar/x509's lazily-decoded getters (which
 * throw untyped AsnSchemaValidationError/TypeError on hostile bytes). The library object
 * itself is deliberately not kept.
 */
export interface ParsedCert {
  /** What the certificate is, for error details ("VCEK", "bundled ARK", ...). */
  readonly label: string;
  readonly der: Uint8Array;
  readonly parts: CertificateParts;
  readonly publicKey: KeyObject;
  /** Lower-case hex SHA-256 of the SubjectPublicKeyInfo DER. */
  readonly spkiSha256: string;
  /** Subject DN in RFC 4514-like text form (for error details and tests only). */
  readonly subject: string;
  /** Serial number as normalized hex (see normalizeSerialHex), for revocation checks. */
  readonly serialHex: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
  /**
   * The outer signatureAlgorithm as a WebCrypto algorithm object, or undefined when the
   * library does not recognise it (chain.ts then rejects the link).
   */
  readonly signatureAlgorithm?: { readonly name?: unknown; readonly hash?: { readonly name?: unknown }; readonly saltLength?: unknown };
  /** Decoded basicConstraints, when the extension is present. */
  readonly basicConstraints?: ParsedBasicConstraints;
  /** keyUsage bit flags (x509.KeyUsageFlags), when the extension is present. */
  readonly keyUsage?: number;
  /** Extension OIDs, each present at most once. */
  readonly extensions: ReadonlyMap<string, { readonly critical: boolean; readonly value: Uint8Array }>;
}

function badCert(label: string, detail: string, cause?: unknown): AttestationError {
  return new AttestationError('ERR_ATT_SNP_BAD_CERT', { detail: `${label}: ${detail}`, cause });
}

function basicConstraintsOf(bc: x509.BasicConstraintsExtension): ParsedBasicConstraints {
  return Object.freeze({ ca: bc.ca === true, ...(bc.pathLength !== undefined ? { pathLength: bc.pathLength } : {}) });
}

/**
 * Parses one DER certificate and decodes, eagerly, every field the verifier uses:
 * extensions (duplicates rejected), basicConstraints, keyUsage, validity, signature
 * algorithm, subject and public key. Throws ERR_ATT_SNP_BAD_CERT on anything malformed,
 * including a malformed value inside a known extension. Checks no signature (chain.ts).
 */
export function parseCertificate(derIn: Uint8Array, label: string): ParsedCert {
  const der = new Uint8Array(derIn); // SECURITY: private copy
  const parts = splitCertificate(der);
  if (!parts) throw badCert(label, 'not a DER X.509 certificate');
  // SECURITY: @peculiar/x509 decodes extension values, names and dates lazily, on first
  // access, and throws untyped errors (AsnSchemaValidationError, TypeError) on hostile
  // bytes. Every such access happens inside this try so a malformed certificate always
  // becomes ERR_ATT_SNP_BAD_CERT, and the library object is not kept afterwards.
  let decoded: Omit<ParsedCert, 'label' | 'der' | 'parts' | 'spkiSha256'>;
  try {
    const cert = new x509.X509Certificate(der);
    const publicKey = createPublicKey({ key: Buffer.from(parts.subjectPublicKeyInfo), format: 'der', type: 'spki' });
    const extensions = new Map<string, { critical: boolean; value: Uint8Array }>();
    for (const ext of cert.extensions) {
      // RFC 5280 §4.2: a certificate must not include more than one instance of an extension.
      if (extensions.has(ext.type)) throw badCert(label, `duplicate extension ${ext.type}`);
      extensions.set(ext.type, { critical: ext.critical, value: new Uint8Array(ext.value) });
    }
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    const ku = cert.getExtension(x509.KeyUsagesExtension);
    const notBefore = new Date(cert.notBefore.getTime());
    const notAfter = new Date(cert.notAfter.getTime());
    // SECURITY: an invalid Date compares false both ways and would pass a validity check.
    if (Number.isNaN(notBefore.getTime()) || Number.isNaN(notAfter.getTime())) throw badCert(label, 'invalid validity dates');
    if (bc && bc.pathLength !== undefined && !(Number.isSafeInteger(bc.pathLength) && bc.pathLength >= 0)) {
      throw badCert(label, 'basicConstraints pathLenConstraint is not a small non-negative integer');
    }
    let signatureAlgorithm: ParsedCert['signatureAlgorithm'];
    try {
      const alg: unknown = cert.signatureAlgorithm;
      signatureAlgorithm = alg && typeof alg === 'object' ? (alg as ParsedCert['signatureAlgorithm']) : undefined;
    } catch {
      signatureAlgorithm = undefined; // unknown algorithm: chain.ts rejects the link
    }
    const serialHex = normalizeSerialHex(cert.serialNumber);
    if (serialHex === undefined) throw badCert(label, 'serialNumber is not an INTEGER');
    decoded = {
      publicKey,
      subject: cert.subject,
      serialHex,
      notBefore,
      notAfter,
      ...(signatureAlgorithm ? { signatureAlgorithm } : {}),
      ...(bc ? { basicConstraints: basicConstraintsOf(bc) } : {}),
      ...(ku ? { keyUsage: ku.usages } : {}),
      extensions,
    };
  } catch (e) {
    if (e instanceof AttestationError) throw e;
    throw badCert(label, 'unparseable certificate, extension or public key', e);
  }
  return Object.freeze({
    label,
    der,
    parts,
    spkiSha256: toHex(sha256(parts.subjectPublicKeyInfo)),
    ...decoded,
  });
}

/**
 * Normalizes a serial number given as the hex of its INTEGER content bytes: lower case,
 * leading zero octets removed (so "00ab" and "AB" compare equal); "0" for zero.
 * Returns undefined for anything that is not an even-length hex string. Used to compare
 * certificate serials with CRL entries (RFC 5280 §5.3: same issuer, same serial).
 */
export function normalizeSerialHex(hex: string): string | undefined {
  if (typeof hex !== 'string' || hex.length === 0 || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
  const s = hex.toLowerCase().replace(/^(?:00)+/, '');
  return s === '' ? '0' : s;
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
