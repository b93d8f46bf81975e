/**
 * Time to verify one SEV-SNP report with warm caches: the real Microsoft Milan, Genoa and
 * Turin reports with their VCEKs (test/data/vectors/sev-snp/microsoft/), through
 * verifySnpEvidence at a fixed `now`, plus a breakdown of where the time goes. Prints
 * min / median / mean / p99 / max in milliseconds; asserts nothing.
 *
 *   npm run build && node dist/bench/verify.js [--iters 2000] [--warmup 200]
 *
 * Stages (each timed on its own, same inputs):
 *   parse report   parseSnpReport (bytes -> frozen struct)
 *   parse VCEK     parseCertificate of the VCEK DER (@peculiar/x509 + node KeyObject)
 *   chain          verifyCertChain: ARK self-signature, ASK and VCEK links (3 x RSA-4096 PSS)
 *   P-384 verify   node:crypto ECDSA P-384/SHA-384 over 0x000..0x29F, imported KeyObject
 *   full verify    verifySnpEvidence: envelope, all of the above, TCB/chip_id binding, claims
 *
 * Then the same for one Intel TDX quote (dcap-qvl/tdx_quote with its collateral file, at
 * 2025-07-01): quote parse, and the full verifyTdxQuote (quote + QE signatures, PCK chain
 * and CRLs, TCB Info / QE Identity signatures, TCB status) with warm collateral.
 */
import { readFileSync } from 'node:fs';
import { verify as cryptoVerify } from 'node:crypto';
import { parseArgs } from 'node:util';
import { fileURLToPath } from 'node:url';
import { parseSnpReport } from '../attestation/snp/abi.js';
import { certificateDer, parseCertificate } from '../attestation/snp/certs.js';
import { verifyCertChain } from '../attestation/snp/chain.js';
import { AMD_ARK_SPKI_SHA256, amdChain } from '../attestation/snp/roots.js';
import { p1363FromReport, verifySnpEvidence } from '../attestation/snp/verify.js';
import type { SnpEvidence } from '../attestation/types.js';
import { parseTdxQuote } from '../attestation/tdx/parse.js';
import { verifyTdxQuote } from '../attestation/tdx/verify.js';
import { loadTdxCollateral } from '../attestation/tdx/source.js';
import { scriptArgs } from './script-args.js';

const { iters, warmup } = scriptArgs('bench/verify', () => {
  const { values } = parseArgs({
    options: { iters: { type: 'string', default: '2000' }, warmup: { type: 'string', default: '200' } },
  });
  const i = Number(values.iters);
  const w = Number(values.warmup);
  if (!Number.isInteger(i) || i < 1 || !Number.isInteger(w) || w < 0) {
    throw new Error('--iters must be a positive integer and --warmup a non-negative integer');
  }
  return { iters: i, warmup: w };
});

const NOW = new Date('2026-06-01T00:00:00Z');
const VEC = new URL('../../test/data/vectors/sev-snp/microsoft/', import.meta.url);
const PRODUCTS = [
  { product: 'Milan', report: 'milan_attestation_report.bin', vcek: 'milan_vcek.pem' },
  { product: 'Genoa', report: 'genoa_attestation_report.bin', vcek: 'genoa_vcek.pem' },
  { product: 'Turin', report: 'turin_attestation_report.bin', vcek: 'turin_vcek.pem' },
] as const;

interface Stats {
  readonly min: number;
  readonly median: number;
  readonly mean: number;
  readonly p99: number;
  readonly max: number;
}

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const q = (p: number): number => s[Math.min(s.length - 1, Math.ceil(p * s.length) - 1)]!;
  return { min: s[0]!, median: q(0.5), mean: s.reduce((a, b) => a + b, 0) / s.length, p99: q(0.99), max: s[s.length - 1]! };
}

async function time(f: () => unknown): Promise<Stats> {
  for (let i = 0; i < warmup; i++) await f();
  const ms: number[] = new Array<number>(iters);
  for (let i = 0; i < iters; i++) {
    const t0 = process.hrtime.bigint();
    await f();
    ms[i] = Number(process.hrtime.bigint() - t0) / 1e6;
  }
  return stats(ms);
}

