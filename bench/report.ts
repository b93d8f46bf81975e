/**
 * The benchmark report: a versioned JSON document (`schema: "cir.bench.report/v1"`,
 * documented field by field in bench/README.md), a Markdown summary and the chart panels.
 *
 * Versioning: a field may be added within v1; renaming, removing or changing the meaning
 * or unit of a field makes it v2. Every time is in milliseconds (`...Ms`), every rate in
 * requests per second, every size in bytes unless the name says otherwise.
 */
import { tuningLine, type MachineTuning } from './machine.js';
import type { BootFigure } from './server-process.js';
import type { OverheadRatios } from './stats.js';
import type { ChartPanel } from './svg.js';
import type { Mode } from './targets.js';

export const REPORT_SCHEMA = 'cir.bench.report/v1';

export type LoopKind = 'closed' | 'open';

export interface RepFigures {
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
  readonly count: number;
  readonly throughput: number;
  readonly errors: number;
  readonly errorsByStatus: Readonly<Record<string, number>>;
  readonly serverCpuMs: number | null;
  readonly clientCpuMs: number;
  readonly sendLagP99Ms: number | null;
  /**
   * Server-side p50 / p99 of the window's calls: from the call's arrival in the server's
   * grpc-js to its response handed to HTTP/2 (bench/server-timing.ts). Null for inproc;
   * absent in older reports.
   */
  readonly serverP50Ms?: number | null;
  readonly serverP99Ms?: number | null;
  /** HdrHistogram, compressed base64 (HistogramLogWriter format), values in microseconds. */
  readonly histogram: string;
}

export interface ResultEntry {
  readonly mode: Mode;
  readonly model: string;
  readonly loop: LoopKind;
  /** Closed loop: outstanding requests. Null for open loop. */
  readonly concurrency: number | null;
  /** Open loop: offered Poisson rate (req/s). Null for closed loop. */
  readonly rate: number | null;
  readonly reps: number;
  /** Medians across repetitions of each repetition's figure. */
  readonly p50Ms: number;
  readonly p90Ms: number;
  readonly p99Ms: number;
  readonly p999Ms: number;
  readonly maxMs: number;
  readonly meanMs: number;
  /** Successful requests per second (median across repetitions). */
  readonly throughput: number;
  /** Failed requests, summed over repetitions. */
  readonly errors: number;
  readonly errorsByStatus: Readonly<Record<string, number>>;
  /** Successful requests recorded, summed over repetitions. */
  readonly count: number;
  /** Server process CPU time (user+system) per successful request; null for inproc. */
  readonly serverCpuMsPerRequest: number | null;
  /** Server CPU time / wall time of the window (1.0 = one core busy); null for inproc. */
  readonly serverCpuCores: number | null;
  /** Peak RSS of the server process so far (MiB); null for inproc. */
  readonly serverMaxRssMiB: number | null;
  /** Bench (load generator) process CPU per successful request; includes onnxruntime for inproc. */
  readonly clientCpuMsPerRequest: number;
  /** Open loop: p99 of (actual send - intended send); large values mean the load generator lagged. */
  readonly sendLagP99Ms: number | null;
  /**
   * Server-side latency (median across repetitions of each window's p50 / p99): from the
   * call's arrival in the server's grpc-js to its response handed to HTTP/2, so without the
   * transport, the client or the trailers. At concurrency 1, `p50Ms - serverP50Ms`
   * approximates what the round trip (both processes' HTTP/2 and gRPC work, loopback,
   * wake-ups) adds. Null for inproc and when a repetition recorded no call; absent in reports
   * written before it existed.
   */
  readonly serverP50Ms?: number | null;
  readonly serverP99Ms?: number | null;
  /** Against inproc at the same model, loop and level; null for inproc or when not measured. */
  readonly overhead: OverheadRatios | null;
  readonly perRep: readonly RepFigures[];
}

export interface ServerInfo {
  readonly mode: Mode;
  readonly tls: boolean;
  readonly sealedModels: boolean;
  /** Harness spawn to the child's ready line (node start, broker, sealing, boot). */
  readonly spawnToReadyMs: number;
  readonly processToReadyMs: number;
  /** Sessions per model in this server, as its ready message reported them (fewest over its models; `--workers`); absent in older reports = 1. */
  readonly sessionsPerModel?: number;
  readonly boot: BootFigure | null;
}

