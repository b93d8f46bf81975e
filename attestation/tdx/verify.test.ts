import { describe, expect, it } from 'vitest';
import { ANY_REPORT_DATA, evaluateTdxQuote, loadTdxCollateral, parseTdxQuote, tdxCollateralFromPcs, verifyTdxQuote, type TdxCollateral } from './index.js';
import {
  DCAP_NOW,
  GO_BUNDLE,
  GO_NOW,
  OUTDATED_NOW,
  TRUSTEE6_NOW,
  dcapCollateral,
  parseTdxCollateralJsonFile,
  text,
  trustee6Collateral,
  vec,
} from './testdata/fixtures.js';

const rd = (q: Uint8Array) => parseTdxQuote(q).body.reportData;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return (e as { code?: string }).code ?? `untyped ${String(e)}`;
  }
  return 'no error';
}

describe('verifyTdxQuote: real quotes', () => {
  it('dcap-qvl/tdx_quote is UpToDate with its collateral (v4)', async () => {
    const q = vec('dcap-qvl/tdx_quote');
    const c = await verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: rd(q), collateral: dcapCollateral() });
    expect(c.tcbStatus).toBe('UpToDate');
    expect(c.qeTcbStatus).toBe('UpToDate');
    expect(c.tdxModuleId).toBe('TDX_01');
    expect(c.advisoryIds).toEqual([]);
    expect(c.fmspc).toBe('b0c06f000000');
    expect(c.quoteVersion).toBe(4);
    expect(c.simulated).toBe(false);
    expect(c.relaxations).toEqual([]);
    expect(c.mrtd).toBe('91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7');
    expect(c.rtmr).toHaveLength(4);
    expect(c.tdAttributes).toMatchObject({ hex: '0000001000000000', debug: false, septVeDisable: true });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it('dcap-qvl/tdx_quote passes the default policy (with its MRTD)', async () => {
    const q = vec('dcap-qvl/tdx_quote');
    const { claims, failures } = await evaluateTdxQuote(q, {
      now: DCAP_NOW,
      expectedReportData: rd(q),
      collateral: dcapCollateral(),
      policy: { mrtd: [parseClaimsMrtd(q)] },
    });
    expect(failures).toEqual([]);
    expect(claims.relaxations).toEqual([]);
  });

  it('dcap-qvl/tdx_quote_outdated (v5, TD 1.5) matches no TCB level and is rejected, naming it', async () => {
    const q = vec('dcap-qvl/tdx_quote_outdated');
    const p = verifyTdxQuote(q, { now: OUTDATED_NOW, expectedReportData: rd(q), collateral: parseTdxCollateralJsonFile('dcap-qvl/tdx_quote_outdated_collateral.json') });
    await expect(p).rejects.toMatchObject({ code: 'ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND', detail: expect.stringContaining('below every level') });
  });

  it('trustee/tdx_quote_4 is a debug TD: verified, rejected unless allowDebug (layout (a) bundle)', async () => {
    const q = vec('trustee/tdx_quote_4.dat');
    const collateral = await loadTdxCollateral(GO_BUNDLE);
    const base = { now: GO_NOW, expectedReportData: rd(q), collateral };
    const strict = await evaluateTdxQuote(q, { ...base, policy: { anyMrtd: true } });
    expect(strict.claims.tdAttributes.debug).toBe(true);
    expect(strict.claims.tcbStatus).toBe('UpToDate');
    expect(strict.failures).toEqual([{ field: 'tdAttributes.debug', expected: 'false', observed: 'true' }]);
    const relaxed = await evaluateTdxQuote(q, { ...base, policy: { anyMrtd: true, allowDebug: true } });
    expect(relaxed.failures).toEqual([]);
    expect(relaxed.claims.relaxations).toEqual(['allow-debug', 'any-mrtd']);
  });

  it('trustee/tdx_quote_6 is OutOfDate: rejected by default, accepted when OutOfDate is accepted', async () => {
    const q = vec('trustee/tdx_quote_6.dat');
    const base = { now: TRUSTEE6_NOW, expectedReportData: rd(q), collateral: trustee6Collateral(), allowMissingCrls: true };
    const strict = await evaluateTdxQuote(q, { ...base, policy: { anyMrtd: true } });
    expect(strict.claims.tcbStatus).toBe('OutOfDate');
    expect(strict.claims.platformTcbStatus).toBe('OutOfDate');
    expect(strict.claims.tdxModuleId).toBe('TDX_03');
    expect(strict.claims.tdxModuleTcbStatus).toBe('UpToDate');
    expect(strict.failures).toEqual([{ field: 'tcbStatus', expected: 'one of [UpToDate]', observed: 'OutOfDate' }]);
    const relaxed = await evaluateTdxQuote(q, { ...base, policy: { anyMrtd: true, acceptedTcbStatuses: ['UpToDate', 'OutOfDate'] } });
    expect(relaxed.failures).toEqual([]);
    expect(relaxed.claims.tcbStatus).toBe('OutOfDate');
    expect(relaxed.claims.relaxations).toEqual(['pck-crl-unchecked', 'accept-tcb-status:OutOfDate', 'any-mrtd']);
  });

  it('trustee/tdx_quote_6 without a PCK CRL fails unless missing CRLs are explicitly allowed', async () => {
    const q = vec('trustee/tdx_quote_6.dat');
    expect(await code(verifyTdxQuote(q, { now: TRUSTEE6_NOW, expectedReportData: rd(q), collateral: trustee6Collateral() }))).toBe(
      'ERR_ATT_TDX_CRL_MISSING',
    );
  });

  it('go-tdx-guest SPR quote (39 trailing bytes) matches no TCB level', async () => {
    const q = vec('go-tdx-guest/tdx_prod_quote_SPR_E4.dat');
    expect(parseTdxQuote(q).trailingBytes).toBe(39);
    const collateral = await loadTdxCollateral(GO_BUNDLE);
    expect(await code(verifyTdxQuote(q, { now: GO_NOW, expectedReportData: rd(q), collateral }))).toBe('ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND');
  });

  it('a quote whose FMSPC is not the TCB Info one fails', async () => {
    const q = vec('trustee/tdx_quote_4.dat');
    expect(await code(verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: rd(q), collateral: dcapCollateral() }))).toBe(
      'ERR_ATT_TDX_FMSPC_MISMATCH',
    );
  });

  it('expired collateral and certificates fail at the wrong time', async () => {
    const q = vec('dcap-qvl/tdx_quote');
    const at = (iso: string) => code(verifyTdxQuote(q, { now: new Date(iso), expectedReportData: rd(q), collateral: dcapCollateral() }));
    expect(await at('2025-07-20T00:00:00Z')).toBe('ERR_ATT_TDX_CRL_EXPIRED');
    expect(await at('2025-01-01T00:00:00Z')).toBe('ERR_ATT_TDX_CERT_NOT_YET_VALID');
  });

  it('report_data is required and compared', async () => {
    const q = vec('dcap-qvl/tdx_quote');
    const collateral = dcapCollateral();
    expect(await code(verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: new Uint8Array(64), collateral }))).toBe(
      'ERR_ATT_TDX_REPORT_DATA_MISMATCH',
    );
    expect(await code(verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: undefined as never, collateral }))).toBe('ERR_ATT_TDX_BAD_ARGUMENT');
    const c = await verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: ANY_REPORT_DATA, collateral });
    expect(c.relaxations).toEqual(['report-data-unchecked']);
  });
});

