/**
 * Summarises a V8 CPU profile (`node --cpu-prof`, a `.cpuprofile` JSON file) of the broker
 * under the release benchmark: where its CPU went, per component, and the costliest
 * functions, so a reader can see the top costs per release without a profiler UI.
 *
 * Attribution: each sample goes to the nearest frame on its stack (itself or an ancestor)
 * that is in cir's own code or a package (not node's internals, not native), so native
 * crypto and node's http machinery are charged to the code that called them (an ECDSA
 * verify to attestation/snp, a file read to the key store). Samples whose whole stack is
 * node internals are charged by the innermost internal module (e.g. `node:_http_server`).
 * Pure function over the parsed JSON; no I/O.
 */

export interface CpuProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number };
  readonly children?: readonly number[];
}

export interface CpuProfile {
  /** Microseconds on the monotonic clock (`process.hrtime` on Linux). */
  readonly startTime: number;
  readonly nodes: readonly CpuProfileNode[];
  readonly samples: readonly number[];
  readonly timeDeltas: readonly number[];
}

export interface ProfileSummary {
  /** Sampled time, ms (idle included). */
  readonly totalMs: number;
  readonly idleMs: number;
  /** Time by component (see `componentOf`), ms, busiest first; idle excluded. */
  readonly components: readonly { readonly name: string; readonly ms: number }[];
  /** Inclusive time of cir's own functions (dist/ code), ms, top first. */
  readonly inclusive: readonly { readonly fn: string; readonly ms: number }[];
  /** Self time by function, ms, top first (idle excluded). */
  readonly self: readonly { readonly fn: string; readonly ms: number }[];
}

const SPECIAL = new Set(['(idle)', '(program)', '(garbage collector)', '(root)']);

/** Short location of a frame: the path below `dist/` or `node_modules/`, or the node module. */
export function shortUrl(url: string): string {
  const n = url.lastIndexOf('/node_modules/');
  if (n !== -1) return url.slice(n + 14);
  const d = url.lastIndexOf('/dist/');
  if (d !== -1) return url.slice(d + 6);
  return url;
}

/** Component of a frame's location, for the per-component table. */
export function componentOf(url: string, fn: string): string {
  if (SPECIAL.has(fn)) return fn.slice(1, -1);
  const u = shortUrl(url);
  if (u.startsWith('attestation/')) return 'evidence verification (attestation/)';
  if (u.startsWith('kms-broker/keystore') || u.startsWith('kms-broker/sealed-record')) return 'key store (kms-broker/keystore)';
  if (u.startsWith('kms-broker/tokens') || u.startsWith('kms-broker/jws-es256') || u.startsWith('kms-broker/signing-keys') || u.startsWith('kms-broker/ear') || u.startsWith('jose/')) return 'tokens and signatures (tokens, jose)';
  if (u.startsWith('common/hpke') || u.startsWith('@hpke/')) return 'HPKE seal (common/hpke, @hpke)';
  if (u.startsWith('kms-broker/audit')) return 'audit log (kms-broker/audit)';
  if (u.startsWith('kms-broker/limits') || u.startsWith('@fastify/rate-limit') || u.startsWith('@fastify/under-pressure') || u.startsWith('toad-cache')) return 'limits (rate limit, under-pressure)';
  if (u.startsWith('kms-broker/metrics') || u.startsWith('prom-client')) return 'metrics';
  if (u.startsWith('kms-broker/policy') || u.startsWith('kms-broker/rules') || u.startsWith('@marcbachmann/cel-js')) return 'release policy';
  if (u.startsWith('kms-broker/') || u.startsWith('common/')) return 'broker app (kms-broker/, common/)';
  if (u.startsWith('semver') || u.startsWith('fastify-plugin')) return 'fastify';
  if (u.startsWith('pino') || u.startsWith('sonic-boom') || u.startsWith('fast-redact') || u.startsWith('@pinojs/')) return 'logging (pino)';
  if (u.startsWith('fastify/') || u.startsWith('find-my-way') || u.startsWith('avvio') || u.startsWith('light-my-request') || u.startsWith('fast-json-stringify') || u.startsWith('secure-json-parse') || u.startsWith('@fastify/')) return 'fastify';
  if (u.startsWith('zod/')) return 'zod';
  if (u.startsWith('@peculiar/') || u.startsWith('asn1') || u.startsWith('pvtsutils') || u.startsWith('pkijs') || u.startsWith('tslib')) return 'x509 / asn1';
  if (u.startsWith('node:')) return `node (${u.slice(5).replace(/^internal\//, '').split('/')[0]})`;
  if (u === '') return 'native / unattributed';
  return `other (${u.split('/')[0]})`;
}

