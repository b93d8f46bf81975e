import { createHmac, hkdfSync } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import type { z } from 'zod';
import { constantTimeEqual, fromBase64Url } from '../common/bytes.js';
import { canonicalJson } from './policy.js';

/**
 * Integrity-protected JSON records of the broker state directory (key records, tenant
 * settings, admin identities, revocations): a record is plain JSON plus
 * `mac = base64url(HMAC-SHA256(macKey, canonicalJson(record without mac)))`, where each
 * kind of record has its own HKDF subkey of the master key.
 *
 * What it gives: without the master key, someone who can write the state directory cannot
 * edit a record or forge a new one. What it does NOT give: rollback protection. A copy of
 * an older, validly MAC'd record restored over the current file verifies fine, and so does
 * deleting a file. That needs a monotonic counter outside the state directory (HSM or TPM
 * NV counter); see kms-broker/README.md.
 */

/** An HKDF-SHA256 subkey of the 32-byte master key for one purpose (`info`). */
export function deriveSubkey(master: Uint8Array, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', master, Buffer.alloc(0), info, 32));
}

export type MacFailure = (why: string, cause?: unknown) => Error;

export class RecordMac {
  readonly #key: Buffer;

  /** `key`: a 32-byte subkey; copied. */
  constructor(key: Uint8Array) {
    this.#key = Buffer.from(key);
  }

  #mac(record: object): Buffer {
    return createHmac('sha256', this.#key).update(canonicalJson(record), 'utf8').digest();
  }

  /** The record with its `mac` member added. */
  seal<T extends object>(record: T): T & { mac: string } {
    return { ...record, mac: this.#mac(record).toString('base64url') };
  }

  /**
   * Parses and checks raw file bytes: JSON, the schema, then the MAC (constant time) before
   * anything in the record is trusted. Every failure goes through `fail` with a reason that
   * names no value.
   */
  open<S extends z.ZodType<{ mac: string }>>(raw: Buffer, schema: S, fail: MacFailure): z.output<S> {
    let json: unknown;
    try {
      json = JSON.parse(raw.toString('utf8'));
    } catch (cause) {
      throw fail('not valid JSON (truncated or overwritten?)', cause);
    }
    const parsed = schema.safeParse(json);
    if (!parsed.success) {
      throw fail(`unexpected structure at ${parsed.error.issues[0]?.path.join('.') || '(root)'}`);
    }
    const { mac, ...rest } = parsed.data as { mac: string };
    const given = fromBase64Url(mac);
    let expected: Buffer;
    try {
      expected = this.#mac(rest);
    } catch (cause) {
      throw fail('record is not plain JSON data', cause);
    }
    // SECURITY: constant-time MAC check before anything in the record is trusted.
    if (!given || !constantTimeEqual(given, expected)) {
      throw fail('integrity check failed (tampered, or a different master key)');
    }
    return parsed.data;
  }
}

/**
 * Reads a file together with the identity of what was read (device, inode, size, mtime),
 * so a caller can cache the parsed result and skip re-parsing while the file is unchanged.
 * Every writer here replaces files by rename, so a change always yields a new inode.
 * Returns undefined when the file does not exist.
 */
export async function readWithStamp(file: string): Promise<{ data: Buffer; stamp: string } | undefined> {
  let fh;
  try {
    fh = await open(file, 'r');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const st = await fh.stat();
    return { data: await fh.readFile(), stamp: `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}` };
  } finally {
    await fh.close();
  }
}

/** The stamp of a file (see `readWithStamp`) without reading it; undefined when absent. */
export async function fileStamp(file: string): Promise<string | undefined> {
  try {
    const st = await stat(file);
    return `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
}
