/**
 * The audit entry format: one canonical JSON object per line of `audit.jsonl`.
 *
 *   {v:1, seq, ts, prev, actor, action, tenant?, target?, decision, reason?, policyHash?,
 *    policyVersion?, evidenceSha256?, tee?, measurement?, clientCertSha256?, detail?, policy?, hash}
 *
 * `hash` is the lower-case hex SHA-256 of `canonicalJson` (kms-broker/policy.ts: sorted
 * keys, no whitespace) of the entry without `hash`; `prev` is the previous entry's `hash`
 * (64 zeros for seq 1). A line is exactly `canonicalJson(entry)` followed by `\n`, so
 * any change to its bytes changes either the parsed value (and so the hash) or makes the
 * line non-canonical.
 *
 * This module parses and checks single lines and events; no I/O, no chain logic.
 */
import { z } from 'zod';
import { sha256 } from '../../common/bytes.js';
import { issuesDetail } from '../../common/config.js';
import { KmsError } from '../codes.js';
import { canonicalJson } from '../policy.js';

export const AUDIT_FORMAT_VERSION = 1;
/** `prev` of the first entry. */
export const GENESIS_HASH = '0'.repeat(64);
/** Longest line (without its `\n`) written or accepted. */
export const MAX_LINE_BYTES = 64 * 1024;
/** Longest canonical event accepted by `append` (leaves room for the envelope fields). */
export const MAX_EVENT_BYTES = MAX_LINE_BYTES - 1024;
/** Longest canonical `policy.document`. */
export const MAX_POLICY_DOCUMENT_BYTES = 32 * 1024;
/** Deepest JSON nesting accepted in a line (guards the recursive canonicaliser). */
export const MAX_JSON_DEPTH = 32;
export const MAX_DETAIL_KEYS = 32;
export const MAX_DETAIL_STRING = 128;

const HEX64 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lower-case hex characters');
/** Identifiers: printable ASCII without spaces, bounded. */
const ID = z.string().min(1).max(128).regex(/^[\x21-\x7e]+$/, 'must be printable ASCII without spaces');
const UINT = z.number().int().min(0).max(2 ** 31);
/** `Date.prototype.toISOString` form only. */
const ISO_TS = z.string().regex(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/, 'must be an ISO-8601 UTC timestamp');

export const AUDIT_ACTOR_TYPES = ['admin', 'server', 'anonymous', 'system', 'cli'] as const;
export const AUDIT_DECISIONS = ['allow', 'deny', 'info'] as const;

const ActorSchema = z.strictObject({
  type: z.enum(AUDIT_ACTOR_TYPES),
  id: ID.optional(),
  tenant: ID.optional(),
  ip: z.string().min(2).max(64).regex(/^[0-9A-Za-z:.%[\]-]+$/, 'must be an IP address').optional(),
  via: z.enum(['bearer', 'mtls', 'cli']).optional(),
});

const TargetSchema = z.strictObject({
  keyId: ID.optional(),
  version: UINT.optional(),
  leaseId: ID.optional(),
  identityId: ID.optional(),
  revocationId: ID.optional(),
});

/**
 * SECURITY: names a detail key may not have. The schema already has no field for
 * evidence, tokens, DEKs or prompts; this refuses the obvious ways of smuggling one into
 * `detail` (a second line of defence, like the logger's redaction list).
 */
const FORBIDDEN_DETAIL_KEY = /token|secret|password|passphrase|dek|private|authorization|cookie|evidence|prompt|plaintext|ciphertext|credential/i;
/** SECURITY: refuse detail strings shaped like a JWS/JWT or a PEM block. */
const SECRET_SHAPED = /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*\.|-----BEGIN /;

const DetailKey = z
  .string()
  .regex(/^[A-Za-z][A-Za-z0-9_.-]{0,63}$/, 'must be an identifier of at most 64 characters')
  .refine((k) => !FORBIDDEN_DETAIL_KEY.test(k), 'names a secret-bearing field; not allowed in the audit log');
const DetailValue = z.union([
  z.string().max(MAX_DETAIL_STRING).refine((s) => !SECRET_SHAPED.test(s), 'looks like a token or key; not allowed in the audit log'),
  z.number().refine(Number.isFinite, 'must be finite'),
  z.boolean(),
  z.null(),
]);
const DetailSchema = z
  .record(DetailKey, DetailValue)
  .refine((d) => Object.keys(d).length <= MAX_DETAIL_KEYS, `at most ${MAX_DETAIL_KEYS} keys`);

/** Policy documents are not secret; they are JSON data, bounded in size. */
const PolicyRecordSchema = z.strictObject({
  id: ID,
  version: UINT,
  hash: HEX64,
  document: z.json(),
});

/**
 * Every field an event may carry, each bounded.
 * SECURITY: there is deliberately no field that could hold evidence bytes, tokens, DEKs,
 * key material or prompts: evidence appears only as `evidenceSha256`, keys only by id and
 * version, `detail` holds only short primitives, and `policy` only on policy-change
 * actions (policies are not secret). Unknown fields are refused (strict objects).
 */
