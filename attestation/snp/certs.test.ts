import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { certificateDer, parseCertificate } from './certs.js';
import { verifySnpEvidence, verifySnpReport } from './verify.js';
import { SnpEvidenceVerifier } from './evaluate.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { SimulatedSnp } from '../sim/simulated-snp.js';
import { mintSnpEvidence, mintRootCa, generateVcekKeys } from '../sim/testing.js';
import { vcekExtensions, RSA_PSS_SHA384 } from '../sim/pki.js';
import { x509 } from '../../common/x509.js';
import type { SnpEvidence } from '../types.js';

/**
 * Hostile certificate bytes. Security review: @peculiar/x509 decodes extension values
 * lazily, so a VCEK/ASK/ARK whose basicConstraints or keyUsage value was malformed got
 * past parseCertificate's try and escaped verifySnpEvidence as a raw
 * AsnSchemaValidationError/TypeError (18 hits in 4000 random byte mutations).
 */

const VEC = new URL('../../test/data/vectors/', import.meta.url);
const vec = (p: string): Buffer => readFileSync(new URL(p, VEC));
const pemCert = (p: string): Uint8Array => certificateDer(readFileSync(new URL(p, VEC), 'utf8'), p);
const b64 = (b: Uint8Array): string => Buffer.from(b).toString('base64');

const NOW = new Date('2026-06-01T00:00:00Z');
const CREATED = new Date('2026-05-01T00:00:00Z');
const RD = new Uint8Array(64).fill(7);
/** Property-test size; raise it (e.g. CIR_FUZZ_RUNS=20000) for a longer fuzzing session. */
const RUNS = Number(process.env.CIR_FUZZ_RUNS ?? 800);

type Outcome = AttestationErrorCode | 'no error' | 'foreign error';
async function outcomeOf(p: Promise<unknown>): Promise<Outcome> {
  try {
    await p;
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

/** Offset of the first byte of an extension's extnValue content, found by its OID. */
function extnValueOffset(der: Uint8Array, oidBytes: number[]): number {
  const at = Buffer.from(der).indexOf(Buffer.from([0x06, oidBytes.length, ...oidBytes]));
  expect(at).toBeGreaterThan(0);
  let i = at + 2 + oidBytes.length;
  if (der[i] === 0x01) i += 3; // critical BOOLEAN
  expect(der[i]).toBe(0x04); // extnValue OCTET STRING (short-form length)
  return i + 2;
}
const OID_BC = [0x55, 0x1d, 0x13];
const OID_KU = [0x55, 0x1d, 0x0f];

function withByte(der: Uint8Array, offset: number, value: number): Uint8Array {
  const out = new Uint8Array(der);
  out[offset] = value;
  return out;
}

let tmp: string;
let sim: SimulatedSnp;
let simEvidence: SnpEvidence;
const simTrust = () => ({ simulatedRoot: { arkDer: sim.arkDer }, allowSimulated: true });

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cir-certs-'));
  sim = await SimulatedSnp.open(path.join(tmp, 'state'), { now: CREATED });
  simEvidence = mintSnpEvidence(sim, { reportData: RD });
});

afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('malformed basicConstraints / keyUsage values give ERR_ATT_SNP_BAD_CERT', () => {
  it('the unmodified simulated evidence verifies (baseline for the cases below)', async () => {
    const claims = await verifySnpEvidence(simEvidence, { now: NOW, expectedReportData: RD, trust: simTrust() });
    expect(claims.simulated).toBe(true);
  });

  // basicConstraints value is SEQUENCE { cA BOOLEAN, ... }: tag 0x30 -> 0x31 (SET).
  // keyUsage value is a BIT STRING: tag 0x03 -> 0x04 (OCTET STRING).
  const mutations = [
    { name: 'basicConstraints SEQUENCE tag 0x30 -> 0x31', oid: OID_BC, from: 0x30, to: 0x31 },
    { name: 'keyUsage BIT STRING tag 0x03 -> 0x04', oid: OID_KU, from: 0x03, to: 0x04 },
  ];
  for (const m of mutations) {
    it(`${m.name}: parseCertificate on the ASK and ARK`, () => {
      for (const der of [sim.askDer, sim.arkDer]) {
        const off = extnValueOffset(der, m.oid);
        expect(der[off]).toBe(m.from);
        let outcome: string = 'no error';
        try {
          parseCertificate(withByte(der, off, m.to), 'test');
        } catch (e) {
          outcome = isAttestationError(e) ? e.code : `foreign ${(e as Error).name}`;
        }
        expect(outcome).toBe('ERR_ATT_SNP_BAD_CERT');
      }
    });

    it(`${m.name}: evidence ASK and evidence ARK through verifySnpEvidence and SnpEvidenceVerifier`, async () => {
      const ask = withByte(sim.askDer, extnValueOffset(sim.askDer, m.oid), m.to);
      const ark = withByte(sim.arkDer, extnValueOffset(sim.arkDer, m.oid), m.to);
      for (const certs of [{ ask: b64(ask) }, { ark: b64(ark) }]) {
        const ev = { ...simEvidence, certs: { ...simEvidence.certs, ...certs } };
        const opts = { now: NOW, expectedReportData: RD, trust: simTrust() };
        expect(await outcomeOf(verifySnpEvidence(ev, opts))).toBe('ERR_ATT_SNP_BAD_CERT');
        expect(await outcomeOf(new SnpEvidenceVerifier(simTrust()).verify(ev, opts))).toBe('ERR_ATT_SNP_BAD_CERT');
      }
    });

    it(`${m.name}: as the configured simulated root -> ERR_ATT_SNP_BAD_TRUST`, async () => {
      const ark = withByte(sim.arkDer, extnValueOffset(sim.arkDer, m.oid), m.to);
      const trust = { simulatedRoot: { arkDer: ark }, allowSimulated: true };
      const p = verifySnpEvidence(simEvidence, { now: NOW, expectedReportData: RD, trust });
      expect(await outcomeOf(p)).toBe('ERR_ATT_SNP_BAD_TRUST');
    });
  }

  it('a VCEK with a malformed basicConstraints value', async () => {
    const root = await mintRootCa('CN=test root', { notBefore: CREATED, notAfter: new Date('2030-01-01T00:00:00Z') });
    const keys = await generateVcekKeys();
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: '01',
      subject: 'CN=VCEK-test',
      issuer: root.cert.subjectName,
      notBefore: CREATED,
      notAfter: new Date('2030-01-01T00:00:00Z'),
      publicKey: keys.publicKey,
      signingKey: root.keys.privateKey,
      signingAlgorithm: RSA_PSS_SHA384,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        ...vcekExtensions({
          productName: 'Genoa',
          structVersion: 0,
          tcb: { bootloader: 10, tee: 0, snp: 23, microcode: 84 },
          hwId: new Uint8Array(64),
        }),
      ],
    });
    const good = new Uint8Array(cert.rawData);
    expect(parseCertificate(good, 'VCEK').basicConstraints).toEqual({ ca: false });
    const bad = withByte(good, extnValueOffset(good, OID_BC), 0x31);
    const report = vec('sev-snp/microsoft/genoa_attestation_report.bin');
    const ev: SnpEvidence = { tee: 'sev-snp', report: b64(report), certs: { vcek: b64(bad) } };
    expect(await outcomeOf(verifySnpEvidence(ev, { now: NOW, expectedReportData: report.subarray(0x50, 0x90) }))).toBe(
      'ERR_ATT_SNP_BAD_CERT',
    );
  });
});

