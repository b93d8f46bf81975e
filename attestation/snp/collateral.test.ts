import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import {
  KdsCollateral,
  OfflineBundle,
  bundleCrlPath,
  bundleVcekPath,
  httpsKdsFetcher,
  kdsCertChainUrl,
  kdsCrlUrl,
  kdsHwId,
  kdsVcekUrl,
  writeCrlToBundle,
  writeVcekToBundle,
  type KdsFetcher,
  type SnpCollateralSource,
} from './collateral.js';
import { parseSnpReport, type SnpTcbVersion } from './abi.js';
import { certificateDer, parseCertificate, readSnpKeyCertInfo } from './certs.js';
import { amdChain } from './roots.js';
import { verifySnpEvidence } from './verify.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { mintCrl, mintRootCa, mintTestChain, type TestChain } from '../sim/testing.js';
import { x509 } from '../../common/x509.js';
import { toHex } from '../../common/bytes.js';

const VEC = new URL('../../test/data/vectors/sev-snp/microsoft/', import.meta.url);
const GENOA_REPORT = new Uint8Array(readFileSync(new URL('genoa_attestation_report.bin', VEC)));
const GENOA_VCEK = certificateDer(readFileSync(new URL('genoa_vcek.pem', VEC), 'utf8'), 'genoa VCEK');
const TURIN_REPORT = new Uint8Array(readFileSync(new URL('turin_attestation_report.bin', VEC)));
const TURIN_VCEK = certificateDer(readFileSync(new URL('turin_vcek.pem', VEC), 'utf8'), 'turin VCEK');
const NOW = new Date('2026-06-01T00:00:00Z');
const DAY = 86_400_000;
const genoa = parseSnpReport(GENOA_REPORT);
const turin = parseSnpReport(TURIN_REPORT);
const rd = (r: Uint8Array): Uint8Array => r.slice(0x50, 0x90);
const evidenceOf = (report: Uint8Array, certs: Record<string, Uint8Array> = {}) => ({
  tee: 'sev-snp' as const,
  report: Buffer.from(report).toString('base64'),
  certs: Object.fromEntries(Object.entries(certs).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
});

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

/** A fake fetcher: answers from a map, counts calls, never touches the network. */
function fakeFetcher(answers: Record<string, Uint8Array | Error>): KdsFetcher & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    async fetch(url: string, signal?: AbortSignal): Promise<Uint8Array> {
      calls.push(url);
      expect(signal).toBeInstanceOf(AbortSignal);
      const a = answers[url];
      if (a === undefined) throw new Error(`404 ${url}`);
      if (a instanceof Error) throw a;
      return a;
    },
  };
}

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-collateral-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
let n = 0;
const freshDir = (): string => path.join(dir, `d${n++}`);

describe('KDS URL builders', () => {
  it('VCEK URL for Genoa (64-byte hwid) and Turin (8-byte hwid, fmcSPL), matching the real VCEKs', () => {
    const gHw = toHex(readSnpKeyCertInfo(parseCertificate(GENOA_VCEK, 'VCEK')).hwId!);
    expect(kdsHwId('Genoa', genoa.chipId)).toBe(gHw);
    expect(kdsVcekUrl('Genoa', genoa.chipId, genoa.reportedTcb)).toBe(
      `https://kdsintf.amd.com/vcek/v1/Genoa/${gHw}?blSPL=10&teeSPL=0&snpSPL=23&ucodeSPL=84`,
    );
    const tHw = toHex(readSnpKeyCertInfo(parseCertificate(TURIN_VCEK, 'VCEK')).hwId!);
    expect(tHw).toHaveLength(16);
    expect(kdsVcekUrl('Turin', turin.chipId, turin.reportedTcb)).toBe(
      `https://kdsintf.amd.com/vcek/v1/Turin/${tHw}?fmcSPL=1&blSPL=1&teeSPL=1&snpSPL=4&ucodeSPL=81`,
    );
  });

  it('CRL and cert_chain URLs', () => {
    expect(kdsCrlUrl('Milan', 'vcek')).toBe('https://kdsintf.amd.com/vcek/v1/Milan/crl');
    expect(kdsCrlUrl('Turin', 'vlek')).toBe('https://kdsintf.amd.com/vlek/v1/Turin/crl');
    expect(kdsCertChainUrl('Genoa', 'vcek')).toBe('https://kdsintf.amd.com/vcek/v1/Genoa/cert_chain');
  });

  it('rejects bad products, signers, chip IDs and TCBs with ERR_ATT_BAD_ARGUMENT', async () => {
    const tcb = genoa.reportedTcb;
    for (const f of [
      () => kdsVcekUrl('Naples' as never, genoa.chipId, tcb),
      () => kdsVcekUrl('Genoa', new Uint8Array(63), tcb),
      () => kdsVcekUrl('Genoa', genoa.chipId, { ...tcb, snp: 256 }),
      () => kdsVcekUrl('Turin', turin.chipId, { ...turin.reportedTcb, fmc: undefined } as SnpTcbVersion),
      () => kdsCrlUrl('Genoa', '../x' as never),
      () => kdsCertChainUrl('../../etc' as never, 'vcek'),
      () => bundleCrlPath(dir, 'Genoa/../../x' as never, 'vcek'),
    ]) {
      expect(await codeOf(f)).toBe('ERR_ATT_BAD_ARGUMENT');
    }
  });
});

