import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { errorCatalog, errorTableMarkdown } from '../cli/error-catalog.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const readme = readFileSync(path.join(root, 'README.md'), 'utf8');

describe('documentation stays in step with the code', () => {
  it('the README error table is exactly what `cir errors --markdown` prints', () => {
    expect(readme).toContain(errorTableMarkdown());
  });

  it('error codes are unique across packages and follow ERR_<AREA>_<WHAT>', () => {
    const codes = errorCatalog().map((e) => e.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const c of codes) expect(c).toMatch(/^ERR_[A-Z0-9]+(_[A-Z0-9]+)+$/);
  });

  it('the README opens with the two commands', () => {
    const firstScreen = readme.split('\n').slice(0, 25).join('\n');
    expect(firstScreen).toContain('npm install && npm run demo');
    expect(firstScreen).toContain('npm test');
  });
});
