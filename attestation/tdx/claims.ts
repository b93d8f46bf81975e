import { toHex } from '../../common/bytes.js';
import * as L from './layout.js';
import type { TdxQuote } from './parse.js';
import type { PckSgxInfo } from './pck.js';
import type { TcbAppraisal } from './tcb.js';
import type { TdxClaims } from './types.js';

/** Builds the flat claim set from a fully verified quote (internal, verify.ts). */

const bit = (le: Uint8Array, n: number): boolean => ((le[n >> 3]! >> (n & 7)) & 1) === 1;

export function tdxClaimsFromQuote(
  q: TdxQuote,
  pck: PckSgxInfo,
  tcb: TcbAppraisal,
  tcbEvaluationDataNumber: number,
  relaxations: readonly string[],
): TdxClaims {
  const b = q.body;
  const a = b.tdAttributes;
  return Object.freeze({
    tee: 'tdx',
    simulated: false,
    quoteVersion: q.header.version,
    bodyType: b.bodyType,
    mrtd: toHex(b.mrTd),
    rtmr: Object.freeze([toHex(b.rtmr[0]), toHex(b.rtmr[1]), toHex(b.rtmr[2]), toHex(b.rtmr[3])] as const),
    mrseam: toHex(b.mrSeam),
    mrsignerseam: toHex(b.mrSignerSeam),
    mrconfigid: toHex(b.mrConfigId),
    mrowner: toHex(b.mrOwner),
    mrownerconfig: toHex(b.mrOwnerConfig),
    reportData: toHex(b.reportData),
    tdAttributes: Object.freeze({
      hex: toHex(a),
      debug: bit(a, L.TD_ATTR_DEBUG_BIT),
      septVeDisable: bit(a, L.TD_ATTR_SEPT_VE_DISABLE_BIT),
      migratable: bit(a, L.TD_ATTR_MIGRATABLE_BIT),
      pks: bit(a, L.TD_ATTR_PKS_BIT),
      kl: bit(a, L.TD_ATTR_KL_BIT),
      perfmon: bit(a, L.TD_ATTR_PERFMON_BIT),
    }),
    seamAttributes: toHex(b.seamAttributes),
    xfam: toHex(b.xfam),
    teeTcbSvn: toHex(b.teeTcbSvn),
    ...(b.teeTcbSvn2 ? { teeTcbSvn2: toHex(b.teeTcbSvn2) } : {}),
    ...(b.mrServiceTd ? { mrservicetd: toHex(b.mrServiceTd) } : {}),
    fmspc: pck.fmspc,
    pceId: pck.pceId,
    tcbStatus: tcb.tcbStatus,
    platformTcbStatus: tcb.platformTcbStatus,
    ...(tcb.tdxModuleTcbStatus !== undefined ? { tdxModuleTcbStatus: tcb.tdxModuleTcbStatus } : {}),
    ...(tcb.tdxModuleId !== undefined ? { tdxModuleId: tcb.tdxModuleId } : {}),
    qeTcbStatus: tcb.qeTcbStatus,
    tcbDate: tcb.tcbDate,
    advisoryIds: tcb.advisoryIds,
    tcbEvaluationDataNumber,
    relaxations: Object.freeze([...relaxations]),
  } satisfies TdxClaims);
}
