import fc from 'fast-check';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  OfflineTdxCollateral,
  PcsCollateralSource,
  isTdxError,
  loadTdxCollateral,
  parseQeIdentity,
  parseTcbInfo,
  parseTdxCollateralJson,
  parseTdxQuote,
  signedJsonFromBody,
  verifyTdxQuote,
  type PcsFetcher,
} from './index.js';
import { topLevelValues } from './json.js';
import { GO_BUNDLE, GO_NOW, text, vec } from './testdata/fixtures.js';

const dirs: string[] = [];
const tmp = async () => {
  const d = await mkdtemp(path.join(tmpdir(), 'cir-tdx-'));
  dirs.push(d);
  return d;
};
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe('exact-text extraction', () => {
  it('returns the value text byte for byte, whitespace and key order included', () => {
    const body = ' { "a" : {"z":1, "b" : [1,{"x":"}]\\""}]} , "signature":"ab" } ';
    const m = topLevelValues(body)!;
    expect(m.get('a')).toBe('{"z":1, "b" : [1,{"x":"}]\\""}]}');
    expect(m.get('signature')).toBe('"ab"');
  });
  it.each([['{"a":1,"a":2}'], ['[1]'], ['{"a":1} x'], ['{"a":'], ['null'], ['{"a":1,}']])('rejects %s', (t) => {
    expect(topLevelValues(t)).toBeUndefined();
  });
  it('the signed tcbInfo text of a PCS body is the exact substring', () => {
    const body = text('go-tdx-guest/sample_tcbInfo_response');
    const s = signedJsonFromBody(body, 'tcbInfo');
    expect(body.startsWith(`{"tcbInfo":${s.raw},"signature":"`)).toBe(true);
    expect(s.signature).toHaveLength(64);
  });
  it('a re-serialised (semantically equal) tcbInfo no longer verifies', async () => {
    const q = vec('trustee/tdx_quote_4.dat');
    const c = await loadTdxCollateral(GO_BUNDLE);
    const raw = JSON.stringify(JSON.parse(c.tcbInfo.raw), null, 1);
    const bad = { ...c, tcbInfo: { ...c.tcbInfo, raw } };
    await expect(verifyTdxQuote(q, { now: GO_NOW, expectedReportData: parseTdxQuote(q).body.reportData, collateral: bad })).rejects.toMatchObject({
      code: 'ERR_ATT_TDX_BAD_COLLATERAL_SIGNATURE',
    });
  });
});

describe('collateral layouts', () => {
  it('(a) directory of PCS bodies, chains and CRLs', async () => {
    const c = await loadTdxCollateral(GO_BUNDLE);
    expect(parseTcbInfo(c.tcbInfo.raw).fmspc).toBe('50806f000000');
    expect(parseQeIdentity(c.qeIdentity.raw).id).toBe('TD_QE');
    expect(c.pckCrl?.length).toBeGreaterThan(0);
    expect(c.rootCaCrl?.length).toBeGreaterThan(0);
  });
  it('(b) single JSON file (dcap-qvl format)', async () => {
    const c = await loadTdxCollateral(path.join(path.dirname(GO_BUNDLE), '../dcap-qvl/tdx_quote_collateral.json'));
    expect(parseTcbInfo(c.tcbInfo.raw).fmspc).toBe('b0c06f000000'); // served upper case, normalised
    expect(c.tcbInfo.raw.startsWith('{"id":"TDX"')).toBe(true);
  });
  it('(a) with both pck_crl.der and pck_crl.pem is ambiguous', async () => {
    const d = await tmp();
    for (const f of ['tcb_info.json', 'tcb_info_issuer_chain.pem', 'qe_identity.json', 'qe_identity_issuer_chain.pem', 'pck_crl.der']) {
      await writeFile(path.join(d, f), vec(`bundles/go-tdx-guest-50806f000000/${f}`));
    }
    await writeFile(path.join(d, 'pck_crl.pem'), '-----BEGIN X509 CRL-----\n-----END X509 CRL-----\n');
    await expect(loadTdxCollateral(d)).rejects.toMatchObject({ code: 'ERR_ATT_TDX_BAD_COLLATERAL' });
  });
  it('(a) with a missing file fails, naming it', async () => {
    const d = await tmp();
    await expect(loadTdxCollateral(d)).rejects.toMatchObject({ code: 'ERR_ATT_TDX_BAD_COLLATERAL', detail: 'tcb_info.json missing' });
  });
  it('(b) rejects unknown fields and bad hex', () => {
    const j = JSON.parse(text('dcap-qvl/tdx_quote_collateral.json')) as Record<string, string>;
    expect(() => parseTdxCollateralJson(JSON.stringify({ ...j, extra: 'x' }))).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_COLLATERAL' }));
    expect(() => parseTdxCollateralJson(JSON.stringify({ ...j, pck_crl: 'zz' }))).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_COLLATERAL' }));
    expect(() => parseTdxCollateralJson(JSON.stringify({ ...j, tcb_info_signature: 'ab' }))).toThrow(
      expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_COLLATERAL' }),
    );
  });

  const onlyTyped = (f: () => unknown): boolean => {
    try {
      f();
      return true;
    } catch (e) {
      return isTdxError(e);
    }
  };
  it('property: arbitrary text or JSON -> collateral or TdxError', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 400 }), fc.json({ maxDepth: 4 })), (s) =>
        onlyTyped(() => parseTdxCollateralJson(s)) && onlyTyped(() => signedJsonFromBody(s, 'tcbInfo')),
      ),
      { numRuns: 500 },
    );
  });
  it('property: damaged real collateral -> collateral or TdxError (and damaged objects parse or fail typed)', () => {
    const base = text('dcap-qvl/tdx_quote_collateral.json');
    const body = text('go-tdx-guest/sample_tcbInfo_response');
    fc.assert(
      fc.property(fc.nat(), fc.string({ maxLength: 3 }), fc.nat(), (at, ins, del) => {
        const mutate = (t: string) => t.slice(0, at % t.length) + ins + t.slice((at % t.length) + (del % 4));
        return (
          onlyTyped(() => parseTdxCollateralJson(mutate(base))) &&
          onlyTyped(() => parseTcbInfo(signedJsonFromBody(mutate(body), 'tcbInfo').raw))
        );
      }),
      { numRuns: 500 },
    );
  });
  it('property: arbitrary bytes -> collateral or TdxError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), (b) => onlyTyped(() => parseTdxCollateralJson(b))), { numRuns: 300 });
  });
});

