import type { SnpPolicy } from '../../attestation/snp/policy.js';
import { formatTcb } from '../../attestation/snp/validate.js';
import type { TdxPolicy } from '../../attestation/tdx/index.js';
import type { PolicyFailure, SnpClaims } from '../../attestation/types.js';
import type { TdxClaims } from '../../attestation/tdx/index.js';
import { claimView, lookupClaim } from './claims.js';
import { showValue, type RuleResult } from './evaluate.js';

/**
 * Explanations for the per-TEE policy documents (SnpPolicySchema, TdxPolicySchema), which
 * their validators decide (`validateSnpClaims`, `validateTdxClaims`).
 *
 * Honest by construction: pass or fail comes only from the validator's failure list. This
 * module merely lists which checks the policy switches on (the validators' documented
 * rules), with the policy's expected value and the observed claim; a check is "pass" when
 * the validator reported no failure for its field. A failure on a field this list does not
 * know is still reported (as failing), so a validator rule added later cannot disappear
 * from explanations.
 */

interface Check {
  readonly field: string;
  readonly expected: string;
  readonly observed?: string;
}

function oneOf(list: readonly string[]): string {
  const shown = list.slice(0, 8).join(', ');
  return list.length > 8 ? `one of [${shown}, ... (${list.length} total)]` : `one of [${shown}]`;
}

const TCB_KEYS = ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const;

function snpChecks(claims: SnpClaims, p: SnpPolicy): Check[] {
  const out: Check[] = [];
  if (!p.allowSimulated) out.push({ field: 'simulated', expected: 'false' });
  if (!p.allowDebug) out.push({ field: 'policy.debug', expected: 'false' });
  if (!p.allowMigrationAgent) out.push({ field: 'policy.migrationAgent', expected: 'false' });
  if (!p.allowSmt) out.push({ field: 'platform.smtEnabled', expected: 'false' });
  if (p.anyVmpl !== true) out.push({ field: 'vmpl', expected: String(p.vmpl ?? 0) });
  if (!p.anyMeasurement) out.push({ field: 'measurement', expected: oneOf(p.measurements ?? []) });
  const lists: [string, readonly string[] | undefined][] = [
    ['hostData', p.hostData],
    ['idKeyDigest', p.idKeyDigests],
    ['authorKeyDigest', p.authorKeyDigests],
    ['familyId', p.familyId],
    ['imageId', p.imageId],
    ['chipId', p.chipIds],
  ];
  for (const [field, allowed] of lists) if (allowed !== undefined) out.push({ field, expected: oneOf(allowed) });
  if (p.minTcb) {
    for (const name of ['reportedTcb', 'committedTcb', 'launchTcb'] as const) {
      for (const k of TCB_KEYS) {
        const want = p.minTcb[k];
        if (want !== undefined && claims[name][k] !== undefined) out.push({ field: `${name}.${k}`, expected: `>= ${want}` });
      }
    }
  }
  if (p.minGuestSvn !== undefined) out.push({ field: 'guestSvn', expected: `>= ${p.minGuestSvn}` });
  if (p.minFirmware !== undefined) out.push({ field: 'firmware.current', expected: `>= ${p.minFirmware}` });
  if (!p.allowProvisionalFirmware) {
    out.push({ field: 'committedTcb', expected: `>= currentTcb (${formatTcb(claims.currentTcb)})`, observed: formatTcb(claims.committedTcb) });
    out.push({ field: 'firmware.committed', expected: `>= ${claims.firmware.current}` });
  }
  if (p.reportData !== undefined) out.push({ field: 'reportData', expected: p.reportData });
  return out;
}

function tdxChecks(claims: TdxClaims, p: TdxPolicy): Check[] {
  const out: Check[] = [{ field: 'simulated', expected: 'false' }, { field: 'tcbStatus', expected: oneOf(p.acceptedTcbStatuses) }];
  if (!p.allowDebug) out.push({ field: 'tdAttributes.debug', expected: 'false' });
  out.push({ field: 'tdAttributes', expected: `no bits outside ${p.tdAttributesAllowMask} (besides DEBUG)`, observed: claims.tdAttributes.hex });
  if (!p.anyMrtd) out.push({ field: 'mrtd', expected: oneOf(p.mrtd ?? []) });
  const lists: [string, readonly string[] | undefined][] = [
    ['rtmr[0]', p.rtmr0],
    ['rtmr[1]', p.rtmr1],
    ['rtmr[2]', p.rtmr2],
    ['rtmr[3]', p.rtmr3],
    ['mrconfigid', p.mrconfigid],
    ['mrowner', p.mrowner],
    ['mrownerconfig', p.mrownerconfig],
    ['mrseam', p.mrseam],
    ['mrsignerseam', p.mrsignerseam],
  ];
  for (const [field, allowed] of lists) if (allowed !== undefined) out.push({ field, expected: oneOf(allowed) });
  if (p.xfam) out.push({ field: 'xfam', expected: `${p.xfam.value} under mask ${p.xfam.mask}` });
  if (p.minTeeTcbSvn !== undefined) out.push({ field: 'teeTcbSvn', expected: `>= ${p.minTeeTcbSvn} (each byte)` });
  if (p.reportData !== undefined) out.push({ field: 'reportData', expected: p.reportData });
  return out;
}

/** `rtmr[0]` (validator field names) -> `rtmr.0` (claim paths). */
const claimPathOf = (field: string): string => field.replace(/\[(\d+)\]/g, '.$1');

/**
 * The explanation of a per-TEE policy decision: one `check` entry per rule the policy
 * switches on, then any failure the list does not name. `failures` must be the validator's
 * output for exactly these claims and policy.
 */
export function explainLegacy(
  claims: SnpClaims | TdxClaims,
  policy: SnpPolicy | TdxPolicy,
  failures: readonly PolicyFailure[],
): RuleResult[] {
  const view = claimView(claims);
  const checks = claims.tee === 'tdx' ? tdxChecks(claims, policy as TdxPolicy) : snpChecks(claims, policy as SnpPolicy);
  const out: RuleResult[] = [];
  const named = new Set<string>();
  for (const c of checks) {
    named.add(c.field);
    const claim = claimPathOf(c.field);
    const failed = failures.find((f) => f.field === c.field);
    if (failed) {
      out.push({ path: `policy.${c.field}`, claim, op: 'check', expected: failed.expected, observed: failed.observed, pass: false });
    } else {
      const got = lookupClaim(view, claim);
      const observed = c.observed ?? (got.found ? showValue(got.value) : '(missing)');
      out.push({ path: `policy.${c.field}`, claim, op: 'check', expected: c.expected, observed, pass: true });
    }
  }
  for (const f of failures) {
    if (named.has(f.field)) continue;
    out.push({ path: `policy.${f.field}`, claim: claimPathOf(f.field), op: 'check', expected: f.expected, observed: f.observed, pass: false });
  }
  return out.map((r) => Object.freeze(r));
}
