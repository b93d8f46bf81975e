/**
 * Evidence packages for auditors: a time window of the audit log with everything needed
 * to check it offline, and the checker.
 *
 *   entries.jsonl   the entries with since <= ts <= until (a contiguous seq range), plus the
 *                   entry just before the window so the chain links
 *   policies.json   every policy document in the log whose hash an exported entry names
 *   jwks.json       the public keys that verify the head (the broker's key archive)
 *   head.json       the log's signed head checkpoint at export time
 *   manifest.json   window, counts, first/last seq and hash, SHA-256 of each file above, the
 *                   verification result of the whole log, generator (written last)
 */
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { writeFileAtomic } from '../../common/atomic-file.js';
import { constantTimeEqual, sha256 } from '../../common/bytes.js';
import { KmsError } from '../codes.js';
import { canonicalJson } from '../policy.js';
import { checkLine, entryLine, parseHead, type AuditEntry, type AuditHead, type LineFault } from './entry.js';
import { readLines } from './lines.js';
import { AUDIT_HEAD_FILE, AUDIT_LOG_FILE } from './log.js';
import { checkHead, defaultJwksFile, readJwksFile, resolveAuditDirs, verifyAuditLog, type AuditVerifyOk } from './verify.js';

export const EXPORT_FORMAT = 'cir-audit-export';
export const EXPORT_GENERATOR = 'cir kms-broker/audit export v1';
export const EXPORT_FILES = ['entries.jsonl', 'policies.json', 'jwks.json', 'head.json'] as const;
export type ExportFile = (typeof EXPORT_FILES)[number];
const MAX_MANIFEST_BYTES = 1 << 20;

export interface ExportAuditOptions {
  /** Audit directory or broker state directory (as for `verifyAuditLog`). */
  readonly dir: string;
  readonly since: Date;
  readonly until: Date;
  /** Output directory: created 0700, or an existing empty one. Never overwritten. */
  readonly out: string;
  /** JWKS file or object (default: the state directory's archive, else jwks.json). */
  readonly jwks?: string | JSONWebKeySet;
  readonly now?: () => Date;
}

export interface PolicyRecord {
  readonly id: string;
  readonly version: number;
  readonly hash: string;
  readonly document: unknown;
}

export interface ExportManifest {
  readonly format: typeof EXPORT_FORMAT;
  readonly v: 1;
  readonly generator: string;
  readonly createdAt: string;
  readonly window: { readonly since: string; readonly until: string };
  readonly entries: {
    /** Lines in entries.jsonl. */
    readonly count: number;
    /** Of those, entries whose ts lies in the window. */
    readonly inWindow: number;
    readonly firstSeq: number | null;
    readonly lastSeq: number | null;
    readonly firstHash: string | null;
    readonly lastHash: string | null;
  };
  readonly policies: { readonly count: number; readonly missing: readonly string[] };
  readonly head: { readonly seq: number; readonly hash: string; readonly signed: boolean } | null;
  /** `verifyAuditLog` on the whole log at export time. */
  readonly verification: AuditVerifyOk;
  /** Lower-case hex SHA-256 of each file of the package. */
  readonly files: Readonly<Record<ExportFile, string>>;
}

/**
 * Writes an evidence package for `since <= ts <= until` into `opts.out`.
 * Checks: the window is valid (ERR_KMS_AUDIT_EXPORT_INVALID), `out` is absent or an empty
 * directory (ERR_KMS_AUDIT_EXPORT_INVALID: never overwrites), and the whole log verifies
 * (ERR_KMS_AUDIT_LOG_INVALID otherwise: a package is never cut from a broken log; copy the
 * raw files instead). Files are written atomically, manifest.json last.
 * Does NOT include entries outside the window other than the one linking entry (and any
 * entries between in-window ones, which only a stepped-back clock would produce).
 */
