import { toHex } from '../../common/bytes.js';
import { TdxError } from './codes.js';
import type { IsvTcbLevel, TcbStatus, TdxQeIdentity, TdxTcbInfo, TdxTcbLevel } from './collateral.js';
import type { QeReport, TdReportBody } from './parse.js';
import type { PckSgxInfo } from './pck.js';

/**
 * Intel's TCB-level matching for TDX (internal; no crypto, no I/O). Inputs are collateral
 * whose signatures verify.ts has already checked.
 *
 * Spec: Intel "TDX TCB Info" JSON reference ("tcbLevels" and "tdxModuleIdentities"
 * semantics) and the Intel SGX/TDX DCAP Quote Verification Library's documented
 * status-convergence rules; summarised in the vectors MANIFEST.md "Intel TDX quote".
 */

export interface TcbAppraisal {
  /** Combined status (platform, TDX module, QE). */
  readonly tcbStatus: TcbStatus;
  readonly platformTcbStatus: TcbStatus;
  readonly tdxModuleTcbStatus: TcbStatus | undefined;
  /** `TDX_%02X` when tee_tcb_svn[1] != 0, else undefined (the tcbInfo.tdxModule rule). */
  readonly tdxModuleId: string | undefined;
  readonly qeTcbStatus: TcbStatus;
  readonly tcbDate: string;
  /** Union of the advisory IDs of the matched levels, sorted, unique. */
  readonly advisoryIds: readonly string[];
}

/**
 * The first level whose SGX components are all <= the PCK's, whose PCE SVN is <= the
 * PCK's, and whose TDX components are all <= tee_tcb_svn (indexes 2..15 only when
 * tee_tcb_svn[1] != 0: bytes 0 and 1 are then the module's minor SVN and major version,
 * appraised against tdxModuleIdentities instead). Levels are taken in the order served
 * (Intel sorts them newest first).
 */
export function matchPlatformLevel(info: TdxTcbInfo, pck: PckSgxInfo, teeTcbSvn: Uint8Array): TdxTcbLevel | undefined {
  const tdxStart = teeTcbSvn[1] !== 0 ? 2 : 0;
  return info.tcbLevels.find((level) => {
    const sgx = level.tcb.sgxtcbcomponents;
    for (let i = 0; i < 16; i++) if (sgx[i]!.svn > pck.sgxTcbComponents[i]!) return false;
    if (level.tcb.pcesvn > pck.pceSvn) return false;
    const tdx = level.tcb.tdxtcbcomponents;
    for (let i = tdxStart; i < 16; i++) if (tdx[i]!.svn > teeTcbSvn[i]!) return false;
    return true;
  });
}

function maskedEqual(value: Uint8Array, mask: string, expected: string): boolean {
  const m = Buffer.from(mask, 'hex');
  const e = Buffer.from(expected, 'hex');
  if (m.length !== value.length || e.length !== value.length) return false;
  for (let i = 0; i < value.length; i++) if ((value[i]! & m[i]!) !== (e[i]! & m[i]!)) return false;
  return true;
}

interface ModuleResult {
  readonly id: string | undefined;
  readonly level: IsvTcbLevel | undefined;
}

/**
 * TDX module identity. When tee_tcb_svn[1] (major version) is 0 the module is appraised
 * only by `tdxModule` (MRSIGNERSEAM and masked SEAM attributes). Otherwise it must be the
 * `TDX_%02X` entry of `tdxModuleIdentities` (ERR_ATT_TDX_UNKNOWN_TDX_MODULE if absent),
 * match its MRSIGNERSEAM and masked attributes, and its status is the first level whose
 * isvsvn <= tee_tcb_svn[0] (ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND if none).
 */
function appraiseModule(info: TdxTcbInfo, body: TdReportBody): ModuleResult {
  const major = body.teeTcbSvn[1]!;
  const check = (what: string, m: { mrsigner: string; attributes: string; attributesMask: string }): void => {
    if (toHex(body.mrSignerSeam) !== m.mrsigner) {
      throw new TdxError('ERR_ATT_TDX_TDX_MODULE_MISMATCH', { detail: `mrsignerseam ${toHex(body.mrSignerSeam)} != ${what} ${m.mrsigner}` });
    }
    if (!maskedEqual(body.seamAttributes, m.attributesMask, m.attributes)) {
      throw new TdxError('ERR_ATT_TDX_TDX_MODULE_MISMATCH', { detail: `seam_attributes ${toHex(body.seamAttributes)} do not match ${what}` });
    }
  };
  if (major === 0) {
    check('tdxModule', info.tdxModule);
    return { id: undefined, level: undefined };
  }
  const id = `TDX_${major.toString(16).toUpperCase().padStart(2, '0')}`;
  const identity = info.tdxModuleIdentities?.find((m) => m.id === id);
  // SECURITY: a module Intel does not list is not appraisable: reject, never default.
  if (!identity) throw new TdxError('ERR_ATT_TDX_UNKNOWN_TDX_MODULE', { detail: `${id} is not in tdxModuleIdentities` });
  check(id, identity);
  const minor = body.teeTcbSvn[0]!;
  const level = identity.tcbLevels.find((l) => l.tcb.isvsvn <= minor);
  if (!level) throw new TdxError('ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND', { detail: `${id} module SVN ${minor} matches no level` });
  return { id, level };
}

