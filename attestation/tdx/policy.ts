import { z } from 'zod';
import { allowList, hexOf } from '../policy-schema.js';
import { deepFreeze, issuesDetail } from '../../common/config.js';
import { TdxError } from './codes.js';
import { TCB_STATUSES } from './collateral.js';

/**
 * Intel TDX appraisal policy, decided on claims only. Defaults are strict; every
 * relaxation is an explicit knob listed by tdxRelaxationsFor().
 *
 * Byte order: `tdAttributesAllowMask`, `xfam` and `minTeeTcbSvn` are hex in quote byte
 * order (td_attributes/xfam are little-endian u64s: bit 28 SEPT_VE_DISABLE is byte 3,
 * value 0x10, i.e. "0000001000000000").
 */


/** SEPT_VE_DISABLE (bit 28): only restricts the TD; real quotes set it. */
export const DEFAULT_TD_ATTRIBUTES_ALLOW_MASK = '0000001000000000';

export const TdxPolicySchema = z
  .strictObject({
    /**
     * Combined TCB statuses accepted. Default UpToDate only; each additional status is a
     * relaxation ("accept-tcb-status:<status>").
     */
    acceptedTcbStatuses: z.array(z.enum(TCB_STATUSES)).min(1).max(TCB_STATUSES.length).default(['UpToDate']),
    /** Accept a debug TD (td_attributes bit 0): the host can read and alter it. */
    allowDebug: z.boolean().default(false),
    /**
     * td_attributes bits (other than DEBUG, which allowDebug governs) that may be set, in
     * quote byte order. Any set bit outside the mask fails.
     */
    tdAttributesAllowMask: hexOf(8).default(DEFAULT_TD_ATTRIBUTES_ALLOW_MASK),
    /** Allowed MRTD values. Required unless anyMrtd. */
    mrtd: allowList(48).optional(),
    /** Relaxation: accept any MRTD. */
    anyMrtd: z.boolean().default(false),
    rtmr0: allowList(48).optional(),
    rtmr1: allowList(48).optional(),
    rtmr2: allowList(48).optional(),
    rtmr3: allowList(48).optional(),
    mrconfigid: allowList(48).optional(),
    mrowner: allowList(48).optional(),
    mrownerconfig: allowList(48).optional(),
    mrseam: allowList(48).optional(),
    mrsignerseam: allowList(48).optional(),
    /** XFAM: (claims.xfam & mask) must equal (value & mask); mask defaults to all ones. */
    xfam: z.strictObject({ value: hexOf(8), mask: hexOf(8).default('ffffffffffffffff') }).optional(),
    /** Minimum tee_tcb_svn, compared byte by byte (16 bytes). */
    minTeeTcbSvn: hexOf(16).optional(),
    /** Exact report_data (64 bytes). Normally bound by the verifier instead. */
    reportData: hexOf(64).optional(),
  })
  .superRefine((p, ctx) => {
    // SECURITY: no silent "accept any image": either list MRTDs or say so.
    if (!p.anyMrtd && p.mrtd === undefined) ctx.addIssue({ code: 'custom', path: ['mrtd'], message: 'required unless anyMrtd is true' });
    if (p.anyMrtd && p.mrtd !== undefined) ctx.addIssue({ code: 'custom', path: ['anyMrtd'], message: 'contradicts mrtd' });
    if (new Set(p.acceptedTcbStatuses).size !== p.acceptedTcbStatuses.length) {
      ctx.addIssue({ code: 'custom', path: ['acceptedTcbStatuses'], message: 'duplicate status' });
    }
  });

export type TdxPolicy = z.infer<typeof TdxPolicySchema>;
export type TdxPolicyInput = z.input<typeof TdxPolicySchema>;

/** Parses and freezes a policy. Throws ERR_ATT_TDX_BAD_POLICY naming fields (never values). */
export function parseTdxPolicy(input: unknown): TdxPolicy {
  const r = TdxPolicySchema.safeParse(input);
  if (!r.success) {
    throw new TdxError('ERR_ATT_TDX_BAD_POLICY', { detail: issuesDetail(r.error.issues) });
  }
  return deepFreeze(r.data);
}


/** The relaxations a policy enables, in a fixed order. */
export function tdxRelaxationsFor(policy: TdxPolicy): string[] {
  const out: string[] = [];
  for (const s of policy.acceptedTcbStatuses) if (s !== 'UpToDate') out.push(`accept-tcb-status:${s}`);
  if (policy.allowDebug) out.push('allow-debug');
  if (policy.anyMrtd) out.push('any-mrtd');
  if (BigInt(`0x${policy.tdAttributesAllowMask}`) & ~BigInt(`0x${DEFAULT_TD_ATTRIBUTES_ALLOW_MASK}`)) {
    out.push(`td-attributes-allow-mask:${policy.tdAttributesAllowMask}`);
  }
  return out;
}
