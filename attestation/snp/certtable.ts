import { AttestationError } from '../codes.js';

/**
 * Parser for the SEV-SNP extended-report certificate table: the GUID table the host
 * returns with SNP_GET_EXT_REPORT and that configfs-tsm exposes as `auxblob`.
 *
 * Spec: AMD GHCB specification (pub. 56421), "SNP Extended Guest Request", certificate
 * table: a sequence of entries { GUID (16 bytes), offset (u32 LE), length (u32 LE) }
 * terminated by an all-zero entry; offsets count from the start of the table.
 *
 * GUID byte order: the GUID's 16 bytes are stored in the order of its string form
 * (RFC 4122 / big-endian fields), which is what AMD's own `sev-guest` tools (libuuid
 * `uuid_parse`) and google/go-sev-guest (`abi.CertTableHeaderEntry`) read and write. A
 * table written with the little-endian "mixed" (Microsoft GUID) layout would show the
 * known GUIDs as unknown ones; that is kept and reported as unknown, never guessed at.
 *
 * Parsing only: no certificate is decoded or trusted here (verify.ts does that).
 */

/** Size of one table entry: GUID (16) + offset (4) + length (4). */
export const CERT_TABLE_ENTRY_SIZE = 24;
export const CERT_TABLE_GUID_SIZE = 16;
const OFF_ENTRY_OFFSET = 16;
const OFF_ENTRY_LENGTH = 20;
/** Bound on entries (the GHCB spec defines four GUIDs; hosts add a few vendor ones). */
export const CERT_TABLE_MAX_ENTRIES = 32;
/** Bound on the whole buffer: the GHCB certificate area is a handful of pages. */
export const CERT_TABLE_MAX_BYTES = 1024 * 1024;

export type SnpCertTableKind = 'vcek' | 'vlek' | 'ask' | 'ark';

/**
 * GUIDs from the GHCB spec. The ASK GUID also carries the ASVK in VLEK tables (there is
 * no separate ASVK GUID), so the verifier maps it by the report's SIGNING_KEY.
 */
export const SNP_CERT_TABLE_GUIDS: Readonly<Record<SnpCertTableKind, string>> = Object.freeze({
  vcek: '63da758d-e664-4564-adc5-f4b93be8accd',
  vlek: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
  ask: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ark: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
});

export interface SnpCertTableEntry {
  /** Lower-case GUID string, e.g. "63da758d-e664-4564-adc5-f4b93be8accd". */
  readonly guid: string;
  /** Set for the four GUIDs the spec defines; undefined for any other (kept, ignored). */
  readonly kind?: SnpCertTableKind;
  /** Copy of the entry's bytes (normally a DER certificate; not decoded here). */
  readonly data: Uint8Array;
}

/** A parsed certificate table. Frozen; byte fields are private copies. */
export interface SnpCertTable {
  /** Every entry in table order, unknown GUIDs included. */
  readonly entries: readonly SnpCertTableEntry[];
  readonly vcek?: Uint8Array;
  readonly vlek?: Uint8Array;
  /** The ASK GUID entry: the ASK, or the ASVK in a VLEK table. */
  readonly ask?: Uint8Array;
  readonly ark?: Uint8Array;
}

function bad(detail: string): never {
  throw new AttestationError('ERR_ATT_SNP_BAD_CERT_TABLE', { detail });
}

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

function guidToString(b: Uint8Array): string {
  const h = Buffer.from(b).toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** GUID string -> its 16 table bytes (string order). Throws ERR_ATT_BAD_ARGUMENT on a malformed GUID. */
export function guidToBytes(guid: string): Uint8Array {
  const g = typeof guid === 'string' ? guid.toLowerCase() : '';
  if (!GUID_RE.test(g)) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'malformed GUID' });
  return new Uint8Array(Buffer.from(g.replaceAll('-', ''), 'hex'));
}

const KIND_BY_GUID: ReadonlyMap<string, SnpCertTableKind> = new Map(
  (Object.entries(SNP_CERT_TABLE_GUIDS) as [SnpCertTableKind, string][]).map(([k, g]) => [g, k]),
);

/**
 * Parses a certificate table.
 *
 * Checks: the buffer is at most CERT_TABLE_MAX_BYTES; entries are read until the
 * all-zero terminator, which must be present (an empty buffer is an empty table); at most
 * CERT_TABLE_MAX_ENTRIES entries; every entry has a non-zero length, and its range lies
 * inside the buffer and after the header (terminator included); no two entries overlap;
 * no GUID appears twice; an all-zero GUID with a non-zero offset or length is rejected.
 *
 * Does NOT check: what the entries hold (certificates are parsed and chained by the
 * verifier), or bytes after the header that no entry points at (hosts pad to pages).
 * Unknown GUIDs are kept in `entries` and otherwise ignored.
 * Throws ERR_ATT_SNP_BAD_CERT_TABLE (or ERR_ATT_BAD_ARGUMENT for a non-Uint8Array).
 */
