/**
 * What the broker's routes and admin operations write to the audit trail. The hash-chained
 * log in `kms-broker/audit/` implements it; tests may collect events in memory.
 *
 * SECURITY: there is no field for key material, tokens, evidence bytes or prompts; evidence
 * is named by its SHA-256 only.
 */
export interface AuditActor {
  readonly type: 'admin' | 'server' | 'anonymous' | 'system' | 'cli';
  readonly id?: string;
  readonly tenant?: string;
  readonly ip?: string;
  readonly via?: 'bearer' | 'mtls' | 'cli';
}

export interface AuditEventInput {
  readonly actor: AuditActor;
  readonly action: string;
  readonly tenant?: string;
  readonly target?: {
    readonly keyId?: string;
    readonly version?: number;
    readonly leaseId?: string;
    readonly identityId?: string;
    readonly revocationId?: string;
  };
  readonly decision: 'allow' | 'deny' | 'info';
  /** The error code of a denial. */
  readonly reason?: string;
  readonly policyHash?: string;
  readonly policyVersion?: number;
  readonly evidenceSha256?: string;
  readonly tee?: string;
  readonly measurement?: string;
  readonly detail?: Readonly<Record<string, string | number | boolean | null>>;
  /** On policy changes only: the policy document itself (policies are not secret). */
  readonly policy?: { readonly id: string; readonly version: number; readonly hash: string; readonly document: unknown };
}

export interface AuditSink {
  /** Resolves once the event is durable; rejects when it could not be written. */
  append(event: AuditEventInput): Promise<unknown>;
}

/** An audit sink that keeps events in memory (tests, and callers that audit elsewhere). */
export class MemoryAuditSink implements AuditSink {
  readonly events: AuditEventInput[] = [];
  async append(event: AuditEventInput): Promise<void> {
    this.events.push(event);
  }
}