describe('OfflineBundle', () => {
  it('reads a VCEK (DER or PEM) and CRL at the documented paths; missing files are undefined', async () => {
    const d = freshDir();
    const b = new OfflineBundle(d);
    expect(await b.vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toBeUndefined();
    expect(await b.crl('Genoa', 'vcek')).toBeUndefined();
    const p = await writeVcekToBundle(d, 'Genoa', genoa.chipId, genoa.reportedTcb, GENOA_VCEK);
    expect(p).toBe(path.join(path.resolve(d), 'vcek', 'Genoa', kdsHwId('Genoa', genoa.chipId), `${genoa.reportedTcb.raw.toString(16).padStart(16, '0')}.der`));
    expect(await b.vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toEqual(GENOA_VCEK);
    // PEM form of the Turin VCEK.
    const tp = bundleVcekPath(d, 'Turin', turin.chipId, turin.reportedTcb, 'pem');
    await mkdir(path.dirname(tp), { recursive: true });
    await writeFile(tp, x509.PemConverter.encode(TURIN_VCEK, 'CERTIFICATE'));
    expect(await b.vcek('Turin', turin.chipId, turin.reportedTcb)).toEqual(TURIN_VCEK);
    const crl = new Uint8Array([1, 2, 3]);
    await writeCrlToBundle(d, 'Genoa', 'vlek', crl);
    expect(await b.crl('Genoa', 'vlek')).toEqual(crl);
  });

  it('a corrupt PEM or an oversized file is ERR_ATT_SNP_BAD_COLLATERAL', async () => {
    const d = freshDir();
    const b = new OfflineBundle(d);
    const pem = bundleCrlPath(d, 'Milan', 'vcek', 'pem');
    await mkdir(path.dirname(pem), { recursive: true });
    await writeFile(pem, '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n');
    expect(await codeOf(b.crl('Milan', 'vcek'))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
    const big = bundleVcekPath(d, 'Genoa', genoa.chipId, genoa.reportedTcb);
    await mkdir(path.dirname(big), { recursive: true });
    await writeFile(big, new Uint8Array(70 * 1024));
    expect(await codeOf(b.vcek('Genoa', genoa.chipId, genoa.reportedTcb))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
  });

  it('a directory or a FIFO in place of a file is ERR_ATT_SNP_BAD_COLLATERAL, without waiting for a writer', async () => {
    const d = freshDir();
    const b = new OfflineBundle(d);
    const vcek = bundleVcekPath(d, 'Genoa', genoa.chipId, genoa.reportedTcb);
    await mkdir(vcek, { recursive: true });
    expect(await codeOf(b.vcek('Genoa', genoa.chipId, genoa.reportedTcb))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
    // A FIFO with no writer: a blocking open would never settle.
    const crl = bundleCrlPath(d, 'Genoa', 'vcek');
    await mkdir(path.dirname(crl), { recursive: true });
    execFileSync('mkfifo', [crl]);
    expect(await codeOf(b.crl('Genoa', 'vcek'))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
  });

  it('verifySnpEvidence takes the VCEK from the bundle when the evidence has none (real Genoa report)', async () => {
    const d = freshDir();
    await writeVcekToBundle(d, 'Genoa', genoa.chipId, genoa.reportedTcb, GENOA_VCEK);
    const opts = { now: NOW, expectedReportData: rd(GENOA_REPORT) };
    expect(await codeOf(verifySnpEvidence(evidenceOf(GENOA_REPORT), opts))).toBe('ERR_ATT_SNP_MISSING_CERT');
    const claims = await verifySnpEvidence(evidenceOf(GENOA_REPORT), { ...opts, collateral: new OfflineBundle(d) });
    expect(claims.product).toBe('Genoa');
    expect(claims.relaxations).toEqual([]);
    // An empty bundle: still the missing-certificate error.
    expect(await codeOf(verifySnpEvidence(evidenceOf(GENOA_REPORT), { ...opts, collateral: new OfflineBundle(freshDir()) }))).toBe(
      'ERR_ATT_SNP_MISSING_CERT',
    );
  });

  it('a bundled VCEK of another chip fails the chip-id binding', async () => {
    const d = freshDir();
    await writeVcekToBundle(d, 'Genoa', genoa.chipId, genoa.reportedTcb, GENOA_VCEK);
    const gcp = new Uint8Array(readFileSync(new URL('../teekit-gcp/sev-gcp.bin', VEC)));
    const r = parseSnpReport(gcp);
    // Put the Genoa VCEK where the GCP (Milan) report's chip would be looked up.
    await writeVcekToBundle(d, r.product!, r.chipId, r.reportedTcb, GENOA_VCEK);
    const p = verifySnpEvidence(evidenceOf(gcp), { now: NOW, expectedReportData: rd(gcp), collateral: new OfflineBundle(d) });
    expect(await codeOf(p)).toBe('ERR_ATT_SNP_PRODUCT_MISMATCH');
  });
});

describe('KdsCollateral (fake fetcher, fake clock)', () => {
  const url = kdsVcekUrl('Genoa', genoa.chipId, genoa.reportedTcb);

  it('fetches once, validates, caches on disk; a new instance reads the cache without fetching', async () => {
    const cacheDir = freshDir();
    const f = fakeFetcher({ [url]: GENOA_VCEK });
    const k = new KdsCollateral({ fetcher: f, cacheDir, now: () => NOW });
    expect(await k.vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toEqual(GENOA_VCEK);
    expect(await k.vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toEqual(GENOA_VCEK);
    expect(f.calls).toEqual([url]);
    const f2 = fakeFetcher({});
    const k2 = new KdsCollateral({ fetcher: f2, cacheDir, now: () => NOW });
    expect(await k2.vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toEqual(GENOA_VCEK);
    expect(f2.calls).toEqual([]);
    // The cache directory is an offline bundle.
    expect(await new OfflineBundle(cacheDir).vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toEqual(GENOA_VCEK);
  });

  it('verifySnpEvidence through KdsCollateral: real report, VCEK fetched by the fake; an unobtainable CRL fails closed', async () => {
    const opts = { now: NOW, expectedReportData: rd(GENOA_REPORT) };
    const f = fakeFetcher({ [url]: GENOA_VCEK });
    const collateral = new KdsCollateral({ fetcher: f, cacheDir: freshDir(), now: () => NOW, fetchCrls: false });
    const claims = await verifySnpEvidence(evidenceOf(GENOA_REPORT), { ...opts, collateral });
    expect(claims.product).toBe('Genoa');
    expect(f.calls).toEqual([url]);
    // Default: the CRL is fetched too, and when it cannot be had verification does not pass.
    const f2 = fakeFetcher({ [url]: GENOA_VCEK });
    const strict = new KdsCollateral({ fetcher: f2, cacheDir: freshDir(), now: () => NOW });
    expect(await codeOf(verifySnpEvidence(evidenceOf(GENOA_REPORT), { ...opts, collateral: strict }))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(f2.calls).toEqual([url, kdsCrlUrl('Genoa', 'vcek')]);
  });

  it('an answer that is not the requested VCEK is refused and not cached', async () => {
    const cacheDir = freshDir();
    const f = fakeFetcher({ [url]: TURIN_VCEK });
    const k = new KdsCollateral({ fetcher: f, cacheDir, now: () => NOW });
    expect(await codeOf(k.vcek('Genoa', genoa.chipId, genoa.reportedTcb))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(await new OfflineBundle(cacheDir).vcek('Genoa', genoa.chipId, genoa.reportedTcb)).toBeUndefined();
  });

  it('failures are negatively cached, then retried; a fetcher error surfaces as COLLATERAL_UNAVAILABLE in verify', async () => {
    let t = NOW.getTime();
    const f = fakeFetcher({ [url]: new Error('ECONNRESET') });
    const k = new KdsCollateral({ fetcher: f, cacheDir: freshDir(), now: () => new Date(t), negativeCacheMs: 60_000 });
    const opts = { now: NOW, expectedReportData: rd(GENOA_REPORT), collateral: k };
    expect(await codeOf(verifySnpEvidence(evidenceOf(GENOA_REPORT), opts))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(await codeOf(verifySnpEvidence(evidenceOf(GENOA_REPORT), opts))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(f.calls).toHaveLength(1);
    t += 61_000;
    expect(await codeOf(k.vcek('Genoa', genoa.chipId, genoa.reportedTcb))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(f.calls).toHaveLength(2);
  });

  it('per-chip limit: attacker-chosen TCBs for one chip stop after perChipMaxFetchesPerHour; the window rolls', async () => {
    let t = NOW.getTime();
    const f = fakeFetcher({});
    const k = new KdsCollateral({ fetcher: f, cacheDir: freshDir(), now: () => new Date(t), perChipMaxFetchesPerHour: 3 });
    const codes: string[] = [];
    for (let snp = 0; snp < 5; snp++) codes.push(await codeOf(k.vcek('Genoa', genoa.chipId, { ...genoa.reportedTcb, snp, raw: BigInt(snp) })));
    expect(codes).toEqual([
      'ERR_ATT_SNP_COLLATERAL_UNAVAILABLE',
      'ERR_ATT_SNP_COLLATERAL_UNAVAILABLE',
      'ERR_ATT_SNP_COLLATERAL_UNAVAILABLE',
      'ERR_ATT_SNP_COLLATERAL_LIMIT',
      'ERR_ATT_SNP_COLLATERAL_LIMIT',
    ]);
    expect(f.calls).toHaveLength(3);
    t += 3_600_001;
    expect(await codeOf(k.vcek('Genoa', genoa.chipId, { ...genoa.reportedTcb, snp: 9, raw: 9n }))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(f.calls).toHaveLength(4);
  });

  it('global limit and bound on tracked chips: random chip IDs cannot make it fetch without bound', async () => {
    const chip = (i: number): Uint8Array => {
      const c = new Uint8Array(64);
      c[0] = 1;
      c[1] = i;
      return c;
    };
    const f = fakeFetcher({});
    const k = new KdsCollateral({ fetcher: f, cacheDir: freshDir(), now: () => NOW, maxFetchesPerHour: 5, maxChips: 100 });
    for (let i = 0; i < 20; i++) await codeOf(k.vcek('Genoa', chip(i), genoa.reportedTcb));
    expect(f.calls).toHaveLength(5);
    expect(await codeOf(k.vcek('Genoa', chip(99), genoa.reportedTcb))).toBe('ERR_ATT_SNP_COLLATERAL_LIMIT');

    const f2 = fakeFetcher({});
    const k2 = new KdsCollateral({ fetcher: f2, cacheDir: freshDir(), now: () => NOW, maxFetchesPerHour: 1000, maxChips: 3 });
    const codes: string[] = [];
    for (let i = 0; i < 5; i++) codes.push(await codeOf(k2.vcek('Genoa', chip(i), genoa.reportedTcb)));
    expect(codes.slice(3)).toEqual(['ERR_ATT_SNP_COLLATERAL_LIMIT', 'ERR_ATT_SNP_COLLATERAL_LIMIT']);
    expect(f2.calls).toHaveLength(3);
  });

  it('concurrent requests for one URL share a fetch; a masked (zero) chip ID is never fetched', async () => {
    let release!: (v: Uint8Array) => void;
    const calls: string[] = [];
    const fetcher: KdsFetcher = {
      fetch: (u) => {
        calls.push(u);
        return new Promise((res) => (release = res));
      },
    };
    const k = new KdsCollateral({ fetcher, cacheDir: freshDir(), now: () => NOW });
    const a = k.vcek('Genoa', genoa.chipId, genoa.reportedTcb);
    const b = k.vcek('Genoa', genoa.chipId, genoa.reportedTcb);
    await new Promise((r) => setTimeout(r, 20));
    release(GENOA_VCEK);
    expect(await a).toEqual(GENOA_VCEK);
    expect(await b).toEqual(GENOA_VCEK);
    expect(calls).toHaveLength(1);
    expect(await k.vcek('Genoa', new Uint8Array(64), genoa.reportedTcb)).toBeUndefined();
    expect(calls).toHaveLength(1);
  });

  it('rejects bad options with ERR_ATT_SNP_BAD_COLLATERAL', async () => {
    for (const o of [
      {},
      { fetcher: {}, cacheDir: dir },
      { fetcher: fakeFetcher({}), cacheDir: '' },
      { fetcher: fakeFetcher({}), cacheDir: dir, perChipMaxFetchesPerHour: 0 },
      { fetcher: fakeFetcher({}), cacheDir: dir, maxChips: 1.5 },
    ]) {
      expect(await codeOf(() => new KdsCollateral(o as never))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
    }
  });

  it('httpsKdsFetcher refuses URLs outside AMD KDS (no network touched)', async () => {
    await expect(httpsKdsFetcher().fetch('https://example.com/vcek')).rejects.toThrow();
    await expect(httpsKdsFetcher().fetch('https://kdsintf.amd.com.evil.example/x')).rejects.toThrow();
  });
});

describe('CRLs through collateral', () => {
  let chain: TestChain;
  let lookAlikeGenoaArk: Awaited<ReturnType<typeof mintRootCa>>;
  beforeAll(async () => {
    chain = await mintTestChain();
    lookAlikeGenoaArk = await mintRootCa(new x509.X509Certificate(amdChain('Genoa', 'vcek').ark.der).subjectName, {
      notBefore: new Date('2020-01-01T00:00:00Z'),
      notAfter: new Date('2045-01-01T00:00:00Z'),
    });
  }, 60_000);

  const source = (crl: Uint8Array | undefined, vcek?: Uint8Array): SnpCollateralSource & { crlCalls: number } => {
    const s = {
      crlCalls: 0,
      vcek: async () => vcek,
      crl: async () => {
        s.crlCalls++;
        return crl;
      },
    };
    return s;
  };

  it('the collateral CRL is checked when `crls` is not given: a look-alike ARK-Genoa CRL is rejected', async () => {
    const fake = await mintCrl(lookAlikeGenoaArk, [], new Date(NOW.getTime() - DAY), new Date(NOW.getTime() + DAY));
    const opts = { now: NOW, expectedReportData: rd(GENOA_REPORT) };
    const ev = evidenceOf(GENOA_REPORT, { vcek: GENOA_VCEK });
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, collateral: source(fake) }))).toBe('ERR_ATT_SNP_CRL_INVALID');
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, collateral: source(undefined) }))).toBe('no error');
    // Explicit crls win over the collateral source.
    const s = source(fake);
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, crls: [fake], collateral: s }))).toBe('ERR_ATT_SNP_CRL_INVALID');
    expect(s.crlCalls).toBe(0);
  });

  it('collateral CRLs are not consulted for a simulated chain; explicit ones are', async () => {
    const rdata = new Uint8Array(64);
    const s = source(new Uint8Array([1, 2, 3]));
    const opts = { now: NOW, expectedReportData: rdata, trust: chain.trust, collateral: s };
    expect(await codeOf(verifySnpEvidence(chain.evidence(rdata), opts))).toBe('no error');
    expect(s.crlCalls).toBe(0);
  });

  it('a throwing source is COLLATERAL_UNAVAILABLE; a source returning non-bytes is BAD_COLLATERAL', async () => {
    const opts = { now: NOW, expectedReportData: rd(GENOA_REPORT) };
    const ev = evidenceOf(GENOA_REPORT);
    const throwing: SnpCollateralSource = { vcek: async () => Promise.reject(new Error('boom')), crl: async () => undefined };
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, collateral: throwing }))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    const silly: SnpCollateralSource = { vcek: async () => 'pem' as never, crl: async () => undefined };
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, collateral: silly }))).toBe('ERR_ATT_SNP_BAD_COLLATERAL');
    expect(await codeOf(verifySnpEvidence(ev, { ...opts, collateral: {} as never }))).toBe('ERR_ATT_BAD_ARGUMENT');
  });

  it('KdsCollateral CRL cache: fresh cached CRL is used without fetching; a stale one is refetched, and returned if that fails', async () => {
    let t = NOW.getTime();
    const cacheDir = freshDir();
    const crl = await mintCrl(chain.ark, [], new Date(t - DAY), new Date(t + DAY));
    await writeCrlToBundle(cacheDir, 'Genoa', 'vcek', crl);
    const f = fakeFetcher({});
    const k = new KdsCollateral({ fetcher: f, cacheDir, now: () => new Date(t) });
    expect(await k.crl('Genoa', 'vcek')).toEqual(crl);
    expect(f.calls).toEqual([]);
    t += 2 * DAY;
    expect(await k.crl('Genoa', 'vcek')).toEqual(crl); // stale: the verifier then reports CRL_EXPIRED
    expect(f.calls).toEqual([kdsCrlUrl('Genoa', 'vcek')]);
    // Nothing cached and the fetch fails: unavailable. A CRL not signed by the AMD ARK is refused.
    const f2 = fakeFetcher({ [kdsCrlUrl('Milan', 'vcek')]: crl });
    const k2 = new KdsCollateral({ fetcher: f2, cacheDir: freshDir(), now: () => NOW });
    expect(await codeOf(k2.crl('Milan', 'vcek'))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
    expect(await codeOf(k2.crl('Turin', 'vlek'))).toBe('ERR_ATT_SNP_COLLATERAL_UNAVAILABLE');
  });
});
