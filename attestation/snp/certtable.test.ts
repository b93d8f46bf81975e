import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import { CERT_TABLE_ENTRY_SIZE, CERT_TABLE_MAX_ENTRIES, encodeSnpCertTable, guidToBytes, parseSnpCertTable, SNP_CERT_TABLE_GUIDS as G } from './certtable.js';
import { verifySnpEvidence } from './verify.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { mintTestChain, type TestChain } from '../sim/testing.js';

const NOW = new Date('2026-06-01T00:00:00Z');
const RD = new Uint8Array(64).fill(3);
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

function codeOf(f: () => unknown): AttestationErrorCode | 'no error' | 'foreign error' {
  try {
    f();
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

async function asyncCodeOf(p: Promise<unknown>): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

const A = new Uint8Array(100).fill(0xaa);
const B = new Uint8Array(50).fill(0xbb);
const UNKNOWN = 'ecae0c0f-9502-43b1-afa2-0ae2e0d565b6';

describe('parseSnpCertTable', () => {
  it('round-trips with encodeSnpCertTable and maps the GHCB GUIDs', () => {
    const bytes = encodeSnpCertTable([
      { guid: G.vcek, data: A },
      { guid: UNKNOWN, data: B },
      { guid: G.ask, data: B },
      { guid: G.ark, data: A },
    ]);
    const t = parseSnpCertTable(bytes);
    expect(t.entries.map((e) => [e.guid, e.kind])).toEqual([
      [G.vcek, 'vcek'],
      [UNKNOWN, undefined],
      [G.ask, 'ask'],
      [G.ark, 'ark'],
    ]);
    expect(t.vcek).toEqual(A);
    expect(t.ask).toEqual(B);
    expect(t.ark).toEqual(A);
    expect(t.vlek).toBeUndefined();
    expect(Object.isFrozen(t)).toBe(true);
  });

  it('stores GUIDs in string (RFC 4122) byte order, as go-sev-guest and AMD sev-guest do', () => {
    const bytes = encodeSnpCertTable([{ guid: G.vcek, data: A }]);
    expect(Buffer.from(bytes.subarray(0, 16)).toString('hex')).toBe('63da758de6644564adc5f4b93be8accd');
    expect(guidToBytes(G.vcek)).toEqual(bytes.subarray(0, 16));
  });

  it('an empty buffer is an empty table; trailing padding after the data is ignored', () => {
    expect(parseSnpCertTable(new Uint8Array(0)).entries).toEqual([]);
    expect(parseSnpCertTable(new Uint8Array(CERT_TABLE_ENTRY_SIZE)).entries).toEqual([]);
    const padded = new Uint8Array(4096);
    padded.set(encodeSnpCertTable([{ guid: G.vlek, data: A }]));
    expect(parseSnpCertTable(padded).vlek).toEqual(A);
  });

  const u32 = (b: Uint8Array, off: number, v: number): void => new DataView(b.buffer, b.byteOffset).setUint32(off, v, true);
  const two = () => encodeSnpCertTable([{ guid: G.vcek, data: A }, { guid: G.ask, data: B }]);
  const cases: { name: string; bytes: () => Uint8Array }[] = [
    { name: 'no terminator (truncated header)', bytes: () => two().subarray(0, 2 * CERT_TABLE_ENTRY_SIZE + 10) },
    { name: 'shorter than one entry', bytes: () => new Uint8Array(10) },
    { name: 'offset past the end', bytes: () => { const b = two(); u32(b, 16, 1 << 30); return b; } },
    { name: 'length past the end', bytes: () => { const b = two(); u32(b, 20, b.length); return b; } },
    { name: 'offset + length wraps past 2^32', bytes: () => { const b = two(); u32(b, 16, 0xffffff00); u32(b, 20, 0x200); return b; } },
    { name: 'offset inside the header', bytes: () => { const b = two(); u32(b, 16, 0); return b; } },
    { name: 'zero length', bytes: () => { const b = two(); u32(b, 20, 0); return b; } },
    { name: 'overlapping entries', bytes: () => { const b = two(); u32(b, 24 + 16, 3 * 24 + 10); return b; } },
    { name: 'duplicate GUID', bytes: () => encodeSnpCertTable([{ guid: G.vcek, data: A }, { guid: G.vcek, data: B }]) },
    { name: 'zero GUID with an offset', bytes: () => { const b = two(); b.fill(0, 0, 16); return b; } },
    {
      name: 'more than the entry bound',
      bytes: () => {
        const n = CERT_TABLE_MAX_ENTRIES + 1;
        const b = new Uint8Array((n + 1) * CERT_TABLE_ENTRY_SIZE + n);
        for (let i = 0; i < n; i++) {
          b[i * CERT_TABLE_ENTRY_SIZE] = i + 1;
          u32(b, i * CERT_TABLE_ENTRY_SIZE + 16, (n + 1) * CERT_TABLE_ENTRY_SIZE + i);
          u32(b, i * CERT_TABLE_ENTRY_SIZE + 20, 1);
        }
        return b;
      },
    },
  ];
  for (const c of cases) {
    it(`${c.name} -> ERR_ATT_SNP_BAD_CERT_TABLE`, () => {
      expect(codeOf(() => parseSnpCertTable(c.bytes()))).toBe('ERR_ATT_SNP_BAD_CERT_TABLE');
    });
  }

  it('copies its input (later mutation does not change the result)', () => {
    const bytes = encodeSnpCertTable([{ guid: G.vcek, data: A }]);
    const t = parseSnpCertTable(bytes);
    bytes.fill(0);
    expect(t.vcek).toEqual(A);
  });

  it('property: arbitrary bytes give a table or ERR_ATT_SNP_BAD_CERT_TABLE, never another error', () => {
    const onlyTyped = (b: Uint8Array): void => {
      try {
        parseSnpCertTable(b);
      } catch (e) {
        if (!isAttestationError(e) || e.code !== 'ERR_ATT_SNP_BAD_CERT_TABLE') throw e;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), onlyTyped), { numRuns: 1000 });
    // Structured: a plausible header with arbitrary offsets and lengths.
    const entry = fc.record({
      guid: fc.constantFrom(G.vcek, G.vlek, G.ask, G.ark, UNKNOWN),
      offset: fc.nat(400),
      length: fc.nat(400),
    });
    fc.assert(
      fc.property(fc.array(entry, { maxLength: 6 }), fc.nat(400), (es, tail) => {
        const b = new Uint8Array((es.length + 1) * CERT_TABLE_ENTRY_SIZE + tail);
        es.forEach((e, i) => {
          b.set(guidToBytes(e.guid), i * CERT_TABLE_ENTRY_SIZE);
          u32(b, i * CERT_TABLE_ENTRY_SIZE + 16, e.offset);
          u32(b, i * CERT_TABLE_ENTRY_SIZE + 20, e.length);
        });
        onlyTyped(b);
      }),
      { numRuns: 1000 },
    );
  });
});

describe('certificate table in evidence (certs.certTable)', () => {
  let chain: TestChain;
  beforeAll(async () => {
    chain = await mintTestChain();
  }, 60_000);

  const verify = (certs: Record<string, string | null>) =>
    verifySnpEvidence(chain.evidence(RD, { certs }), { now: NOW, expectedReportData: RD, trust: chain.trust });

  it('supplies the VCEK and ASK when the explicit fields are absent', async () => {
    const table = encodeSnpCertTable([
      { guid: G.vcek, data: chain.vcekDer },
      { guid: G.ask, data: chain.askDer },
      { guid: G.ark, data: chain.arkDer },
    ]);
    const claims = await verify({ vcek: null, ask: null, certTable: b64(table) });
    expect(claims.simulated).toBe(true);
  });

  it('an entry that agrees with an explicit field is fine; one that conflicts is rejected', async () => {
    const same = encodeSnpCertTable([{ guid: G.vcek, data: chain.vcekDer }]);
    expect(await asyncCodeOf(verify({ certTable: b64(same) }))).toBe('no error');
    const other = encodeSnpCertTable([{ guid: G.vcek, data: chain.askDer }]);
    expect(await asyncCodeOf(verify({ certTable: b64(other) }))).toBe('ERR_ATT_SNP_BAD_CERT_TABLE');
  });

  it('a malformed table, or a table without the VCEK, gives a typed error', async () => {
    expect(await asyncCodeOf(verify({ vcek: null, certTable: b64(new Uint8Array(30).fill(0xff)) }))).toBe('ERR_ATT_SNP_BAD_CERT_TABLE');
    const askOnly = encodeSnpCertTable([{ guid: G.ask, data: chain.askDer }]);
    expect(await asyncCodeOf(verify({ vcek: null, ask: null, certTable: b64(askOnly) }))).toBe('ERR_ATT_SNP_MISSING_CERT');
  });

  it('a VLEK in the table for a VCEK-signed report is a signing-key mismatch', async () => {
    const t = encodeSnpCertTable([{ guid: G.vlek, data: chain.vcekDer }]);
    expect(await asyncCodeOf(verify({ vcek: null, certTable: b64(t) }))).toBe('ERR_ATT_SNP_SIGNING_KEY_MISMATCH');
  });

  it('the envelope bounds certTable and requires strict base64', async () => {
    expect(await asyncCodeOf(verify({ certTable: 'A'.repeat(100_000) }))).toBe('ERR_ATT_SNP_BAD_EVIDENCE');
    expect(await asyncCodeOf(verify({ certTable: 'not base64!' }))).toBe('ERR_ATT_SNP_BAD_EVIDENCE');
  });
});