const f3 = (x: number): string => x.toFixed(3).padStart(8);

console.log(`SEV-SNP verify, warm caches: ${iters} iterations after ${warmup} warm-up (node ${process.version}, ${process.platform}/${process.arch})`);
console.log('product  stage           min (ms)  median      mean       p99       max');
const summary: string[] = [];
for (const p of PRODUCTS) {
  const report = new Uint8Array(readFileSync(new URL(p.report, VEC)));
  const vcekDer = certificateDer(readFileSync(new URL(p.vcek, VEC), 'utf8'), p.vcek);
  const evidence: SnpEvidence = {
    tee: 'sev-snp',
    report: Buffer.from(report).toString('base64'),
    certs: { vcek: Buffer.from(vcekDer).toString('base64') },
  };
  const expectedReportData = report.slice(0x50, 0x90);
  const opts = { now: NOW, expectedReportData };
  const claims = await verifySnpEvidence(evidence, opts); // fails loudly if the inputs do not verify
  if (claims.product !== p.product) throw new Error(`${p.report}: verified as ${claims.product}`);

  const parsed = parseSnpReport(report);
  const leaf = parseCertificate(vcekDer, 'VCEK');
  const chain = amdChain(p.product, 'vcek');
  const signature = p1363FromReport(parsed);
  const stages: [string, () => unknown][] = [
    ['parse report', () => parseSnpReport(report)],
    ['parse VCEK', () => parseCertificate(vcekDer, 'VCEK')],
    [
      'chain',
      () =>
        verifyCertChain({ leaf, intermediate: chain.intermediate, root: chain.ark, rootSpkiSha256: AMD_ARK_SPKI_SHA256[p.product], now: NOW }),
    ],
    [
      'P-384 verify',
      () => {
        if (!cryptoVerify('sha384', parsed.signedRegion, { key: leaf.publicKey, dsaEncoding: 'ieee-p1363' }, signature)) {
          throw new Error('signature does not verify');
        }
      },
    ],
    ['full verify', () => verifySnpEvidence(evidence, opts)],
  ];
  for (const [name, f] of stages) {
    const s = await time(f);
    console.log(`${p.product.padEnd(8)} ${name.padEnd(14)} ${f3(s.min)}  ${f3(s.median)}  ${f3(s.mean)}  ${f3(s.p99)}  ${f3(s.max)}`);
    if (name === 'full verify') summary.push(`${p.product}: median ${s.median.toFixed(3)} ms, p99 ${s.p99.toFixed(3)} ms`);
  }
}

const TDX = new URL('../../test/data/vectors/tdx/dcap-qvl/', import.meta.url);
const quote = new Uint8Array(readFileSync(new URL('tdx_quote', TDX)));
const collateral = await loadTdxCollateral(fileURLToPath(new URL('tdx_quote_collateral.json', TDX)));
const tdxOpts = { now: new Date('2025-07-01T00:00:00Z'), expectedReportData: parseTdxQuote(quote).body.reportData, collateral };
const tdxClaims = await verifyTdxQuote(quote, tdxOpts); // fails loudly if the inputs do not verify
if (tdxClaims.tcbStatus !== 'UpToDate') throw new Error(`tdx_quote verified as ${tdxClaims.tcbStatus}`);
for (const [name, f] of [
  ['parse quote', () => parseTdxQuote(quote)],
  ['full verify', () => verifyTdxQuote(quote, tdxOpts)],
] as [string, () => unknown][]) {
  const st = await time(f);
  console.log(`${'TDX'.padEnd(8)} ${name.padEnd(14)} ${f3(st.min)}  ${f3(st.median)}  ${f3(st.mean)}  ${f3(st.p99)}  ${f3(st.max)}`);
  if (name === 'full verify') summary.push(`TDX: median ${st.median.toFixed(3)} ms, p99 ${st.p99.toFixed(3)} ms`);
}
console.log(`\nfull verify (target <= 2 ms median): ${summary.join('; ')}`);
