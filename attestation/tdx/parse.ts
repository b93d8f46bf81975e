import { toHex } from '../../common/bytes.js';
import { isPkiFailure, pemCertificates } from '../pki/index.js';
import { TdxError, type TdxErrorCode } from './codes.js';
import * as L from './layout.js';

/**
 * Intel TDX quote parsing: bytes -> a frozen, typed TdxQuote. No crypto, no I/O.
 *
 * Spec: Intel TDX DCAP Quoting Library API, appendix A.3/A.4 (see layout.ts). Every
 * declared length is checked against the bytes that remain before anything is sliced;
 * bytes after the signature data are tolerated (real quotes come in padded buffers) but
 * never read. Rejected: versions other than 4 and 5, a v5 body type other than TD 1.0/1.5
 * (or a body size that disagrees with it), tee_type other than TDX, an attestation key
 * type other than ECDSA P-256, a QE vendor id other than Intel's, and certification data
 * other than type 6 (QE report) wrapping type 5 (PCK chain, PEM).
 */

export type TdxQuoteVersion = 4 | 5;

export interface TdxQuoteHeader {
  readonly version: TdxQuoteVersion;
  readonly attestationKeyType: number;
  readonly teeType: number;
  readonly qeSvn: number;
  readonly pceSvn: number;
  readonly qeVendorId: Uint8Array;
  readonly userData: Uint8Array;
}

export interface TdReportBody {
  /** 2 = TD 1.0 (584 bytes), 3 = TD 1.5 (648 bytes). v4 quotes carry TD 1.0 bodies. */
  readonly bodyType: 2 | 3;
  readonly teeTcbSvn: Uint8Array;
  readonly mrSeam: Uint8Array;
  readonly mrSignerSeam: Uint8Array;
  readonly seamAttributes: Uint8Array;
  readonly tdAttributes: Uint8Array;
  readonly xfam: Uint8Array;
  readonly mrTd: Uint8Array;
  readonly mrConfigId: Uint8Array;
  readonly mrOwner: Uint8Array;
  readonly mrOwnerConfig: Uint8Array;
  readonly rtmr: readonly [Uint8Array, Uint8Array, Uint8Array, Uint8Array];
  readonly reportData: Uint8Array;
  /** TD 1.5 only. */
  readonly teeTcbSvn2?: Uint8Array;
  /** TD 1.5 only. */
  readonly mrServiceTd?: Uint8Array;
}

/** The QE's SGX report body (384 bytes). */
export interface QeReport {
  readonly raw: Uint8Array;
  readonly cpuSvn: Uint8Array;
  readonly miscSelect: number;
  readonly attributes: Uint8Array;
  readonly mrEnclave: Uint8Array;
  readonly mrSigner: Uint8Array;
  readonly isvProdId: number;
  readonly isvSvn: number;
  readonly reportData: Uint8Array;
}

export interface TdxQuote {
  readonly header: TdxQuoteHeader;
  readonly body: TdReportBody;
  /** Header (and v5 body descriptor) and body: the bytes the attestation key signed. */
  readonly signedRegion: Uint8Array;
  /** ECDSA P-256 signature, r||s big-endian. */
  readonly signature: Uint8Array;
  /** Attestation public key, x||y big-endian. */
  readonly attestationKey: Uint8Array;
  readonly qeReport: QeReport;
  /** ECDSA P-256 signature over qeReport.raw by the PCK key, r||s. */
  readonly qeReportSignature: Uint8Array;
  readonly qeAuthData: Uint8Array;
  /** The PCK chain as DER certificates, leaf first (from the type 5 PEM). */
  readonly pckChain: readonly Uint8Array[];
  /** Bytes after the signature data (never read, only counted). */
  readonly trailingBytes: number;
}

function fail(code: TdxErrorCode, detail: string): TdxError {
  return new TdxError(code, { detail });
}

/** A bounds-checked little-endian reader over a private copy of the input. */
class Reader {
  constructor(
    readonly b: Uint8Array,
    public off = 0,
  ) {}
  remaining(): number {
    return this.b.length - this.off;
  }
  need(n: number, what: string, code: TdxErrorCode = 'ERR_ATT_TDX_BAD_QUOTE'): void {
    // SECURITY: subarray silently truncates; every length is checked before slicing.
    if (!Number.isSafeInteger(n) || n < 0 || n > this.remaining()) {
      throw fail(code, `${what}: needs ${n} bytes at offset ${this.off}, ${this.remaining()} remain`);
    }
  }
  bytes(n: number, what: string, code?: TdxErrorCode): Uint8Array {
    this.need(n, what, code);
    const out = this.b.slice(this.off, this.off + n);
    this.off += n;
    return out;
  }
  u16(what: string, code?: TdxErrorCode): number {
    this.need(2, what, code);
    const v = this.b[this.off]! | (this.b[this.off + 1]! << 8);
    this.off += 2;
    return v;
  }
  u32(what: string, code?: TdxErrorCode): number {
    this.need(4, what, code);
    const v = (this.b[this.off]! | (this.b[this.off + 1]! << 8) | (this.b[this.off + 2]! << 16)) + this.b[this.off + 3]! * 0x1000000;
    this.off += 4;
    return v;
  }
}

