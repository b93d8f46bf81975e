/**
 * Offline verification of an audit log: every line, the chain, and the signed head.
 */
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose';
import { constantTimeEqual } from '../../common/bytes.js';
import { KmsError } from '../codes.js';
import { GENESIS_HASH, checkLine, headPayload, type AuditEntry, type AuditHead, type LineFault } from './entry.js';
import { readLines } from './lines.js';
import { AUDIT_HEAD_FILE, AUDIT_LOG_FILE, readHeadFile } from './log.js';

/** Files of the broker state directory that hold its public signing keys. */
export const JWKS_ARCHIVE_FILE = 'jwks-archive.json';
export const JWKS_FILE = 'jwks.json';
const MAX_JWKS_BYTES = 1 << 20;

/** Why verification stopped. */
export type AuditFault =
  | LineFault
  | 'torn' // a line without `\n` or unparseable that is not the last one, or one the head covers
  | 'seq' // seq is not the previous seq + 1 (a deleted, duplicated or reordered entry)
  | 'prev' // prev is not the previous entry's hash (a deleted or reordered entry)
  | 'truncated' // the log ends before the entry its head names
  | 'head-missing' // a non-empty log without audit.head.json
  | 'head-malformed'
  | 'head-signature' // the head's JWS does not verify against the JWKS
  | 'head-payload' // the signed payload is not the head's seq/hash/ts
  | 'head-mismatch' // the entry at head.seq does not have head.hash
  | 'head-unsigned'; // unsigned head while a signed one is required

export interface AuditVerifyOk {
  readonly ok: true;
  /** Valid entries (a torn tail not counted). */
  readonly entries: number;
  /** seq the head anchors (0 for an empty log without head). */
  readonly headSeq: number;
  /** Hash of the last valid entry (64 zeros when empty). */
  readonly lastHash: string;
  /** Valid entries after the head: written but never acknowledged (a crash before the head write). */
  readonly unanchored: number;
  /** A torn final line beyond the head (never acknowledged; the broker cuts it off on open). */
  readonly tornTail: boolean;
  /** True when the head carries a JWS that verified; false = only internal consistency was shown. */
  readonly signed: boolean;
  /** `kid` of the key that signed the head, when signed. */
  readonly kid?: string;
}

export interface AuditVerifyFailure {
  readonly ok: false;
  /** The first bad thing found: line 0 means the head file. */
  readonly firstBad: { readonly line: number; readonly seq?: number; readonly reason: AuditFault; readonly detail?: string };
}

export type AuditVerifyResult = AuditVerifyOk | AuditVerifyFailure;

export interface VerifyAuditOptions {
  /** The audit directory, or a broker state directory holding `audit/`. */
  readonly dir: string;
  /**
   * Public keys to verify the head: a JWKS file path or object. Default: the state
   * directory's `jwks-archive.json`, else its `jwks.json`.
   */
  readonly jwks?: string | JSONWebKeySet;
  /**
   * Fail when the head is unsigned. Default: true when a JWKS was given or found, false
   * otherwise (an unsigned head then gives `signed: false`).
   */
  readonly requireSigned?: boolean;
}

export interface AuditDirs {
  readonly auditDir: string;
  readonly stateDir: string;
}

const exists = async (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/**
 * `dir` is an audit directory when it holds `audit.jsonl` or `audit.head.json` (its state
 * directory is then its parent), else a state directory when it holds `audit/`.
 * Throws ERR_KMS_AUDIT_UNREADABLE when neither.
 */
export async function resolveAuditDirs(dir: string): Promise<AuditDirs> {
  const d = path.resolve(dir);
  if ((await exists(path.join(d, AUDIT_LOG_FILE))) || (await exists(path.join(d, AUDIT_HEAD_FILE)))) {
    return { auditDir: d, stateDir: path.dirname(d) };
  }
  const sub = path.join(d, 'audit');
  if ((await exists(path.join(sub, AUDIT_LOG_FILE))) || (await exists(path.join(sub, AUDIT_HEAD_FILE)))) {
    return { auditDir: sub, stateDir: d };
  }
  throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `no ${AUDIT_LOG_FILE} in the directory or its audit/ subdirectory` });
}

