import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { ConfigfsTsmProvider, detectConfigfsTsm, probeConfigfsTsm, TSM_DEFAULT_MAX_RETRIES, type TsmFs } from './configfs.js';
import { CERT_TABLE_GUIDS, FakeTsm, encodeCertTableForTest, type FakeTsmOptions } from './testing.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { certificateDer } from '../snp/certs.js';
import { amdChain } from '../snp/roots.js';
import { verifySnpReport } from '../snp/verify.js';
import { SimulatedSnp } from '../sim/simulated-snp.js';
import { mintSnpReport } from '../sim/testing.js';
import { OFF_REPORT_DATA } from '../snp/layout.js';
import { parseTdxQuote } from '../tdx/parse.js';
import { verifyTdxQuote } from '../tdx/verify.js';
import { DCAP_NOW, dcapCollateral, vec as tdxVec } from '../tdx/testdata/fixtures.js';

// Real recorded bytes: a Genoa report (report_data all zero) and its VCEK, from
// microsoft/TEE-Attestation-Verification (test/data/vectors/PROVENANCE.md); ASK and ARK
// from the bundled AMD Genoa chain.
const VEC = new URL('../../test/data/vectors/sev-snp/microsoft/', import.meta.url);
const GENOA_REPORT = new Uint8Array(readFileSync(new URL('genoa_attestation_report.bin', VEC)));
const GENOA_VCEK = certificateDer(readFileSync(new URL('genoa_vcek.pem', VEC), 'utf8'), 'genoa VCEK');
const NOW = new Date('2026-06-01T00:00:00Z');

const CERT_TABLE = encodeCertTableForTest([
  { guid: CERT_TABLE_GUIDS.vcek, der: GENOA_VCEK },
  { guid: CERT_TABLE_GUIDS.ask, der: amdChain('Genoa', 'vcek').intermediate.der },
  { guid: CERT_TABLE_GUIDS.ark, der: amdChain('Genoa', 'vcek').ark.der },
]);

/** The recorded Genoa report with report_data replaced by inblob (signature no longer valid; parsing only). */
function recordedWith(inblob: Uint8Array): Uint8Array {
  const r = new Uint8Array(GENOA_REPORT);
  r.set(inblob, OFF_REPORT_DATA);
  return r;
}

const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const reportDataOf = (ev: { report: string }): Uint8Array =>
  new Uint8Array(Buffer.from(ev.report, 'base64').subarray(OFF_REPORT_DATA, OFF_REPORT_DATA + 64));

async function codeOf(p: Promise<unknown>): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

