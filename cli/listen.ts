import { ClientError } from '../client/codes.js';

/** Parses "HOST:PORT" (IPv6 in brackets) for --listen flags. Port 0 picks a free port. */
export function parseListen(s: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--listen must be HOST:PORT' });
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}
