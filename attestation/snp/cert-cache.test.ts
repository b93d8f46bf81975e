import { describe, it, expect, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { cachedSignatureCheck, parseCertificateCached, VERIFIED_LINK_CACHE_MAX } from './cert-cache.js';
import { certificateDer } from './certs.js';
import { verifySnpEvidence } from './verify.js';
import { isAttestationError, type AttestationErrorCode } from '../codes.js';
import { mintCrl, mintTestChain, serialOf, type TestChain } from '../sim/testing.js';
import type { SnpEvidence } from '../types.js';

const VCEK = certificateDer(
  readFileSync(new URL('../../test/data/vectors/sev-snp/microsoft/genoa_vcek.pem', import.meta.url), 'utf8'),
  'genoa VCEK',
);

describe('parseCertificateCached', () => {
  it('reuses a parse only for byte-identical DER and the same label', () => {
    const a = parseCertificateCached(VCEK, 'VCEK');
    expect(parseCertificateCached(new Uint8Array(VCEK), 'VCEK')).toBe(a);
    const other = parseCertificateCached(VCEK, 'VLEK');
    expect(other).not.toBe(a);
    expect(other.label).toBe('VLEK');
  });

  it('a changed byte is a different entry, and a parse failure is not cached', () => {
    const a = parseCertificateCached(VCEK, 'VCEK');
    const bad = new Uint8Array(VCEK);
    bad[bad.length - 1]! ^= 1; // inside the signature: still parses, different bytes
    const b = parseCertificateCached(bad, 'VCEK');
    expect(b).not.toBe(a);
    expect(b.der).toEqual(bad);
    const garbage = new Uint8Array([0x30, 0x03, 0x02, 0x01, 0x00]);
    for (let i = 0; i < 2; i++) expect(() => parseCertificateCached(garbage, 'VCEK')).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_BAD_CERT' }));
  });

  it('is not affected by the caller mutating its input afterwards', () => {
    const mine = new Uint8Array(VCEK);
    const a = parseCertificateCached(mine, 'VCEK-mutation');
    mine[10]! ^= 0xff;
    expect(a.der).toEqual(VCEK);
  });
});

describe('cachedSignatureCheck', () => {
  const spki = new Uint8Array([1, 2, 3]);
  const tbs = new Uint8Array([4, 5, 6]);
  const sig = new Uint8Array([7, 8, 9]);

  it('memoises successes for identical bytes only', () => {
    let calls = 0;
    const ok = (): boolean => (calls++, true);
    expect(cachedSignatureCheck(spki, tbs, sig, ok)).toBe(true);
    expect(cachedSignatureCheck(new Uint8Array(spki), new Uint8Array(tbs), new Uint8Array(sig), ok)).toBe(true);
    expect(calls).toBe(1);
    for (const [s, t, g] of [
      [new Uint8Array([1, 2, 4]), tbs, sig],
      [spki, new Uint8Array([4, 5, 7]), sig],
      [spki, tbs, new Uint8Array([7, 8, 8])],
    ] as const) {
      cachedSignatureCheck(s, t, g, ok);
    }
    expect(calls).toBe(4);
  });

  it('never caches a failure', () => {
    let calls = 0;
    const bad = (): boolean => (calls++, false);
    const t = new Uint8Array([0xee]);
    expect(cachedSignatureCheck(spki, t, sig, bad)).toBe(false);
    expect(cachedSignatureCheck(spki, t, sig, bad)).toBe(false);
    expect(calls).toBe(2);
  });

  it('is bounded: the least recently used entry is evicted', () => {
    let calls = 0;
    const ok = (): boolean => (calls++, true);
    const first = new Uint8Array([0xab, 0xcd]);
    cachedSignatureCheck(spki, first, sig, ok);
    for (let i = 0; i < VERIFIED_LINK_CACHE_MAX; i++) cachedSignatureCheck(spki, new Uint8Array([0xfe, i & 0xff, i >> 8]), sig, ok);
    calls = 0;
    cachedSignatureCheck(spki, first, sig, ok);
    expect(calls).toBe(1);
  });
});

// The verifier parses the VCEK/VLEK, the simulated ASK and an evidence ARK through
// parseCertificateCached and memoises chain signatures; these tests verify the same bytes
// once (so every cache holds them) and then again under other inputs: each decision that
// depends on the call must still be taken.
describe('cached certificates: every call-dependent check still runs (minted chain)', () => {
  const NOW = new Date('2026-06-01T00:00:00Z');
  const DAY = 86_400_000;
  const RD = new Uint8Array(64).fill(9);
  let chain: TestChain;
  let other: TestChain;
  let shortCa: TestChain;
  beforeAll(async () => {
    chain = await mintTestChain();
    other = await mintTestChain(); // same names, other keys
    shortCa = await mintTestChain({ caValidity: { notBefore: new Date('2025-01-01T00:00:00Z'), notAfter: new Date('2027-01-01T00:00:00Z') } });
  }, 120_000);

  async function codeOf(evidence: SnpEvidence, opts: { now?: Date; trust?: TestChain['trust']; crls?: Uint8Array[] } = {}): Promise<AttestationErrorCode | 'ok' | 'foreign'> {
    try {
      await verifySnpEvidence(evidence, { now: opts.now ?? NOW, expectedReportData: RD, trust: opts.trust ?? chain.trust, ...(opts.crls ? { crls: opts.crls } : {}) });
      return 'ok';
    } catch (e) {
      return isAttestationError(e) ? e.code : 'foreign';
    }
  }
  const b64 = (b: Uint8Array) => Buffer.from(b).toString('base64');

  it('validity is checked at each call\'s now: VCEK expired / not yet valid after a cached success', async () => {
    const ev = chain.evidence(RD);
    expect(await codeOf(ev)).toBe('ok');
    expect(await codeOf(ev)).toBe('ok'); // warm: every cache hit
    expect(await codeOf(ev, { now: new Date('2031-01-01T00:00:01Z') })).toBe('ERR_ATT_SNP_CERT_EXPIRED');
    expect(await codeOf(ev, { now: new Date('2023-12-31T23:59:59Z') })).toBe('ERR_ATT_SNP_CERT_NOT_YET_VALID');
    // Bounds are inclusive, and a failure leaves nothing behind.
    expect(await codeOf(ev, { now: new Date('2031-01-01T00:00:00Z') })).toBe('ok');
    expect(await codeOf(ev)).toBe('ok');
  });

  it('validity of a cached simulated ASK and ARK is checked at each call\'s now', async () => {
    const ev = shortCa.evidence(RD, { certs: { ark: b64(shortCa.arkDer) } });
    const trust = shortCa.trust;
    expect(await codeOf(ev, { trust })).toBe('ok');
    expect(await codeOf(ev, { trust, now: new Date('2027-01-01T00:00:01Z') })).toBe('ERR_ATT_SNP_CERT_EXPIRED');
    expect(await codeOf(ev, { trust, now: new Date('2024-12-31T23:59:59Z') })).toBe('ERR_ATT_SNP_CERT_NOT_YET_VALID');
    expect(await codeOf(ev, { trust })).toBe('ok');
  });

  it('a cached chain does not verify under another root, nor with another chain\'s ASK', async () => {
    const ev = chain.evidence(RD);
    expect(await codeOf(ev)).toBe('ok');
    expect(await codeOf(other.evidence(RD), { trust: other.trust })).toBe('ok'); // other's ASK cached too
    // Same evidence bytes, another configured root (same names, other key).
    expect(await codeOf(ev, { trust: other.trust })).toBe('ERR_ATT_SNP_CHAIN_INVALID');
    // Our VCEK with the other chain's (cached, valid) ASK.
    expect(await codeOf(chain.evidence(RD, { certs: { ask: b64(other.askDer) } }))).toBe('ERR_ATT_SNP_CHAIN_INVALID');
    // An evidence ARK other than the configured root.
    expect(await codeOf(chain.evidence(RD, { certs: { ark: b64(other.arkDer) } }))).toBe('ERR_ATT_SNP_ARK_PIN_MISMATCH');
    expect(await codeOf(ev)).toBe('ok');
  });

  it('a cached VCEK does not vouch for a report signed by another key', async () => {
    expect(await codeOf(chain.evidence(RD))).toBe('ok');
    const forged = { ...other.evidence(RD), certs: { vcek: b64(chain.vcekDer), ask: b64(chain.askDer) } };
    // other's chip ID differs from our VCEK's hwID, but the signature is checked first.
    expect(await codeOf(forged)).toBe('ERR_ATT_SNP_BAD_SIGNATURE');
  });

  it('revocation is evaluated on every call: a CRL listing the cached VCEK or ASK rejects it', async () => {
    const ev = chain.evidence(RD);
    const at = (d: number) => new Date(NOW.getTime() + d * DAY);
    expect(await codeOf(ev, { crls: [await mintCrl(chain.ark, ['0badc0de'], at(-1), at(30))] })).toBe('ok');
    expect(await codeOf(ev, { crls: [await mintCrl(chain.ark, [serialOf(chain.askDer)], at(-1), at(30))] })).toBe('ERR_ATT_SNP_REVOKED');
    expect(await codeOf(ev, { crls: [await mintCrl(chain.ark, ['0badc0de'], at(-30), at(-1))] })).toBe('ERR_ATT_SNP_CRL_EXPIRED');
    expect(await codeOf(ev)).toBe('ok');
  });
});
