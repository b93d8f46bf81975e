/**
 * The broker's append-only, hash-chained audit log: `<dir>/audit.jsonl` (0600) plus the
 * signed head checkpoint `<dir>/audit.head.json`, in a 0700 directory.
 *
 * Durability: `append` resolves only after the entry's line is fdatasync'ed AND a head
 * covering it has been written atomically, so every acknowledged entry is anchored by a
 * head. Appends are group-committed: events queued while a batch is being written go
 * into the next batch (one write, one fdatasync, one head per batch).
 *
 * Deferred appends (`{ defer: true }`) start no commit of their own: the entry is queued
 * and written, in order, by the next commit: the one running now (its loop takes what was
 * queued meanwhile, right after it), one that another append starts, or, when neither comes,
 * one that a `DEFER_MAX_MS` timer starts. The broker defers the entries of challenges and
 * attestation tokens (which grant nothing by themselves) so that one durable commit per key
 * release carries all three at concurrency 1; a crash may lose an entry that was not yet
 * durable, never an acknowledged one.
 *
 * One broker process owns the log. Appends are serialized within this process; two
 * processes appending to the same directory would fork the chain (there is no lock file:
 * a stale lock after SIGKILL would keep the broker down, and the broker's state
 * directory already belongs to one process).
 */
import { open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { writeFileAtomic } from '../../common/atomic-file.js';
import type { Logger } from '../../common/logger.js';
import { KmsError, isKmsError } from '../codes.js';
import { ensurePrivateDir } from '../secret-file.js';
import {
  GENESIS_HASH,
  MAX_LINE_BYTES,
  buildEntry,
  checkLine,
  entryLine,
  headPayload,
  parseAuditEvent,
  parseHead,
  type AuditEntry,
  type AuditEvent,
  type AuditHead,
} from './entry.js';

export const AUDIT_LOG_FILE = 'audit.jsonl';
export const AUDIT_HEAD_FILE = 'audit.head.json';
/** Most entries written by one group commit. */
export const MAX_BATCH = 1024;
/** Longest a deferred entry waits for another append's commit before it starts its own. */
export const DEFER_MAX_MS = 50;

/** How an append is committed. */
export interface AppendOptions {
  /**
   * Start no commit for this entry: it rides with the next commit (a running one, one
   * another append starts, or its own once `DEFER_MAX_MS` have passed without either). The
   * promise still resolves only once the entry is durable. For entries no response waits
   * on: fire-and-forget, with `close()` at shutdown writing whatever is still queued.
   */
  readonly defer?: boolean;
}

/**
 * Signs a head checkpoint. `sign` returns a compact JWS (ES256) over exactly `payload`;
 * the broker backs it with its signing key ring, whose public keys (`jwks-archive.json`)
 * verify it later.
 */
export interface AuditHeadSigner {
  sign(payload: Uint8Array): Promise<string>;
}

export interface AuditLogOptions {
  /** The audit directory (created 0700), e.g. `<stateDir>/audit`. */
  readonly dir: string;
  /** Without a signer heads are unsigned, which `verifyAuditLog` reports as weaker. */
  readonly signer?: AuditHeadSigner;
  readonly now?: () => Date;
  readonly logger?: Logger;
}

export interface AppendResult {
  readonly seq: number;
  readonly hash: string;
}

/** What `open` found and did; also appended as an `audit.recovered` entry when non-trivial. */
export interface AuditRecovery {
  /** Bytes of a torn, never-acknowledged final line that were cut off. */
  readonly discardedBytes: number;
  /** Complete entries after the head (written, never acknowledged) that the new head now anchors. */
  readonly unanchoredEntries: number;
  readonly previousHeadSeq: number;
}

interface Pending {
  readonly event: AuditEvent;
  readonly resolve: (r: AppendResult) => void;
  readonly reject: (e: unknown) => void;
}

const ioCode = (e: unknown): string => (e as NodeJS.ErrnoException)?.code ?? (isKmsError(e) ? e.code : 'error');

/** Reads `audit.head.json`: undefined when absent; throws ERR_KMS_AUDIT_CORRUPT when malformed. */
export async function readHeadFile(file: string): Promise<AuditHead | undefined> {
  let fh: FileHandle | undefined;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `${AUDIT_HEAD_FILE}: ${ioCode(e)}`, cause: e });
  }
  try {
    const buf = Buffer.alloc(32 * 1024);
    const { bytesRead } = await fh.read({ buffer: buf, position: 0 });
    const head = parseHead(buf.subarray(0, bytesRead));
    if (!head) throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: `${AUDIT_HEAD_FILE} is malformed` });
    return head;
  } catch (e) {
    if (isKmsError(e)) throw e;
    throw new KmsError('ERR_KMS_AUDIT_UNREADABLE', { detail: `${AUDIT_HEAD_FILE}: ${ioCode(e)}`, cause: e });
  } finally {
    await fh.close().catch(() => undefined);
  }
}

