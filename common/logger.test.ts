/**
 * flatLogger censors a flat object exactly as the full redaction list does (its wildcard
 * paths cannot match there), and still censors what it must.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { createLogger, FLAT_REDACT_PATHS, flatLogger, REDACT_PATHS } from './logger.js';

/** A logger whose lines land in `lines`, parsed, without the time (which differs per call). */
function capture(): { lines: Record<string, unknown>[]; logger: ReturnType<typeof createLogger> } {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({
    level: 'info',
    name: 't',
    destination: {
      write(s: string) {
        const { time: _t, ...rest } = JSON.parse(s) as Record<string, unknown>;
        lines.push(rest);
      },
    },
  });
  return { lines, logger };
}

describe('flatLogger', () => {
  it('keeps every top-level name of the redaction list, and only those', () => {
    expect(FLAT_REDACT_PATHS.length).toBeGreaterThan(10);
    for (const p of REDACT_PATHS) expect(FLAT_REDACT_PATHS.includes(p)).toBe(!p.includes('.'));
  });

  it('writes the same line as the full list for any flat object of scalars', () => {
    // Every name the full list mentions, at any depth, plus the access log's own and arbitrary ones.
    const listed = [...new Set(REDACT_PATHS.map((p) => p.split('.').at(-1)!))];
    const names = fc.oneof(fc.constantFrom(...listed, 'reqId', 'tenant', 'keyId', 'model', 'ms'), fc.string({ maxLength: 12 }));
    const scalar = fc.oneof(fc.string({ maxLength: 20 }), fc.integer(), fc.double({ noNaN: true, noDefaultInfinity: true }), fc.boolean(), fc.constant(null));
    fc.assert(
      fc.property(fc.dictionary(names, scalar, { maxKeys: 12 }), fc.string({ maxLength: 10 }), (obj, msg) => {
        const full = capture();
        const flat = capture();
        full.logger.info({ ...obj }, msg);
        flatLogger(flat.logger).info({ ...obj }, msg);
        expect(flat.lines).toEqual(full.lines);
      }),
      { numRuns: 500 },
    );
  });

  it('censors a secret-named field of a flat object', () => {
    const c = capture();
    flatLogger(c.logger).info({ reqId: 'r1', token: 'canary-token', authorization: 'Bearer canary', dek: 'canary-dek' }, 'rpc');
    expect(c.lines[0]).toMatchObject({ reqId: 'r1', token: '[redacted]', authorization: '[redacted]', dek: '[redacted]' });
    expect(JSON.stringify(c.lines)).not.toContain('canary');
  });
});
