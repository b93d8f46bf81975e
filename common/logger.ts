import { pino, type Logger, type DestinationStream } from 'pino';

/**
 * SECURITY: fixed redaction list. Any field with one of these names is censored wherever
 * it appears (two levels deep). Code must still never log secrets on purpose; this is the
 * second line of defence.
 */
export const REDACT_PATHS = [
  'dek', '*.dek', 'key', '*.key', 'privateKey', '*.privateKey', 'token', '*.token',
  'adminToken', '*.adminToken', 'authorization', '*.authorization', 'req.headers.authorization',
  'masterKey', '*.masterKey', 'password', '*.password', 'secret', '*.secret',
  'ciphertext', '*.ciphertext', 'plaintext', '*.plaintext', 'inputs', '*.inputs',
  'outputs', '*.outputs', 'raw_input_contents', '*.raw_input_contents', 'evidence', '*.evidence',
];

export interface LoggerOptions {
  level?: string;
  name?: string;
  /** Defaults to stderr so that stdout stays clean for machine-readable output. */
  destination?: DestinationStream;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  return pino(
    {
      name: opts.name ?? 'cir',
      level: opts.level ?? process.env.CIR_LOG_LEVEL ?? 'info',
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      base: { pid: process.pid },
    },
    opts.destination ?? pino.destination({ fd: 2, sync: true }),
  );
}

export type { Logger };
