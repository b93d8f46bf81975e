/**
 * Intel TDX in the broker: TDX claims and policies through the HTTP API with the fake
 * verifier, the real default verifier (dcap-qvl quote and collateral) over `inject`, and
 * `createDefaultVerifier` on the real quotes and collateral layouts.
 */
import { cp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeJwt } from 'jose';
import { afterEach, describe, expect, it } from 'vitest';
import { parseTdxQuote, verifyTdxQuote, loadTdxCollateral } from '../attestation/tdx/index.js';
import { generateHpkeKeyPair } from '../common/hpke.js';
import { kmsReportData } from '../attestation/binding.js';
import { loadBrokerConfig } from './config.js';
import { parseReleasePolicy, policyHash } from './policy.js';
import { ProblemSchema, PROBLEM_CONTENT_TYPE, AttestationTokenPayloadSchema } from './protocol.js';
import { createDefaultVerifier, MAX_TDX_QUOTE_BYTES } from './verifier.js';
import {
  attest,
  challenge,
  createKeyViaApi,
  fakeVerifier,
  makeClaims,
  makeHarness,
  makeTdxClaims,
  MEASUREMENT_A,
  release,
  tempDir,
  TDX_MRTD,
  TDX_MRTD_OTHER,
  type Harness,
} from './testdata/harness.js';

const VECTORS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test/data/vectors/tdx');
const DCAP_QUOTE = path.join(VECTORS, 'dcap-qvl/tdx_quote');
const DCAP_COLLATERAL = path.join(VECTORS, 'dcap-qvl/tdx_quote_collateral.json');
/** dcap-qvl/tdx_quote and its collateral are valid (UpToDate) at this time. */
const DCAP_NOW = new Date('2025-07-01T00:00:00Z');
/** trustee/tdx_quote_4 (a debug TD, FMSPC 50806f000000) with the go-tdx-guest collateral. */
const TRUSTEE4_QUOTE = path.join(VECTORS, 'trustee/tdx_quote_4.dat');
const GO_BUNDLE = path.join(VECTORS, 'bundles/go-tdx-guest-50806f000000');
const GO_NOW = new Date('2023-07-01T01:00:00Z');

const DEK = Buffer.alloc(32, 9);
const TDX_POLICY = { tee: 'tdx', mrtd: [TDX_MRTD] };

function expectProblem(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  expect(String(res.headers['content-type'])).toContain(PROBLEM_CONTENT_TYPE);
  const p = ProblemSchema.parse(res.json());
  expect(p).toMatchObject({ status, code });
  return p;
}

const quoteBytes = async (file: string) => new Uint8Array(await readFile(file));

