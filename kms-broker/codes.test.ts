import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { httpStatusFor, isPublicCategory } from '../common/errors.js';
import { HTTP_STATUS_OVERRIDES, KMS_CODES, KmsError, type KmsCode } from './codes.js';
import { problemFor } from './problem.js';
import { ProblemSchema } from './protocol.js';

const codes = Object.keys(KMS_CODES) as KmsCode[];
const readme = readFileSync(new URL('./README.md', import.meta.url), 'utf8');

describe('error codes', () => {
  it('are all ERR_KMS_* with a fixed, non-empty message', () => {
    for (const c of codes) {
      expect(c).toMatch(/^ERR_KMS_[A-Z_]+$/);
      expect(KMS_CODES[c].message.length).toBeGreaterThan(0);
    }
  });

  it.each(codes)('%s maps to a valid problem document with the documented status', (code) => {
    const err = new KmsError(code, { detail: 'd' });
    expect(err.code).toBe(code);
    expect(err.name).toBe('KmsError');
    const p = ProblemSchema.parse(problemFor(err));
    const info = KMS_CODES[code];
    if (isPublicCategory(info.category)) {
      expect(p.code).toBe(code);
      expect(p.status).toBe(HTTP_STATUS_OVERRIDES[code] ?? httpStatusFor(info.category));
      expect(p.title).toBe(info.message);
      expect(p.detail).toBe('d');
    } else {
      expect(p).toEqual({ type: 'urn:cir:error:ERR_KMS_INTERNAL', title: 'internal error', status: 500, code: 'ERR_KMS_INTERNAL' });
    }
    // README row: code, category and status.
    const row = readme.split('\n').find((l) => l.startsWith(`| \`${code}\` |`));
    expect(row, `README.md documents ${code}`).toBeDefined();
    expect(row).toContain(`| ${info.category} |`);
    expect(row).toContain(`| ${HTTP_STATUS_OVERRIDES[code] ?? httpStatusFor(info.category)}`);
  });

  it('README documents no code that does not exist', () => {
    const documented = [...readme.matchAll(/^\| `(ERR_KMS_[A-Z_]+)` \|/gm)].map((m) => m[1]);
    expect(documented.sort()).toEqual([...codes].sort());
  });
});
