import { describe, it, expect, beforeAll } from 'vitest';
import fc from 'fast-check';
import { parseSnpCrl, verifySnpCrl } from './crl.js';
import { verifySnpEvidence, ANY_REPORT_DATA } from './verify.js';
import { parseCertificate } from './certs.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { mintCrl, mintRootCa, mintTestChain, serialOf, SIM_NAMES, type TestChain, type CaKeyPair } from '../sim/testing.js';
import { x509 } from '../../common/x509.js';

// Fixed clock; the minted chain is valid 2024..2031 (VCEK) and 2020..2045 (CAs).
const NOW = new Date('2026-06-01T00:00:00Z');
const DAY = 86_400_000;
const BEFORE = new Date(NOW.getTime() - DAY);
const AFTER = new Date(NOW.getTime() + 30 * DAY);
const RD = new Uint8Array(64).fill(7);

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<AttestationErrorCode | 'no error' | 'foreign error'> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'no error';
  } catch (e) {
    return isAttestationError(e) ? e.code : 'foreign error';
  }
}

describe('AMD CRLs (minted chain, fake signer)', () => {
  let chain: TestChain;
  let lookAlike: CaKeyPair;
  beforeAll(async () => {
    chain = await mintTestChain();
    // Same subject name as the test ARK, different key.
    lookAlike = await mintRootCa(SIM_NAMES.ark, { notBefore: new Date('2020-01-01T00:00:00Z'), notAfter: new Date('2045-01-01T00:00:00Z') });
  }, 60_000);

  const verifyWith = (crls: Uint8Array[] | undefined, now = NOW) =>
    verifySnpEvidence(chain.evidence(RD), { now, expectedReportData: RD, trust: chain.trust, ...(crls ? { crls } : {}) });

  it('the minted chain verifies without CRLs, and with a CRL that lists neither certificate', async () => {
    expect((await verifyWith(undefined)).simulated).toBe(true);
    const crl = await mintCrl(chain.ark, ['0badc0de'], BEFORE, AFTER);
    const claims = await verifyWith([crl]);
    expect(claims.relaxations).toEqual(['simulated-root']);
  });

  it('parses DER and PEM, and exposes isRevoked with normalized serials', async () => {
    const ask = serialOf(chain.askDer);
    const der = await mintCrl(chain.ark, [ask, '00ff'], BEFORE, AFTER);
    const pem = x509.PemConverter.encode(der, 'X509 CRL');
    for (const input of [der, new Uint8Array(Buffer.from(pem)), pem]) {
      const crl = parseSnpCrl(input);
      expect(crl.isRevoked(ask)).toBe(true);
      expect(crl.isRevoked(ask.toUpperCase())).toBe(true);
      expect(crl.isRevoked('ff')).toBe(true);
      expect(crl.isRevoked('0000ff')).toBe(true);
      expect(crl.isRevoked(serialOf(chain.vcekDer))).toBe(false);
      expect(crl.isRevoked('not hex')).toBe(false);
      expect(crl.thisUpdate.getTime()).toBe(BEFORE.getTime());
      expect(crl.nextUpdate.getTime()).toBe(AFTER.getTime());
      expect(Object.isFrozen(crl)).toBe(true);
      verifySnpCrl(crl, chain.arkDer, NOW);
    }
  });

  const cases: { name: string; crls: () => Promise<Uint8Array[]>; now?: Date; code: AttestationErrorCode }[] = [
    { name: 'revoked VCEK', crls: async () => [await mintCrl(chain.ark, [serialOf(chain.vcekDer)], BEFORE, AFTER)], code: 'ERR_ATT_SNP_REVOKED' },
    { name: 'revoked ASK', crls: async () => [await mintCrl(chain.ark, [serialOf(chain.askDer)], BEFORE, AFTER)], code: 'ERR_ATT_SNP_REVOKED' },
    {
      name: 'revoked ASK with a leading-zero serial in the CRL',
      crls: async () => [await mintCrl(chain.ark, ['00' + serialOf(chain.askDer)], BEFORE, AFTER)],
      code: 'ERR_ATT_SNP_REVOKED',
    },
    { name: 'CRL signed by another key under the ARK name', crls: async () => [await mintCrl(lookAlike, [], BEFORE, AFTER)], code: 'ERR_ATT_SNP_CRL_INVALID' },
    {
      name: 'a good CRL plus one by another key under the ARK name',
      crls: async () => [await mintCrl(chain.ark, [], BEFORE, AFTER), await mintCrl(lookAlike, [], BEFORE, AFTER)],
      code: 'ERR_ATT_SNP_CRL_INVALID',
    },
    { name: 'CRL issued by the ASK (not the root)', crls: async () => [await mintCrl(chain.ask, [], BEFORE, AFTER)], code: 'ERR_ATT_SNP_CRL_MISSING' },
    { name: 'no CRL at all (empty list)', crls: async () => [], code: 'ERR_ATT_SNP_CRL_MISSING' },
    { name: 'expired CRL', crls: async () => [await mintCrl(chain.ark, [], new Date(NOW.getTime() - 60 * DAY), new Date(NOW.getTime() - DAY))], code: 'ERR_ATT_SNP_CRL_EXPIRED' },
    { name: 'CRL not yet valid', crls: async () => [await mintCrl(chain.ark, [], new Date(NOW.getTime() + DAY), AFTER)], code: 'ERR_ATT_SNP_CRL_NOT_YET_VALID' },
    { name: 'garbage CRL', crls: async () => [new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00])], code: 'ERR_ATT_SNP_BAD_CRL' },
  ];
  for (const c of cases) {
    it(`${c.name} -> ${c.code}`, async () => {
      expect(await codeOf(verifyWith(await c.crls(), c.now))).toBe(c.code);
    });
  }

  it('validity bounds are inclusive (now == thisUpdate, now == nextUpdate)', async () => {
    const crl = await mintCrl(chain.ark, [], BEFORE, AFTER);
    expect(await codeOf(verifyWith([crl], BEFORE))).toBe('no error');
    expect(await codeOf(verifyWith([crl], AFTER))).toBe('no error');
    expect(await codeOf(verifyWith([crl], new Date(AFTER.getTime() + 1000)))).toBe('ERR_ATT_SNP_CRL_EXPIRED');
  });

  it('CRLs of other roots are ignored when the chain root has its own', async () => {
    const other = await mintTestChain({ ark: lookAlike });
    const foreign = await mintCrl(await mintRootCa('CN=Other Root', { notBefore: BEFORE, notAfter: AFTER }), [serialOf(chain.vcekDer)], BEFORE, AFTER);
    const mine = await mintCrl(chain.ark, [], BEFORE, AFTER);
    expect(await codeOf(verifyWith([foreign, mine]))).toBe('no error');
    expect(await codeOf(verifyWith([foreign]))).toBe('ERR_ATT_SNP_CRL_MISSING');
    expect(other.arkDer).not.toEqual(chain.arkDer);
  });

  it('a root whose keyUsage lacks cRLSign cannot issue CRLs', async () => {
    const crl = parseSnpCrl(await mintCrl(chain.ark, [], BEFORE, AFTER));
    const ark = parseCertificate(chain.arkDer, 'ARK');
    expect(ark.keyUsage! & x509.KeyUsageFlags.cRLSign).toBeTruthy();
    const { checkCrlIssuedBy } = await import('./crl.js');
    expect(await codeOf(() => checkCrlIssuedBy(crl, { ...ark, keyUsage: x509.KeyUsageFlags.keyCertSign }, NOW))).toBe('ERR_ATT_SNP_CRL_INVALID');
  });

  it('a tampered CRL (one byte of the signed part) does not verify', async () => {
    const der = await mintCrl(chain.ark, [serialOf(chain.askDer)], BEFORE, AFTER);
    // Flip a byte inside the revoked serial: still parses, no longer verifies.
    const hex = Buffer.from(der).toString('hex');
    const at = hex.indexOf(serialOf(chain.askDer)) / 2;
    expect(at).toBeGreaterThan(0);
    const bad = new Uint8Array(der);
    bad[at + 2] = bad[at + 2]! ^ 1;
    expect(await codeOf(verifyWith([bad]))).toBe('ERR_ATT_SNP_CRL_INVALID');
  });

  it('ANY_REPORT_DATA skips the binding and records the relaxation; undefined still throws', async () => {
    const claims = await verifySnpEvidence(chain.evidence(RD), { now: NOW, expectedReportData: ANY_REPORT_DATA, trust: chain.trust });
    expect(claims.relaxations).toEqual(['simulated-root', 'report-data-unchecked']);
    const p = verifySnpEvidence(chain.evidence(RD), { now: NOW, expectedReportData: undefined as unknown as Uint8Array, trust: chain.trust });
    expect(await codeOf(p)).toBe('ERR_ATT_BAD_ARGUMENT');
    const sym = verifySnpEvidence(chain.evidence(RD), { now: NOW, expectedReportData: Symbol('cir.any-report-data') as never, trust: chain.trust });
    expect(await codeOf(sym)).toBe('ERR_ATT_BAD_ARGUMENT');
  });

  it('rejects a malformed crls option', async () => {
    const p = verifySnpEvidence(chain.evidence(RD), { now: NOW, expectedReportData: RD, trust: chain.trust, crls: ['x'] as never });
    expect(await codeOf(p)).toBe('ERR_ATT_BAD_ARGUMENT');
  });

  it('property: arbitrary bytes parse to a CRL or ERR_ATT_SNP_BAD_CRL, never anything else', async () => {
    const good = await mintCrl(chain.ark, [serialOf(chain.askDer)], BEFORE, AFTER);
    const onlyTyped = (b: Uint8Array): void => {
      try {
        parseSnpCrl(b);
      } catch (e) {
        if (!isAttestationError(e) || e.code !== 'ERR_ATT_SNP_BAD_CRL') throw e;
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 1024 }), onlyTyped), { numRuns: 300 });
    fc.assert(
      fc.property(fc.nat(good.length - 1), fc.integer({ min: 1, max: 255 }), (i, x) => {
        const m = new Uint8Array(good);
        m[i] = m[i]! ^ x;
        onlyTyped(m);
      }),
      { numRuns: 500 },
    );
  });
});
