/**
 * The stdio protocol shared by the bench's child processes (bench/server-process.ts,
 * bench/broker-child.ts): one JSON object per stdout line, and a failure reported as
 * {"type":"error", message} (the error's code or name, and its message) with exit status 1.
 */

/** Writes `msg` as one JSON line on stdout. */
export function send(msg: object): void {
  process.stdout.write(`${JSON.stringify(msg)}\n`);
}

/**
 * Runs `main` with the one command-line argument `usage` names (exit 2 without it): exit 0
 * when it resolves, an error line and exit 1 when it rejects.
 */
export function runChild(usage: string, main: (arg: string) => Promise<void>): void {
  const arg = process.argv[2];
  if (!arg) {
    process.stderr.write(`usage: ${usage}\n`);
    process.exit(2);
  }
  main(arg).then(
    () => process.exit(0),
    (e: unknown) => {
      send({ type: 'error', message: e instanceof Error ? `${(e as { code?: string }).code ?? e.name}: ${e.message}` : String(e) });
      process.exit(1);
    },
  );
}
