/**
 * Exact-bytes extraction from JSON text (internal). Intel signs the `tcbInfo` /
 * `enclaveIdentity` object as transmitted, so the verifier must check the signature over
 * the original text of that value, never over a re-serialisation. These helpers find the
 * value span of a top-level key with a small string- and bracket-aware scanner.
 *
 * Every function returns undefined on malformed input and never throws.
 */

const WS = new Set([' ', '\t', '\n', '\r']);

function skipWs(t: string, i: number): number {
  while (i < t.length && WS.has(t[i]!)) i++;
  return i;
}

/** Index one past the closing quote of the string starting at `i` (t[i] === '"'). */
function stringEnd(t: string, i: number): number | undefined {
  for (let j = i + 1; j < t.length; j++) {
    const ch = t[j]!;
    if (ch === '\\') j++;
    else if (ch === '"') return j + 1;
    else if (ch < ' ') return undefined; // raw control characters are not JSON
  }
  return undefined;
}

/** Index one past the end of the JSON value starting at `i`. */
function valueEnd(t: string, i: number): number | undefined {
  const c = t[i];
  if (c === undefined) return undefined;
  if (c === '"') return stringEnd(t, i);
  if (c === '{' || c === '[') {
    const stack: string[] = [];
    for (let j = i; j < t.length; j++) {
      const ch = t[j]!;
      if (ch === '"') {
        const e = stringEnd(t, j);
        if (e === undefined) return undefined;
        j = e - 1;
      } else if (ch === '{' || ch === '[') {
        stack.push(ch === '{' ? '}' : ']');
        if (stack.length > 64) return undefined;
      } else if (ch === '}' || ch === ']') {
        if (stack.pop() !== ch) return undefined;
        if (stack.length === 0) return j + 1;
      }
    }
    return undefined;
  }
  let j = i;
  while (j < t.length && !WS.has(t[j]!) && t[j] !== ',' && t[j] !== '}' && t[j] !== ']') j++;
  return j > i ? j : undefined;
}

/**
 * The exact text of the values of a top-level JSON object, by key. Undefined when `text`
 * is not a JSON object (checked with JSON.parse first), or when a key repeats: a
 * duplicate would let the signed text and the parsed value disagree.
 */
export function topLevelValues(text: string): Map<string, string> | undefined {
  try {
    const v: unknown = JSON.parse(text);
    if (typeof v !== 'object' || v === null || Array.isArray(v)) return undefined;
  } catch {
    return undefined;
  }
  const out = new Map<string, string>();
  let i = skipWs(text, 0);
  if (text[i] !== '{') return undefined;
  i = skipWs(text, i + 1);
  if (text[i] === '}') return out;
  for (;;) {
    if (text[i] !== '"') return undefined;
    const ke = stringEnd(text, i);
    if (ke === undefined) return undefined;
    let key: unknown;
    try {
      key = JSON.parse(text.slice(i, ke));
    } catch {
      return undefined;
    }
    if (typeof key !== 'string' || out.has(key)) return undefined;
    i = skipWs(text, ke);
    if (text[i] !== ':') return undefined;
    i = skipWs(text, i + 1);
    const ve = valueEnd(text, i);
    if (ve === undefined) return undefined;
    out.set(key, text.slice(i, ve));
    i = skipWs(text, ve);
    if (text[i] === '}') return skipWs(text, i + 1) === text.length ? out : undefined;
    if (text[i] !== ',') return undefined;
    i = skipWs(text, i + 1);
  }
}

const UTF8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

/** Strict UTF-8 decode (undefined on invalid bytes), so re-encoding gives the same bytes. */
export function utf8(b: Uint8Array): string | undefined {
  try {
    return UTF8.decode(b);
  } catch {
    return undefined;
  }
}