export interface BootReport {
  readonly model: string;
  readonly plaintextBytes: number;
  readonly sealedBytes: number;
  /** Server process start to its first server ready (node start, simulated TEE, broker, sealing, cold boot). */
  readonly processToReadyMs: number;
  /** server.start() to ready in a fresh process. */
  readonly cold: BootFigure;
  /** Later boots in the same process (JIT, caches and broker connections warm). */
  readonly warm: readonly BootFigure[];
  /** challenge + evidence + attest + release (the attestation-gated key release), cold and median warm. */
  readonly attestationAndReleaseMs: { readonly cold: number; readonly warm: number | null };
  /** Plaintext bytes / decrypt step time, GB/s (1e9 bytes/s). */
  readonly decryptGBps: { readonly cold: number | null; readonly warm: number | null };
  readonly startToReadyMs: { readonly cold: number; readonly warm: number | null };
}

export interface SealThroughput {
  readonly plaintextBytes: number;
  readonly chunkSize: number;
  readonly reps: number;
  /** Median over reps, GB/s (1e9 bytes/s), common/seal.ts in this process. */
  readonly sealGBps: number;
  readonly openGBps: number;
}

export interface SizingRow {
  readonly model: string;
  readonly mode: Mode;
  /** Which points were used: open-loop (preferred, SLO-grade) or closed-loop (no open-loop data). */
  readonly source: LoopKind;
  readonly maxThroughput: number | null;
  /**
   * The best point was the highest rate offered and met the SLO: the mode may carry more
   * than `maxThroughput` (offer higher `--rates`). Absent in older reports.
   */
  readonly lowerBound?: boolean;
  readonly serversNeeded: number | null;
}

/** Server memory at one moment of a soak (bench/server-process.ts stats). */
export interface SoakSample {
  /** Since the end of the soak's warm-up. */
  readonly tMs: number;
  readonly rssBytes: number;
  readonly heapUsedBytes: number | null;
  /** ArrayBuffers and other memory V8 tracks outside its heap (tensors, gRPC buffers). */
  readonly externalBytes: number | null;
  /** Successful requests so far (measured window only). */
  readonly completed: number;
}

/** One soak: a closed loop at fixed concurrency for a long window, server memory sampled. */
export interface SoakRun {
  readonly mode: Mode;
  readonly model: string;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly completed: number;
  readonly errors: number;
  readonly errorsByStatus: Readonly<Record<string, number>>;
  readonly throughput: number;
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly maxMs: number;
  /** Server RSS right after the warm-up and at the end of the window. */
  readonly rssStartBytes: number;
  readonly rssEndBytes: number;
  /** rssEndBytes - rssStartBytes. */
  readonly rssGrowthBytes: number;
  /** Peak RSS of the server process over its life (getrusage maxRSS). */
  readonly rssPeakBytes: number;
  /**
   * Least-squares slope of RSS over the second half of the window, bytes per minute: a
   * leak keeps growing after the allocator has settled; a plateau gives about 0.
   */
  readonly rssSlopeBytesPerMin: number | null;
  readonly samples: readonly SoakSample[];
}

