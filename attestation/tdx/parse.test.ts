import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { isTdxError, parseTdxQuote } from './index.js';
import { vec } from './testdata/fixtures.js';

const QUOTES: [string, 4 | 5, 2 | 3, number][] = [
  ['dcap-qvl/tdx_quote', 4, 2, 70],
  ['dcap-qvl/tdx_quote_outdated', 5, 3, 0],
  ['go-tdx-guest/quote_v5_sample.dat', 5, 3, 0],
  ['go-tdx-guest/tdx_prod_quote_SPR_E4.dat', 4, 2, 39],
  ['go-tdx-guest/cos-113-tdx-quote.dat', 4, 2, 3065],
  ['trustee/tdx_quote_4.dat', 4, 2, 0],
  ['trustee/tdx_quote_5.dat', 5, 3, 0],
  ['trustee/tdx_quote_6.dat', 4, 2, 70],
  ['teekit/tdx-v4-edgeless.dat', 4, 2, 0],
  ['teekit/tdx-v4-moemahhouk.dat', 4, 2, 70],
  ['teekit/tdx-v4-gcp.quote.bin', 4, 2, 3065],
];

describe('parseTdxQuote', () => {
  it.each(QUOTES)('%s parses (v%i, body type %i, %i trailing bytes)', (file, version, bodyType, trailing) => {
    const q = parseTdxQuote(vec(file));
    expect(q.header.version).toBe(version);
    expect(q.body.bodyType).toBe(bodyType);
    expect(q.trailingBytes).toBe(trailing);
    expect(q.pckChain).toHaveLength(3);
    expect(q.qeAuthData).toHaveLength(32);
    expect(Object.isFrozen(q) && Object.isFrozen(q.body) && Object.isFrozen(q.header)).toBe(true);
    expect(q.body.teeTcbSvn2 !== undefined).toBe(bodyType === 3);
  });

  it('reads the MANIFEST facts of trustee/tdx_quote_4 (debug TD)', () => {
    const q = parseTdxQuote(vec('trustee/tdx_quote_4.dat'));
    expect(Buffer.from(q.body.tdAttributes).toString('hex')).toBe('0100001000000000');
    expect(Buffer.from(q.body.teeTcbSvn).toString('hex')).toBe('03000500000000000000000000000000');
    expect(Buffer.from(q.body.mrTd).toString('hex')).toBe('705ee9381b8633a9fbe532b52345e8433343d2868959f57889d84ca377c395b689cac1599ccea1b7d420483a9ce5f031');
    expect(q.qeReport.isvSvn).toBe(4);
    expect(q.qeReport.isvProdId).toBe(2);
  });

  it('copies its input: later changes to the caller buffer do not reach the struct', () => {
    const b = vec('dcap-qvl/tdx_quote');
    const q = parseTdxQuote(b);
    const before = Buffer.from(q.body.mrTd).toString('hex');
    b.fill(0);
    expect(Buffer.from(q.body.mrTd).toString('hex')).toBe(before);
  });

  const good = vec('dcap-qvl/tdx_quote');
  const v5 = vec('dcap-qvl/tdx_quote_outdated');
  const put = (b: Uint8Array, off: number, v: number, n: 2 | 4) => {
    const out = new Uint8Array(b);
    for (let i = 0; i < n; i++) out[off + i] = (v >>> (8 * i)) & 0xff;
    return out;
  };
  const sigLenOff = 48 + 584;
  const cases: [string, Uint8Array, string][] = [
    ['empty', new Uint8Array(0), 'ERR_ATT_TDX_BAD_QUOTE'],
    ['header only', good.slice(0, 48), 'ERR_ATT_TDX_BAD_QUOTE'],
    ['version 3', put(good, 0, 3, 2), 'ERR_ATT_TDX_UNSUPPORTED_VERSION'],
    ['SGX tee_type', put(good, 4, 0, 4), 'ERR_ATT_TDX_UNSUPPORTED_TEE'],
    ['ECDSA P-384 key type', put(good, 2, 3, 2), 'ERR_ATT_TDX_UNSUPPORTED_KEY_TYPE'],
    ['v5 SGX body type', put(v5, 48, 1, 2), 'ERR_ATT_TDX_UNSUPPORTED_VERSION'],
    ['v5 body size disagrees with type', put(v5, 50, 584, 4), 'ERR_ATT_TDX_BAD_QUOTE'],
    ['signature data longer than the quote', put(good, sigLenOff, 0xfffffff0, 4), 'ERR_ATT_TDX_BAD_QUOTE'],
    ['signature data shorter than its content', put(good, sigLenOff, 200, 4), 'ERR_ATT_TDX_BAD_CERT_DATA'],
    ['certification data size too big', put(good, sigLenOff + 4 + 128 + 2, 99999, 4), 'ERR_ATT_TDX_BAD_CERT_DATA'],
    ['QE auth data size too big', put(good, sigLenOff + 4 + 128 + 6 + 384 + 64, 60000, 2), 'ERR_ATT_TDX_BAD_CERT_DATA'],
    ['truncated PCK chain', good.slice(0, good.length - 70 - 100), 'ERR_ATT_TDX_BAD_QUOTE'],
  ];
  it.each(cases)('rejects %s', (_n, b, want) => {
    expect(() => parseTdxQuote(b)).toThrow(expect.objectContaining({ code: want }));
  });

  // Property tests: arbitrary bytes, and a real quote with random damage, give a struct or a
  // TdxError, never anything else (no RangeError, no TypeError).
  const structOrTdxError = (b: Uint8Array): boolean => {
    try {
      parseTdxQuote(b);
      return true;
    } catch (e) {
      return isTdxError(e) && (e.category === 'bad-input');
    }
  };
  it('arbitrary bytes -> struct or TdxError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 6000 }), structOrTdxError), { numRuns: 500 });
  });
  it('damaged real quotes -> struct or TdxError', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(good, v5),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }),
        fc.nat(),
        (base, edits, cut) => {
          const b = new Uint8Array(base);
          for (const [i, v] of edits) b[i % b.length] = v;
          return structOrTdxError(b.slice(0, b.length - (cut % 200)));
        },
      ),
      { numRuns: 500 },
    );
  });
  it('headers that pass, followed by random bytes -> struct or TdxError', () => {
    fc.assert(
      fc.property(fc.uint8Array({ minLength: 0, maxLength: 5000 }), (tail) => {
        const b = new Uint8Array(48 + 584 + tail.length);
        b.set(good.subarray(0, 48 + 584));
        b.set(tail, 48 + 584);
        return structOrTdxError(b);
      }),
      { numRuns: 300 },
    );
  });
});