const eventShape = {
  actor: ActorSchema,
  action: z.string().max(64).regex(/^[a-z][a-z0-9]*(?:[.-][a-z0-9]+)*$/, 'must be a dotted lower-case name'),
  tenant: ID.optional(),
  target: TargetSchema.optional(),
  decision: z.enum(AUDIT_DECISIONS),
  reason: z.string().max(64).regex(/^ERR_[A-Z0-9_]+$/, 'must be an error code').optional(),
  policyHash: HEX64.optional(),
  policyVersion: UINT.optional(),
  evidenceSha256: HEX64.optional(),
  tee: z.string().max(32).regex(/^[a-z0-9-]+$/, 'must be a TEE name').optional(),
  measurement: z.string().max(192).regex(/^[0-9a-f]+$/, 'must be lower-case hex').optional(),
  /** SHA-256 of the DER of a workload's TLS client certificate (kms-broker/workload-mtls.ts); never the certificate. */
  clientCertSha256: HEX64.optional(),
  detail: DetailSchema.optional(),
  policy: PolicyRecordSchema.optional(),
};

/** Actions that may carry a `policy` document: `key.create` and every `policy.*`. */
export function isPolicyChangeAction(action: string): boolean {
  return action === 'key.create' || action.startsWith('policy.');
}

/** Cross-field rules shared by events and entries. */
function refinePolicy(v: { action: string; policy?: { hash: string; document: unknown } | undefined }, ctx: z.RefinementCtx): void {
  if (v.policy === undefined) return;
  if (!isPolicyChangeAction(v.action)) {
    ctx.addIssue({ code: 'custom', path: ['policy'], message: 'only policy-change actions (key.create, policy.*) carry a policy' });
    return;
  }
  let canonical: string;
  try {
    canonical = canonicalJson(v.policy.document);
  } catch {
    ctx.addIssue({ code: 'custom', path: ['policy', 'document'], message: 'must be JSON data' });
    return;
  }
  if (Buffer.byteLength(canonical, 'utf8') > MAX_POLICY_DOCUMENT_BYTES) {
    ctx.addIssue({ code: 'custom', path: ['policy', 'document'], message: `larger than ${MAX_POLICY_DOCUMENT_BYTES} bytes` });
    return;
  }
  // The hash names the document: auditors recompute it from policies.json.
  if (sha256(Buffer.from(canonical, 'utf8')).toString('hex') !== v.policy.hash) {
    ctx.addIssue({ code: 'custom', path: ['policy', 'hash'], message: 'is not the SHA-256 of the canonical document' });
  }
}

/** What a caller of `AuditLog.append` supplies. */
export const AuditEventSchema = z.strictObject(eventShape).superRefine(refinePolicy);
/**
 * What a caller of `AuditLog.append` supplies (structurally the `AuditEventInput` of
 * kms-broker/audit-sink.ts, so an `AuditLog` is an `AuditSink`). The schema above is what
 * is enforced; this type only documents it.
 */
export interface AuditEvent {
  readonly actor: {
    readonly type: (typeof AUDIT_ACTOR_TYPES)[number];
    readonly id?: string;
    readonly tenant?: string;
    readonly ip?: string;
    readonly via?: 'bearer' | 'mtls' | 'cli';
  };
  readonly action: string;
  readonly tenant?: string;
  readonly target?: {
    readonly keyId?: string;
    readonly version?: number;
    readonly leaseId?: string;
    readonly identityId?: string;
    readonly revocationId?: string;
  };
  readonly decision: (typeof AUDIT_DECISIONS)[number];
  /** An error code (`ERR_...`), for denials. */
  readonly reason?: string;
  readonly policyHash?: string;
  readonly policyVersion?: number;
  readonly evidenceSha256?: string;
  readonly tee?: string;
  readonly measurement?: string;
  /** Hex SHA-256 of the workload's TLS client certificate (DER). */
  readonly clientCertSha256?: string;
  readonly detail?: Readonly<Record<string, string | number | boolean | null>>;
  /** Only on `key.create` and `policy.*`; `hash` must be SHA-256 of canonicalJson(document). */
  readonly policy?: { readonly id: string; readonly version: number; readonly hash: string; readonly document: unknown };
}

/** One line of `audit.jsonl`, parsed. */
export const AuditEntrySchema = z
  .strictObject({
    v: z.literal(AUDIT_FORMAT_VERSION),
    seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
    ts: ISO_TS,
    prev: HEX64,
    ...eventShape,
    hash: HEX64,
  })
  .superRefine(refinePolicy);
export type AuditEntry = z.output<typeof AuditEntrySchema>;

/**
 * Validates an event for appending and returns a deep copy that holds only schema fields.
 * Throws `ERR_KMS_AUDIT_EVENT_INVALID` (its detail names fields, never values) when the
 * event fails the schema or is too large.
 */