export interface BenchReport {
  readonly schema: typeof REPORT_SCHEMA;
  readonly createdAt: string;
  readonly label: string | null;
  readonly argv: readonly string[];
  readonly wallMs: number;
  readonly machine: {
    readonly hostname: string;
    readonly platform: string;
    readonly release: string;
    readonly arch: string;
    readonly cpuModel: string;
    readonly cpus: number;
    readonly totalMemBytes: number;
    readonly loadAvgStart: readonly number[];
    readonly loadAvgEnd: readonly number[];
    readonly confidential: { readonly sevGuest: boolean; readonly tdxGuest: boolean; readonly tsmReport: boolean };
    /** The kernel's idle and paging settings (bench/machine.ts); absent in older reports. */
    readonly tuning?: MachineTuning;
  };
  readonly versions: Readonly<Record<string, string>>;
  readonly settings: {
    readonly quick: boolean;
    readonly modes: readonly Mode[];
    readonly models: readonly string[];
    readonly concurrency: readonly number[];
    readonly rates: readonly number[] | 'auto';
    readonly autoRateFractions: readonly number[];
    readonly warmupMs: number;
    readonly durationMs: number;
    readonly reps: number;
    readonly seed: number;
    readonly intraOpThreads: number;
    readonly interOpThreads: number;
    /** `--executor`: where the servers ran onnxruntime (server/config.ts `executor`); absent in older reports = inline. */
    readonly executor?: 'inline' | 'worker';
    /** `--server-idle-poll-us`: the servers' idle polling window, µs (server/idle-poll.ts); absent in older reports = 0, off. */
    readonly idlePollUs?: number;
    /** `--workers`: sessions (worker threads) per model in each server (server/config.ts `workers`); absent in older reports = 1. */
    readonly workers?: number;
    readonly executionProvider: 'cpu' | 'cuda';
    readonly requestTimeoutMs: number;
    readonly maxInFlight: number;
    readonly sloP99Ms: number | null;
    readonly targetRps: number | null;
    /** `--soak`: window, concurrency and sampling interval; null for a sweep. */
    readonly soak?: { readonly durationMs: number; readonly concurrency: number; readonly sampleMs: number } | null;
    /** `--controls`: server modes ran with API-key auth and every per-key and per-tenant limit on. */
    readonly controls?: boolean;
    /** The cir servers' log level (`cir --log-level`; at info, one access-log line per call). Absent in older reports = warn. */
    readonly serverLogLevel?: string;
  };
  readonly executionProvider: { readonly requested: 'cpu' | 'cuda'; readonly available: boolean; readonly detail: string };
  readonly workloads: readonly {
    readonly name: string;
    readonly description: string;
    readonly onnxBytes: number;
    readonly requestBytes: number;
    readonly inputs: readonly { readonly name: string; readonly datatype: string; readonly shape: readonly number[] }[];
    readonly generated: Readonly<Record<string, number | string>> | null;
  }[];
  readonly servers: readonly ServerInfo[];
  /** grpc-attested: the client's one-time verification before the sweep. */
  readonly attestedClient: { readonly verifyMs: number; readonly checks: readonly { name: string; ok: boolean }[] } | null;
  readonly results: readonly ResultEntry[];
  /** `--modes` with both grpc and grpc-controls: what the controls cost (see `controlsCost`). */
  readonly controlsCost?: readonly ControlsCostRow[];
  /** Paired comparisons of two server modes alternated request by request (see InterleavedRow). */
  readonly interleaved?: readonly InterleavedRow[];
  readonly sizing: { readonly sloP99Ms: number; readonly targetRps: number | null; readonly rows: readonly SizingRow[] } | null;
  readonly boot: BootReport | null;
  readonly sealThroughput: SealThroughput | null;
  /** `--soak SECONDS`: the soak runs (the sweep is not run); null otherwise. */
  readonly soak?: readonly SoakRun[] | null;
  readonly skipped: readonly { readonly what: string; readonly reason: string }[];
  /** Parts that failed after the sweep (boot or seal figures), the sweep's figures kept. Absent in older reports. */
  readonly failures?: readonly { readonly what: string; readonly reason: string }[];
}

/**
 * The cost of the multi-tenant controls at one model, loop and level: `grpc-controls`
 * against `grpc` in the same run. Each repetition of the two modes ran back to back
 * (repetitions alternate modes), so the deltas are paired per repetition and their median
 * taken; that cancels most of the drift a busy machine adds between separate runs.
 */
export interface ControlsCostRow {
  readonly model: string;
  readonly loop: LoopKind;
  readonly level: number;
  readonly pairs: number;
  readonly grpcP50Ms: number;
  readonly controlsP50Ms: number;
  /** Median over pairs of (controls p50 - grpc p50), in microseconds. */
  readonly p50DeltaUs: number;
  /** Median over pairs of (controls p99 - grpc p99), in microseconds. */
  readonly p99DeltaUs: number;
  /** Median over pairs of the server CPU per request difference, in microseconds; null without CPU figures. */
  readonly serverCpuDeltaUs: number | null;
  /** Every pair's p50 delta (µs), in repetition order: the spread shows the noise. */
  readonly p50DeltasUs: readonly number[];
}

