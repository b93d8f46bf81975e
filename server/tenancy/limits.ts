/**
 * Building blocks for quotas and abuse limits: token buckets, daily counters (optionally
 * persisted so a restart is not a way around a daily quota), and a fair load shedder.
 * All take the current time as an argument: no clock, no timers, no I/O except the
 * explicit `load`/`flush` of DailyCounters.
 */
import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../../common/atomic-file.js';

/**
 * Token bucket: `rate` tokens per second up to `burst`. `take` returns 0 when a token was
 * taken, else the milliseconds until one will be available (the retry hint).
 */
export class TokenBucket {
  #tokens: number;
  #last: number;
  constructor(
    readonly rate: number,
    readonly burst: number,
    nowMs: number,
  ) {
    this.#tokens = burst;
    this.#last = nowMs;
  }

  take(nowMs: number): number {
    const elapsed = nowMs - this.#last;
    if (elapsed > 0) {
      this.#tokens = Math.min(this.burst, this.#tokens + (elapsed * this.rate) / 1000);
      this.#last = nowMs;
    }
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.#tokens) * 1000) / this.rate));
  }

  /** True when the bucket is full (can be dropped without changing behaviour). */
  full(nowMs: number): boolean {
    return this.#tokens + ((nowMs - this.#last) * this.rate) / 1000 >= this.burst;
  }
}

/**
 * Map of token buckets keyed by a string, bounded: when it holds `maxEntries`, full
 * buckets (which behave like new ones) are dropped first, then the oldest entries.
 */
export class BucketMap {
  readonly #m = new Map<string, TokenBucket>();
  constructor(
    readonly rate: number,
    readonly burst: number,
    readonly maxEntries = 10_000,
  ) {}

  take(key: string, nowMs: number): number {
    let b = this.#m.get(key);
    if (!b) {
      if (this.#m.size >= this.maxEntries) this.#evict(nowMs);
      b = new TokenBucket(this.rate, this.burst, nowMs);
      this.#m.set(key, b);
    }
    return b.take(nowMs);
  }

  #evict(nowMs: number): void {
    for (const [k, b] of this.#m) if (b.full(nowMs)) this.#m.delete(k);
    const excess = this.#m.size - Math.floor(this.maxEntries / 2);
    if (excess > 0) {
      let n = 0;
      for (const k of this.#m.keys()) {
        if (n++ >= excess) break;
        this.#m.delete(k);
      }
    }
  }

  get size(): number {
    return this.#m.size;
  }
}

/** The UTC day of `nowMs` as YYYY-MM-DD. */
export function utcDay(nowMs: number): string {
  return new Date(nowMs).toISOString().slice(0, 10);
}

/** Milliseconds from `nowMs` to the next UTC midnight (the retry hint for daily quotas). */
export function msToUtcMidnight(nowMs: number): number {
  const d = new Date(nowMs);
  return Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate() + 1) - nowMs;
}

const CountersFileSchema = z.strictObject({
  version: z.literal(1),
  day: z.string().regex(/^\d{4}-\d{2}-\d{2}$/),
  counters: z.record(z.string().max(512), z.number().int().min(0)),
});

/**
 * Counters that reset at UTC midnight. Keys are opaque strings chosen by the caller
 * (e.g. `k:<keyId>:req`). With a state file, `load` restores today's counts and `flush`
 * writes them atomically (0600); counts since the last flush are lost on a crash.
 */
export class DailyCounters {
  #day: string;
  /** [start, end) of #day in ms, so the per-request check is two comparisons. */
  #start = 0;
  #end = 0;
  #c = new Map<string, number>();
  #dirty = false;

  constructor(nowMs: number) {
    this.#day = utcDay(nowMs);
    this.#bounds(nowMs);
  }

  #bounds(nowMs: number): void {
    this.#end = nowMs + msToUtcMidnight(nowMs);
    this.#start = this.#end - 86_400_000;
  }

  #roll(nowMs: number): void {
    if (nowMs >= this.#start && nowMs < this.#end) return;
    this.#bounds(nowMs);
    const day = utcDay(nowMs);
    if (day !== this.#day) {
      this.#day = day;
      this.#c.clear();
      this.#dirty = true;
    }
  }

  get(key: string, nowMs: number): number {
    this.#roll(nowMs);
    return this.#c.get(key) ?? 0;
  }

  add(key: string, n: number, nowMs: number): void {
    this.#roll(nowMs);
    this.#c.set(key, (this.#c.get(key) ?? 0) + n);
    this.#dirty = true;
  }

  /** Restores counts from `file` if it holds today's; a missing file is an empty day. */
  async load(file: string, nowMs: number): Promise<void> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw e;
    }
    const parsed = CountersFileSchema.parse(JSON.parse(text));
    this.#roll(nowMs);
    if (parsed.day !== this.#day) return;
    for (const [k, v] of Object.entries(parsed.counters)) this.#c.set(k, Math.max(v, this.#c.get(k) ?? 0));
  }

  async flush(file: string): Promise<void> {
    if (!this.#dirty) return;
    this.#dirty = false;
    const body = { version: 1, day: this.#day, counters: Object.fromEntries(this.#c) };
    try {
      await writeFileAtomic(file, JSON.stringify(body), 0o600);
    } catch (e) {
      this.#dirty = true;
      throw e;
    }
  }
}

/**
 * Fair global load shedding over requests in flight. With `maxInflight` slots and
 * `shedAt` the depth where shedding starts: below `shedAt` everyone is admitted; from
 * `shedAt` a tenant is admitted only while it holds fewer than its fair share,
 * ceil(shedAt / tenants currently in flight, counting itself); at `maxInflight` nobody
 * is. One tenant alone therefore holds at most `shedAt` slots, and the headroom up to
 * `maxInflight` stays free for other tenants arriving during its flood; a light tenant is
 * always under its share.
 */
export class FairShedder {
  readonly #perTenant = new Map<string, number>();
  #total = 0;
  constructor(
    readonly maxInflight: number,
    readonly shedAt: number,
  ) {}

  /** True when admitted (and counted); call `release` exactly once afterwards. */
  tryAcquire(tenant: string): boolean {
    const mine = this.#perTenant.get(tenant) ?? 0;
    if (this.#total >= this.maxInflight) return false;
    if (this.#total >= this.shedAt) {
      const tenants = this.#perTenant.size + (mine === 0 ? 1 : 0);
      if (mine >= Math.ceil(this.shedAt / tenants)) return false;
    }
    this.#perTenant.set(tenant, mine + 1);
    this.#total++;
    return true;
  }

  release(tenant: string): void {
    const mine = this.#perTenant.get(tenant) ?? 0;
    if (mine <= 1) this.#perTenant.delete(tenant);
    else this.#perTenant.set(tenant, mine - 1);
    if (mine > 0) this.#total--;
  }

  get inflight(): number {
    return this.#total;
  }

  inflightOf(tenant: string): number {
    return this.#perTenant.get(tenant) ?? 0;
  }
}

/** Counting semaphore map: `tryAcquire(key, cap)`; `release(key)`. */
export class ConcurrencyMap {
  readonly #m = new Map<string, number>();
  tryAcquire(key: string, cap: number): boolean {
    const n = this.#m.get(key) ?? 0;
    if (n >= cap) return false;
    this.#m.set(key, n + 1);
    return true;
  }
  release(key: string): void {
    const n = this.#m.get(key) ?? 0;
    if (n <= 1) this.#m.delete(key);
    else this.#m.set(key, n - 1);
  }
  get(key: string): number {
    return this.#m.get(key) ?? 0;
  }
}