/** Reads a JWKS file (at most 1 MiB, `{keys: [...]}`); ERR_KMS_AUDIT_UNREADABLE otherwise. */
export async function readJwksFile(file: string): Promise<JSONWebKeySet> {
  let text: string;
  try {
    const st = await stat(file);
    if (!st.isFile() || st.size > MAX_JWKS_BYTES) throw new Error('not a regular file of at most 1 MiB');
    text = await readFile(file, 'utf8');
  } catch (e) {
    throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `JWKS ${path.basename(file)}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, cause: e });
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `JWKS ${path.basename(file)} is not JSON`, cause: e });
  }
  const keys = (v as { keys?: unknown })?.keys;
  if (!Array.isArray(keys) || keys.some((k) => k === null || typeof k !== 'object' || Array.isArray(k))) {
    throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `JWKS ${path.basename(file)} is not {"keys": [...]}` });
  }
  return { keys } as JSONWebKeySet;
}

/** The JWKS file a state directory offers: the archive of every key ever used, else the current set. */
export async function defaultJwksFile(stateDir: string): Promise<string | undefined> {
  for (const f of [JWKS_ARCHIVE_FILE, JWKS_FILE]) if (await exists(path.join(stateDir, f))) return path.join(stateDir, f);
  return undefined;
}

export type HeadCheck =
  | { readonly ok: true; readonly signed: boolean; readonly kid?: string }
  | { readonly ok: false; readonly reason: 'head-signature' | 'head-payload' | 'head-unsigned'; readonly detail?: string };

/**
 * Checks a head's JWS: ES256 only, by a key of `jwks` (jose `compactVerify` +
 * `createLocalJWKSet`), over exactly `headPayload(head)`. An unsigned head passes as
 * `signed: false` unless `requireSigned`. A signed head without a JWKS to check it is
 * ERR_KMS_AUDIT_UNREADABLE (never silently accepted).
 * Does NOT check the head against the log.
 */
export async function checkHead(head: AuditHead, jwks: JSONWebKeySet | undefined, requireSigned: boolean): Promise<HeadCheck> {
  if (head.jws === undefined) return requireSigned ? { ok: false, reason: 'head-unsigned' } : { ok: true, signed: false };
  if (!jwks) throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: 'the head is signed but no JWKS was found; pass one' });
  let verified;
  try {
    // SECURITY: algorithm allow-list; the key comes from the pinned JWKS, never from the JWS.
    verified = await compactVerify(head.jws, createLocalJWKSet(jwks), { algorithms: ['ES256'] });
  } catch (e) {
    return { ok: false, reason: 'head-signature', detail: (e as { code?: string }).code ?? 'invalid' };
  }
  if (!constantTimeEqual(verified.payload, headPayload(head))) return { ok: false, reason: 'head-payload' };
  const kid = verified.protectedHeader.kid;
  return kid !== undefined ? { ok: true, signed: true, kid } : { ok: true, signed: true };
}

/**
 * Verifies the audit log in `opts.dir`.
 *
 * Checks, in order: the head file parses and its JWS verifies (see `checkHead`); then
 * every line: it is complete, at most MAX_LINE_BYTES, UTF-8, canonical JSON of the strict
 * entry schema with a correct `hash` (`checkLine`), seq = previous + 1 from 1, prev =
 * previous hash from 64 zeros; the entry at head.seq has head.hash; the log reaches
 * head.seq. Entries after the head are allowed and counted (`unanchored`); a torn final
 * line beyond the head is allowed (`tornTail`). A non-empty log needs a head. With a JWKS
 * (given, or found in the state directory) the head must be signed.
 * So an edited, deleted, reordered or truncated entry is found; rewriting entries and
 * re-hashing everything after them is found through the head's signature (for an
 * unsigned head, only if the head file was left alone: `signed: false` says so).
 * Does NOT judge the content (who did what) nor that timestamps are plausible.
 * Throws only ERR_KMS_AUDIT_UNREADABLE (missing directory, unreadable file, bad JWKS).
 */
export async function verifyAuditLog(opts: VerifyAuditOptions): Promise<AuditVerifyResult> {
  const { auditDir, stateDir } = await resolveAuditDirs(opts.dir);
  let head: AuditHead | undefined;
  try {
    head = await readHeadFile(path.join(auditDir, AUDIT_HEAD_FILE));
  } catch (e) {
    if ((e as KmsError).code === 'ERR_KMS_AUDIT_CORRUPT') return { ok: false, firstBad: { line: 0, reason: 'head-malformed' } };
    throw e;
  }
  let signed = false;
  let kid: string | undefined;
  if (head) {
    let jwks: JSONWebKeySet | undefined;
    if (typeof opts.jwks === 'object') jwks = opts.jwks;
    else {
      const file = opts.jwks ?? (await defaultJwksFile(stateDir));
      if (file) jwks = await readJwksFile(file);
    }
    // SECURITY: with keys at hand an unsigned head is refused: stripping the JWS must not
    // turn a signed log into one whose rewritten history verifies.
    const hc = await checkHead(head, jwks, opts.requireSigned ?? jwks !== undefined);
    if (!hc.ok) return { ok: false, firstBad: { line: 0, reason: hc.reason, ...(hc.detail ? { detail: hc.detail } : {}) } };
    signed = hc.signed;
    kid = hc.kid;
  }
  const headSeq = head?.seq ?? 0;

  let seq = 0;
  let hash = GENESIS_HASH;
  let pendingBad: { line: number; reason: AuditFault; detail?: string } | undefined;
  let lineNo = 0;
  const logFile = path.join(auditDir, AUDIT_LOG_FILE);
  const fail = (line: number, reason: AuditFault, s?: number, detail?: string): AuditVerifyFailure => ({
    ok: false,
    firstBad: { line, ...(s !== undefined ? { seq: s } : {}), reason, ...(detail ? { detail } : {}) },
  });
  if (await exists(logFile)) {
    try {
      for await (const raw of readLines(logFile)) {
        lineNo = raw.no;
        // A bad line followed by another line is never a torn tail.
        if (pendingBad) return fail(pendingBad.line, pendingBad.reason, seq + 1, pendingBad.detail);
        const c = raw.tooLong ? ({ ok: false, reason: 'line-too-long' } as const) : checkLine(raw.bytes);
        if (!raw.complete || !c.ok) {
          pendingBad = c.ok ? { line: raw.no, reason: 'torn' } : { line: raw.no, reason: c.reason, ...(c.detail ? { detail: c.detail } : {}) };
          continue;
        }
        const e: AuditEntry = c.entry;
        if (e.seq !== seq + 1) return fail(raw.no, 'seq', e.seq, `expected seq ${seq + 1}`);
        if (e.prev !== hash) return fail(raw.no, 'prev', e.seq);
        if (e.seq === headSeq && head && e.hash !== head.hash) return fail(raw.no, 'head-mismatch', e.seq);
        seq = e.seq;
        hash = e.hash;
      }
    } catch (e) {
      throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `${AUDIT_LOG_FILE}: ${(e as NodeJS.ErrnoException).code ?? 'unreadable'}`, cause: e });
    }
  }
  // A torn final line is acceptable only beyond the head: never acknowledged.
  if (seq < headSeq) {
    if (pendingBad) return fail(pendingBad.line, pendingBad.reason, seq + 1, pendingBad.detail);
    return fail(lineNo + 1, 'truncated', seq + 1, `the head names seq ${headSeq}, the log ends at seq ${seq}`);
  }
  if (!head && seq > 0) return fail(0, 'head-missing');
  return {
    ok: true,
    entries: seq,
    headSeq,
    lastHash: hash,
    unanchored: seq - headSeq,
    tornTail: pendingBad !== undefined,
    signed,
    ...(kid !== undefined ? { kid } : {}),
  };
}