/** One side of an interleaved window. */
export interface InterleavedSide {
  readonly p50Ms: number;
  readonly p99Ms: number;
  readonly count: number;
  readonly errors: number;
  /** That server's CPU (user + system) per request served, in microseconds. */
  readonly serverCpuUsPerRequest: number | null;
  /** That server's server-side p50 / p99 (see ResultEntry.serverP50Ms); absent in older reports. */
  readonly serverP50Ms?: number | null;
  readonly serverP99Ms?: number | null;
}

/**
 * Two server modes alternated request by request in one closed-loop window
 * (bench/load.ts runInterleaved) of `durationMs` (= window × reps): a paired measurement,
 * free of the drift between windows measured one after the other. Pairs run: grpc-plain
 * vs grpc (what cir's serving layer adds over a plain grpc-js + onnxruntime server), grpc vs
 * grpc-controls (what the multi-tenant controls cost) and grpc-tls vs grpc-attested (what
 * the confidential path costs per request once attested), whenever both modes ran.
 */
export interface InterleavedRow {
  readonly a: Mode;
  readonly b: Mode;
  readonly model: string;
  readonly concurrency: number;
  readonly durationMs: number;
  readonly sideA: InterleavedSide;
  readonly sideB: InterleavedSide;
  /** b - a, microseconds. */
  readonly p50DeltaUs: number;
  readonly p99DeltaUs: number;
  /** b / a. */
  readonly p50Ratio: number;
  readonly serverCpuDeltaUs: number | null;
  /** b - a of the server-side p50, microseconds: the serving layers' difference without the transport. */
  readonly serverP50DeltaUs?: number | null;
}

/** The mode pairs compared interleaved when both modes run: [baseline, candidate]. */
export const INTERLEAVED_PAIRS: readonly (readonly [Mode, Mode])[] = [
  ['grpc-plain', 'grpc'],
  ['grpc', 'grpc-controls'],
  ['grpc-tls', 'grpc-attested'],
];

function medianOf(xs: readonly number[]): number {
  const a = [...xs].sort((x, y) => x - y);
  const n = a.length;
  return n === 0 ? NaN : n % 2 ? a[n >> 1]! : (a[n / 2 - 1]! + a[n / 2]!) / 2;
}

/**
 * Pairs grpc and grpc-controls results rep by rep (see ControlsCostRow); [] unless both ran.
 * `servedPerCounted`: requests the server served per request counted (the server's CPU
 * covers warm-up and window, the count only the window): (warm-up + window) / window.
 */
export function controlsCost(results: readonly ResultEntry[], servedPerCounted = 1): ControlsCostRow[] {
  const rows: ControlsCostRow[] = [];
  for (const c of results.filter((x) => x.mode === 'grpc-controls')) {
    const level = c.loop === 'closed' ? c.concurrency : c.rate;
    const g = results.find((x) => x.mode === 'grpc' && x.model === c.model && x.loop === c.loop && (x.loop === 'closed' ? x.concurrency : x.rate) === level);
    if (!g || level === null) continue;
    const n = Math.min(g.perRep.length, c.perRep.length);
    if (n === 0) continue;
    const p50: number[] = [];
    const p99: number[] = [];
    const cpu: number[] = [];
    for (let i = 0; i < n; i++) {
      const a = g.perRep[i]!;
      const b = c.perRep[i]!;
      p50.push((b.p50Ms - a.p50Ms) * 1000);
      p99.push((b.p99Ms - a.p99Ms) * 1000);
      if (a.serverCpuMs !== null && b.serverCpuMs !== null && a.count > 0 && b.count > 0) cpu.push(((b.serverCpuMs / b.count - a.serverCpuMs / a.count) * 1000) / servedPerCounted);
    }
    rows.push({
      model: c.model,
      loop: c.loop,
      level,
      pairs: n,
      grpcP50Ms: g.p50Ms,
      controlsP50Ms: c.p50Ms,
      p50DeltaUs: medianOf(p50),
      p99DeltaUs: medianOf(p99),
      serverCpuDeltaUs: cpu.length === n ? medianOf(cpu) : null,
      p50DeltasUs: p50,
    });
  }
  return rows;
}

/** A Markdown table's header and separator: the first `left` columns left-aligned, the rest right. */
function tableHead(cols: readonly string[], left: number): string[] {
  return [`| ${cols.join(' | ')} |`, `|${cols.map((_, i) => (i < left ? '---' : '--:')).join('|')}|`];
}