export function parseSnpCertTable(bytes: Uint8Array): SnpCertTable {
  if (!(bytes instanceof Uint8Array)) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'certificate table must be a Uint8Array' });
  if (bytes.length > CERT_TABLE_MAX_BYTES) bad(`larger than ${CERT_TABLE_MAX_BYTES} bytes`);
  const b = new Uint8Array(bytes); // SECURITY: private copy, checked and sliced from the same bytes
  if (b.length === 0) return Object.freeze({ entries: Object.freeze([]) });
  const dv = new DataView(b.buffer, b.byteOffset, b.byteLength);

  const raw: { guid: Uint8Array; offset: number; length: number }[] = [];
  let terminated = false;
  for (let i = 0; i <= CERT_TABLE_MAX_ENTRIES; i++) {
    const at = i * CERT_TABLE_ENTRY_SIZE;
    if (at + CERT_TABLE_ENTRY_SIZE > b.length) bad(`entry ${i} truncated (no terminator)`);
    const guid = b.slice(at, at + CERT_TABLE_GUID_SIZE);
    const offset = dv.getUint32(at + OFF_ENTRY_OFFSET, true);
    const length = dv.getUint32(at + OFF_ENTRY_LENGTH, true);
    const zeroGuid = guid.every((x) => x === 0);
    if (zeroGuid && offset === 0 && length === 0) {
      terminated = true;
      break;
    }
    if (i === CERT_TABLE_MAX_ENTRIES) bad(`more than ${CERT_TABLE_MAX_ENTRIES} entries`);
    if (zeroGuid) bad(`entry ${i} has a zero GUID`);
    raw.push({ guid, offset, length });
  }
  if (!terminated) bad('no terminator'); // unreachable: the loop either breaks or throws
  const headerEnd = (raw.length + 1) * CERT_TABLE_ENTRY_SIZE;

  const seen = new Set<string>();
  const entries: SnpCertTableEntry[] = [];
  for (const [i, e] of raw.entries()) {
    const guid = guidToString(e.guid);
    if (seen.has(guid)) bad(`duplicate GUID ${guid}`);
    seen.add(guid);
    if (e.length === 0) bad(`entry ${i} (${guid}) is empty`);
    // Plain numbers: offset + length < 2^33, exact in a double, so no wrap-around.
    if (e.offset < headerEnd) bad(`entry ${i} (${guid}) points into the table header`);
    if (e.offset + e.length > b.length) bad(`entry ${i} (${guid}) extends past the end of the buffer`);
    const kind = KIND_BY_GUID.get(guid);
    entries.push(Object.freeze({ guid, ...(kind ? { kind } : {}), data: b.slice(e.offset, e.offset + e.length) }));
  }
  const byOffset = [...raw].sort((x, y) => x.offset - y.offset);
  for (let i = 1; i < byOffset.length; i++) {
    const prev = byOffset[i - 1]!;
    if (prev.offset + prev.length > byOffset[i]!.offset) bad('entries overlap');
  }

  const table: { -readonly [K in keyof SnpCertTable]: SnpCertTable[K] } = { entries: Object.freeze(entries) };
  for (const e of entries) if (e.kind) table[e.kind] = e.data;
  return Object.freeze(table);
}

/**
 * Encodes a certificate table (tests, fakes, the simulated provider): header with one
 * entry per input in order, the terminator, then the data back to back.
 * Throws ERR_ATT_BAD_ARGUMENT on a malformed GUID or too many entries; does not check
 * for duplicates (so tests can build hostile tables).
 */
export function encodeSnpCertTable(entries: readonly { readonly guid: string; readonly data: Uint8Array }[]): Uint8Array {
  if (entries.length > CERT_TABLE_MAX_ENTRIES) throw new AttestationError('ERR_ATT_BAD_ARGUMENT', { detail: 'too many entries' });
  const headerEnd = (entries.length + 1) * CERT_TABLE_ENTRY_SIZE;
  const total = headerEnd + entries.reduce((n, e) => n + e.data.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let cursor = headerEnd;
  entries.forEach((e, i) => {
    const at = i * CERT_TABLE_ENTRY_SIZE;
    out.set(guidToBytes(e.guid), at);
    dv.setUint32(at + OFF_ENTRY_OFFSET, cursor, true);
    dv.setUint32(at + OFF_ENTRY_LENGTH, e.data.length, true);
    out.set(e.data, cursor);
    cursor += e.data.length;
  });
  return out;
}