const u16At = (b: Uint8Array, o: number): number => b[o]! | (b[o + 1]! << 8);
const u32At = (b: Uint8Array, o: number): number => (b[o]! | (b[o + 1]! << 8) | (b[o + 2]! << 16)) + b[o + 3]! * 0x1000000;

function parseHeader(r: Reader): TdxQuoteHeader {
  r.need(L.HEADER_SIZE, 'header');
  const h = r.bytes(L.HEADER_SIZE, 'header');
  const version = u16At(h, L.HDR_VERSION);
  if (version !== 4 && version !== 5) throw fail('ERR_ATT_TDX_UNSUPPORTED_VERSION', `version ${version}`);
  const attestationKeyType = u16At(h, L.HDR_ATT_KEY_TYPE);
  const teeType = u32At(h, L.HDR_TEE_TYPE);
  if (teeType !== L.TEE_TYPE_TDX) throw fail('ERR_ATT_TDX_UNSUPPORTED_TEE', `tee_type 0x${teeType.toString(16)}`);
  if (attestationKeyType !== L.ATT_KEY_TYPE_ECDSA_P256) {
    throw fail('ERR_ATT_TDX_UNSUPPORTED_KEY_TYPE', `att_key_type ${attestationKeyType}`);
  }
  const qeVendorId = h.slice(L.HDR_QE_VENDOR_ID, L.HDR_QE_VENDOR_ID + L.QE_VENDOR_ID_SIZE);
  if (toHex(qeVendorId) !== L.INTEL_QE_VENDOR_ID) throw fail('ERR_ATT_TDX_UNKNOWN_QE_VENDOR', `qe_vendor_id ${toHex(qeVendorId)}`);
  return Object.freeze({
    version,
    attestationKeyType,
    teeType,
    qeSvn: u16At(h, L.HDR_QE_SVN),
    pceSvn: u16At(h, L.HDR_PCE_SVN),
    qeVendorId,
    userData: h.slice(L.HDR_USER_DATA, L.HDR_USER_DATA + L.USER_DATA_SIZE),
  });
}

function parseBody(b: Uint8Array, bodyType: 2 | 3): TdReportBody {
  const at = (o: number, n: number): Uint8Array => b.slice(o, o + n);
  const m = (o: number): Uint8Array => at(o, L.MEASUREMENT_SIZE);
  const rtmr = [0, 1, 2, 3].map((i) => m(L.BODY_RTMR0 + i * L.MEASUREMENT_SIZE)) as unknown as TdReportBody['rtmr'];
  return Object.freeze({
    bodyType,
    teeTcbSvn: at(L.BODY_TEE_TCB_SVN, L.TEE_TCB_SVN_SIZE),
    mrSeam: m(L.BODY_MRSEAM),
    mrSignerSeam: m(L.BODY_MRSIGNERSEAM),
    seamAttributes: at(L.BODY_SEAM_ATTRIBUTES, L.ATTRIBUTES_SIZE),
    tdAttributes: at(L.BODY_TD_ATTRIBUTES, L.ATTRIBUTES_SIZE),
    xfam: at(L.BODY_XFAM, L.ATTRIBUTES_SIZE),
    mrTd: m(L.BODY_MRTD),
    mrConfigId: m(L.BODY_MRCONFIGID),
    mrOwner: m(L.BODY_MROWNER),
    mrOwnerConfig: m(L.BODY_MROWNERCONFIG),
    rtmr: Object.freeze(rtmr),
    reportData: at(L.BODY_REPORT_DATA, L.REPORT_DATA_SIZE),
    ...(bodyType === 3
      ? { teeTcbSvn2: at(L.BODY_TEE_TCB_SVN2, L.TEE_TCB_SVN_SIZE), mrServiceTd: m(L.BODY_MRSERVICETD) }
      : {}),
  });
}

