import * as nodeFs from 'node:fs/promises';
import path from 'node:path';
import type { TsmFs } from './configfs.js';

/**
 * Fake configfs-tsm (tests only, never imported by production code): a real directory
 * tree in a temporary folder plus a tiny "kernel" behind the injected file operations.
 * Plain files cannot react to writes, so this fake does what drivers/virt/coco/tsm.c
 * does: mkdir of an entry creates its attributes (`provider`, `generation`, `inblob`,
 * `outblob`, optionally `auxblob`, `privlevel`); every write to `inblob` or `privlevel`
 * increments `generation`; reading `outblob` produces the report for the current inblob;
 * rmdir drops the entry with its attributes.
 */

export interface FakeTsmOptions {
  /** The report directory (a real, existing temporary folder). */
  readonly root: string;
  /** `provider` of every entry (default 'sev_guest'); `null`: reading it fails with ENXIO (no TEE driver). */
  readonly provider?: string | null;
  /** outblob for the inblob written (and privlevel, when written). */
  readonly report: (inblob: Uint8Array, privlevel: number | undefined) => Uint8Array;
  /** auxblob contents; `null` = the attribute does not exist (kernels before 6.8). Default empty. */
  readonly auxblob?: Uint8Array | null;
  /**
   * Called when outblob is generated, with the 1-based count of reports generated in
   * this entry; returns how many extra writes another process makes to the entry
   * "at the same time" (each bumps generation). Default: none.
   */
  readonly raceWrites?: (generated: number) => number;
  /** Makes the write to this attribute fail with EIO (firmware refusal). */
  readonly failWrite?: string;
}

function enoent(p: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`ENOENT: ${p}`), { code: 'ENOENT' });
}

export class FakeTsm {
  readonly root: string;
  readonly opts: FakeTsmOptions;
  /** Every entry ever created (full paths). */
  readonly created: string[] = [];
  /** Attribute writes, in order, as `name` (inblob, privlevel). */
  readonly writes: string[] = [];
  readonly #generated = new Map<string, number>();

  constructor(opts: FakeTsmOptions) {
    this.root = opts.root;
    this.opts = opts;
  }

  /** Entries still present under the root. */
  async entries(): Promise<string[]> {
    return (await nodeFs.readdir(this.root)).sort();
  }

  #isEntry(dir: string): boolean {
    return path.dirname(path.resolve(dir)) === path.resolve(this.root);
  }

  async #bump(entry: string, by: number): Promise<void> {
    const g = BigInt((await nodeFs.readFile(path.join(entry, 'generation'), 'utf8')).trim());
    await nodeFs.writeFile(path.join(entry, 'generation'), `${g + BigInt(by)}\n`);
  }

  readonly fs: TsmFs = {
    mkdir: async (dir) => {
      await nodeFs.mkdir(dir);
      if (!this.#isEntry(dir)) return;
      this.created.push(dir);
      const p = this.opts.provider === undefined ? 'sev_guest' : this.opts.provider;
      if (p !== null) await nodeFs.writeFile(path.join(dir, 'provider'), `${p}\n`);
      await nodeFs.writeFile(path.join(dir, 'generation'), '0\n');
      await nodeFs.writeFile(path.join(dir, 'inblob'), new Uint8Array(0));
      await nodeFs.writeFile(path.join(dir, 'outblob'), new Uint8Array(0));
      if (this.opts.auxblob !== null) await nodeFs.writeFile(path.join(dir, 'auxblob'), new Uint8Array(0));
    },
    rmdir: async (dir) => {
      if (!this.#isEntry(dir)) return nodeFs.rmdir(dir);
      await nodeFs.access(dir);
      await nodeFs.rm(dir, { recursive: true });
    },
    readFile: async (file) => {
      const entry = path.dirname(file);
      const name = path.basename(file);
      if (this.#isEntry(entry) && name === 'provider' && this.opts.provider === null) {
        throw Object.assign(new Error('ENXIO'), { code: 'ENXIO' });
      }
      if (this.#isEntry(entry) && name === 'outblob') await this.#generate(entry);
      return new Uint8Array(await nodeFs.readFile(file));
    },
    writeFile: async (file, data) => {
      const entry = path.dirname(file);
      const name = path.basename(file);
      if (!this.#isEntry(entry)) return nodeFs.writeFile(file, data);
      if (name !== 'inblob' && name !== 'privlevel') throw Object.assign(new Error('EACCES'), { code: 'EACCES' });
      try {
        await nodeFs.access(entry);
      } catch {
        throw enoent(file);
      }
      if (this.opts.failWrite === name) throw Object.assign(new Error('EIO'), { code: 'EIO' });
      this.writes.push(name);
      await nodeFs.writeFile(file, data);
      await this.#bump(entry, 1);
    },
  };

  async #generate(entry: string): Promise<void> {
    const inblob = new Uint8Array(await nodeFs.readFile(path.join(entry, 'inblob')));
    let privlevel: number | undefined;
    try {
      privlevel = Number((await nodeFs.readFile(path.join(entry, 'privlevel'), 'utf8')).trim());
    } catch {
      privlevel = undefined;
    }
    await nodeFs.writeFile(path.join(entry, 'outblob'), this.opts.report(inblob, privlevel));
    if (this.opts.auxblob) await nodeFs.writeFile(path.join(entry, 'auxblob'), this.opts.auxblob);
    const n = (this.#generated.get(entry) ?? 0) + 1;
    this.#generated.set(entry, n);
    const extra = this.opts.raceWrites?.(n) ?? 0;
    if (extra > 0) await this.#bump(entry, extra);
  }
}

/** GHCB spec (pub. 56421) certificate-table GUIDs, "SNP Extended Guest Request". */
export const CERT_TABLE_GUIDS = Object.freeze({
  vcek: '63da758d-e664-4564-adc5-f4b93be8accd',
  vlek: 'a8074bc2-a25a-483e-aae6-39c045a0b8a1',
  ask: '4ab7b379-bbac-4fe4-a02f-05aef327c782',
  ark: 'c0b406a4-a803-4952-9743-3fb6014cd0ae',
});

/**
 * Encodes a certificate table as the host hands it to the guest: entries of a 16-byte
 * GUID (RFC 4122 byte order, as go-sev-guest and virtee/sev write it), a u32 LE offset
 * and a u32 LE length, ended by an all-zero entry, followed by the certificates.
 */
export function encodeCertTableForTest(certs: readonly { readonly guid: string; readonly der: Uint8Array }[]): Uint8Array {
  const ENTRY = 24;
  const header = (certs.length + 1) * ENTRY;
  const total = header + certs.reduce((n, c) => n + c.der.length, 0);
  const out = new Uint8Array(total);
  const dv = new DataView(out.buffer);
  let off = header;
  certs.forEach((c, i) => {
    out.set(Buffer.from(c.guid.replace(/-/g, ''), 'hex'), i * ENTRY);
    dv.setUint32(i * ENTRY + 16, off, true);
    dv.setUint32(i * ENTRY + 20, c.der.length, true);
    out.set(c.der, off);
    off += c.der.length;
  });
  return out;
}
