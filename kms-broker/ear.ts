/**
 * EAR (EAT Attestation Results, draft-ietf-rats-ear) appraisals of the broker: the AR4SI
 * trustworthiness vector (draft-ietf-rats-ar4si section 2.3) and the `ear.status` of one
 * submodule, computed from verified claims, the relaxations that were applied and the
 * attestation policy's decision. No crypto, no I/O: `tokens.ts` signs what this computes.
 *
 * Claim values are the AR4SI enumerations (the values Veraison's `ear` library names):
 * tier `none` -1..1, `affirming` 2..31, `warning` 32..95, `contraindicated` 96..127.
 *
 * Table for the `cpu` submodule (SEV-SNP or TDX claims):
 *
 * | claim | value | when |
 * |---|---|---|
 * | instance-identity | 2 recognized | report signed by a VCEK/VLEK/PCK that chains to a pinned vendor root |
 * |                   | 0 no claim   | simulated root: the instance is not one the vendor recognises |
 * | configuration | 2 approved | the attestation policy passed with no configuration relaxation |
 * |               | 32 unsafe  | a configuration relaxation was applied (allow-debug, allow-migration-agent, any-vmpl, td-attributes-allow-mask:*, report-data-unchecked) or any relaxation this table does not know |
 * |               | 96 unsupportable | the attestation policy denied the evidence |
 * | executables | 2 approved | the attestation policy compared the launch measurement (MEASUREMENT / MRTD) |
 * |             | 0 no claim | any-measurement / any-mrtd: the broker made no claim (per-key release policies check it) |
 * | file-system | 0 no claim | not measured by these TEEs |
 * | hardware | 2 genuine | chain to a vendor root, TCB current, revocation checked |
 * |          | 32 unsafe | simulated-root / allow-simulated, allow-provisional-firmware, accept-tcb-status:*, a TDX tcbStatus other than UpToDate, pck-crl-unchecked, root-ca-crl-unchecked |
 * | runtime-opaque | 2 encrypted | SEV-SNP / TDX memory encryption, debug off |
 * |                | 96 visible  | the guest runs with debug on (the host can read its memory) |
 * | storage-opaque | 0 no claim | the broker cannot see how the guest stores data |
 * | sourced-data | 0 no claim | not appraised |
 *
 * `ear.status` is the worst tier over the claims made (tier `none` claims do not count);
 * `none` when no claim was made. A simulated root therefore gives at best `warning`.
 *
 * Does not: decide anything. The broker's decisions are the attestation and release
 * policies; this is the explainable summary a relying party can read.
 */
import { z } from 'zod';
import type { BrokerClaims } from './policy.js';

/** EAT profile of draft-ietf-rats-ear (`eat_profile`). */
export const EAR_PROFILE = 'tag:ietf.org,2025-07:ear';

export const TRUST_TIERS = ['none', 'affirming', 'warning', 'contraindicated'] as const;
export type TrustTier = (typeof TRUST_TIERS)[number];

/** The AR4SI trustworthiness claims, in the draft's order. */
export const TRUST_CLAIMS = [
  'instance-identity',
  'configuration',
  'executables',
  'file-system',
  'hardware',
  'runtime-opaque',
  'storage-opaque',
  'sourced-data',
] as const;
export type TrustClaimName = (typeof TRUST_CLAIMS)[number];
export type TrustVector = { readonly [K in TrustClaimName]: number };

/** AR4SI claim values used here (named as in the AR4SI draft). */
export const AR4SI = {
  NO_CLAIM: 0,
  RECOGNIZED_INSTANCE: 2,
  APPROVED_CONFIG: 2,
  UNSAFE_CONFIG: 32,
  UNSUPPORTABLE_CONFIG: 96,
  APPROVED_RUNTIME: 2,
  GENUINE_HARDWARE: 2,
  UNSAFE_HARDWARE: 32,
  ENCRYPTED_MEMORY: 2,
  VISIBLE_MEMORY: 96,
} as const;

const TrustClaimValue = z.number().int().min(-128).max(127);

export const TrustVectorSchema = z.strictObject(
  Object.fromEntries(TRUST_CLAIMS.map((k) => [k, TrustClaimValue])) as Record<TrustClaimName, typeof TrustClaimValue>,
);

/** One EAR appraisal (`EAR-appraisal` in the draft), as the token carries it per submodule. */
export const EarAppraisalSchema = z.strictObject({
  'ear.status': z.enum(TRUST_TIERS),
  'ear.trustworthiness-vector': TrustVectorSchema,
  'ear.appraisal-policy-id': z.string().min(1).max(512),
});
export type EarAppraisal = z.infer<typeof EarAppraisalSchema>;

/** Submodule names: `cpu`, and `gpu-0`, `gpu-1`... as GPU verifiers join. */
export const SUBMOD_NAME_RE = /^(?:cpu|gpu-(?:0|[1-9][0-9]{0,2}))$/;