function parseQeReport(raw: Uint8Array): QeReport {
  return Object.freeze({
    raw,
    cpuSvn: raw.slice(L.QE_CPUSVN, L.QE_CPUSVN + 16),
    miscSelect: u32At(raw, L.QE_MISCSELECT),
    attributes: raw.slice(L.QE_ATTRIBUTES, L.QE_ATTRIBUTES + 16),
    mrEnclave: raw.slice(L.QE_MRENCLAVE, L.QE_MRENCLAVE + 32),
    mrSigner: raw.slice(L.QE_MRSIGNER, L.QE_MRSIGNER + 32),
    isvProdId: u16At(raw, L.QE_ISVPRODID),
    isvSvn: u16At(raw, L.QE_ISVSVN),
    reportData: raw.slice(L.QE_REPORT_DATA, L.QE_REPORT_DATA + 64),
  });
}

/**
 * Parses a TDX quote (v4 or v5). Returns a frozen struct of copies. Throws TdxError
 * (bad-input codes) and nothing else. Checks structure only: no signature, chain, binding
 * or collateral (verify.ts).
 */
export function parseTdxQuote(input: Uint8Array): TdxQuote {
  if (!(input instanceof Uint8Array)) throw fail('ERR_ATT_TDX_BAD_ARGUMENT', 'quote must be bytes');
  if (input.length > L.MAX_QUOTE_BYTES) throw fail('ERR_ATT_TDX_BAD_QUOTE', `larger than ${L.MAX_QUOTE_BYTES} bytes`);
  const bytes = new Uint8Array(input); // SECURITY: private copy before any check
  const r = new Reader(bytes);
  const header = parseHeader(r);

  let bodyType: 2 | 3 = L.BODY_TYPE_TD10;
  let bodySize = L.TD10_BODY_SIZE;
  if (header.version === 5) {
    const t = r.u16('body type');
    const size = r.u32('body size');
    if (t !== L.BODY_TYPE_TD10 && t !== L.BODY_TYPE_TD15) throw fail('ERR_ATT_TDX_UNSUPPORTED_VERSION', `v5 body type ${t}`);
    bodyType = t;
    bodySize = t === L.BODY_TYPE_TD10 ? L.TD10_BODY_SIZE : L.TD15_BODY_SIZE;
    if (size !== bodySize) throw fail('ERR_ATT_TDX_BAD_QUOTE', `v5 body size ${size}, body type ${t} needs ${bodySize}`);
  }
  const body = parseBody(r.bytes(bodySize, 'TD report body'), bodyType);
  const signedRegion = bytes.slice(0, r.off);

  const sigLen = r.u32('signature data length');
  r.need(sigLen, 'signature data');
  const trailingBytes = r.remaining() - sigLen;
  const s = new Reader(r.bytes(sigLen, 'signature data'));
  const signature = s.bytes(L.ECDSA_SIG_SIZE, 'quote signature');
  const attestationKey = s.bytes(L.ATT_KEY_SIZE, 'attestation key');

  const CD = 'ERR_ATT_TDX_BAD_CERT_DATA' as const;
  const outerType = s.u16('certification data type', CD);
  const outerSize = s.u32('certification data size', CD);
  if (outerType !== L.CERT_TYPE_QE_REPORT) throw fail(CD, `certification data type ${outerType}, expected 6`);
  if (outerSize !== s.remaining()) throw fail(CD, `certification data size ${outerSize}, ${s.remaining()} bytes remain`);
  const c = new Reader(s.bytes(outerSize, 'certification data', CD));
  const qeReport = parseQeReport(c.bytes(L.QE_REPORT_SIZE, 'QE report', CD));
  const qeReportSignature = c.bytes(L.ECDSA_SIG_SIZE, 'QE report signature', CD);
  const authSize = c.u16('QE auth data size', CD);
  const qeAuthData = c.bytes(authSize, 'QE auth data', CD);
  const innerType = c.u16('PCK certification data type', CD);
  const innerSize = c.u32('PCK certification data size', CD);
  if (innerType !== L.CERT_TYPE_PCK_CHAIN) throw fail(CD, `inner certification data type ${innerType}, expected 5`);
  if (innerSize !== c.remaining()) throw fail(CD, `PCK certification data size ${innerSize}, ${c.remaining()} bytes remain`);
  const pem = c.bytes(innerSize, 'PCK chain', CD);
  let pckChain: Uint8Array[];
  try {
    pckChain = pemCertificates(pem, 'PCK chain');
  } catch (e) {
    if (isPkiFailure(e)) throw new TdxError(CD, { detail: e.detail, cause: e });
    throw e;
  }
  if (pckChain.length !== 3) throw fail(CD, `PCK chain has ${pckChain.length} certificates, expected 3 (PCK, CA, root)`);

  return Object.freeze({
    header,
    body,
    signedRegion,
    signature,
    attestationKey,
    qeReport,
    qeReportSignature,
    qeAuthData,
    pckChain: Object.freeze(pckChain),
    trailingBytes,
  });
}