let base: string;
beforeAll(async () => {
  base = await mkdtemp(path.join(tmpdir(), 'cir-tsm-'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

let n = 0;
async function fakeTsm(opts: Partial<FakeTsmOptions> = {}): Promise<FakeTsm> {
  const root = path.join(base, `t${n++}`, 'tsm', 'report');
  await mkdir(root, { recursive: true });
  return new FakeTsm({ root, report: recordedWith, auxblob: CERT_TABLE, ...opts });
}

function provider(t: FakeTsm, opts: { privlevel?: number; maxRetries?: number } = {}): ConfigfsTsmProvider {
  return new ConfigfsTsmProvider({ root: t.root, fs: t.fs, ...opts });
}

const rdOf = (fill: number): Uint8Array => new Uint8Array(64).map((_, i) => (i * 7 + fill) & 0xff);

describe('ConfigfsTsmProvider against a fake configfs-tsm tree with recorded bytes', () => {
  it('returns the recorded report byte for byte and the cert table as auxblob', async () => {
    const t = await fakeTsm({ report: () => GENOA_REPORT });
    const p = provider(t);
    expect(p.tee).toBe('sev-snp');
    expect(p.simulated).toBe(false);
    const ev = await p.collect(new Uint8Array(64));
    expect(ev).toEqual({ tee: 'sev-snp', report: b64(GENOA_REPORT), certs: { certTable: b64(CERT_TABLE) } });
    expect(t.writes).toEqual(['inblob']);
    expect(t.created).toHaveLength(1);
    expect(await t.entries()).toEqual([]);
  });

  it('round-trips report_data: the 64 bytes written to inblob come back in the report', async () => {
    const t = await fakeTsm();
    const rd = rdOf(3);
    const ev = await provider(t).collect(rd);
    expect(Buffer.from(ev.report, 'base64').length).toBe(1184);
    expect(reportDataOf(ev)).toEqual(rd);
    expect(await t.entries()).toEqual([]);
  });

  it('copies reportData before writing it (a caller mutating it mid-collect changes nothing)', async () => {
    const rd = rdOf(9);
    const expected = new Uint8Array(rd);
    const t = await fakeTsm({
      report: (inblob) => {
        rd.fill(0);
        return recordedWith(inblob);
      },
    });
    expect(reportDataOf(await provider(t).collect(rd))).toEqual(expected);
  });

  it('a report re-signed by the simulated TEE collects and then verifies end to end', async () => {
    const sim = await SimulatedSnp.open(path.join(base, 'sim'), { now: new Date('2026-01-01T00:00:00Z') });
    const t = await fakeTsm({ report: (inblob) => mintSnpReport(sim, { reportData: inblob }), auxblob: new Uint8Array(0) });
    const rd = rdOf(5);
    const ev = await provider(t).collect(rd);
    expect(ev.certs).toEqual({});
    const claims = await verifySnpReport(
      Buffer.from(ev.report, 'base64'),
      { vcek: sim.vcekDer, ask: sim.askDer },
      { now: NOW, expectedReportData: rd, trust: sim.trustOptions() },
    );
    expect(claims.reportData).toBe(Buffer.from(rd).toString('hex'));
    expect(claims.simulated).toBe(true);
  });

  it('writes privlevel when configured (and counts it as its own write)', async () => {
    let seen: number | undefined;
    const t = await fakeTsm({
      report: (inblob, privlevel) => {
        seen = privlevel;
        return recordedWith(inblob);
      },
    });
    await provider(t, { privlevel: 2 }).collect(rdOf(1));
    expect(seen).toBe(2);
    expect(t.writes).toEqual(['inblob', 'privlevel']);
  });

  it('an absent auxblob (kernels before 6.8) gives evidence without a cert table', async () => {
    const t = await fakeTsm({ auxblob: null });
    const ev = await provider(t).collect(rdOf(2));
    expect(ev.certs).toEqual({});
  });

  it('retries after a generation race and then succeeds', async () => {
    const t = await fakeTsm({ raceWrites: (gen) => (gen === 1 ? 1 : 0) });
    const rd = rdOf(4);
    expect(reportDataOf(await provider(t).collect(rd))).toEqual(rd);
    expect(t.writes).toEqual(['inblob', 'inblob']);
    expect(await t.entries()).toEqual([]);
  });

  it('a persistent race fails with ERR_ATT_TSM_GENERATION_RACE after maxRetries, and removes the entry', async () => {
    const t = await fakeTsm({ raceWrites: () => 1 });
    expect(await codeOf(provider(t, { maxRetries: 2 }).collect(rdOf(0)))).toBe('ERR_ATT_TSM_GENERATION_RACE');
    expect(t.writes).toEqual(['inblob', 'inblob', 'inblob']);
    expect(await t.entries()).toEqual([]);

    const d = await fakeTsm({ raceWrites: () => 3 });
    expect(await codeOf(provider(d).collect(rdOf(0)))).toBe('ERR_ATT_TSM_GENERATION_RACE');
    expect(d.writes).toHaveLength(TSM_DEFAULT_MAX_RETRIES + 1);
  });

  const failures: { name: string; opts: Partial<FakeTsmOptions>; code: AttestationErrorCode }[] = [
    { name: 'wrong provider (tdx_guest, not expected)', opts: { provider: 'tdx_guest' }, code: 'ERR_ATT_TSM_PROVIDER_MISMATCH' },
    { name: 'no provider registered (ENXIO)', opts: { provider: null }, code: 'ERR_ATT_TSM_IO' },
    { name: 'empty outblob', opts: { report: () => new Uint8Array(0) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'short outblob', opts: { report: (i) => recordedWith(i).subarray(0, 1000) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'long outblob', opts: { report: (i) => new Uint8Array([...recordedWith(i), 0]) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'garbage outblob', opts: { report: () => new Uint8Array(1184).fill(0xa5) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    {
      name: 'unsupported report version',
      opts: { report: (i) => Object.assign(recordedWith(i), { 0: 9 }) },
      code: 'ERR_ATT_TSM_BAD_OUTBLOB',
    },
    {
      name: 'report_data mismatch (one byte)',
      opts: { report: (i) => Object.assign(recordedWith(i), { [OFF_REPORT_DATA + 63]: i[63]! ^ 1 }) },
      code: 'ERR_ATT_TSM_REPORT_DATA_MISMATCH',
    },
    {
      name: 'report for other data (recorded zero report_data)',
      opts: { report: () => GENOA_REPORT },
      code: 'ERR_ATT_TSM_REPORT_DATA_MISMATCH',
    },
    { name: 'firmware refuses the request (EIO on inblob)', opts: { failWrite: 'inblob' }, code: 'ERR_ATT_TSM_IO' },
  ];
  for (const f of failures) {
    it(`${f.name} -> ${f.code}, and the entry is removed`, async () => {
      const t = await fakeTsm(f.opts);
      expect(await codeOf(provider(t).collect(rdOf(7)))).toBe(f.code);
      expect(t.created).toHaveLength(1);
      expect(await t.entries()).toEqual([]);
    });
  }

  it('a wrong provider is detected before anything is written to inblob', async () => {
    const t = await fakeTsm({ provider: 'tdx_guest' });
    await codeOf(provider(t).collect(rdOf(7)));
    expect(t.writes).toEqual([]);
  });

  it('a missing root is ERR_ATT_TSM_UNAVAILABLE', async () => {
    const t = await fakeTsm();
    const p = new ConfigfsTsmProvider({ root: path.join(t.root, 'nope', 'deeper'), fs: t.fs });
    expect(await codeOf(p.collect(rdOf(0)))).toBe('ERR_ATT_TSM_UNAVAILABLE');
  });

  it('the path is configurable: two roots, each used only by its own provider', async () => {
    const a = await fakeTsm();
    const b = await fakeTsm();
    await provider(a).collect(rdOf(1));
    expect(a.created).toHaveLength(1);
    expect(b.created).toHaveLength(0);
    expect(path.dirname(a.created[0]!)).toBe(a.root);
    expect(path.basename(a.created[0]!)).toMatch(/^cir-\d+-[0-9a-f]{16}$/);
  });

  it('concurrent collects use distinct entries and each gets its own report_data back', async () => {
    const t = await fakeTsm();
    const p = provider(t);
    const rds = [1, 2, 3, 4, 5].map(rdOf);
    const evs = await Promise.all(rds.map((rd) => p.collect(rd)));
    evs.forEach((ev, i) => expect(reportDataOf(ev)).toEqual(rds[i]));
    expect(new Set(t.created).size).toBe(5);
    expect(await t.entries()).toEqual([]);
  });

  it('rejects bad arguments', async () => {
    const t = await fakeTsm();
    for (const rd of [new Uint8Array(63), new Uint8Array(65), 'x' as unknown as Uint8Array]) {
      expect(await codeOf(provider(t).collect(rd))).toBe('ERR_ATT_BAD_ARGUMENT');
    }
    expect(t.created).toHaveLength(0);
    for (const o of [{ privlevel: 4 }, { privlevel: -1 }, { privlevel: 1.5 }, { maxRetries: -1 }, { maxRetries: 101 }, { root: '' }]) {
      expect(() => new ConfigfsTsmProvider(o)).toThrow(expect.objectContaining({ code: 'ERR_ATT_BAD_ARGUMENT' }));
    }
  });

  it('uses node:fs by default: against a plain directory the entry is created and removed again', async () => {
    // A plain directory cannot react to writes, so this only shows that the default file
    // operations reach the configured root: mkdir succeeds, `provider` is missing
    // (ERR_ATT_TSM_IO), and the (empty) entry is removed.
    const root = path.join(base, 'plain');
    await mkdir(root);
    expect(await codeOf(new ConfigfsTsmProvider({ root }).collect(rdOf(0)))).toBe('ERR_ATT_TSM_IO');
    expect(await new FakeTsm({ root, report: recordedWith }).entries()).toEqual([]);
  });
});

describe('detectConfigfsTsm / probeConfigfsTsm', () => {
  it('reports the provider and leaves no probe entry behind', async () => {
    const t = await fakeTsm();
    expect(await detectConfigfsTsm(t.root, t.fs)).toBe('sev_guest');
    expect(t.created).toHaveLength(1);
    expect(await t.entries()).toEqual([]);
    const x = await fakeTsm({ provider: 'tdx_guest' });
    expect(await detectConfigfsTsm(x.root, x.fs)).toBe('tdx_guest');
  });

  it('absent root, no provider, not writable', async () => {
    const t = await fakeTsm();
    expect(await probeConfigfsTsm(path.join(t.root, 'missing'), t.fs)).toMatchObject({ state: 'absent' });
    expect(await detectConfigfsTsm(path.join(t.root, 'missing'), t.fs)).toBeUndefined();
    const file = path.join(base, 'a-file');
    await writeFile(file, '');
    expect(await probeConfigfsTsm(path.join(file, 'report'), t.fs)).toMatchObject({ state: 'absent' });

    const none = await fakeTsm({ provider: null });
    expect(await probeConfigfsTsm(none.root, none.fs)).toMatchObject({ state: 'no-provider' });
    expect(await none.entries()).toEqual([]);

    const eacces: TsmFs = { ...t.fs, mkdir: () => Promise.reject(Object.assign(new Error('EACCES'), { code: 'EACCES' })) };
    expect(await probeConfigfsTsm(t.root, eacces)).toMatchObject({ state: 'not-writable' });
    expect(await detectConfigfsTsm(t.root, eacces)).toBeUndefined();
  });
});

// --- Intel TDX (tdx_guest): real quotes from test/data/vectors/tdx (PROVENANCE.md) ------

describe('ConfigfsTsmProvider with tdx_guest against a fake tree with real quote bytes', () => {
  // A real quote's report_data cannot be changed (the signature covers it), so each test
  // writes the quote's own report_data as inblob, as the guest that produced it did.
  const DCAP_QUOTE = tdxVec('dcap-qvl/tdx_quote');
  const DCAP_RD = parseTdxQuote(DCAP_QUOTE).body.reportData;
  const TRUSTEE6 = tdxVec('trustee/tdx_quote_6.dat'); // 70 bytes after the signature data

  async function tdxTsm(opts: Partial<FakeTsmOptions> = {}): Promise<FakeTsm> {
    return fakeTsm({ provider: 'tdx_guest', report: () => DCAP_QUOTE, auxblob: null, ...opts });
  }
  const tdxProvider = (t: FakeTsm, opts: { maxRetries?: number } = {}) =>
    new ConfigfsTsmProvider({ root: t.root, fs: t.fs, expect: 'tdx_guest', ...opts });

  it('returns the quote byte for byte as TdxEvidence, and it verifies end to end', async () => {
    const t = await tdxTsm();
    const p = tdxProvider(t);
    expect(p.tee).toBe('tdx');
    expect(p.expect).toBe('tdx_guest');
    expect(p.simulated).toBe(false);
    const ev = await p.collect(DCAP_RD);
    expect(ev).toEqual({ tee: 'tdx', quote: b64(DCAP_QUOTE) });
    expect(t.writes).toEqual(['inblob']);
    expect(await t.entries()).toEqual([]);
    const claims = await verifyTdxQuote(Buffer.from(ev.quote, 'base64'), { now: DCAP_NOW, expectedReportData: DCAP_RD, collateral: dcapCollateral() });
    expect(claims.tcbStatus).toBe('UpToDate');
    expect(claims.reportData).toBe(Buffer.from(DCAP_RD).toString('hex'));
  });

  it('the inblob written is exactly the requested report_data', async () => {
    let written: Uint8Array | undefined;
    const t = await tdxTsm({
      report: (inblob) => {
        written = new Uint8Array(inblob);
        return DCAP_QUOTE;
      },
    });
    await tdxProvider(t).collect(new Uint8Array(DCAP_RD));
    expect(written).toEqual(DCAP_RD);
  });

  it('keeps bytes after the signature data (the verifier ignores them)', async () => {
    const rd = parseTdxQuote(TRUSTEE6).body.reportData;
    const t = await tdxTsm({ report: () => TRUSTEE6 });
    expect(parseTdxQuote(TRUSTEE6).trailingBytes).toBe(70);
    expect((await tdxProvider(t).collect(rd)).quote).toBe(b64(TRUSTEE6));
  });

  it('reads no auxblob even when one exists (tdx_guest has none)', async () => {
    const t = await tdxTsm({ auxblob: new Uint8Array([1, 2, 3]) });
    expect(await tdxProvider(t).collect(DCAP_RD)).toEqual({ tee: 'tdx', quote: b64(DCAP_QUOTE) });
  });

  it('retries after a generation race and then succeeds', async () => {
    const t = await tdxTsm({ raceWrites: (gen) => (gen === 1 ? 1 : 0) });
    expect((await tdxProvider(t).collect(DCAP_RD)).quote).toBe(b64(DCAP_QUOTE));
    expect(t.writes).toEqual(['inblob', 'inblob']);
    const r = await tdxTsm({ raceWrites: () => 1 });
    expect(await codeOf(tdxProvider(r, { maxRetries: 1 }).collect(DCAP_RD))).toBe('ERR_ATT_TSM_GENERATION_RACE');
    expect(await r.entries()).toEqual([]);
  });

  const failures: { name: string; opts: Partial<FakeTsmOptions>; rd?: Uint8Array; code: AttestationErrorCode }[] = [
    { name: 'another report_data (a real quote for other data)', opts: {}, rd: rdOf(7), code: 'ERR_ATT_TSM_REPORT_DATA_MISMATCH' },
    {
      name: 'report_data differing in the last byte',
      opts: {},
      rd: Object.assign(new Uint8Array(DCAP_RD), { 63: DCAP_RD[63]! ^ 1 }),
      code: 'ERR_ATT_TSM_REPORT_DATA_MISMATCH',
    },
    { name: 'empty outblob', opts: { report: () => new Uint8Array(0) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'truncated quote', opts: { report: () => DCAP_QUOTE.subarray(0, 1000) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'an SEV-SNP report from tdx_guest', opts: { report: () => GENOA_REPORT }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'garbage outblob', opts: { report: () => new Uint8Array(5000).fill(0xa5) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'quote version 3', opts: { report: () => Object.assign(new Uint8Array(DCAP_QUOTE), { 0: 3 }) }, code: 'ERR_ATT_TSM_BAD_OUTBLOB' },
    { name: 'firmware refuses the request (EIO on inblob)', opts: { failWrite: 'inblob' }, code: 'ERR_ATT_TSM_IO' },
  ];
  for (const f of failures) {
    it(`${f.name} -> ${f.code}, and the entry is removed`, async () => {
      const t = await tdxTsm(f.opts);
      expect(await codeOf(tdxProvider(t).collect(f.rd ?? DCAP_RD))).toBe(f.code);
      expect(t.created).toHaveLength(1);
      expect(await t.entries()).toEqual([]);
    });
  }

  it('provider mismatch in both directions is detected before inblob is written', async () => {
    const snp = await fakeTsm({ provider: 'sev_guest' });
    expect(await codeOf(tdxProvider(snp).collect(DCAP_RD))).toBe('ERR_ATT_TSM_PROVIDER_MISMATCH');
    expect(snp.writes).toEqual([]);
    const tdx = await tdxTsm();
    expect(await codeOf(provider(tdx).collect(DCAP_RD))).toBe('ERR_ATT_TSM_PROVIDER_MISMATCH');
    expect(tdx.writes).toEqual([]);
    expect(await tdx.entries()).toEqual([]);
  });

  it('rejects privlevel with tdx_guest and unknown providers', () => {
    expect(() => new ConfigfsTsmProvider({ expect: 'tdx_guest', privlevel: 0 })).toThrow(expect.objectContaining({ code: 'ERR_ATT_BAD_ARGUMENT' }));
    expect(() => new ConfigfsTsmProvider({ expect: 'sgx_guest' as 'tdx_guest' })).toThrow(expect.objectContaining({ code: 'ERR_ATT_BAD_ARGUMENT' }));
    expect(new ConfigfsTsmProvider({ expect: 'sev_guest' }).tee).toBe('sev-snp');
    expect(new ConfigfsTsmProvider().expect).toBe('sev_guest');
  });
});