function isOwnOrPackage(url: string): boolean {
  return url !== '' && !url.startsWith('node:');
}

/**
 * Summarises `profile`; `top` entries per list. With `window` (microseconds on the profile's
 * clock), only samples taken inside it count, e.g. to leave start-up out.
 */
export function summarizeProfile(profile: CpuProfile, top = 15, window?: { fromUs: number; toUs: number }): ProfileSummary {
  const byId = new Map<number, CpuProfileNode>();
  const parent = new Map<number, number>();
  for (const n of profile.nodes) {
    byId.set(n.id, n);
    for (const c of n.children ?? []) parent.set(c, n.id);
  }
  const key = (n: CpuProfileNode) => `${n.callFrame.functionName || '(anonymous)'} ${shortUrl(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`;
  // Per node: its attribution component, and the own-code frames on its stack (memoised).
  const attrib = new Map<number, string>();
  const ownStack = new Map<number, readonly string[]>();
  const attributionOf = (id: number): string => {
    const hit = attrib.get(id);
    if (hit !== undefined) return hit;
    const n = byId.get(id)!;
    const fn = n.callFrame.functionName;
    let comp: string;
    if (SPECIAL.has(fn)) comp = componentOf('', fn);
    else {
      let cur: number | undefined = id;
      let found: CpuProfileNode | undefined;
      while (cur !== undefined) {
        const c: CpuProfileNode = byId.get(cur)!;
        if (isOwnOrPackage(c.callFrame.url)) {
          found = c;
          break;
        }
        cur = parent.get(cur);
      }
      comp = found ? componentOf(found.callFrame.url, found.callFrame.functionName) : componentOf(n.callFrame.url, fn);
    }
    attrib.set(id, comp);
    return comp;
  };
  const ownFramesOf = (id: number): readonly string[] => {
    const hit = ownStack.get(id);
    if (hit) return hit;
    const n = byId.get(id)!;
    const up = parent.get(id);
    const above = up === undefined ? [] : ownFramesOf(up);
    const mine = shortUrl(n.callFrame.url) !== n.callFrame.url || n.callFrame.url.includes('/dist/') ? [key(n)] : [];
    const all = mine.length && !above.includes(mine[0]!) ? [...above, ...mine] : above;
    ownStack.set(id, all);
    return all;
  };

  let totalMs = 0;
  let idleMs = 0;
  const components = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const self = new Map<string, number>();
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  let at = profile.startTime;
  for (let i = 0; i < profile.samples.length; i++) {
    const id = profile.samples[i]!;
    const delta = profile.timeDeltas[i] ?? 0;
    at += delta;
    const ms = delta / 1000;
    if (!(ms > 0) || !byId.has(id)) continue;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    totalMs += ms;
    const n = byId.get(id)!;
    if (n.callFrame.functionName === '(idle)') {
      idleMs += ms;
      continue;
    }
    add(components, attributionOf(id), ms);
    add(self, key(n), ms);
    for (const f of ownFramesOf(id)) {
      if (f.includes(' kms-broker/') || f.includes(' attestation/') || f.includes(' common/') || f.includes(' cli/')) add(inclusive, f, ms);
    }
  }
  const sorted = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]);
  return {
    totalMs,
    idleMs,
    components: sorted(components).map(([name, ms]) => ({ name, ms })),
    inclusive: sorted(inclusive).slice(0, top).map(([fn, ms]) => ({ fn, ms })),
    self: sorted(self).slice(0, top).map(([fn, ms]) => ({ fn, ms })),
  };
}
