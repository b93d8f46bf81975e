import type { SnpClaims } from '../../attestation/types.js';
import type { TdxClaims } from '../../attestation/tdx/index.js';

/**
 * The claims a release rule sees: the verifier's claim object of one TEE (`SnpClaims`,
 * `TdxClaims`), plus aliases that mean the same thing on every TEE, so one rule can speak
 * for several TEEs:
 *
 * | alias         | SEV-SNP            | TDX                  |
 * |---------------|--------------------|----------------------|
 * | `tee`         | `"sev-snp"`        | `"tdx"`              |
 * | `simulated`   | `simulated`        | `simulated` (false)  |
 * | `measurement` | MEASUREMENT        | MRTD (`mrtd`)        |
 * | `debug`       | `policy.debug`     | `tdAttributes.debug` |
 *
 * GPU claims will join under `gpu.<n>.*` as another member of the view: an addition that
 * changes no existing path.
 *
 * Paths are dotted: `reportedTcb.snp`, `policy.debug`, `rtmr.0` (list index). Lookup walks
 * own properties only, never a prototype, so `__proto__`, `constructor` or `toString` find
 * nothing; such segments are also refused when a policy is parsed.
 */

/** Claims of any TEE the broker decides on (structurally; kms-broker/policy.ts names the union). */
export type AnyClaims = SnpClaims | TdxClaims;

/** A frozen, prototype-less view of the claims with the common aliases. */
export type ClaimView = Readonly<Record<string, unknown>>;

/** Longest claim path accepted, characters. */
export const MAX_CLAIM_PATH_LENGTH = 128;
/** Most segments in one claim path. */
export const MAX_CLAIM_PATH_SEGMENTS = 8;

const SEGMENT_RE = /^(?:[A-Za-z_][A-Za-z0-9_]{0,63}|\d{1,3})$/;

/** Segments that name JavaScript object machinery rather than a claim. */
// SECURITY: refused at parse time as well as never found at lookup (own properties only).
const FORBIDDEN_SEGMENTS: ReadonlySet<string> = new Set(['__proto__', 'constructor', 'prototype']);

/** Why `path` is not a valid claim path, or undefined when it is. Never echoes the path. */
export function claimPathIssue(path: string): string | undefined {
  if (path.length === 0 || path.length > MAX_CLAIM_PATH_LENGTH) return `must be 1..${MAX_CLAIM_PATH_LENGTH} characters`;
  const segments = path.split('.');
  if (segments.length > MAX_CLAIM_PATH_SEGMENTS) return `at most ${MAX_CLAIM_PATH_SEGMENTS} segments`;
  if (!segments.every((s) => SEGMENT_RE.test(s))) return 'must be dotted names or list indexes, e.g. reportedTcb.snp or rtmr.0';
  if (/^\d/.test(segments[0]!)) return 'must start with a name';
  if (segments.some((s) => FORBIDDEN_SEGMENTS.has(s))) return 'must not name __proto__, constructor or prototype';
  return undefined;
}

/**
 * The view rules decide on: a shallow, prototype-less copy of the claims' own enumerable
 * members plus the aliases of the table above (computed from that TEE's own fields, so a
 * claim object cannot bring its own `debug`). Does not copy nested objects (they are frozen
 * claim values, read through `lookupClaim`).
 */
export function claimView(claims: AnyClaims): ClaimView {
  const view: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
  for (const [k, v] of Object.entries(claims)) view[k] = v;
  if (claims.tee === 'tdx') {
    view['measurement'] = claims.mrtd;
    view['debug'] = claims.tdAttributes.debug;
  } else if (claims.tee === 'sev-snp') {
    view['measurement'] = claims.measurement;
    view['debug'] = claims.policy.debug;
  }
  return Object.freeze(view);
}

export type Lookup = { readonly found: true; readonly value: unknown } | { readonly found: false };

/**
 * Reads `path` from `view`: object members by own property only; list elements only by a
 * decimal index (so `rtmr.length` finds nothing). Does not validate the path (the parser
 * did); an invalid one simply finds nothing.
 */
export function lookupClaim(view: unknown, path: string): Lookup {
  let cur: unknown = view;
  for (const seg of path.split('.')) {
    if (typeof cur !== 'object' || cur === null) return { found: false };
    if (Array.isArray(cur)) {
      if (!/^\d{1,3}$/.test(seg)) return { found: false };
      const i = Number(seg);
      if (i >= cur.length) return { found: false };
      cur = cur[i];
      continue;
    }
    // SECURITY: own properties only; a prototype's members are not claims.
    if (FORBIDDEN_SEGMENTS.has(seg) || !Object.hasOwn(cur, seg)) return { found: false };
    cur = (cur as Record<string, unknown>)[seg];
  }
  return cur === undefined ? { found: false } : { found: true, value: cur };
}

/** A deep, prototype-less copy of JSON-like claim data, for the CEL evaluator. */
export function plainCopy(v: unknown, depth = 0): unknown {
  if (depth > 16) return null;
  if (Array.isArray(v)) return v.map((x) => plainCopy(x, depth + 1));
  if (typeof v === 'object' && v !== null) {
    const out: Record<string, unknown> = Object.create(null) as Record<string, unknown>;
    for (const [k, x] of Object.entries(v)) if (x !== undefined) out[k] = plainCopy(x, depth + 1);
    return out;
  }
  return v;
}