export async function exportAudit(opts: ExportAuditOptions): Promise<ExportManifest> {
  const since = opts.since.getTime();
  const until = opts.until.getTime();
  if (!Number.isFinite(since) || !Number.isFinite(until) || since > until) {
    throw new KmsError('ERR_KMS_AUDIT_EXPORT_INVALID', { detail: 'since and until must be valid times with since <= until' });
  }
  const out = path.resolve(opts.out);
  await prepareOut(out);
  const { auditDir, stateDir } = await resolveAuditDirs(opts.dir);
  const jwksSource = opts.jwks ?? (await defaultJwksFile(stateDir));
  const found: JSONWebKeySet | undefined = typeof jwksSource === 'object' ? jwksSource : jwksSource ? await readJwksFile(jwksSource) : undefined;
  const jwks: JSONWebKeySet = found ?? { keys: [] };
  const verification = await verifyAuditLog({ dir: auditDir, ...(found ? { jwks: found } : {}) });
  if (!verification.ok) {
    const b = verification.firstBad;
    throw new KmsError('ERR_KMS_AUDIT_LOG_INVALID', { detail: `line ${b.line}${b.seq !== undefined ? ` (seq ${b.seq})` : ''}: ${b.reason}` });
  }

  const policies = new Map<string, PolicyRecord>();
  let before: AuditEntry | undefined;
  const range: AuditEntry[] = [];
  let lastInWindow = -1;
  let inWindow = 0;
  for await (const raw of readLines(path.join(auditDir, AUDIT_LOG_FILE))) {
    const c = raw.complete && !raw.tooLong ? checkLine(raw.bytes) : undefined;
    if (!c?.ok || c.entry.seq > verification.entries) break; // the torn tail, if any
    const e = c.entry;
    if (e.policy) policies.set(e.policy.hash, { id: e.policy.id, version: e.policy.version, hash: e.policy.hash, document: e.policy.document });
    const t = Date.parse(e.ts);
    const inside = t >= since && t <= until;
    if (range.length === 0 && !inside) {
      if (t < since) before = e;
      continue;
    }
    range.push(e);
    if (inside) {
      lastInWindow = range.length - 1;
      inWindow++;
    }
  }
  const exported = [...(before && range.length > 0 ? [before] : []), ...range.slice(0, lastInWindow + 1)];
  const referenced = new Set<string>();
  for (const e of exported.slice(before && range.length > 0 ? 1 : 0)) {
    if (e.policyHash) referenced.add(e.policyHash);
    if (e.policy) referenced.add(e.policy.hash);
  }
  const policyList = [...referenced].flatMap((h) => policies.get(h) ?? []).sort((a, b) => (a.id === b.id ? a.version - b.version : a.id < b.id ? -1 : 1));
  const missing = [...referenced].filter((h) => !policies.has(h)).sort();

  const headBytes = await readFile(path.join(auditDir, AUDIT_HEAD_FILE)).catch(() => Buffer.from('null\n'));
  const head = parseHead(headBytes);
  const contents: Record<ExportFile, Buffer> = {
    'entries.jsonl': Buffer.concat(exported.map(entryLine)),
    'policies.json': Buffer.from(`${JSON.stringify(policyList, null, 2)}\n`),
    'jwks.json': Buffer.from(`${JSON.stringify(jwks, null, 2)}\n`),
    'head.json': headBytes,
  };
  const files = {} as Record<ExportFile, string>;
  for (const f of EXPORT_FILES) {
    await writeFileAtomic(path.join(out, f), contents[f], 0o600);
    files[f] = sha256(contents[f]).toString('hex');
  }
  const first = exported[0];
  const last = exported[exported.length - 1];
  const manifest: ExportManifest = {
    format: EXPORT_FORMAT,
    v: 1,
    generator: EXPORT_GENERATOR,
    createdAt: (opts.now ?? (() => new Date()))().toISOString(),
    window: { since: opts.since.toISOString(), until: opts.until.toISOString() },
    entries: {
      count: exported.length,
      inWindow,
      firstSeq: first?.seq ?? null,
      lastSeq: last?.seq ?? null,
      firstHash: first?.hash ?? null,
      lastHash: last?.hash ?? null,
    },
    policies: { count: policyList.length, missing },
    head: head ? { seq: head.seq, hash: head.hash, signed: verification.signed } : null,
    verification,
    files,
  };
  await writeFileAtomic(path.join(out, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`, 0o600);
  return manifest;
}

async function prepareOut(out: string): Promise<void> {
  let st;
  try {
    st = await stat(out);
  } catch {
    await mkdir(out, { recursive: true, mode: 0o700 }).catch((e: unknown) => {
      throw new KmsError('ERR_KMS_AUDIT_EXPORT_INVALID', { detail: `cannot create the output directory (${(e as NodeJS.ErrnoException).code ?? 'error'})`, cause: e });
    });
    return;
  }
  if (!st.isDirectory() || (await readdir(out)).length > 0) {
    throw new KmsError('ERR_KMS_AUDIT_EXPORT_INVALID', { detail: 'the output directory is not empty; refusing to overwrite' });
  }
}

// --- checking a package -----------------------------------------------------------------

export type ExportFault =
  | 'manifest-malformed'
  | 'file-hash' // a file's SHA-256 differs from the manifest
  | LineFault
  | 'torn'
  | 'seq'
  | 'prev'
  | 'range' // first/last seq or hash differ from the manifest
  | 'policy-hash' // a policy document does not hash to its hash
  | 'head-malformed'
  | 'head-signature'
  | 'head-payload'
  | 'head-unsigned'
  | 'head-mismatch';

export type ExportVerifyResult =
  | {
      readonly ok: true;
      readonly entries: number;
      readonly firstSeq: number | null;
      readonly lastSeq: number | null;
      readonly signed: boolean;
      /**
       * True when the signed head names an entry of the package (so the package's chain is
       * anchored by the signature). False when the head is later than the window: the link
       * from the window to the head is in the full log, which `verifyAuditLog` checks.
       */
      readonly anchoredByHead: boolean;
    }
  | { readonly ok: false; readonly firstBad: { readonly file: string; readonly line?: number; readonly reason: ExportFault; readonly detail?: string } };

/**
 * Checks an evidence package written by `exportAudit`: each file's SHA-256 against the
 * manifest; every line of entries.jsonl (`checkLine`) and the chain between them (the
 * first line's `prev` is not checked: it is where the package starts); first/last seq and
 * hash against the manifest; each policy document against its hash; the head's JWS
 * against the package's jwks.json (see `checkHead`) and, when the head's seq is in the
 * package, that entry's hash.
 * Does NOT prove that the package holds every entry of the window in the original log
 * beyond what the chain and the head show (see `anchoredByHead`), nor trust the
 * manifest's `verification` (it is the exporter's statement).
 * Throws ERR_KMS_AUDIT_UNREADABLE when a file cannot be read.
 */
export async function verifyAuditExport(opts: { readonly dir: string; readonly requireSigned?: boolean }): Promise<ExportVerifyResult> {
  const dir = path.resolve(opts.dir);
  const bad = (file: string, reason: ExportFault, line?: number, detail?: string): ExportVerifyResult => ({
    ok: false,
    firstBad: { file, reason, ...(line !== undefined ? { line } : {}), ...(detail ? { detail } : {}) },
  });
  const read = async (f: string): Promise<Buffer> => {
    try {
      const st = await stat(path.join(dir, f));
      if (!st.isFile()) throw new Error('not a file');
      return await readFile(path.join(dir, f));
    } catch (e) {
      throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `${f}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, cause: e });
    }
  };
  const manifestBytes = await read('manifest.json');
  let manifest: ExportManifest;
  try {
    if (manifestBytes.length > MAX_MANIFEST_BYTES) throw new Error('too large');
    manifest = JSON.parse(manifestBytes.toString('utf8')) as ExportManifest;
    if (manifest?.format !== EXPORT_FORMAT || manifest.v !== 1 || typeof manifest.files !== 'object' || manifest.files === null) throw new Error('format');
  } catch {
    return bad('manifest.json', 'manifest-malformed');
  }
  const contents = {} as Record<ExportFile, Buffer>;
  for (const f of EXPORT_FILES) {
    contents[f] = await read(f);
    const want = manifest.files[f];
    if (typeof want !== 'string' || !constantTimeEqual(Buffer.from(want, 'utf8'), Buffer.from(sha256(contents[f]).toString('hex'), 'utf8'))) {
      return bad(f, 'file-hash');
    }
  }
  // Entries: each line valid, chained to the one before.
  const text = contents['entries.jsonl'];
  const entries: AuditEntry[] = [];
  let pos = 0;
  let line = 0;
  while (pos < text.length) {
    line++;
    const nl = text.indexOf(0x0a, pos);
    if (nl < 0) return bad('entries.jsonl', 'torn', line);
    const c = checkLine(text.subarray(pos, nl));
    if (!c.ok) return bad('entries.jsonl', c.reason, line, c.detail);
    const prev = entries[entries.length - 1];
    if (prev && c.entry.seq !== prev.seq + 1) return bad('entries.jsonl', 'seq', line);
    if (prev && c.entry.prev !== prev.hash) return bad('entries.jsonl', 'prev', line);
    entries.push(c.entry);
    pos = nl + 1;
  }
  const first = entries[0];
  const last = entries[entries.length - 1];
  const m = manifest.entries;
  if (
    !m ||
    m.count !== entries.length ||
    (m.firstSeq ?? null) !== (first?.seq ?? null) ||
    (m.lastSeq ?? null) !== (last?.seq ?? null) ||
    (m.firstHash ?? null) !== (first?.hash ?? null) ||
    (m.lastHash ?? null) !== (last?.hash ?? null)
  ) {
    return bad('manifest.json', 'range');
  }
  // Policies: each document hashes to its hash.
  let policies: unknown;
  try {
    policies = JSON.parse(contents['policies.json'].toString('utf8'));
    if (!Array.isArray(policies)) throw new Error('not an array');
  } catch {
    return bad('policies.json', 'policy-hash', undefined, 'not a JSON array');
  }
  for (const [i, p] of (policies as PolicyRecord[]).entries()) {
    let ok = false;
    try {
      ok = typeof p?.hash === 'string' && sha256(Buffer.from(canonicalJson(p.document), 'utf8')).toString('hex') === p.hash;
    } catch {
      ok = false;
    }
    if (!ok) return bad('policies.json', 'policy-hash', i + 1);
  }
  // Head: signature by the package's keys; anchors the package when it names one of its entries.
  let jwks: JSONWebKeySet;
  try {
    jwks = JSON.parse(contents['jwks.json'].toString('utf8')) as JSONWebKeySet;
    if (!Array.isArray(jwks?.keys)) throw new Error('keys');
  } catch {
    return bad('jwks.json', 'head-signature', undefined, 'not a JWKS');
  }
  let head: AuditHead | undefined;
  if (contents['head.json'].toString('utf8').trim() !== 'null') {
    head = parseHead(contents['head.json']);
    if (!head) return bad('head.json', 'head-malformed');
  }
  let signed = false;
  let anchoredByHead = false;
  if (head) {
    // SECURITY: a package that ships keys must have a signed head (as in verifyAuditLog).
    const hc = await checkHead(head, jwks, opts.requireSigned ?? jwks.keys.length > 0);
    if (!hc.ok) return bad('head.json', hc.reason, undefined, hc.detail);
    signed = hc.signed;
    const at = entries.find((e) => e.seq === head.seq);
    if (at && at.hash !== head.hash) return bad('head.json', 'head-mismatch');
    anchoredByHead = at !== undefined;
  } else if (opts.requireSigned) {
    return bad('head.json', 'head-unsigned');
  }
  return { ok: true, entries: entries.length, firstSeq: first?.seq ?? null, lastSeq: last?.seq ?? null, signed, anchoredByHead };
}