describe('verifyTdxQuote: look-alike Intel root', () => {
  const fakeChain = text('negative-fake-intel-root/tcbSignChain.pem');
  const pems = fakeChain.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g)!;
  const [fakeRoot, fakeSigner] = [pems[0]!, pems[1]!]; // the file lists the root first
  const realRoot = text('roots/intel/Intel_SGX_Root_CA.pem');
  const withTcb = (chain: string, body?: string): TdxCollateral => {
    const d = dcapCollateral();
    return Object.freeze({
      ...d,
      tcbInfoIssuerChain: chain,
      ...(body ? { tcbInfo: tdxCollateralFromPcs({ tcbInfoBody: body, tcbInfoIssuerChain: chain, qeIdentityBody: text('trustee/enclaveIdentity.json'), qeIdentityIssuerChain: chain }).tcbInfo } : {}),
    });
  };
  const q = vec('dcap-qvl/tdx_quote');
  const run = (c: TdxCollateral) => code(verifyTdxQuote(q, { now: DCAP_NOW, expectedReportData: rd(q), collateral: c }));

  it('collateral signed under the look-alike root fails on the root key pin', async () => {
    expect(await run(withTcb(fakeSigner + fakeRoot, text('negative-fake-intel-root/tcbInfo.json')))).toBe('ERR_ATT_TDX_ROOT_PIN_MISMATCH');
  });
  it('the look-alike signer does not verify under the real root (same DN, different key)', async () => {
    expect(await run(withTcb(fakeSigner + realRoot, text('negative-fake-intel-root/tcbInfo.json')))).toBe('ERR_ATT_TDX_CHAIN_INVALID');
    expect(await run(withTcb(fakeSigner, text('negative-fake-intel-root/tcbInfo.json')))).toBe('ERR_ATT_TDX_CHAIN_INVALID');
  });
});