export class AuditLog {
  readonly dir: string;
  readonly #fh: FileHandle;
  readonly #signer: AuditHeadSigner | undefined;
  readonly #now: () => Date;
  readonly #logger: Logger | undefined;
  #length: number;
  #seq: number;
  #hash: string;
  #lastTs: string;
  #queue: Pending[] = [];
  #writing = false;
  #closed = false;
  /** Set when a failed batch could not be rolled back: the file may hold rejected lines. */
  #broken = false;
  /** Whether a head written by this process has been made durable with a directory fsync. */
  #headDurable = false;
  #drained: (() => void)[] = [];
  /** Starts a commit for deferred entries that no other append has carried yet. */
  #deferTimer: NodeJS.Timeout | undefined;
  /** What `open` recovered (undefined when the log was clean). */
  readonly recovery: AuditRecovery | undefined;

  private constructor(
    dir: string,
    fh: FileHandle,
    state: { length: number; seq: number; hash: string; lastTs: string },
    opts: AuditLogOptions,
    recovery: AuditRecovery | undefined,
  ) {
    this.dir = dir;
    this.#fh = fh;
    this.#length = state.length;
    this.#seq = state.seq;
    this.#hash = state.hash;
    this.#lastTs = state.lastTs;
    this.#signer = opts.signer;
    this.#now = opts.now ?? (() => new Date());
    this.#logger = opts.logger;
    this.recovery = recovery;
  }