describe('TDX claims and policies (fake TDX verifier)', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  it('the harness TdxClaims are what verifyTdxQuote returns for the real dcap-qvl quote', async () => {
    const q = await quoteBytes(DCAP_QUOTE);
    const real = await verifyTdxQuote(q, {
      now: DCAP_NOW,
      expectedReportData: parseTdxQuote(q).body.reportData,
      collateral: await loadTdxCollateral(DCAP_COLLATERAL),
    });
    expect(JSON.parse(JSON.stringify(real))).toEqual(JSON.parse(JSON.stringify(makeTdxClaims())));
  });

  it('a TDX key policy listing the MRTD releases; the token says tdx and carries the default policy relaxation', async () => {
    h = await makeHarness();
    expect((await createKeyViaApi(h.app, 'tdx-a', DEK, TDX_POLICY)).statusCode).toBe(201);
    const { res, keyPair } = await attest(h.app, { tee: 'tdx' });
    expect(res.statusCode).toBe(200);
    const token = res.json().token as string;
    const payload = AttestationTokenPayloadSchema.parse(decodeJwt(token));
    expect(payload['cir.tee']).toBe('tdx');
    expect(payload['cir.claims']).toMatchObject({ tee: 'tdx', mrtd: TDX_MRTD, tcbStatus: 'UpToDate' });
    // Default TDX attestation policy: { tee: 'tdx', anyMrtd: true }.
    expect(payload['cir.relaxations']).toEqual(['any-mrtd']);
    expect(payload['cir.policy-id']).toBe('attestation/tdx');
    // any-mrtd: no executables claim; the rest of the vector affirms.
    expect(payload.submods.cpu?.['ear.status']).toBe('affirming');
    expect(payload.submods.cpu?.['ear.trustworthiness-vector'].executables).toBe(0);
    expect(payload['cir.policy-hash']).toBe(policyHash(parseReleasePolicy({ tee: 'tdx', anyMrtd: true }, { production: false })));
    const r = await release(h.app, 'tdx-a', token, keyPair.publicKey);
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ keyId: 'tdx-a', version: 1 });
  });

  it('a TDX key policy with another MRTD denies, naming mrtd', async () => {
    h = await makeHarness();
    expect((await createKeyViaApi(h.app, 'tdx-b', DEK, { tee: 'tdx', mrtd: [TDX_MRTD_OTHER] })).statusCode).toBe(201);
    const { res, keyPair } = await attest(h.app, { tee: 'tdx' });
    const p = expectProblem(await release(h.app, 'tdx-b', res.json().token, keyPair.publicKey), 403, 'ERR_KMS_POLICY_DENIED');
    expect(p.failures).toEqual([{ field: 'mrtd', expected: `one of [${TDX_MRTD_OTHER}]`, observed: TDX_MRTD }]);
  });

  it('an SEV-SNP key policy denies TDX claims, naming tee', async () => {
    h = await makeHarness();
    expect((await createKeyViaApi(h.app, 'snp-a', DEK, { anyMeasurement: true })).statusCode).toBe(201);
    const { res, keyPair } = await attest(h.app, { tee: 'tdx' });
    const p = expectProblem(await release(h.app, 'snp-a', res.json().token, keyPair.publicKey), 403, 'ERR_KMS_POLICY_DENIED');
    expect(p.failures).toEqual([{ field: 'tee', expected: 'sev-snp', observed: 'tdx' }]);
  });

  it('a TDX key policy denies SEV-SNP claims, naming tee', async () => {
    h = await makeHarness();
    expect((await createKeyViaApi(h.app, 'tdx-any', DEK, { tee: 'tdx', anyMrtd: true })).statusCode).toBe(201);
    const { res, keyPair } = await attest(h.app);
    expect(res.statusCode).toBe(200);
    expect(decodeJwt(res.json().token)['cir.tee']).toBe('sev-snp');
    const p = expectProblem(await release(h.app, 'tdx-any', res.json().token, keyPair.publicKey), 403, 'ERR_KMS_POLICY_DENIED');
    expect(p.failures).toEqual([{ field: 'tee', expected: 'tdx', observed: 'sev-snp' }]);
  });

  it.each([
    ['tcbStatus', { tcbStatus: 'OutOfDate' }],
    ['tdAttributes.debug', { tdAttributes: { ...makeTdxClaims().tdAttributes, hex: '0100001000000000', debug: true } }],
    ['simulated', { simulated: true }],
  ])('the default TDX attestation policy refuses %s', async (field, claims) => {
    h = await makeHarness();
    const { res } = await attest(h.app, { tee: 'tdx', claims: claims as never });
    const p = expectProblem(res, 403, 'ERR_KMS_ATTESTATION_DENIED');
    expect(p.failures?.map((f) => f.field)).toContain(field);
  });

  it('verifier relaxations (pck-crl-unchecked) and TDX policy relaxations reach the token', async () => {
    h = await makeHarness({
      config: { attestation: { policy: { tee: 'tdx', anyMrtd: true, acceptedTcbStatuses: ['UpToDate', 'SWHardeningNeeded'] } } },
    });
    const { res } = await attest(h.app, { tee: 'tdx', claims: { relaxations: ['pck-crl-unchecked'] } });
    expect(res.statusCode).toBe(200);
    const p = AttestationTokenPayloadSchema.parse(decodeJwt(res.json().token));
    expect(p['cir.relaxations']).toEqual(['pck-crl-unchecked', 'accept-tcb-status:SWHardeningNeeded', 'any-mrtd']);
    // Unchecked CRLs and an accepted non-current TCB: hardware in the warning tier.
    expect(p.submods.cpu?.['ear.trustworthiness-vector'].hardware).toBe(32);
    expect(p.submods.cpu?.['ear.status']).toBe('warning');
  });

  it('an attestation policy configured for SEV-SNP only denies TDX (tee); one per TEE admits both', async () => {
    h = await makeHarness({ config: { attestation: { policy: { measurements: [MEASUREMENT_A] } } } });
    const denied = await attest(h.app, { tee: 'tdx' });
    expect(expectProblem(denied.res, 403, 'ERR_KMS_ATTESTATION_DENIED').failures).toEqual([
      { field: 'tee', expected: 'sev-snp', observed: 'tdx' },
    ]);
    expect((await attest(h.app)).res.statusCode).toBe(200);
    await h.close();
    h = await makeHarness({
      config: { attestation: { policy: [{ measurements: [MEASUREMENT_A] }, { tee: 'tdx', mrtd: [TDX_MRTD] }] } },
    });
    const tdx = await attest(h.app, { tee: 'tdx' });
    expect(tdx.res.statusCode).toBe(200);
    expect(decodeJwt(tdx.res.json().token)['cir.policy-hash']).toBe(policyHash(parseReleasePolicy({ tee: 'tdx', mrtd: [TDX_MRTD] }, { production: false })));
    expect((await attest(h.app)).res.statusCode).toBe(200);
    expect(expectProblem((await attest(h.app, { tee: 'tdx', claims: { mrtd: TDX_MRTD_OTHER } })).res, 403, 'ERR_KMS_ATTESTATION_DENIED').failures).toEqual([
      { field: 'mrtd', expected: `one of [${TDX_MRTD}]`, observed: TDX_MRTD_OTHER },
    ]);
  });

  it('TDX claims still go through the broker report_data re-check', async () => {
    h = await makeHarness({ verifier: fakeVerifier({ strict: false }) });
    const other = await generateHpkeKeyPair();
    const nonce = await challenge(h.app);
    const { res } = await attest(h.app, { tee: 'tdx', nonce, reportData: kmsReportData(nonce, other.publicKey) });
    expectProblem(res, 403, 'ERR_KMS_BINDING_MISMATCH');
  });

  it('a verifier that answers TDX evidence with SEV-SNP claims is a 500, never a token', async () => {
    h = await makeHarness({
      verifier: { verify: async (_e, o) => makeClaims({ reportData: Buffer.from(o.expectedReportData).toString('hex') }) },
    });
    const { res } = await attest(h.app, { tee: 'tdx' });
    expectProblem(res, 500, 'ERR_KMS_INTERNAL');
  });

  it('stores a TDX policy (keeping tee in the record and its hash) and reads it back', async () => {
    h = await makeHarness();
    const created = await createKeyViaApi(h.app, 'tdx-c', DEK, { mrtd: [TDX_MRTD.toUpperCase()], tee: 'tdx' });
    expect(created.statusCode).toBe(201);
    const meta = (await h.store.get({ tenant: 'default', keyId: 'tdx-c' })) as unknown as { policy: Record<string, unknown>; policyHash: string };
    expect(meta.policy).toMatchObject({ tee: 'tdx', mrtd: [TDX_MRTD], acceptedTcbStatuses: ['UpToDate'], allowDebug: false });
    expect(meta.policyHash).toBe(policyHash(parseReleasePolicy({ tee: 'tdx', mrtd: [TDX_MRTD] }, { production: false })));
  });

  it('an SEV-SNP field in a TDX policy is a 400 naming the field', async () => {
    h = await makeHarness();
    const res = await createKeyViaApi(h.app, 'tdx-d', DEK, { tee: 'tdx', mrtd: [TDX_MRTD], measurements: [MEASUREMENT_A] });
    const p = expectProblem(res, 400, 'ERR_KMS_POLICY_INVALID');
    expect(p.detail).toContain('measurements');
    const sim = await createKeyViaApi(h.app, 'tdx-e', DEK, { tee: 'tdx', anyMrtd: true, allowSimulated: true });
    expect(expectProblem(sim, 400, 'ERR_KMS_POLICY_INVALID').detail).toContain('allowSimulated');
  });
});