/** One Markdown table row. */
const tableRow = (cells: readonly (string | number)[]): string => `| ${cells.join(' | ')} |`;

const f = (v: number | null | undefined, digits = 2): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits));
const r = (v: number | null | undefined): string => (v === null || v === undefined ? '–' : `${v.toFixed(2)}x`);

/** The Markdown summary: settings, one table per model and loop, boot figures, sizing. */
export function markdownSummary(rep: BenchReport): string {
  const L: string[] = [];
  const m = rep.machine;
  L.push(`# cir bench${rep.label ? `: ${rep.label}` : ''}`, '');
  L.push(`${rep.createdAt} · ${m.cpuModel} × ${m.cpus} · ${(m.totalMemBytes / 2 ** 30).toFixed(1)} GiB · ${m.platform} ${m.release} · load avg ${m.loadAvgStart.map((x) => x.toFixed(2)).join('/')} → ${m.loadAvgEnd.map((x) => x.toFixed(2)).join('/')}`);
  L.push(`TEE guest: SEV-SNP ${m.confidential.sevGuest ? 'yes' : 'no'}, TDX ${m.confidential.tdxGuest ? 'yes' : 'no'} · node ${rep.versions['node']} · onnxruntime ${rep.versions['onnxruntime-node']} · grpc-js ${rep.versions['@grpc/grpc-js']}`);
  if (m.tuning) L.push(tuningLine(m.tuning));
  const s = rep.settings;
  const mode = s.soak ? `soak: window ${s.soak.durationMs / 1000} s at concurrency ${s.soak.concurrency}, memory sampled every ${s.soak.sampleMs / 1000} s` : `window ${s.durationMs} ms, ${s.reps} rep(s) (median)`;
  L.push(`Settings: ${s.quick ? 'quick, ' : ''}warm-up ${s.warmupMs} ms, ${mode}, intra-op threads ${s.intraOpThreads || 'auto'}, server executor ${s.executor ?? 'inline'}${(s.workers ?? 1) > 1 ? ` × ${s.workers} sessions per model` : ''}, server idle polling ${s.idlePollUs ? `${s.idlePollUs} µs` : 'off'}, EP ${s.executionProvider}, seed ${s.seed}. Latency in ms; throughput in req/s; overhead = mode / inproc at the same level; srv p50 = the server process's own time per call (request arrived in grpc-js to response handed to HTTP/2); at concurrency 1, p50 − srv p50 approximates the round trip.`, '');
  for (const w of rep.workloads) {
    L.push(`## ${w.name}`, '', `${w.description}; model ${(w.onnxBytes / 2 ** 20).toFixed(2)} MiB, request ${(w.requestBytes / 1024).toFixed(1)} KiB.`, '');
    for (const loop of ['closed', 'open'] as const) {
      const rows = rep.results.filter((x) => x.model === w.name && x.loop === loop);
      if (rows.length === 0) continue;
      L.push(loop === 'closed' ? '**Closed loop** (capacity; latency from actual send)' : '**Open loop**, Poisson arrivals (latency from intended send time: coordinated omission corrected)', '');
      L.push(`| mode | ${loop === 'closed' ? 'conc.' : 'rate'} | p50 | srv p50 | p90 | p99 | p99.9 | max | req/s | errors | srv CPU ms/req | srv peak RSS MiB | p50 × | p99 × | req/s × |`);
      L.push('|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
      const levels = [...new Set(rows.map((x) => (loop === 'closed' ? x.concurrency : x.rate)))];
      for (const lvl of levels) {
        for (const x of rows.filter((y) => (loop === 'closed' ? y.concurrency : y.rate) === lvl)) {
          L.push(
            `| ${x.mode} | ${lvl} | ${f(x.p50Ms)} | ${f(x.serverP50Ms)} | ${f(x.p90Ms)} | ${f(x.p99Ms)} | ${f(x.p999Ms)} | ${f(x.maxMs)} | ${f(x.throughput, 1)} | ${x.errors}${x.errors ? ` (${Object.entries(x.errorsByStatus).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''} | ${f(x.serverCpuMsPerRequest, 3)} | ${f(x.serverMaxRssMiB, 0)} | ${r(x.overhead?.p50)} | ${r(x.overhead?.p99)} | ${r(x.overhead?.throughput)} |`,
          );
        }
      }
      L.push('');
    }
  }
  if (rep.controlsCost && rep.controlsCost.length > 0) {
    L.push('## Cost of the multi-tenant controls (grpc-controls vs grpc)', '');
    L.push('Median over repetitions of the paired difference (each repetition ran both modes back to back). Target: ≤ 50 µs at p50.', '');
    L.push(...tableHead(['model', 'loop', 'level', 'pairs', 'grpc p50 ms', 'controls p50 ms', 'Δ p50 µs', 'Δ p99 µs', 'Δ srv CPU µs/req', 'Δ p50 per pair µs'], 2));
    for (const c of rep.controlsCost) {
      L.push(
        tableRow([c.model, c.loop, c.level, c.pairs, f(c.grpcP50Ms, 3), f(c.controlsP50Ms, 3), f(c.p50DeltaUs, 0), f(c.p99DeltaUs, 0), f(c.serverCpuDeltaUs, 0), c.p50DeltasUs.map((d) => d.toFixed(0)).join(', ')]),
      );
    }
    L.push('');
  }
  if (rep.interleaved && rep.interleaved.length > 0) {
    L.push('## Paired comparisons (interleaved)', '');
    L.push('Each row is one closed-loop window in which every client alternates the two modes request by request, so both see the same moments of the machine. grpc − grpc-plain is what cir\'s serving layer adds over a plain grpc-js + onnxruntime server; Δ srv p50 is the same difference timed inside the two server processes, without the round trip. Targets: grpc-controls − grpc ≤ 50 µs at p50; grpc-attested / grpc-tls ≤ 1.03.', '');
    L.push(
      ...tableHead(
        ['a', 'b', 'model', 'conc.', 'window s', 'a p50 ms', 'b p50 ms', 'Δ p50 µs', 'Δ srv p50 µs', 'b/a p50', 'a p99 ms', 'b p99 ms', 'Δ p99 µs', 'a srv CPU µs/req', 'b srv CPU µs/req', 'Δ srv CPU µs/req', 'errors'],
        3,
      ),
    );
    for (const c of rep.interleaved) {
      const [a, b] = [c.sideA, c.sideB];
      L.push(
        tableRow([
          c.a,
          c.b,
          c.model,
          c.concurrency,
          f(c.durationMs / 1000, 0),
          f(a.p50Ms, 3),
          f(b.p50Ms, 3),
          f(c.p50DeltaUs, 0),
          f(c.serverP50DeltaUs, 0),
          f(c.p50Ratio, 3),
          f(a.p99Ms, 3),
          f(b.p99Ms, 3),
          f(c.p99DeltaUs, 0),
          f(a.serverCpuUsPerRequest, 0),
          f(b.serverCpuUsPerRequest, 0),
          f(c.serverCpuDeltaUs, 0),
          a.errors + b.errors,
        ]),
      );
    }
    L.push('');
  }
  if (rep.attestedClient) {
    L.push(`**grpc-attested client verification** (once, before the sweep): ${f(rep.attestedClient.verifyMs, 1)} ms (${rep.attestedClient.checks.map((c) => c.name).join(', ')}).`, '');
  }
  if (rep.boot) {
    const b = rep.boot;
    L.push(`## Boot: ${b.model} (${(b.plaintextBytes / 2 ** 20).toFixed(0)} MiB plaintext, sealed)`, '');
    L.push('| figure | cold | warm |', '|---|--:|--:|');
    L.push(`| server start → ready (ms) | ${f(b.startToReadyMs.cold, 1)} | ${f(b.startToReadyMs.warm, 1)} |`);
    L.push(`| attestation + key release (challenge, evidence, attest, release; ms) | ${f(b.attestationAndReleaseMs.cold, 1)} | ${f(b.attestationAndReleaseMs.warm, 1)} |`);
    L.push(`| sealed-model decryption at boot (GB/s) | ${f(b.decryptGBps.cold)} | ${f(b.decryptGBps.warm)} |`);
    for (const step of b.cold.steps) {
      const warm = b.warm.map((w) => w.steps.find((x) => x.name === step.name)?.ms).filter((x): x is number => x !== undefined);
      L.push(`| · step ${step.name} (ms) | ${f(step.ms, 1)} | ${warm.length ? f(warm.sort((a, c) => a - c)[warm.length >> 1], 1) : '–'} |`);
    }
    L.push(`| process start → ready, incl. node start, broker, sealing (ms) | ${f(b.processToReadyMs, 0)} | |`, '');
  }
  if (rep.sealThroughput) {
    const t = rep.sealThroughput;
    L.push(`**Sealed-model throughput** (common/seal.ts, ${(t.plaintextBytes / 2 ** 20).toFixed(0)} MiB, ${t.chunkSize / 1024} KiB chunks, median of ${t.reps}): seal ${f(t.sealGBps)} GB/s, open ${f(t.openGBps)} GB/s.`, '');
  }
  if (rep.soak && rep.soak.length) {
    L.push('## Soak (closed loop at fixed concurrency; server memory sampled)', '');
    L.push('| mode | model | conc. | window s | requests | errors | req/s | p50 | p99 | max | RSS start MiB | RSS end MiB | growth MiB | peak MiB | slope 2nd half MiB/min |');
    L.push('|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|');
    const mib = (b: number | null): string => f(b === null ? null : b / 2 ** 20, 1);
    for (const x of rep.soak) {
      L.push(
        `| ${x.mode} | ${x.model} | ${x.concurrency} | ${f(x.durationMs / 1000, 0)} | ${x.completed} | ${x.errors}${x.errors ? ` (${Object.entries(x.errorsByStatus).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''} | ${f(x.throughput, 1)} | ${f(x.p50Ms)} | ${f(x.p99Ms)} | ${f(x.maxMs)} | ${mib(x.rssStartBytes)} | ${mib(x.rssEndBytes)} | ${mib(x.rssGrowthBytes)} | ${mib(x.rssPeakBytes)} | ${mib(x.rssSlopeBytesPerMin)} |`,
      );
    }
    L.push('');
  }
  if (rep.sizing) {
    const z = rep.sizing;
    L.push(`## Sizing: p99 ≤ ${z.sloP99Ms} ms${z.targetRps !== null ? `, target ${z.targetRps} req/s` : ''}`, '');
    L.push(`| model | mode | from | max req/s meeting SLO | servers needed |`, '|---|---|---|--:|--:|');
    for (const row of z.rows) {
      const ge = row.lowerBound && row.maxThroughput !== null;
      L.push(`| ${row.model} | ${row.mode} | ${row.source} loop | ${ge ? '≥ ' : ''}${f(row.maxThroughput, 1)} | ${row.serversNeeded === null ? '–' : `${ge ? '≤ ' : ''}${row.serversNeeded}`} |`);
    }
    if (z.rows.some((r) => r.lowerBound)) L.push('', '≥: the highest rate offered met the SLO, so the mode may carry more; offer higher `--rates` (or run it alone with `--rates auto`) to find its limit.');
    L.push('');
  }
  if (rep.failures?.length) {
    L.push('## Failed', '');
    for (const k of rep.failures) L.push(`- ${k.what}: ${k.reason}`);
    L.push('');
  }
  if (rep.skipped.length) {
    L.push('## Skipped', '');
    for (const k of rep.skipped) L.push(`- ${k.what}: ${k.reason}`);
    L.push('');
  }
  return `${L.join('\n')}\n`;
}

/** Chart panels: per model, closed-loop p99 against throughput per mode (plus open loop when run). */
export function chartPanels(rep: BenchReport): ChartPanel[] {
  const panels: ChartPanel[] = [];
  for (const w of rep.workloads) {
    for (const loop of ['closed', 'open'] as const) {
      const rows = rep.results.filter((x) => x.model === w.name && x.loop === loop);
      if (rows.length === 0) continue;
      const series = [...new Set(rows.map((x) => x.mode))].map((mode) => ({
        name: mode,
        points: rows
          .filter((x) => x.mode === mode)
          .sort((a, b) => (a.concurrency ?? a.rate ?? 0) - (b.concurrency ?? b.rate ?? 0))
          .map((x) => ({ x: x.throughput, y: x.p99Ms, label: loop === 'closed' ? `c=${x.concurrency}` : `rate=${x.rate}` })),
      }));
      panels.push({ title: `${w.name}: p99, ${loop} loop`, series });
    }
  }
  return panels;
}