/**
 * QE Identity: MRSIGNER and ISVPRODID equal, MISCSELECT and ATTRIBUTES equal under their
 * masks (ERR_ATT_TDX_QE_IDENTITY_MISMATCH), then the first level whose isvsvn <= the QE's
 * ISVSVN (ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND if none).
 */
export function appraiseQe(qe: TdxQeIdentity, report: QeReport): IsvTcbLevel {
  const mismatch = (detail: string) => new TdxError('ERR_ATT_TDX_QE_IDENTITY_MISMATCH', { detail });
  if (toHex(report.mrSigner) !== qe.mrsigner) throw mismatch(`mrsigner ${toHex(report.mrSigner)} != ${qe.mrsigner}`);
  if (report.isvProdId !== qe.isvprodid) throw mismatch(`isvprodid ${report.isvProdId} != ${qe.isvprodid}`);
  const misc = Buffer.alloc(4);
  misc.writeUInt32BE(report.miscSelect);
  // The JSON writes MISCSELECT as a big-endian u32 in hex.
  if (!maskedEqual(misc, qe.miscselectMask, qe.miscselect)) throw mismatch(`miscselect ${misc.toString('hex')}`);
  if (!maskedEqual(report.attributes, qe.attributesMask, qe.attributes)) throw mismatch(`attributes ${toHex(report.attributes)}`);
  const level = qe.tcbLevels.find((l) => l.tcb.isvsvn <= report.isvSvn);
  if (!level) throw new TdxError('ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND', { detail: `QE isvsvn ${report.isvSvn} matches no QE Identity level` });
  return level;
}

/**
 * Folds a component's status (TDX module or QE) into the platform status, as Intel's QVL
 * does: Revoked wins; OutOfDate turns UpToDate/SWHardeningNeeded into OutOfDate and the
 * Configuration* statuses into OutOfDateConfigurationNeeded; anything else keeps the
 * platform status.
 */
export function convergeStatus(platform: TcbStatus, component: TcbStatus): TcbStatus {
  if (component === 'Revoked') return 'Revoked';
  if (component === 'OutOfDate') {
    if (platform === 'UpToDate' || platform === 'SWHardeningNeeded') return 'OutOfDate';
    if (platform === 'ConfigurationNeeded' || platform === 'ConfigurationAndSWHardeningNeeded') return 'OutOfDateConfigurationNeeded';
  }
  return platform;
}

/**
 * The whole TCB appraisal: platform level (ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND if none),
 * TDX module, QE identity, converged into one status with the advisory IDs of every
 * matched level. Does NOT check FMSPC/PCE-ID (verify.ts does, first) or any signature.
 */
export function appraiseTcb(info: TdxTcbInfo, qe: TdxQeIdentity, pck: PckSgxInfo, body: TdReportBody, report: QeReport): TcbAppraisal {
  const platform = matchPlatformLevel(info, pck, body.teeTcbSvn);
  if (!platform) {
    throw new TdxError('ERR_ATT_TDX_TCB_LEVEL_NOT_FOUND', {
      detail: `platform TCB (sgx ${pck.sgxTcbComponents.join(',')} pcesvn ${pck.pceSvn} tee_tcb_svn ${toHex(body.teeTcbSvn)}) is below every level of FMSPC ${info.fmspc}`,
    });
  }
  const mod = appraiseModule(info, body);
  const qeLevel = appraiseQe(qe, report);
  let status: TcbStatus = platform.tcbStatus;
  if (mod.level) status = convergeStatus(status, mod.level.tcbStatus);
  status = convergeStatus(status, qeLevel.tcbStatus);
  const advisories = new Set<string>([...(platform.advisoryIDs ?? []), ...(mod.level?.advisoryIDs ?? []), ...(qeLevel.advisoryIDs ?? [])]);
  return Object.freeze({
    tcbStatus: status,
    platformTcbStatus: platform.tcbStatus,
    tdxModuleTcbStatus: mod.level?.tcbStatus,
    tdxModuleId: mod.id,
    qeTcbStatus: qeLevel.tcbStatus,
    tcbDate: platform.tcbDate.toISOString(),
    advisoryIds: Object.freeze([...advisories].sort()),
  });
}