describe('TDX through the real default verifier (inject)', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.close();
    h = undefined;
  });

  const real = (attestation: Record<string, unknown>) =>
    makeHarness({ config: { attestation }, makeVerifier: (config, env) => createDefaultVerifier(config, { env }) });

  async function postEvidence(harness: Harness, evidence: unknown) {
    const keyPair = await generateHpkeKeyPair();
    const nonce = await challenge(harness.app);
    return harness.app.inject({
      method: 'POST',
      url: '/v1/attest',
      payload: { nonce: nonce.toString('base64url'), evidence, publicKey: Buffer.from(keyPair.publicKey).toString('base64url') },
    });
  }

  it('the real dcap-qvl quote is verified as TDX and rejected: its report_data cannot bind our nonce', async () => {
    h = await real({ tdxCollateral: DCAP_COLLATERAL });
    const quote = (await readFile(DCAP_QUOTE)).toString('base64');
    const p = expectProblem(await postEvidence(h, { tee: 'tdx', quote }), 403, 'ERR_KMS_EVIDENCE_REJECTED');
    expect(p.detail).toBe('ERR_ATT_TDX_REPORT_DATA_MISMATCH');
  });

  it('without attestation.tdxCollateral, TDX evidence is a typed 403 naming the setting', async () => {
    h = await real({});
    const quote = (await readFile(DCAP_QUOTE)).toString('base64');
    const p = expectProblem(await postEvidence(h, { tee: 'tdx', quote }), 403, 'ERR_KMS_TEE_NOT_CONFIGURED');
    expect(p.detail).toContain('attestation.tdxCollateral');
  });

  it.each([
    ['missing quote', { tee: 'tdx' }, 'quote'],
    ['unknown member', { tee: 'tdx', quote: 'AAAA', certs: {} }, 'certs'],
    ['quote not a string', { tee: 'tdx', quote: 42 }, 'quote'],
    ['base64url, not base64', { tee: 'tdx', quote: 'AA-_' }, 'quote'],
    ['unpadded base64', { tee: 'tdx', quote: 'AAA' }, 'quote'],
    ['quote over 64 KiB', { tee: 'tdx', quote: Buffer.alloc(MAX_TDX_QUOTE_BYTES + 3).toString('base64') }, 'quote'],
  ])('a malformed TDX envelope (%s) is a 400 naming the field', async (_name, evidence, field) => {
    h = await real({ tdxCollateral: DCAP_COLLATERAL });
    const p = expectProblem(await postEvidence(h, evidence), 400, 'ERR_KMS_EVIDENCE_MALFORMED');
    expect(p.detail).toContain(field);
  });

  it('a well-formed envelope around bytes that are no quote is a 400 from the TDX parser', async () => {
    h = await real({ tdxCollateral: DCAP_COLLATERAL });
    const p = expectProblem(await postEvidence(h, { tee: 'tdx', quote: Buffer.alloc(48).toString('base64') }), 400, 'ERR_KMS_EVIDENCE_MALFORMED');
    expect(p.detail).toMatch(/^ERR_ATT_TDX_/);
  });

  it('SEV-SNP evidence still goes to the SEV-SNP verifier when TDX is configured', async () => {
    h = await real({ tdxCollateral: DCAP_COLLATERAL });
    const p = expectProblem(await postEvidence(h, { tee: 'sev-snp', report: 'AAAA' }), 400, 'ERR_KMS_EVIDENCE_MALFORMED');
    expect(p.detail).toMatch(/^ERR_ATT_SNP_/);
  });
});