/** The tier of an AR4SI claim value (draft-ietf-rats-ar4si section 2.3.2). */
export function tierOf(value: number): TrustTier {
  const v = Math.abs(value);
  if (v <= 1) return 'none';
  if (v <= 31) return 'affirming';
  if (v <= 95) return 'warning';
  return 'contraindicated';
}

const TIER_RANK: Readonly<Record<TrustTier, number>> = { none: 0, affirming: 1, warning: 2, contraindicated: 3 };

/** Worst tier over the claims made; `none` when every claim is tier none. */
export function earStatus(vector: TrustVector): TrustTier {
  let worst: TrustTier = 'none';
  for (const k of TRUST_CLAIMS) {
    const t = tierOf(vector[k]);
    if (TIER_RANK[t] > TIER_RANK[worst]) worst = t;
  }
  return worst;
}

/** Relaxations that weaken what the hardware claim rests on (chain, TCB, revocation). */
const HARDWARE_RELAXATIONS = new Set(['simulated-root', 'allow-simulated', 'allow-provisional-firmware', 'pck-crl-unchecked', 'root-ca-crl-unchecked']);
/** Relaxations under which the broker made no claim about the launch measurement. */
const EXECUTABLE_RELAXATIONS = new Set(['any-measurement', 'any-mrtd']);
/** Relaxations of the guest configuration. */
const CONFIG_RELAXATIONS = new Set(['allow-debug', 'allow-migration-agent', 'any-vmpl', 'report-data-unchecked']);

export interface AppraisalInput {
  /** Verified claims of one TEE. */
  readonly claims: BrokerClaims;
  /** Every relaxation applied: the verifier's and the policy's. */
  readonly relaxations: readonly string[];
  /** Whether the attestation policy allowed the evidence. */
  readonly allowed: boolean;
  /** `ear.appraisal-policy-id`. */
  readonly policyId: string;
}

/**
 * Computes the `cpu` appraisal by the table in this module's comment. Every relaxation
 * moves at least one claim away from its affirming value; one this table does not know
 * counts as a configuration relaxation (fail closed: it can never leave the status
 * `affirming`).
 */
export function appraiseCpu(input: AppraisalInput): EarAppraisal {
  const { claims, relaxations } = input;
  const simulated = claims.simulated === true || relaxations.includes('simulated-root') || relaxations.includes('allow-simulated');
  let hardwareWeak = simulated;
  let executablesUnchecked = false;
  let configWeak = false;
  for (const r of relaxations) {
    if (HARDWARE_RELAXATIONS.has(r) || r.startsWith('accept-tcb-status:')) hardwareWeak = true;
    else if (EXECUTABLE_RELAXATIONS.has(r)) executablesUnchecked = true;
    else if (CONFIG_RELAXATIONS.has(r) || r.startsWith('td-attributes-allow-mask:')) configWeak = true;
    // SECURITY: fail closed on a relaxation this table does not name.
    else configWeak = true;
  }
  // SECURITY: decide on the observed claims too, not only on the relaxation names.
  if (claims.tee === 'tdx' && claims.tcbStatus !== 'UpToDate') hardwareWeak = true;
  const debug = claims.tee === 'tdx' ? claims.tdAttributes.debug : claims.policy.debug;
  if (debug) configWeak = true;

  const vector: TrustVector = Object.freeze({
    'instance-identity': simulated ? AR4SI.NO_CLAIM : AR4SI.RECOGNIZED_INSTANCE,
    configuration: !input.allowed ? AR4SI.UNSUPPORTABLE_CONFIG : configWeak ? AR4SI.UNSAFE_CONFIG : AR4SI.APPROVED_CONFIG,
    executables: executablesUnchecked ? AR4SI.NO_CLAIM : AR4SI.APPROVED_RUNTIME,
    'file-system': AR4SI.NO_CLAIM,
    hardware: hardwareWeak ? AR4SI.UNSAFE_HARDWARE : AR4SI.GENUINE_HARDWARE,
    'runtime-opaque': debug ? AR4SI.VISIBLE_MEMORY : AR4SI.ENCRYPTED_MEMORY,
    'storage-opaque': AR4SI.NO_CLAIM,
    'sourced-data': AR4SI.NO_CLAIM,
  });
  return Object.freeze({
    'ear.status': earStatus(vector),
    'ear.trustworthiness-vector': vector,
    'ear.appraisal-policy-id': input.policyId,
  });
}

/** The attestation policy id of a TEE (`cir.policy-id`), e.g. `attestation/sev-snp`. */
export function attestationPolicyId(tee: BrokerClaims['tee']): string {
  return `attestation/${tee}`;
}

/** `ear.appraisal-policy-id`: the policy id and the SHA-256 of the policy document. */
export function appraisalPolicyId(policyId: string, policyHash: string): string {
  return `policy:${policyId}@sha256:${policyHash}`;
}
