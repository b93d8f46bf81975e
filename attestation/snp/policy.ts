import { z } from 'zod';
import { allowList, hexOf } from '../policy-schema.js';
import { deepFreeze, issuesDetail } from '../../common/config.js';
import { AttestationError } from '../codes.js';

/**
 * SEV-SNP appraisal policy: what a relying party accepts, decided on claims only.
 * Defaults are strict; every relaxation is an explicit knob and is listed by
 * relaxationsFor() so it can be recorded next to the claims.
 *
 * VMPL: a report requested from a less privileged VMPL (under an SVSM or paravisor) has
 * the same measurement as one from VMPL 0 but report_data chosen by that less trusted
 * code, so the default accepts VMPL 0 only; `vmpl: n` accepts exactly n and
 * `anyVmpl: true` accepts any (a relaxation).
 */


const u8 = z.number().int().min(0).max(255);

export const SnpMinTcbSchema = z.strictObject({
  bootloader: u8,
  tee: u8,
  snp: u8,
  microcode: u8,
  /** Turin only; ignored for products whose TCB has no FMC component. */
  fmc: u8.optional(),
});

const FIRMWARE_RE = /^(\d{1,3})\.(\d{1,3})(?:\.(\d{1,3}))?$/;

const firmwareVersion = z
  .string()
  .regex(FIRMWARE_RE, 'must be "major.minor" or "major.minor.build"')
  .refine((s) => s.split('.').every((p) => Number(p) <= 255), 'components must be 0..255');

export const SnpPolicySchema = z
  .strictObject({
    /** Accept evidence chaining to the configured simulated root. Never in production. */
    allowSimulated: z.boolean().default(false),
    /** Accept guests whose policy allows debugging (host can read guest memory). */
    allowDebug: z.boolean().default(false),
    /** Accept guests whose policy allows a migration agent. */
    allowMigrationAgent: z.boolean().default(false),
    /** When false, the platform must report SMT disabled (PLATFORM_INFO.SMT_EN = 0). */
    allowSmt: z.boolean().default(true),
    /**
     * Exact VMPL the report must come from. Absent means 0 (the most privileged level)
     * unless anyVmpl is true.
     */
    vmpl: z.number().int().min(0).max(3).optional(),
    /**
     * Relaxation: accept a report from any VMPL. Optional rather than defaulted so parsed
     * policies that do not mention it keep their shape (and their hash in kms-broker).
     */
    anyVmpl: z.boolean().optional(),
    /** Allowed launch measurements (48 bytes, hex). Required unless anyMeasurement. */
    measurements: allowList(48).optional(),
    /** Relaxation: accept any measurement. */
    anyMeasurement: z.boolean().default(false),
    hostData: allowList(32).optional(),
    idKeyDigests: allowList(48).optional(),
    authorKeyDigests: allowList(48).optional(),
    familyId: allowList(16).optional(),
    imageId: allowList(16).optional(),
    chipIds: allowList(64).optional(),
    /** Minimum TCB, applied to reported, committed and launch TCB. */
    minTcb: SnpMinTcbSchema.optional(),
    minGuestSvn: z.number().int().min(0).max(0xffffffff).optional(),
    /** Minimum current firmware, "major.minor" or "major.minor.build". */
    minFirmware: firmwareVersion.optional(),
    /** Relaxation: accept committed TCB/firmware older than current (not yet committed). */
    allowProvisionalFirmware: z.boolean().default(false),
    /** Exact report_data (64 bytes, hex). Normally bound by the verifier instead. */
    reportData: hexOf(64).optional(),
  })
  .superRefine((p, ctx) => {
    // SECURITY: no silent "accept any image": either list measurements or say so.
    if (!p.anyMeasurement && p.measurements === undefined) {
      ctx.addIssue({ code: 'custom', path: ['measurements'], message: 'required unless anyMeasurement is true' });
    }
    if (p.anyMeasurement && p.measurements !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['anyMeasurement'], message: 'contradicts measurements' });
    }
    if (p.anyVmpl === true && p.vmpl !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['anyVmpl'], message: 'contradicts vmpl' });
    }
  });

/** A parsed policy (defaults applied, hex lower-case). */
export type SnpPolicy = z.infer<typeof SnpPolicySchema>;
/** What a configuration file may contain before defaults are applied. */
export type SnpPolicyInput = z.input<typeof SnpPolicySchema>;

/**
 * Parses and freezes a policy. Throws ERR_ATT_SNP_BAD_POLICY naming the offending
 * fields (never echoing values).
 */
export function parseSnpPolicy(input: unknown): SnpPolicy {
  const r = SnpPolicySchema.safeParse(input);
  if (!r.success) {
    const detail = issuesDetail(r.error.issues);
    throw new AttestationError('ERR_ATT_SNP_BAD_POLICY', { detail });
  }
  return deepFreeze(r.data);
}


/** Relaxation names, recorded in claims by evaluateSnpEvidence. */
export const POLICY_RELAXATIONS = {
  allowSimulated: 'allow-simulated',
  allowDebug: 'allow-debug',
  allowMigrationAgent: 'allow-migration-agent',
  anyMeasurement: 'any-measurement',
  allowProvisionalFirmware: 'allow-provisional-firmware',
  anyVmpl: 'any-vmpl',
} as const;

/** Lists the relaxations a policy enables, in a fixed order. */
export function relaxationsFor(policy: SnpPolicy): string[] {
  const out: string[] = [];
  for (const [k, name] of Object.entries(POLICY_RELAXATIONS)) {
    if (policy[k as keyof typeof POLICY_RELAXATIONS] === true) out.push(name);
  }
  return out;
}
