/**
 * Flags of the standalone bench scripts (seal, verify, audit): a bad one prints a single
 * line "<script>: <why>" and exits 2, never a stack trace.
 */
export function scriptArgs<T>(script: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    process.stderr.write(`${script}: ${(e as Error)?.message ?? String(e)}\n`);
    process.exit(2);
  }
}
