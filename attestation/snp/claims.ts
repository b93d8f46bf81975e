import { toHex } from '../../common/bytes.js';
import type { SnpClaims, SnpTcb } from '../types.js';
import type { SnpFirmwareVersion, SnpProduct, SnpReport, SnpTcbVersion } from './abi.js';

/**
 * Builds the flat claim set from a report that verify.ts has fully verified (internal).
 * Hex is lower-case; firmware versions are "major.minor.build".
 */

export function tcbClaim(t: SnpTcbVersion): SnpTcb {
  return Object.freeze({
    bootloader: t.bootloader,
    tee: t.tee,
    snp: t.snp,
    microcode: t.microcode,
    ...(t.fmc !== undefined ? { fmc: t.fmc } : {}),
  });
}

export function firmwareString(f: SnpFirmwareVersion): string {
  return `${f.major}.${f.minor}.${f.build}`;
}

const hex16 = (v: bigint): string => v.toString(16).padStart(16, '0');

export interface ClaimContext {
  readonly product: SnpProduct;
  readonly productName: string;
  readonly simulated: boolean;
  readonly relaxations: readonly string[];
  readonly cspId?: string;
}

export function snpClaimsFromReport(r: SnpReport, ctx: ClaimContext): SnpClaims {
  return Object.freeze({
    tee: 'sev-snp',
    simulated: ctx.simulated,
    product: ctx.product,
    reportVersion: r.version,
    signingKey: r.signingKey,
    measurement: toHex(r.measurement),
    reportData: toHex(r.reportData),
    hostData: toHex(r.hostData),
    idKeyDigest: toHex(r.idKeyDigest),
    authorKeyDigest: toHex(r.authorKeyDigest),
    familyId: toHex(r.familyId),
    imageId: toHex(r.imageId),
    reportId: toHex(r.reportId),
    chipId: toHex(r.chipId),
    guestSvn: r.guestSvn,
    vmpl: r.vmpl,
    policy: Object.freeze({
      abiMajor: r.policy.abiMajor,
      abiMinor: r.policy.abiMinor,
      smt: r.policy.smt,
      migrationAgent: r.policy.migrateMa,
      debug: r.policy.debug,
      singleSocket: r.policy.singleSocket,
    }),
    platform: Object.freeze({ smtEnabled: r.platformInfo.smtEnabled, tsmeEnabled: r.platformInfo.tsmeEnabled }),
    currentTcb: tcbClaim(r.currentTcb),
    reportedTcb: tcbClaim(r.reportedTcb),
    committedTcb: tcbClaim(r.committedTcb),
    launchTcb: tcbClaim(r.launchTcb),
    firmware: Object.freeze({ current: firmwareString(r.currentFirmware), committed: firmwareString(r.committedFirmware) }),
    relaxations: Object.freeze([...ctx.relaxations]),
    productName: ctx.productName,
    ...(r.cpuid ? { cpuid: r.cpuid } : {}),
    reportIdMa: toHex(r.reportIdMa),
    flags: Object.freeze({ authorKeyEnabled: r.authorKeyEn, maskChipKey: r.maskChipKey }),
    ...(r.launchMitVector !== undefined && r.currentMitVector !== undefined
      ? { mitigationVectors: Object.freeze({ launch: hex16(r.launchMitVector), current: hex16(r.currentMitVector) }) }
      : {}),
    ...(ctx.cspId !== undefined ? { cspId: ctx.cspId } : {}),
  } satisfies SnpClaims);
}