  /**
   * Opens (creating if needed) the log in `opts.dir` and recovers its state from the tail
   * of the file and the head checkpoint.
   *
   * Checks: the last complete line is a valid entry whose chain links to the lines before
   * it in the tail window; the head is not beyond the log (a log shorter than its head was
   * truncated) and, when the head's entry is in the tail window, has that entry's hash.
   * A torn final line (no trailing `\n`, or not a valid entry) is cut off: its seq is
   * always beyond the head once the checks above pass, so it was never acknowledged.
   * Anything else is ERR_KMS_AUDIT_CORRUPT (tampering or corruption: the broker must not
   * start on it). When something was cut off or complete entries lay beyond the head, an
   * `audit.recovered` entry is appended (which writes a new head).
   * Does NOT verify the whole chain or the head signature (that is `verifyAuditLog`, which
   * reads every line); opening stays O(tail).
   */
  static async open(opts: AuditLogOptions): Promise<AuditLog> {
    const dir = path.resolve(opts.dir);
    const file = path.join(dir, AUDIT_LOG_FILE);
    let fh: FileHandle;
    try {
      await ensurePrivateDir(dir);
      await removeStaleHeadTemps(dir);
      // SECURITY: 0600; O_APPEND so every write lands at the end.
      fh = await open(file, 'a+', 0o600);
      await fh.chmod(0o600);
    } catch (e) {
      throw new KmsError('ERR_KMS_AUDIT_WRITE_FAILED', { detail: `cannot open ${AUDIT_LOG_FILE}: ${ioCode(e)}`, cause: e });
    }
    try {
      const head = await readHeadFile(path.join(dir, AUDIT_HEAD_FILE));
      const tail = await readTail(fh);
      const headSeq = head?.seq ?? 0;
      if (headSeq > tail.seq) {
        throw new KmsError('ERR_KMS_AUDIT_CORRUPT', {
          detail: `the head names seq ${headSeq} but the log ends at seq ${tail.seq} (truncated, or an acknowledged line is torn)`,
        });
      }
      const atHead = tail.hashes.get(headSeq);
      if (head && atHead !== undefined && atHead !== head.hash) {
        throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: `entry ${headSeq} does not have the hash its head names` });
      }
      let discarded = 0;
      if (tail.goodLength < tail.size) {
        // SECURITY: only a line beyond the head (seq > headSeq, checked above) is cut off.
        discarded = tail.size - tail.goodLength;
        await fh.truncate(tail.goodLength);
        await fh.datasync();
      }
      const unanchored = tail.seq - headSeq;
      const recovery = discarded > 0 || unanchored > 0 ? { discardedBytes: discarded, unanchoredEntries: unanchored, previousHeadSeq: headSeq } : undefined;
      const log = new AuditLog(
        dir,
        fh,
        { length: tail.goodLength, seq: tail.seq, hash: tail.hash, lastTs: tail.lastTs },
        opts,
        recovery,
      );
      if (recovery) {
        opts.logger?.warn({ audit: recovery }, 'audit log recovered after an unclean stop');
        await log.append({
          actor: { type: 'system' },
          action: 'audit.recovered',
          decision: 'info',
          detail: { ...recovery },
        });
      }
      return log;
    } catch (e) {
      await fh.close().catch(() => undefined);
      if (isKmsError(e)) throw e;
      throw new KmsError('ERR_KMS_AUDIT_WRITE_FAILED', { detail: `recovery failed: ${ioCode(e)}`, cause: e });
    }
  }

  /** seq and hash of the last durable entry (0 and 64 zeros when empty). */
  get last(): AppendResult {
    return { seq: this.#seq, hash: this.#hash };
  }

  /**
   * Validates `event` (strict schema, ERR_KMS_AUDIT_EVENT_INVALID synchronously as a
   * rejected promise) and queues it. Resolves with its seq and hash once its line is
   * fdatasync'ed and a head covering it is written; rejects with
   * ERR_KMS_AUDIT_WRITE_FAILED when its batch failed (the log is then truncated back to
   * its last good length, so a rejected event is not in it) and ERR_KMS_AUDIT_CLOSED after
   * `close` or after a failed rollback.
   */
  append(event: AuditEvent, opts: AppendOptions = {}): Promise<AppendResult> {
    if (this.#closed) return Promise.reject(new KmsError('ERR_KMS_AUDIT_CLOSED'));
    if (this.#broken) return Promise.reject(new KmsError('ERR_KMS_AUDIT_CLOSED', { detail: 'a failed write could not be rolled back; reopen the log' }));
    let parsed: AuditEvent;
    try {
      parsed = parseAuditEvent(event);
    } catch (e) {
      return Promise.reject(e);
    }
    return new Promise<AppendResult>((resolve, reject) => {
      this.#queue.push({ event: parsed, resolve, reject });
      if (opts.defer) this.#armDeferTimer();
      else this.#startFlush();
    });
  }

  #startFlush(): void {
    if (this.#deferTimer) {
      clearTimeout(this.#deferTimer);
      this.#deferTimer = undefined;
    }
    if (this.#writing) return; // the running loop takes everything queued, deferred entries included
    this.#writing = true;
    // Yield once so appends issued in the same tick share the first batch.
    setImmediate(() => void this.#flushLoop());
  }

  #armDeferTimer(): void {
    if (this.#writing || this.#deferTimer) return; // a running loop or a pending timer will carry it
    this.#deferTimer = setTimeout(() => {
      this.#deferTimer = undefined;
      if (this.#queue.length > 0) this.#startFlush();
    }, DEFER_MAX_MS);
    // Not unref'd: a process that ends without close() still writes its deferred entries.
  }

  /** Waits for queued appends, then closes the file. Later appends reject. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#queue.length > 0) this.#startFlush(); // deferred entries still waiting
    if (this.#writing) await new Promise<void>((r) => this.#drained.push(r));
    await this.#fh.close().catch(() => undefined);
  }

  async #flushLoop(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        if (this.#broken) {
          for (const p of batch) p.reject(new KmsError('ERR_KMS_AUDIT_CLOSED', { detail: 'a failed write could not be rolled back; reopen the log' }));
          continue;
        }
        await this.#commit(batch);
      }
    } finally {
      this.#writing = false;
      for (const r of this.#drained.splice(0)) r();
    }
  }

  async #commit(batch: Pending[]): Promise<void> {
    let entries: AuditEntry[];
    let buf: Buffer;
    let last: AuditEntry;
    let ts: string;
    try {
      // ts never goes backwards, so time windows over the log are contiguous ranges of seq.
      const nowIso = this.#now().toISOString();
      ts = nowIso > this.#lastTs ? nowIso : this.#lastTs;
      let seq = this.#seq;
      let prev = this.#hash;
      entries = [];
      for (const p of batch) {
        const e = buildEntry(p.event, ++seq, ts, prev);
        entries.push(e);
        prev = e.hash;
      }
      const lines = entries.map(entryLine);
      buf = Buffer.concat(lines);
      last = entries[entries.length - 1]!;
      if (lines.some((l) => l.length - 1 > MAX_LINE_BYTES)) throw new Error('line too long');
      let off = 0;
      while (off < buf.length) off += (await this.#fh.write(buf, off, buf.length - off)).bytesWritten;
      // The head is signed while the entries are being synced (the signature does not depend
      // on the sync), then written only once they are durable.
      const synced = this.#fh.datasync();
      const head = await this.#signHead(last.seq, last.hash, ts).catch(async (e: unknown) => {
        await synced.catch(() => undefined);
        throw e;
      });
      await synced;
      await this.#writeHead(head);
    } catch (e) {
      await this.#rollback();
      const code = ioCode(e);
      this.#logger?.error({ code, entries: batch.length }, 'audit batch failed; rolled back');
      for (const p of batch) p.reject(new KmsError('ERR_KMS_AUDIT_WRITE_FAILED', { detail: code, cause: e }));
      return;
    }
    this.#length += buf.length;
    this.#seq = last.seq;
    this.#hash = last.hash;
    this.#lastTs = ts;
    for (const [i, p] of batch.entries()) p.resolve({ seq: entries[i]!.seq, hash: entries[i]!.hash });
  }

  async #signHead(seq: number, hash: string, ts: string): Promise<AuditHead> {
    const head: AuditHead = { v: 1, seq, hash, ts };
    if (this.#signer) head.jws = await this.#signer.sign(headPayload(head));
    return head;
  }

  async #writeHead(head: AuditHead): Promise<void> {
    // Temp file, fdatasync, rename. The directory is fsynced only on the first head, not on
    // every commit: if power fails before a later rename reaches the disk, the previous head
    // comes back, which covers fewer entries (the rest are unanchored and adopted on open),
    // never more; the head's own bytes are durable before it is renamed into place.
    await writeFileAtomic(path.join(this.dir, AUDIT_HEAD_FILE), `${JSON.stringify(head)}\n`, 0o600, { syncDir: !this.#headDurable });
    this.#headDurable = true;
  }

  /** Cuts the file back to the last acknowledged length; on failure the log refuses further appends. */
  async #rollback(): Promise<void> {
    try {
      await this.#fh.truncate(this.#length);
      await this.#fh.datasync();
    } catch (e) {
      this.#broken = true;
      this.#logger?.error({ code: ioCode(e) }, 'audit rollback failed; the log refuses appends until reopened');
    }
  }
}

/** A head temp file `writeFileAtomic` left behind when the process died mid-write. */
const HEAD_TEMP_RE = /^\.audit\.head\.json\.[0-9a-f]{12}\.tmp$/;

/** Removes stale head temp files (safe: one process owns the log, and it is opening it). */
async function removeStaleHeadTemps(dir: string): Promise<void> {
  for (const name of await readdir(dir)) if (HEAD_TEMP_RE.test(name)) await unlink(path.join(dir, name)).catch(() => undefined);
}

interface Tail {
  readonly size: number;
  /** Offset just after the last valid complete line (where a torn line starts). */
  readonly goodLength: number;
  readonly seq: number;
  readonly hash: string;
  readonly lastTs: string;
  /** seq -> hash for the valid lines in the tail window. */
  readonly hashes: ReadonlyMap<number, string>;
}

/**
 * Reads the last lines of the log (a window of two maximal lines): the last valid
 * complete entry, its chain to the lines before it in the window, and a torn final line.
 */
async function readTail(fh: FileHandle): Promise<Tail> {
  const size = (await fh.stat()).size;
  if (size === 0) return { size, goodLength: 0, seq: 0, hash: GENESIS_HASH, lastTs: '', hashes: new Map() };
  const windowBytes = Math.min(size, 2 * (MAX_LINE_BYTES + 1) + 1);
  const start = size - windowBytes;
  const buf = Buffer.alloc(windowBytes);
  let got = 0;
  while (got < windowBytes) {
    const { bytesRead } = await fh.read({ buffer: buf, offset: got, length: windowBytes - got, position: start + got });
    if (bytesRead === 0) break;
    got += bytesRead;
  }
  // Lines fully inside the window: skip a leading fragment when the window starts mid-file.
  let pos = 0;
  if (start > 0) {
    const nl = buf.indexOf(0x0a);
    if (nl < 0) throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: 'no line break in the tail of the log' });
    pos = nl + 1;
  }
  const lines: { off: number; end: number; complete: boolean }[] = [];
  while (pos < got) {
    const nl = buf.indexOf(0x0a, pos);
    if (nl < 0) {
      lines.push({ off: pos, end: got, complete: false });
      break;
    }
    lines.push({ off: pos, end: nl, complete: true });
    pos = nl + 1;
  }
  const checked = lines.map((l) => ({ ...l, check: l.complete ? checkLine(buf.subarray(l.off, l.end)) : undefined }));
  // The final line is torn when it has no `\n` or is not a valid entry.
  let goodCount = checked.length;
  const final = checked[checked.length - 1];
  if (final && (!final.complete || !final.check?.ok)) goodCount--;
  const good = checked.slice(0, goodCount);
  const hashes = new Map<number, string>();
  let prevEntry: AuditEntry | undefined;
  for (const l of good) {
    if (!l.check?.ok) throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: `an entry before the last line is invalid (${l.check?.reason ?? 'torn'})` });
    const e = l.check.entry;
    if (prevEntry && (e.seq !== prevEntry.seq + 1 || e.prev !== prevEntry.hash)) {
      throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: `the chain breaks at seq ${e.seq}` });
    }
    if (!prevEntry && start === 0 && (e.seq !== 1 || e.prev !== GENESIS_HASH)) {
      throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: 'the first entry is not seq 1 with the genesis prev' });
    }
    hashes.set(e.seq, e.hash);
    prevEntry = e;
  }
  if (!prevEntry) {
    if (start > 0) throw new KmsError('ERR_KMS_AUDIT_CORRUPT', { detail: 'no valid entry in the tail of the log' });
    return { size, goodLength: 0, seq: 0, hash: GENESIS_HASH, lastTs: '', hashes };
  }
  const lastLine = good[good.length - 1]!;
  return { size, goodLength: start + lastLine.end + 1, seq: prevEntry.seq, hash: prevEntry.hash, lastTs: prevEntry.ts, hashes };
}
