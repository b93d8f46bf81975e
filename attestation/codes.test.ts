import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { ATTESTATION_CODES, AttestationError, isAttestationError } from './codes.js';
import { httpStatusFor, isCirError } from '../common/errors.js';

describe('attestation error codes', () => {
  it('ERRORS.md documents every code with its category, and nothing else', () => {
    const doc =
      readFileSync(new URL('./ERRORS.md', import.meta.url), 'utf8') + readFileSync(new URL('./tdx/ERRORS.md', import.meta.url), 'utf8');
    const rows = [...doc.matchAll(/^\| `(ERR_[A-Z_]+)` \| ([a-z-]+) \|/gm)].map((m) => [m[1], m[2]]);
    const table = Object.entries(ATTESTATION_CODES).map(([code, info]) => [code, info.category]);
    expect(rows.sort()).toEqual(table.sort());
  });

  it('codes follow the naming scheme and categories follow the stage', () => {
    for (const [code, info] of Object.entries(ATTESTATION_CODES)) {
      expect(code).toMatch(/^ERR_ATT_(SNP_|SIM_|TDX_|TSM_)?[A-Z_]+$/);
      expect(info.message.length).toBeGreaterThan(0);
    }
    expect(ATTESTATION_CODES.ERR_ATT_SNP_BAD_SIZE.category).toBe('bad-input');
    expect(ATTESTATION_CODES.ERR_ATT_SNP_BAD_SIGNATURE.category).toBe('verification');
    expect(ATTESTATION_CODES.ERR_ATT_SNP_POLICY_FAILED.category).toBe('policy');
  });

  it('errors are CirErrors with code, category, fixed message and detail', () => {
    const e = new AttestationError('ERR_ATT_SNP_BAD_SIGNATURE', { detail: 'x' });
    expect(isAttestationError(e)).toBe(true);
    expect(isCirError(e)).toBe(true);
    expect(e.name).toBe('AttestationError');
    expect(e.code).toBe('ERR_ATT_SNP_BAD_SIGNATURE');
    expect(e.message).toBe('SEV-SNP report signature is invalid: x');
    expect(httpStatusFor(e.category)).toBe(403);
  });
});