export function parseAuditEvent(event: unknown): AuditEvent {
  if (!withinDepth(event, MAX_JSON_DEPTH)) throw new KmsError('ERR_KMS_AUDIT_EVENT_INVALID', { detail: 'nested too deeply' });
  const r = AuditEventSchema.safeParse(event);
  if (!r.success) throw new KmsError('ERR_KMS_AUDIT_EVENT_INVALID', { detail: issuesDetail(r.error.issues) });
  const canonical = canonicalJson(r.data);
  if (Buffer.byteLength(canonical, 'utf8') > MAX_EVENT_BYTES) {
    throw new KmsError('ERR_KMS_AUDIT_EVENT_INVALID', { detail: `larger than ${MAX_EVENT_BYTES} bytes` });
  }
  return JSON.parse(canonical) as AuditEvent;
}

/** Hex SHA-256 of the canonical JSON of `entry` without its `hash` field. */
export function entryHash(entry: Readonly<Record<string, unknown>>): string {
  const { hash: _ignored, ...body } = entry;
  return sha256(Buffer.from(canonicalJson(body), 'utf8')).toString('hex');
}

/** Builds the next entry (hash included) from a validated event. No I/O. */
export function buildEntry(event: AuditEvent, seq: number, ts: string, prev: string): AuditEntry {
  const body = { ...event, v: AUDIT_FORMAT_VERSION, seq, ts, prev } as Record<string, unknown>;
  return { ...body, hash: entryHash(body) } as AuditEntry;
}

/** The bytes of an entry's line, `\n` included. */
export function entryLine(entry: AuditEntry): Buffer {
  return Buffer.from(`${canonicalJson(entry)}\n`, 'utf8');
}

/** Why one line is not a valid entry. */
export type LineFault = 'line-too-long' | 'not-utf8' | 'not-json' | 'too-deep' | 'schema' | 'not-canonical' | 'hash';

export type LineCheck = { readonly ok: true; readonly entry: AuditEntry } | { readonly ok: false; readonly reason: LineFault; readonly detail?: string };

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * Checks one line (without its `\n`) in isolation: size, UTF-8, JSON, nesting depth, the
 * strict entry schema, canonical form, and that `hash` is the hash of the rest.
 * Does NOT check the chain (`seq`, `prev`): that is `verifyAuditLog`'s job.
 * Never throws: hostile bytes give `{ok:false, reason}`.
 */
export function checkLine(line: Uint8Array): LineCheck {
  if (line.length > MAX_LINE_BYTES) return { ok: false, reason: 'line-too-long' };
  let text: string;
  try {
    text = utf8.decode(line);
  } catch {
    return { ok: false, reason: 'not-utf8' };
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, reason: 'not-json' };
  }
  if (!withinDepth(raw, MAX_JSON_DEPTH)) return { ok: false, reason: 'too-deep' };
  const r = AuditEntrySchema.safeParse(raw);
  if (!r.success) return { ok: false, reason: 'schema', detail: issuesDetail(r.error.issues) };
  const rec = raw as Record<string, unknown>;
  if (canonicalJson(rec) !== text) return { ok: false, reason: 'not-canonical' };
  if (entryHash(rec) !== rec['hash']) return { ok: false, reason: 'hash' };
  return { ok: true, entry: r.data };
}

/** True when `value` nests at most `max` arrays/objects deep (iterative: no recursion). */
export function withinDepth(value: unknown, max: number): boolean {
  const stack: [unknown, number][] = [[value, 0]];
  while (stack.length > 0) {
    const [v, d] = stack.pop()!;
    if (v === null || typeof v !== 'object') continue;
    if (d + 1 > max) return false;
    for (const child of Array.isArray(v) ? v : Object.values(v as object)) stack.push([child, d + 1]);
  }
  return true;
}

// --- the signed head --------------------------------------------------------------------

/** Domain separation: the head payload can never be mistaken for a token of the same key ring. */
export const HEAD_PURPOSE = 'cir-audit-head';

export const AuditHeadSchema = z.strictObject({
  v: z.literal(AUDIT_FORMAT_VERSION),
  seq: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  hash: HEX64,
  ts: ISO_TS,
  /** Compact JWS (ES256) over `headPayload`; absent when the log has no signer. */
  jws: z.string().max(16 * 1024).regex(/^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/, 'must be a compact JWS').optional(),
});
export type AuditHead = z.output<typeof AuditHeadSchema>;
export const MAX_HEAD_BYTES = 20 * 1024;

/** The exact bytes a head's JWS signs. */
export function headPayload(head: { seq: number; hash: string; ts: string }): Uint8Array {
  return Buffer.from(canonicalJson({ purpose: HEAD_PURPOSE, v: AUDIT_FORMAT_VERSION, seq: head.seq, hash: head.hash, ts: head.ts }), 'utf8');
}

/** Parses `audit.head.json` bytes; undefined when malformed. Never throws. */
export function parseHead(bytes: Uint8Array): AuditHead | undefined {
  if (bytes.length > MAX_HEAD_BYTES) return undefined;
  try {
    const r = AuditHeadSchema.safeParse(JSON.parse(utf8.decode(bytes)));
    return r.success ? r.data : undefined;
  } catch {
    return undefined;
  }
}
