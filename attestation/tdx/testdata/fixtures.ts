import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseTdxCollateralJson, tdxCollateralFromPcs, type TdxCollateral } from '../collateral.js';

/** Test fixtures (test-only helper; not exported from index.ts). */

export const VECTORS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../test/data/vectors/tdx');

export const vec = (p: string): Uint8Array => new Uint8Array(readFileSync(path.join(VECTORS, p)));
export const text = (p: string): string => readFileSync(path.join(VECTORS, p), 'utf8');

/** dcap-qvl/tdx_quote: valid, UpToDate at 2025-07-01. */
export const DCAP_NOW = new Date('2025-07-01T00:00:00Z');
export const dcapCollateral = (): TdxCollateral => parseTdxCollateralJson(vec('dcap-qvl/tdx_quote_collateral.json'));
/** dcap-qvl/tdx_quote_outdated: no matching TCB level at 2026-03-01. */
export const OUTDATED_NOW = new Date('2026-03-01T00:00:00Z');
/** go-tdx-guest collateral (FMSPC 50806f000000), valid at 2023-07-01. */
export const GO_NOW = new Date('2023-07-01T01:00:00Z');
export const GO_BUNDLE = path.join(VECTORS, 'bundles/go-tdx-guest-50806f000000');
/** trustee/tdx_quote_6 with trustee collateral at 2025-11-01 (no PCK CRL covers that date). */
export const TRUSTEE6_NOW = new Date('2025-11-01T00:00:00Z');

export const TCB_SIGNING_2025_CHAIN = text('roots/intel/Intel_SGX_TCB_Signing_2025.pem') + text('roots/intel/Intel_SGX_Root_CA.pem');

export function trustee6Collateral(): TdxCollateral {
  const dcap = dcapCollateral();
  return tdxCollateralFromPcs({
    tcbInfoBody: text('trustee/tcbInfo.json'),
    tcbInfoIssuerChain: TCB_SIGNING_2025_CHAIN,
    qeIdentityBody: text('trustee/enclaveIdentity.json'),
    qeIdentityIssuerChain: TCB_SIGNING_2025_CHAIN,
    // The dcap-qvl root CA CRL (2025-03-20..2026-04-03) covers 2025-11-01; no PCK CRL does.
    ...(dcap.rootCaCrl ? { rootCaCrl: dcap.rootCaCrl } : {}),
  });
}

export const parseTdxCollateralJsonFile = (p: string): TdxCollateral => parseTdxCollateralJson(vec(p));