describe('verifyTdxQuote: one flipped byte', () => {
  const good = vec('dcap-qvl/tdx_quote');
  const sig = 48 + 584 + 4; // quote signature
  const qeReport = sig + 64 + 64 + 6;
  const qeSig = qeReport + 384;
  const auth = qeSig + 64 + 2;
  const pem = auth + 32 + 6;
  const pemText = Buffer.from(good.subarray(pem)).toString('latin1');
  const leafEnd = pem + pemText.indexOf('\n-----END CERTIFICATE-----');
  const cases: [string, number, string][] = [
    ['header user data', 30, 'ERR_ATT_TDX_BAD_QUOTE_SIGNATURE'],
    ['header qe_svn', 8, 'ERR_ATT_TDX_BAD_QUOTE_SIGNATURE'],
    ['header version', 0, 'ERR_ATT_TDX_UNSUPPORTED_VERSION'],
    ['header tee_type', 4, 'ERR_ATT_TDX_UNSUPPORTED_TEE'],
    ['header att_key_type', 2, 'ERR_ATT_TDX_UNSUPPORTED_KEY_TYPE'],
    ['header QE vendor id', 12, 'ERR_ATT_TDX_UNKNOWN_QE_VENDOR'],
    ['body mrtd', 48 + 136, 'ERR_ATT_TDX_BAD_QUOTE_SIGNATURE'],
    ['body td_attributes', 48 + 120, 'ERR_ATT_TDX_BAD_QUOTE_SIGNATURE'],
    ['quote signature', sig + 5, 'ERR_ATT_TDX_BAD_QUOTE_SIGNATURE'],
    ['attestation key', sig + 64 + 3, 'ERR_ATT_TDX_QE_BINDING_MISMATCH'],
    ['QE report', qeReport + 64, 'ERR_ATT_TDX_BAD_QE_SIGNATURE'],
    ['QE report_data', qeReport + 320, 'ERR_ATT_TDX_BAD_QE_SIGNATURE'],
    ['QE signature', qeSig + 10, 'ERR_ATT_TDX_BAD_QE_SIGNATURE'],
    ['QE auth data', auth + 1, 'ERR_ATT_TDX_QE_BINDING_MISMATCH'],
    ['PCK certificate signature', leafEnd - 10, 'ERR_ATT_TDX_CHAIN_INVALID'],
    ['certification data type', sig + 128, 'ERR_ATT_TDX_BAD_CERT_DATA'],
  ];
  it.each(cases)('%s', async (_name, off, want) => {
    const b = new Uint8Array(good);
    // Keep PEM text base64 when flipping inside it.
    b[off] = off >= pem ? (b[off] === 0x41 ? 0x42 : 0x41) : b[off]! ^ 0x01;
    const expected = off >= 48 + 520 && off < 48 + 584 ? ANY_REPORT_DATA : rd(good);
    expect(await code(verifyTdxQuote(b, { now: DCAP_NOW, expectedReportData: expected, collateral: dcapCollateral() }))).toBe(want);
  });

  it('a tcbInfo with one character changed fails its signature', async () => {
    const c = dcapCollateral();
    const raw = c.tcbInfo.raw.replace('"tcbEvaluationDataNumber":17', '"tcbEvaluationDataNumber":18');
    expect(raw).not.toBe(c.tcbInfo.raw);
    const bad = { ...c, tcbInfo: { ...c.tcbInfo, raw } };
    expect(await code(verifyTdxQuote(good, { now: DCAP_NOW, expectedReportData: rd(good), collateral: bad }))).toBe(
      'ERR_ATT_TDX_BAD_COLLATERAL_SIGNATURE',
    );
  });

  it('a qeIdentity with one character changed fails its signature', async () => {
    const c = dcapCollateral();
    const raw = c.qeIdentity.raw.replace('"isvprodid":2', '"isvprodid":3');
    const bad = { ...c, qeIdentity: { ...c.qeIdentity, raw } };
    expect(await code(verifyTdxQuote(good, { now: DCAP_NOW, expectedReportData: rd(good), collateral: bad }))).toBe(
      'ERR_ATT_TDX_BAD_COLLATERAL_SIGNATURE',
    );
  });

  it('a PCK CRL from another issuer (the root CRL in its place) fails', async () => {
    const c = dcapCollateral();
    const bad = { ...c, pckCrl: c.rootCaCrl! };
    expect(await code(verifyTdxQuote(good, { now: DCAP_NOW, expectedReportData: rd(good), collateral: bad }))).toBe('ERR_ATT_TDX_CRL_INVALID');
  });
});

function parseClaimsMrtd(q: Uint8Array): string {
  return Buffer.from(parseTdxQuote(q).body.mrTd).toString('hex');
}
