/**
 * TDX errors are AttestationErrors (one error class per package, attestation/codes.ts);
 * this module keeps the TDX-facing names.
 */
import { AttestationError, isAttestationError } from '../codes.js';
import type { TDX_CODES } from './code-table.js';

export { TDX_CODES } from './code-table.js';
export type TdxErrorCode = keyof typeof TDX_CODES;

export const TdxError = AttestationError;
export type TdxError = AttestationError;

export function isTdxError(e: unknown): e is TdxError {
  return isAttestationError(e) && e.code.startsWith('ERR_ATT_TDX_');
}
