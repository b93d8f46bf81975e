/**
 * Streams the lines of a file in bounded memory. Internal to kms-broker/audit.
 */
import { open } from 'node:fs/promises';
import { MAX_LINE_BYTES } from './entry.js';

export interface RawLine {
  /** 1-based line number. */
  readonly no: number;
  /** The line without its `\n`; empty when `tooLong`. */
  readonly bytes: Buffer;
  /** False for a final line without `\n`. */
  readonly complete: boolean;
  /** Longer than MAX_LINE_BYTES (its bytes are not kept). */
  readonly tooLong: boolean;
}

const CHUNK = 1 << 20;

/** Yields every line of `file`, in order. Lines over MAX_LINE_BYTES are reported, not buffered. */
export async function* readLines(file: string): AsyncGenerator<RawLine> {
  const fh = await open(file, 'r');
  try {
    const chunk = Buffer.alloc(CHUNK);
    let parts: Buffer[] = [];
    let partLen = 0;
    let tooLong = false;
    let no = 0;
    let position = 0;
    for (;;) {
      const { bytesRead } = await fh.read({ buffer: chunk, position });
      if (bytesRead === 0) break;
      position += bytesRead;
      let pos = 0;
      while (pos < bytesRead) {
        const nl = chunk.indexOf(0x0a, pos);
        const end = nl < 0 || nl >= bytesRead ? bytesRead : nl;
        if (!tooLong) {
          if (partLen + (end - pos) > MAX_LINE_BYTES) {
            tooLong = true;
            parts = [];
            partLen = 0;
          } else {
            parts.push(Buffer.from(chunk.subarray(pos, end)));
            partLen += end - pos;
          }
        }
        if (end === bytesRead) break;
        yield { no: ++no, bytes: tooLong ? Buffer.alloc(0) : Buffer.concat(parts, partLen), complete: true, tooLong };
        parts = [];
        partLen = 0;
        tooLong = false;
        pos = end + 1;
      }
    }
    if (partLen > 0 || tooLong) yield { no: ++no, bytes: tooLong ? Buffer.alloc(0) : Buffer.concat(parts, partLen), complete: false, tooLong };
  } finally {
    await fh.close();
  }
}
