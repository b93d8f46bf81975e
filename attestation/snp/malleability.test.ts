import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { certificateDer } from './certs.js';
import { verifySnpEvidence } from './verify.js';
import { parseSnpReport, snpSignedRegion } from './abi.js';
import { OFF_SIG_S, SIG_P384_SCALAR_SIZE } from './layout.js';
import { SimulatedSnp } from '../sim/simulated-snp.js';
import { mintSnpReport } from '../sim/testing.js';
import type { SnpEvidence } from '../types.js';

/**
 * Documents a property, not a bug: ECDSA accepts both (r, s) and (r, n - s), and the
 * verifier deliberately does not reject high s (AMD does not document low-s signatures).
 * So one signed report has two accepted byte forms; the report bytes and their hash are
 * not a unique replay key. The signed region (0x000..0x29F) is the same in both.
 */

/** Order of the P-384 group (SEC 2, secp384r1 parameter n). */
const P384_N = BigInt(
  '0xffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973',
);

/** Returns a copy of the report with s replaced by n - s (little-endian, 48 bytes). */
function negateS(report: Uint8Array): Uint8Array {
  const out = new Uint8Array(report);
  let s = 0n;
  for (let i = SIG_P384_SCALAR_SIZE - 1; i >= 0; i--) s = (s << 8n) | BigInt(out[OFF_SIG_S + i]!);
  expect(s > 0n && s < P384_N).toBe(true);
  let t = P384_N - s;
  for (let i = 0; i < SIG_P384_SCALAR_SIZE; i++) {
    out[OFF_SIG_S + i] = Number(t & 0xffn);
    t >>= 8n;
  }
  return out;
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');
const VEC = new URL('../../test/data/vectors/', import.meta.url);
const NOW = new Date('2026-06-01T00:00:00Z');

function expectTwoFormsOfOneReport(a: Uint8Array, b: Uint8Array): void {
  expect(sha256(a)).not.toBe(sha256(b));
  expect(sha256(snpSignedRegion(a))).toBe(sha256(snpSignedRegion(b)));
  // Both forms pass the parser's encoding checks (r/s padding and reserved tail are zero).
  expect(parseSnpReport(b).signature.r).toEqual(parseSnpReport(a).signature.r);
}

describe('SEV-SNP report signatures are malleable: (r, n - s) also verifies', () => {
  it('a real Milan report', async () => {
    const report = new Uint8Array(readFileSync(new URL('sev-snp/microsoft/milan_attestation_report.bin', VEC)));
    const vcek = certificateDer(readFileSync(new URL('sev-snp/microsoft/milan_vcek.pem', VEC), 'utf8'), 'VCEK');
    const opts = { now: NOW, expectedReportData: report.slice(0x50, 0x90) };
    const ev = (r: Uint8Array): SnpEvidence => ({ tee: 'sev-snp', report: b64(r), certs: { vcek: b64(vcek) } });
    const other = negateS(report);
    expectTwoFormsOfOneReport(report, other);
    const [c1, c2] = await Promise.all([verifySnpEvidence(ev(report), opts), verifySnpEvidence(ev(other), opts)]);
    expect(c2).toEqual(c1);
  });

  describe('a simulated report', () => {
    let tmp: string;
    let sim: SimulatedSnp;
    beforeAll(async () => {
      tmp = await mkdtemp(path.join(tmpdir(), 'cir-malleable-'));
      sim = await SimulatedSnp.open(path.join(tmp, 'state'), { now: new Date('2026-05-01T00:00:00Z') });
    });
    afterAll(async () => {
      await rm(tmp, { recursive: true, force: true });
    });

    it('verifies in both forms with identical claims', async () => {
      const rd = new Uint8Array(64).fill(9);
      const report = mintSnpReport(sim, { reportData: rd });
      const other = negateS(report);
      expectTwoFormsOfOneReport(report, other);
      const opts = { now: NOW, expectedReportData: rd, trust: { simulatedRoot: { arkDer: sim.arkDer }, allowSimulated: true } };
      const ev = (r: Uint8Array): SnpEvidence => ({ tee: 'sev-snp', report: b64(r), certs: { vcek: b64(sim.vcekDer), ask: b64(sim.askDer) } });
      const [c1, c2] = await Promise.all([verifySnpEvidence(ev(report), opts), verifySnpEvidence(ev(other), opts)]);
      expect(c1.simulated).toBe(true);
      expect(c2).toEqual(c1);
    });
  });
});