describe('createDefaultVerifier: TDX collateral layouts', () => {
  const DEV_ENV = { NODE_ENV: 'test' };
  const dirs: string[] = [];
  const scratch = async () => {
    const d = await tempDir();
    dirs.push(d);
    return d;
  };
  afterEach(async () => {
    for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
  });
  const cfg = (attestation: Record<string, unknown>) => loadBrokerConfig({ stateDir: '/tmp/unused', attestation }, { env: DEV_ENV });

  async function verifyReal(attestation: Record<string, unknown>, file: string, now: Date) {
    const v = await createDefaultVerifier(cfg(attestation), { env: DEV_ENV });
    const q = await readFile(file);
    return v.verify({ tee: 'tdx', quote: q.toString('base64') }, { now, expectedReportData: parseTdxQuote(new Uint8Array(q)).body.reportData });
  }

  it('a dcap-qvl JSON file verifies the real quote to TdxClaims', async () => {
    const c = await verifyReal({ tdxCollateral: DCAP_COLLATERAL }, DCAP_QUOTE, DCAP_NOW);
    expect(c).toMatchObject({ tee: 'tdx', mrtd: TDX_MRTD, tcbStatus: 'UpToDate', relaxations: [] });
  });

  it('a layout-(a) directory and an offline bundle root (one directory per FMSPC) both work', async () => {
    const dir = await verifyReal({ tdxCollateral: GO_BUNDLE }, TRUSTEE4_QUOTE, GO_NOW);
    expect(dir).toMatchObject({ tee: 'tdx', fmspc: '50806f000000', tcbStatus: 'UpToDate' });
    const root = await scratch();
    await cp(GO_BUNDLE, path.join(root, '50806f000000'), { recursive: true });
    const bundled = await verifyReal({ tdxCollateral: root }, TRUSTEE4_QUOTE, GO_NOW);
    expect(bundled).toEqual(dir);
  });

  it('a bundle without the quote FMSPC is ERR_ATT_TDX_COLLATERAL_UNAVAILABLE (503 at the broker), naming the FMSPC', async () => {
    const root = await scratch();
    await mkdir(path.join(root, '50806f000000'));
    await expect(verifyReal({ tdxCollateral: root }, DCAP_QUOTE, DCAP_NOW)).rejects.toMatchObject({
      code: 'ERR_ATT_TDX_COLLATERAL_UNAVAILABLE',
      category: 'unavailable',
      detail: expect.stringContaining('b0c06f000000'),
    });
  });

  it('missing CRLs fail closed unless tdxAllowMissingCrls, which the claims record', async () => {
    const dir = await scratch();
    const json = JSON.parse(await readFile(DCAP_COLLATERAL, 'utf8')) as Record<string, unknown>;
    delete json.pck_crl;
    delete json.root_ca_crl;
    const file = path.join(dir, 'no-crls.json');
    await writeFile(file, JSON.stringify(json));
    await expect(verifyReal({ tdxCollateral: file }, DCAP_QUOTE, DCAP_NOW)).rejects.toMatchObject({ code: 'ERR_ATT_TDX_CRL_MISSING' });
    const relaxed = await verifyReal({ tdxCollateral: file, tdxAllowMissingCrls: true }, DCAP_QUOTE, DCAP_NOW);
    expect([...relaxed.relaxations].sort()).toEqual(['pck-crl-unchecked', 'root-ca-crl-unchecked']);
  });

  it('refuses to start on a missing or malformed collateral, naming attestation.tdxCollateral', async () => {
    const dir = await scratch();
    const bad = path.join(dir, 'bad.json');
    await writeFile(bad, '{"tcb_info": 1}');
    for (const where of [path.join(dir, 'nope'), bad]) {
      await expect(createDefaultVerifier(cfg({ tdxCollateral: where }), { env: DEV_ENV })).rejects.toMatchObject({
        code: 'ERR_KMS_CONFIG_INVALID',
        detail: expect.stringContaining('attestation.tdxCollateral'),
      });
    }
  });
});