describe('collateral sources', () => {
  const pem = (p: string) => text(`bundles/go-tdx-guest-50806f000000/${p}`);
  const bytes = (p: string) => vec(`bundles/go-tdx-guest-50806f000000/${p}`);
  function fakePcs(): PcsFetcher & { calls: number } {
    const f = {
      calls: 0,
      async tcbInfo(fmspc: string) {
        f.calls++;
        if (fmspc !== '50806f000000') throw new Error('404');
        return { body: bytes('tcb_info.json'), issuerChain: pem('tcb_info_issuer_chain.pem') };
      },
      async qeIdentity() {
        return { body: bytes('qe_identity.json'), issuerChain: pem('qe_identity_issuer_chain.pem') };
      },
      async pckCrl() {
        return { crl: bytes('pck_crl.der'), issuerChain: pem('pck_crl_issuer_chain.pem') };
      },
      async rootCaCrl() {
        return bytes('root_ca_crl.der');
      },
    };
    return f;
  }
  const q = vec('trustee/tdx_quote_4.dat');
  const rd = parseTdxQuote(q).body.reportData;

  it('PcsCollateralSource fetches once, caches on disk, and the cache is an offline bundle', async () => {
    const cacheDir = await tmp();
    const fetcher = fakePcs();
    const src = new PcsCollateralSource({ fetcher, cacheDir, now: () => GO_NOW });
    const c1 = await verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: src });
    await verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: src });
    expect(c1.tcbStatus).toBe('UpToDate');
    expect(fetcher.calls).toBe(1);
    // A fresh source over the same cache directory does not fetch.
    const fetcher2 = fakePcs();
    await verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: new PcsCollateralSource({ fetcher: fetcher2, cacheDir, now: () => GO_NOW }) });
    expect(fetcher2.calls).toBe(0);
    // And the directory serves air-gapped verification.
    const offline = await verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: new OfflineTdxCollateral(cacheDir) });
    expect(offline.tcbStatus).toBe('UpToDate');
  });

  it('a fetch failure with no cached copy is ERR_ATT_TDX_COLLATERAL_UNAVAILABLE', async () => {
    const fetcher = fakePcs();
    fetcher.tcbInfo = async () => {
      throw new Error('network down');
    };
    const src = new PcsCollateralSource({ fetcher, now: () => GO_NOW });
    await expect(verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: src })).rejects.toMatchObject({
      code: 'ERR_ATT_TDX_COLLATERAL_UNAVAILABLE',
    });
  });

  it('an offline bundle without the FMSPC fails typed', async () => {
    const d = await tmp();
    await mkdir(path.join(d, 'other'));
    await expect(verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd, collateral: new OfflineTdxCollateral(d) })).rejects.toMatchObject({
      code: 'ERR_ATT_TDX_BAD_COLLATERAL',
    });
  });
});
