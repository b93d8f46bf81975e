import type { PolicyFailure } from '../types.js';
import { TdxError } from './codes.js';
import { parseTdxPolicy, type TdxPolicy } from './policy.js';
import type { TdxClaims } from './types.js';

/**
 * Policy evaluation on verified TDX claims. No crypto, no I/O. Every rule is evaluated
 * (no early exit); each failure names the claim field, what the policy wanted and what
 * the evidence said (public values only).
 */

function oneOf(list: readonly string[]): string {
  const shown = list.slice(0, 8).join(', ');
  return list.length > 8 ? `one of [${shown}, ... (${list.length} total)]` : `one of [${shown}]`;
}

const bytes = (hex: string): Buffer => Buffer.from(hex, 'hex');

/**
 * Checks claims against a policy; [] when every rule passes. Rules: simulated is never
 * accepted; tcbStatus in acceptedTcbStatuses; tdAttributes.debug unless allowDebug; no
 * td_attributes bit outside tdAttributesAllowMask (DEBUG excluded); mrtd (unless anyMrtd),
 * rtmr0..3, mrconfigid, mrowner, mrownerconfig, mrseam, mrsignerseam allow-lists; xfam
 * under its mask; tee_tcb_svn >= minTeeTcbSvn byte by byte; reportData.
 *
 * Does NOT verify anything. An invalid policy throws ERR_ATT_TDX_BAD_POLICY.
 */
export function validateTdxClaims(claims: TdxClaims, policyIn: TdxPolicy): PolicyFailure[] {
  const policy = parseTdxPolicy(policyIn);
  const failures: PolicyFailure[] = [];
  const fail = (field: string, expected: string, observed: string): void => {
    failures.push(Object.freeze({ field, expected, observed }));
  };

  // SECURITY: there is no simulated TDX; anything claiming otherwise is rejected.
  if (claims.simulated !== false) fail('simulated', 'false', String(claims.simulated));
  if (!policy.acceptedTcbStatuses.includes(claims.tcbStatus)) fail('tcbStatus', oneOf(policy.acceptedTcbStatuses), claims.tcbStatus);
  if (claims.tdAttributes.debug && !policy.allowDebug) fail('tdAttributes.debug', 'false', 'true');
  const attrs = bytes(claims.tdAttributes.hex);
  const mask = bytes(policy.tdAttributesAllowMask);
  const extra = Buffer.alloc(8);
  for (let i = 0; i < 8; i++) extra[i] = attrs[i]! & ~mask[i]! & (i === 0 ? 0xfe : 0xff); // bit 0 is allowDebug's
  if (extra.some((b) => b !== 0)) {
    fail('tdAttributes', `no bits outside ${policy.tdAttributesAllowMask} (besides DEBUG)`, `${claims.tdAttributes.hex} (disallowed ${extra.toString('hex')})`);
  }

  if (!policy.anyMrtd) {
    const allowed = policy.mrtd ?? [];
    if (!allowed.includes(claims.mrtd)) fail('mrtd', oneOf(allowed), claims.mrtd);
  }
  const lists: [string, readonly string[] | undefined, string][] = [
    ['rtmr[0]', policy.rtmr0, claims.rtmr[0]],
    ['rtmr[1]', policy.rtmr1, claims.rtmr[1]],
    ['rtmr[2]', policy.rtmr2, claims.rtmr[2]],
    ['rtmr[3]', policy.rtmr3, claims.rtmr[3]],
    ['mrconfigid', policy.mrconfigid, claims.mrconfigid],
    ['mrowner', policy.mrowner, claims.mrowner],
    ['mrownerconfig', policy.mrownerconfig, claims.mrownerconfig],
    ['mrseam', policy.mrseam, claims.mrseam],
    ['mrsignerseam', policy.mrsignerseam, claims.mrsignerseam],
  ];
  for (const [field, allowed, observed] of lists) {
    if (allowed !== undefined && !allowed.includes(observed)) fail(field, oneOf(allowed), observed);
  }

  if (policy.xfam) {
    const v = bytes(policy.xfam.value);
    const m = bytes(policy.xfam.mask);
    const x = bytes(claims.xfam);
    if (x.length !== 8 || [...x].some((b, i) => (b & m[i]!) !== (v[i]! & m[i]!))) {
      fail('xfam', `${policy.xfam.value} under mask ${policy.xfam.mask}`, claims.xfam);
    }
  }
  if (policy.minTeeTcbSvn !== undefined) {
    const min = bytes(policy.minTeeTcbSvn);
    const have = bytes(claims.teeTcbSvn);
    if (have.length !== 16 || [...min].some((b, i) => have[i]! < b)) fail('teeTcbSvn', `>= ${policy.minTeeTcbSvn} (each byte)`, claims.teeTcbSvn);
  }
  if (policy.reportData !== undefined && claims.reportData !== policy.reportData) fail('reportData', policy.reportData, claims.reportData);
  return failures;
}

/** ERR_ATT_TDX_POLICY_FAILED for callers that reject with an exception; details carry the list. */
export function tdxPolicyError(failures: readonly PolicyFailure[]): TdxError {
  return new TdxError('ERR_ATT_TDX_POLICY_FAILED', {
    detail: failures.map((f) => f.field).join(', '),
    details: { failures: failures.map((f) => ({ ...f })) },
  });
}
