import { toHex } from '../../common/bytes.js';
import { children, decodeSmallUint, readTlv, TAG_INTEGER, TAG_OCTET_STRING, TAG_SEQUENCE, type Tlv } from '../der.js';
import { oidAt, type Certificate } from '../pki/index.js';
import { TdxError } from './codes.js';

/**
 * The Intel SGX extension of a PCK certificate (OID 1.2.840.113741.1.13.1).
 *
 * Spec: Intel "SGX PCK Certificate and Certificate Revocation List Profile
 * Specification", section "Intel SGX PCK Certificate" table "SGX Extensions": a SEQUENCE
 * of (OID, value) pairs; .2 TCB is itself a SEQUENCE of (OID .2.1 ... .2.16 sgxtcbcomp
 * INTEGER, .2.17 pcesvn INTEGER, .2.18 cpusvn OCTET STRING(16)); .3 PCE-ID OCTET
 * STRING(2); .4 FMSPC OCTET STRING(6).
 */

export const OID_SGX_EXTENSIONS = '1.2.840.113741.1.13.1';
const SGX = OID_SGX_EXTENSIONS;

export interface PckSgxInfo {
  /** 16 SGX TCB component SVNs (sgxtcbcomp01..16), 0..255. */
  readonly sgxTcbComponents: readonly number[];
  readonly pceSvn: number;
  readonly cpuSvn: Uint8Array;
  /** Lower-case hex, 6 bytes. */
  readonly fmspc: string;
  /** Lower-case hex, 2 bytes. */
  readonly pceId: string;
}

function bad(detail: string): TdxError {
  return new TdxError('ERR_ATT_TDX_BAD_PCK_EXTENSION', { detail: `PCK: ${detail}` });
}

/** Reads a SEQUENCE OF SEQUENCE { OID, value } into a map; duplicates are malformed. */
function pairs(b: Uint8Array, seq: Tlv, what: string): Map<string, Tlv> {
  if (seq.tag !== TAG_SEQUENCE) throw bad(`${what} is not a SEQUENCE`);
  const items = children(b, seq);
  if (!items) throw bad(`${what} does not decode`);
  const out = new Map<string, Tlv>();
  for (const item of items) {
    const kv = item.tag === TAG_SEQUENCE ? children(b, item) : undefined;
    if (!kv || kv.length !== 2) throw bad(`${what} entry is not (OID, value)`);
    const oid = oidAt(b, kv[0]!);
    if (oid === undefined) throw bad(`${what} entry OID does not decode`);
    if (out.has(oid)) throw bad(`${what} has a duplicate ${oid}`);
    out.set(oid, kv[1]!);
  }
  return out;
}

const slice = (b: Uint8Array, t: Tlv): Uint8Array => b.slice(t.start, t.end);

function octets(b: Uint8Array, t: Tlv | undefined, size: number, what: string): Uint8Array {
  if (!t || t.tag !== TAG_OCTET_STRING || t.end - t.contentStart !== size) throw bad(`${what} missing or not OCTET STRING(${size})`);
  return b.slice(t.contentStart, t.end);
}

function smallInt(b: Uint8Array, t: Tlv | undefined, max: number, what: string): number {
  const v = t && t.tag === TAG_INTEGER ? decodeSmallUint(slice(b, t)) : undefined;
  if (v === undefined || v > max) throw bad(`${what} missing or not an INTEGER 0..${max}`);
  return v;
}

/** Reads FMSPC, PCE-ID and the TCB from a parsed PCK certificate. Throws ERR_ATT_TDX_BAD_PCK_EXTENSION. */
export function readPckSgxInfo(pck: Certificate): PckSgxInfo {
  const ext = pck.extensions.get(SGX);
  if (!ext) throw bad('SGX extension missing');
  const b = ext.value;
  const top = readTlv(b, 0);
  if (!top || top.end !== b.length) throw bad('SGX extension does not decode');
  const m = pairs(b, top, 'SGX extension');
  const tcbTlv = m.get(`${SGX}.2`);
  if (!tcbTlv) throw bad('TCB missing');
  const tcb = pairs(b, tcbTlv, 'TCB');
  const sgxTcbComponents: number[] = [];
  for (let i = 1; i <= 16; i++) sgxTcbComponents.push(smallInt(b, tcb.get(`${SGX}.2.${i}`), 255, `sgxtcbcomp${String(i).padStart(2, '0')}svn`));
  const pceSvn = smallInt(b, tcb.get(`${SGX}.2.17`), 0xffff, 'pcesvn');
  const cpuSvn = octets(b, tcb.get(`${SGX}.2.18`), 16, 'cpusvn');
  return Object.freeze({
    sgxTcbComponents: Object.freeze(sgxTcbComponents),
    pceSvn,
    cpuSvn,
    fmspc: toHex(octets(b, m.get(`${SGX}.4`), 6, 'FMSPC')),
    pceId: toHex(octets(b, m.get(`${SGX}.3`), 2, 'PCE-ID')),
  });
}
