/**
 * Security event stream: one JSON object per line, for a SIEM. Events name the tenant,
 * key id, model, method, peer address and a reason code; never a key, token, tensor,
 * prompt or output. Retention is the operator's: the server only appends.
 *
 * Each event type is rate-limited (a flood of bad keys must not become a disk flood);
 * the next event of that type that gets through carries `suppressed`, the number dropped.
 */
import { createWriteStream, type WriteStream } from 'node:fs';
import { TokenBucket } from './limits.js';

export type SecurityEventType =
  | 'auth_failure'
  | 'model_not_visible'
  | 'scope_denied'
  | 'extraction_alert'
  | 'key_blocked'
  | 'key_store_reloaded'
  | 'key_store_invalid'
  | 'quota_exceeded';

export interface SecurityEvent {
  readonly type: SecurityEventType;
  readonly tenant?: string;
  readonly keyId?: string;
  readonly model?: string;
  readonly method?: string;
  readonly peer?: string;
  readonly reason?: string;
  readonly [extra: string]: string | number | boolean | undefined;
}

export interface SecurityEventSink {
  emit(e: SecurityEvent): void;
  close(): Promise<void>;
}

export const NULL_SINK: SecurityEventSink = { emit() {}, async close() {} };

/** Per-type rate limit of the stream. */
const EVENTS_PER_SEC = 50;
const EVENT_BURST = 200;

/**
 * JSON-lines sink over `write` (stdout, a file stream, or a test array). `now` stamps
 * events. Field values are written as given: callers pass ids, never secrets.
 */
export function jsonLinesSink(write: (line: string) => void, now: () => number, close: () => Promise<void> = async () => {}): SecurityEventSink {
  const buckets = new Map<string, TokenBucket>();
  const dropped = new Map<string, number>();
  return {
    emit(e) {
      const t = now();
      let b = buckets.get(e.type);
      if (!b) buckets.set(e.type, (b = new TokenBucket(EVENTS_PER_SEC, EVENT_BURST, t)));
      if (b.take(t) !== 0) {
        dropped.set(e.type, (dropped.get(e.type) ?? 0) + 1);
        return;
      }
      const suppressed = dropped.get(e.type);
      dropped.delete(e.type);
      write(`${JSON.stringify({ time: new Date(t).toISOString(), ...e, ...(suppressed ? { suppressed } : {}) })}\n`);
    },
    close,
  };
}

/** Appends to `file` (created 0600). */
export function fileSink(file: string, now: () => number): SecurityEventSink {
  const stream: WriteStream = createWriteStream(file, { flags: 'a', mode: 0o600 });
  stream.on('error', () => undefined); // a failing disk must not crash the server
  return jsonLinesSink(
    (l) => stream.write(l),
    now,
    () => new Promise<void>((resolve) => stream.end(() => resolve())),
  );
}