describe('verifiers throw only AttestationError', () => {
  // A mutation that no dedicated check catches would surface as the backstop code
  // ERR_ATT_SNP_UNVERIFIABLE; the property tests exclude it, so each such failure is
  // caught by a specific check (typed at parse time), not by the catch-all.
  const acceptable = (o: Outcome): boolean => o !== 'no error' && o !== 'foreign error' && o !== 'ERR_ATT_SNP_UNVERIFIABLE';

  /** 1..4 byte changes at distinct offsets, each XOR with a non-zero mask (so never a no-op). */
  const mutationsOf = (len: number) =>
    fc.uniqueArray(fc.record({ at: fc.integer({ min: 0, max: len - 1 }), xor: fc.integer({ min: 1, max: 255 }) }), {
      minLength: 1,
      maxLength: 4,
      selector: (m) => m.at,
    });
  const mutate = (der: Uint8Array, ms: readonly { at: number; xor: number }[]): Uint8Array => {
    const out = new Uint8Array(der);
    for (const m of ms) out[m.at] = out[m.at]! ^ m.xor;
    return out;
  };

  it('random byte mutations of the real Milan VCEK always reject with a typed AttestationError', async () => {
    const report = vec('sev-snp/microsoft/milan_attestation_report.bin');
    const vcek = pemCert('sev-snp/microsoft/milan_vcek.pem');
    const opts = { now: NOW, expectedReportData: report.subarray(0x50, 0x90) };
    expect(await outcomeOf(verifySnpEvidence({ tee: 'sev-snp', report: b64(report), certs: { vcek: b64(vcek) } }, opts))).toBe('no error');
    await fc.assert(
      fc.asyncProperty(mutationsOf(vcek.length), async (ms) => {
        const ev = { tee: 'sev-snp', report: b64(report), certs: { vcek: b64(mutate(vcek, ms)) } };
        const o = await outcomeOf(verifySnpEvidence(ev, opts));
        expect(acceptable(o), `outcome ${o}`).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('random byte mutations of a simulated ASK in the evidence always reject with a typed AttestationError', async () => {
    const opts = { now: NOW, expectedReportData: RD, trust: simTrust() };
    await fc.assert(
      fc.asyncProperty(mutationsOf(sim.askDer.length), async (ms) => {
        const ev = { ...simEvidence, certs: { ...simEvidence.certs, ask: b64(mutate(sim.askDer, ms)) } };
        const o = await outcomeOf(verifySnpEvidence(ev, opts));
        expect(acceptable(o), `outcome ${o}`).toBe(true);
      }),
      { numRuns: RUNS },
    );
  });

  it('random byte mutations of a simulated ARK in the evidence never throw anything but a specific AttestationError', async () => {
    // The evidence ARK is only compared by key with the configured root (a key pin), so a
    // mutation outside its key may still verify; it must never escape untyped.
    const opts = { now: NOW, expectedReportData: RD, trust: simTrust() };
    await fc.assert(
      fc.asyncProperty(mutationsOf(sim.arkDer.length), async (ms) => {
        const ev = { ...simEvidence, certs: { ...simEvidence.certs, ark: b64(mutate(sim.arkDer, ms)) } };
        const o = await outcomeOf(verifySnpEvidence(ev, opts));
        expect(o === 'no error' || acceptable(o), `outcome ${o}`).toBe(true);
      }),
      { numRuns: Math.ceil(RUNS / 4) },
    );
  });

  it('anything untyped thrown during verification becomes ERR_ATT_SNP_UNVERIFIABLE, keeping the cause', async () => {
    const boom = new TypeError('boom');
    const certs = Object.defineProperty({}, 'vcek', {
      get() {
        throw boom;
      },
    });
    const report = vec('sev-snp/microsoft/milan_attestation_report.bin');
    const opts = { now: NOW, expectedReportData: report.subarray(0x50, 0x90) };
    const errs: unknown[] = [];
    for (const p of [
      verifySnpReport(report, certs, opts),
      verifySnpEvidence({ tee: 'sev-snp', report: b64(report), certs }, opts),
      new SnpEvidenceVerifier().verify({ tee: 'sev-snp', report: b64(report), certs }, opts),
    ]) {
      errs.push(await p.then(() => undefined, (e: unknown) => e));
    }
    for (const e of errs) {
      expect(isAttestationError(e) && e.code).toBe('ERR_ATT_SNP_UNVERIFIABLE');
      expect((e as Error).cause).toBe(boom);
    }
  });
});
