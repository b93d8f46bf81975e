import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { INTEL_SGX_ROOT_CA_PEM, TDX_CODES, TdxPolicySchema, parseTdxPolicy, tdxRelaxationsFor, validateTdxClaims, type TdxClaims } from './index.js';
import { text } from './testdata/fixtures.js';

const claims: TdxClaims = Object.freeze({
  tee: 'tdx',
  simulated: false,
  quoteVersion: 4,
  bodyType: 2,
  mrtd: 'aa'.repeat(48),
  rtmr: ['01'.repeat(48), '02'.repeat(48), '03'.repeat(48), '04'.repeat(48)],
  mrseam: 'bb'.repeat(48),
  mrsignerseam: '00'.repeat(48),
  mrconfigid: '00'.repeat(48),
  mrowner: '00'.repeat(48),
  mrownerconfig: '00'.repeat(48),
  reportData: 'cc'.repeat(64),
  tdAttributes: { hex: '0000001000000000', debug: false, septVeDisable: true, migratable: false, pks: false, kl: false, perfmon: false },
  seamAttributes: '0000000000000000',
  xfam: 'e702060000000000',
  teeTcbSvn: '06010300000000000000000000000000',
  fmspc: 'b0c06f000000',
  pceId: '0000',
  tcbStatus: 'UpToDate',
  platformTcbStatus: 'UpToDate',
  qeTcbStatus: 'UpToDate',
  tcbDate: '2024-03-13T00:00:00.000Z',
  advisoryIds: [],
  tcbEvaluationDataNumber: 17,
  relaxations: [],
} as const);

describe('TdxPolicySchema / validateTdxClaims', () => {
  it('fail-closed defaults: UpToDate only, no debug, SEPT_VE_DISABLE allowed, MRTD required', () => {
    const p = parseTdxPolicy({ mrtd: ['AA'.repeat(48)] });
    expect(p.acceptedTcbStatuses).toEqual(['UpToDate']);
    expect(p.allowDebug).toBe(false);
    expect(p.tdAttributesAllowMask).toBe('0000001000000000');
    expect(tdxRelaxationsFor(p)).toEqual([]);
    expect(validateTdxClaims(claims, p)).toEqual([]);
    expect(() => parseTdxPolicy({})).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_POLICY' }));
    expect(() => parseTdxPolicy({ anyMrtd: true, unknownKnob: 1 })).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_POLICY' }));
    expect(() => parseTdxPolicy({ anyMrtd: true, acceptedTcbStatuses: ['Fine'] })).toThrow(expect.objectContaining({ code: 'ERR_ATT_TDX_BAD_POLICY' }));
  });

  it('reports every failure in one pass, each naming field, expected and observed', () => {
    const bad: TdxClaims = {
      ...claims,
      tcbStatus: 'SWHardeningNeeded',
      tdAttributes: { ...claims.tdAttributes, hex: '0100001000000080', debug: true, perfmon: true },
      xfam: 'e718060000000000',
      teeTcbSvn: '05010300000000000000000000000000',
    };
    const f = validateTdxClaims(
      bad,
      TdxPolicySchema.parse({
        mrtd: ['ab'.repeat(48)],
        rtmr0: ['01'.repeat(48)],
        rtmr1: ['ff'.repeat(48)],
        mrseam: ['bb'.repeat(48)],
        mrsignerseam: ['11'.repeat(48)],
        xfam: { value: 'e702060000000000' },
        minTeeTcbSvn: '06010300000000000000000000000000',
        reportData: 'dd'.repeat(64),
      }),
    );
    expect(f.map((x) => x.field)).toEqual(['tcbStatus', 'tdAttributes.debug', 'tdAttributes', 'mrtd', 'rtmr[1]', 'mrsignerseam', 'xfam', 'teeTcbSvn', 'reportData']);
    expect(f[0]).toEqual({ field: 'tcbStatus', expected: 'one of [UpToDate]', observed: 'SWHardeningNeeded' });
    expect(f[2]!.observed).toContain('0000000000000080');
  });

  it('extra statuses, debug, any MRTD and a wider attribute mask are relaxations', () => {
    const p = parseTdxPolicy({ anyMrtd: true, allowDebug: true, acceptedTcbStatuses: ['UpToDate', 'SWHardeningNeeded', 'OutOfDate'], tdAttributesAllowMask: '0000001000000080' });
    expect(tdxRelaxationsFor(p)).toEqual([
      'accept-tcb-status:SWHardeningNeeded',
      'accept-tcb-status:OutOfDate',
      'allow-debug',
      'any-mrtd',
      'td-attributes-allow-mask:0000001000000080',
    ]);
    expect(validateTdxClaims({ ...claims, tcbStatus: 'OutOfDate', tdAttributes: { ...claims.tdAttributes, hex: '0100001000000080', debug: true } }, p)).toEqual([]);
  });

  it('simulated claims are never accepted', () => {
    const f = validateTdxClaims({ ...claims, simulated: true as never }, parseTdxPolicy({ anyMrtd: true }));
    expect(f.map((x) => x.field)).toEqual(['simulated']);
  });
});

describe('documentation and pins stay in step', () => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  it('every code is documented in ERRORS.md and every documented code exists', () => {
    const doc = readFileSync(path.join(here, 'ERRORS.md'), 'utf8');
    const documented = new Set([...doc.matchAll(/`(ERR_ATT_TDX_[A-Z_]+)`/g)].map((m) => m[1]));
    expect([...documented].sort()).toEqual(Object.keys(TDX_CODES).sort());
    for (const [code, info] of Object.entries(TDX_CODES)) {
      expect(doc).toMatch(new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${info.category}\\s*\\|`));
    }
  });
  it('the embedded Intel SGX Root CA equals the vector file', () => {
    expect(INTEL_SGX_ROOT_CA_PEM.trim()).toBe(text('roots/intel/Intel_SGX_Root_CA.pem').trim());
  });
});
