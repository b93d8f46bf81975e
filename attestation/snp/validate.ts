import { AttestationError } from '../codes.js';
import type { PolicyFailure, SnpClaims, SnpTcb } from '../types.js';
import { parseSnpPolicy, type SnpPolicy } from './policy.js';

/**
 * Policy evaluation on verified SEV-SNP claims. No crypto, no I/O: claims must come from
 * verifySnpEvidence. Every rule is evaluated (no early exit) so an operator sees every
 * problem at once; each failure names the claim field, what the policy wanted and what
 * the evidence said (public values only).
 */

const TCB_KEYS = ['bootloader', 'tee', 'snp', 'microcode', 'fmc'] as const;

export function formatTcb(t: SnpTcb): string {
  const parts = [`bl=${t.bootloader}`, `tee=${t.tee}`, `snp=${t.snp}`, `ucode=${t.microcode}`];
  if (t.fmc !== undefined) parts.unshift(`fmc=${t.fmc}`);
  return parts.join(' ');
}

function fwTuple(s: string): [number, number, number] {
  const [a = '0', b = '0', c = '0'] = s.split('.');
  return [Number(a), Number(b), Number(c)];
}

/** Compares "major.minor[.build]" strings; a missing build in `min` means 0. */
function fwLess(a: string, b: string): boolean {
  const x = fwTuple(a);
  const y = fwTuple(b);
  for (let i = 0; i < 3; i++) if (x[i]! !== y[i]!) return x[i]! < y[i]!;
  return false;
}

function oneOf(list: readonly string[]): string {
  const shown = list.slice(0, 8).join(', ');
  return list.length > 8 ? `one of [${shown}, ... (${list.length} total)]` : `one of [${shown}]`;
}

/**
 * Checks claims against a policy. Returns [] when every rule passes.
 *
 * Rules: simulated (unless allowSimulated); policy.debug (unless allowDebug);
 * policy.migrationAgent (unless allowMigrationAgent); platform.smtEnabled (when allowSmt
 * is false); vmpl (exactly policy.vmpl, 0 when absent, any when anyVmpl); measurement (unless anyMeasurement); hostData, idKeyDigest,
 * authorKeyDigest, familyId, imageId, chipId allow-lists; minTcb on reported, committed
 * and launch TCB (fmc only where the TCB has one); minGuestSvn; minFirmware on the
 * current firmware; committed TCB and firmware not older than current (unless
 * allowProvisionalFirmware); reportData.
 *
 * Does NOT: verify anything cryptographically. `policy` is re-parsed defensively; an
 * invalid policy throws ERR_ATT_SNP_BAD_POLICY.
 */
export function validateSnpClaims(claims: SnpClaims, policyIn: SnpPolicy): PolicyFailure[] {
  const policy = parseSnpPolicy(policyIn);
  const failures: PolicyFailure[] = [];
  const fail = (field: string, expected: string, observed: string): void => {
    failures.push(Object.freeze({ field, expected, observed }));
  };

  // SECURITY: simulated evidence is rejected by default, whatever the verifier allowed.
  if (claims.simulated && !policy.allowSimulated) fail('simulated', 'false', 'true');
  if (claims.policy.debug && !policy.allowDebug) fail('policy.debug', 'false', 'true');
  if (claims.policy.migrationAgent && !policy.allowMigrationAgent) fail('policy.migrationAgent', 'false', 'true');
  if (!policy.allowSmt && claims.platform.smtEnabled) fail('platform.smtEnabled', 'false', 'true');
  // SECURITY: fail closed on VMPL: absent means VMPL 0. A lower-privileged VMPL can request
  // reports with the guest's measurement and report_data of its own choosing.
  if (policy.anyVmpl !== true) {
    const want = policy.vmpl ?? 0;
    if (claims.vmpl !== want) fail('vmpl', String(want), String(claims.vmpl));
  }

  if (!policy.anyMeasurement) {
    const allowed = policy.measurements ?? [];
    if (!allowed.includes(claims.measurement)) fail('measurement', oneOf(allowed), claims.measurement);
  }
  const lists: [string, readonly string[] | undefined, string][] = [
    ['hostData', policy.hostData, claims.hostData],
    ['idKeyDigest', policy.idKeyDigests, claims.idKeyDigest],
    ['authorKeyDigest', policy.authorKeyDigests, claims.authorKeyDigest],
    ['familyId', policy.familyId, claims.familyId],
    ['imageId', policy.imageId, claims.imageId],
    ['chipId', policy.chipIds, claims.chipId],
  ];
  for (const [field, allowed, observed] of lists) {
    if (allowed !== undefined && !allowed.includes(observed)) fail(field, oneOf(allowed), observed);
  }

  if (policy.minTcb) {
    const min = policy.minTcb;
    for (const [name, tcb] of [
      ['reportedTcb', claims.reportedTcb],
      ['committedTcb', claims.committedTcb],
      ['launchTcb', claims.launchTcb],
    ] as const) {
      for (const k of TCB_KEYS) {
        const want = min[k];
        if (want === undefined) continue;
        const have = tcb[k];
        if (have === undefined) continue; // fmc on a product without FMC
        if (have < want) fail(`${name}.${k}`, `>= ${want}`, String(have));
      }
    }
  }

  if (policy.minGuestSvn !== undefined && claims.guestSvn < policy.minGuestSvn) {
    fail('guestSvn', `>= ${policy.minGuestSvn}`, String(claims.guestSvn));
  }
  if (policy.minFirmware !== undefined && fwLess(claims.firmware.current, policy.minFirmware)) {
    fail('firmware.current', `>= ${policy.minFirmware}`, claims.firmware.current);
  }

  if (!policy.allowProvisionalFirmware) {
    // SECURITY: a provisional (uncommitted) firmware/TCB can be rolled back by the host;
    // the committed values must not be older than the running ones.
    const older = TCB_KEYS.some((k) => {
      const c = claims.committedTcb[k];
      const cur = claims.currentTcb[k];
      return c !== undefined && cur !== undefined && c < cur;
    });
    if (older) fail('committedTcb', `>= currentTcb (${formatTcb(claims.currentTcb)})`, formatTcb(claims.committedTcb));
    if (fwLess(claims.firmware.committed, claims.firmware.current)) {
      fail('firmware.committed', `>= ${claims.firmware.current}`, claims.firmware.committed);
    }
  }

  if (policy.reportData !== undefined && claims.reportData !== policy.reportData) {
    fail('reportData', policy.reportData, claims.reportData);
  }
  return failures;
}

/**
 * Builds the ERR_ATT_SNP_POLICY_FAILED error for callers that reject with an exception
 * (e.g. the key broker). `details.failures` carries the list; the values are public
 * (measurements, TCB numbers), never secrets.
 */
export function snpPolicyError(failures: readonly PolicyFailure[]): AttestationError {
  return new AttestationError('ERR_ATT_SNP_POLICY_FAILED', {
    detail: failures.map((f) => f.field).join(', '),
    details: { failures: failures.map((f) => ({ ...f })) },
  });
}
