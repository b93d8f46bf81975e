/**
 * The stdio protocol of the bench's child processes (bench/server-process.ts,
 * bench/broker-child.ts, and `cir broker`'s listening line): one JSON object per stdout line,
 * and a failure reported as {"type":"error", message} (the error's code or name, and its
 * message) with exit status 1. Child side: `send`, `runChild`; parent side: `firstJsonLine`.
 */
import type { ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';

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

/**
 * Parent side: the first stdout line of `child`, parsed as a JSON object. Rejects when the
 * child exits first (with `exitDetail()` appended, e.g. the tail of its log) or when the
 * line is not JSON.
 */
export function firstJsonLine(child: ChildProcess, what: string, exitDetail: () => string = () => ''): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout! });
    const onExit = (code: number | null) => reject(new Error(`${what} exited (${code}) before it was ready${exitDetail()}`));
    child.once('exit', onExit);
    lines.once('line', (l) => {
      child.off('exit', onExit);
      lines.close();
      try {
        const v = JSON.parse(l) as unknown;
        if (typeof v !== 'object' || v === null) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new Error(`${what}: its first line is not a JSON object`));
      }
    });
  });
}
