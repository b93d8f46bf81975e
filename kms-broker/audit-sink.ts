/**
 * What the broker's routes and admin operations write to the audit trail. The hash-chained
 * log in `kms-broker/audit/` implements it; tests may collect events in memory.
 *
 * SECURITY: there is no field for key material, tokens, evidence bytes or prompts; evidence
 * is named by its SHA-256 only.
 */
import type { AuditEvent } from './audit/entry.js';
import type { AppendOptions } from './audit/log.js';

/** An audit event, as `AuditLog.append` validates it (kms-broker/audit/entry.ts). */
export type AuditEventInput = AuditEvent;
export type AuditActor = AuditEvent['actor'];

export interface AuditSink {
  /**
   * Resolves once the event is durable; rejects when it could not be written. With
   * `defer`, the event rides with the next commit instead of starting one (AuditLog).
   */
  append(event: AuditEventInput, opts?: AppendOptions): Promise<unknown>;
}

/** An audit sink that keeps events in memory (tests, and callers that audit elsewhere). */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEventInput[] = [];
  async append(event: AuditEventInput, _opts?: AppendOptions): Promise<void> {
    this.events.push(event);
  }
}
