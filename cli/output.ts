/**
 * Terminal output and error exits for the `cir` command line. Errors become one line
 * "error [CODE]: message" plus the list of failing fields where there is one; never a
 * stack trace (set CIR_DEBUG=1 to see the stack of an unexpected error locally).
 */
import { exitCodeFor, isCirError } from '../common/errors.js';

export function printError(e: unknown): number {
  if (isCirError(e)) {
    process.stderr.write(`error [${e.code}]: ${e.message}\n`);
    const issues = e.details?.['issues'];
    if (Array.isArray(issues)) for (const i of issues) process.stderr.write(`  - ${String(i)}\n`);
    const failures = e.details?.['failures'];
    if (Array.isArray(failures)) {
      for (const f of failures as { field: string; expected: string; observed: string }[]) {
        process.stderr.write(`  - ${f.field}: expected ${f.expected}, observed ${f.observed}\n`);
      }
    }
    return exitCodeFor(e.category);
  }
  process.stderr.write('error [ERR_INTERNAL]: unexpected internal error (set CIR_DEBUG=1 for details)\n');
  if (process.env.CIR_DEBUG === '1') process.stderr.write(`${(e as Error)?.stack ?? String(e)}\n`);
  return 3;
}

const useColor = process.stdout.isTTY && !process.env.NO_COLOR;
export const mark = (ok: boolean): string => (useColor ? (ok ? '\x1b[32m✔\x1b[0m' : '\x1b[31m✘\x1b[0m') : ok ? 'ok ' : 'FAIL');
