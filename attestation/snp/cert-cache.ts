import { sha256, toHex } from '../../common/bytes.js';
import { parseCertificate, type ParsedCert } from './certs.js';

/**
 * Bounded caches for the verifier's warm path (internal). SECURITY: a cached result is
 * reused only for byte-identical input: entries are keyed by SHA-256 and the stored bytes
 * are compared in full on every hit. Only successes are cached; every check that depends
 * on the call (validity at `now`, pins, CA flags, report binding) still runs each time.
 */

/** LRU over a Map (insertion order): a hit moves the entry to the end. */
class Lru<V> {
  readonly #max: number;
  readonly #m = new Map<string, V>();
  constructor(max: number) {
    this.#max = max;
  }
  get(k: string): V | undefined {
    const v = this.#m.get(k);
    if (v !== undefined) {
      this.#m.delete(k);
      this.#m.set(k, v);
    }
    return v;
  }
  set(k: string, v: V): void {
    this.#m.delete(k);
    if (this.#m.size >= this.#max) this.#m.delete(this.#m.keys().next().value!);
    this.#m.set(k, v);
  }
}

const same = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && Buffer.compare(a, b) === 0;

export const PARSED_CERT_CACHE_MAX = 256;
const parsed = new Lru<ParsedCert>(PARSED_CERT_CACHE_MAX);

/**
 * parseCertificate with a bounded cache keyed by (label, DER). The returned object is
 * shared between calls: callers must treat it as read-only (verify.ts never hands it out).
 */
export function parseCertificateCached(der: Uint8Array, label: string): ParsedCert {
  const key = `${label}\0${toHex(sha256(der))}`;
  const hit = parsed.get(key);
  if (hit && same(hit.der, der)) return hit;
  const p = parseCertificate(der, label);
  parsed.set(key, p);
  return p;
}

export const VERIFIED_LINK_CACHE_MAX = 1024;
interface Link {
  readonly spki: Uint8Array;
  readonly tbs: Uint8Array;
  readonly signature: Uint8Array;
}
const links = new Lru<Link>(VERIFIED_LINK_CACHE_MAX);

/**
 * Memoises a successful signature check of `tbs`/`signature` under the issuer key whose
 * SubjectPublicKeyInfo is `spki`. The algorithm and its parameters are fixed by the caller
 * (one call site per algorithm), so the result depends on these three byte strings only.
 */
export function cachedSignatureCheck(spki: Uint8Array, tbs: Uint8Array, signature: Uint8Array, verify: () => boolean): boolean {
  const key = toHex(sha256(spki, tbs, signature));
  const hit = links.get(key);
  if (hit && same(hit.spki, spki) && same(hit.tbs, tbs) && same(hit.signature, signature)) return true;
  const ok = verify();
  if (ok) links.set(key, { spki: new Uint8Array(spki), tbs: new Uint8Array(tbs), signature: new Uint8Array(signature) });
  return ok;
}
