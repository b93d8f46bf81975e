/**
 * The serving benchmark: runs every selected mode (targets.ts) against every workload at
 * every load level, side by side, and builds the report (report.ts).
 *
 * Method (research/anchors-performance-reliability.md §3):
 * - Server and load generator are separate processes: each server mode runs in its own
 *   child (bench/server-process.ts), started once and kept for the whole sweep.
 * - Cells are interleaved: for each model, level and repetition, every mode runs once
 *   before the next repetition, so slow drift in machine load hits all modes alike.
 * - Each cell: warm-up (not recorded), then a fixed window recorded in an HdrHistogram.
 *   Figures are medians across repetitions.
 * - Closed loop (concurrency sweep) measures capacity; open loop (Poisson arrivals at
 *   fixed rates, latency from the intended send time) measures latency at a given load.
 *   SLO sizing prefers open-loop points.
 * - Server CPU time and peak RSS come from the server process itself (process.cpuUsage,
 *   resourceUsage().maxRSS) before and after each cell.
 */
import { mkdtemp, rm, writeFile, readFile } from 'node:fs/promises';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { createHash, randomBytes } from 'node:crypto';
import * as ort from '../common/ort.js';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { openSealedModel, sealModel, DEFAULT_CHUNK_SIZE } from '../common/seal.js';
import { packageVersion } from '../server/app.js';
import { DEFAULT_MAX_CONCURRENT_INFERS } from '../server/config.js';
import { ClientError } from '../client/codes.js';
import { isCirError } from '../common/errors.js';
import { readMachineTuning } from './machine.js';
import { runClosedLoop, runInterleaved, runOpenLoop, type WindowResult } from './load.js';
import {
  REPORT_SCHEMA,
  type BenchReport,
  type BootReport,
  type LoopKind,
  type RepFigures,
  type ResultEntry,
  controlsCost,
  INTERLEAVED_PAIRS,
  type InterleavedRow,
  type InterleavedSide,
  type SealThroughput,
  type ServerInfo,
  type SizingRow,
  type SoakRun,
  type SoakSample,
} from './report.js';
import type { BootFigure, ServerSpec, ServerSpecModel, StatsMessage } from './server-process.js';
import { maxThroughputUnderSlo, median, overheadRatios, serversNeeded } from './stats.js';
import { CallError, grpcTarget, inprocTarget, isPlaintextMode, MODES, ServerChild, sessionOptions, type Mode, type Target } from './targets.js';
import { mlpSizeWorkload, requestBytes, type Workload } from './workloads.js';

export interface BenchOptions {
  readonly modes: readonly Mode[];
  readonly workloads: readonly Workload[];
  readonly concurrency: readonly number[];
  /**
   * Open-loop rates (req/s); [] = no open loop. 'auto' = autoRateFractions x the model's
   * closed-loop peak in its slowest mode, so that every mode can carry every rate and the
   * modes are compared at the same offered loads.
   */
  readonly rates: readonly number[] | 'auto';
  readonly autoRateFractions?: readonly number[];
  readonly warmupMs: number;
  readonly durationMs: number;
  readonly reps: number;
  readonly seed: number;
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  /** The servers' executor (server/config.ts `executor`); default 'inline'. Not used by inproc. */
  readonly executor?: 'inline' | 'worker';
  /** The servers' `idlePollUs` (server/idle-poll.ts), `grpc-plain`'s too; default 0, off. Not used by inproc. */
  readonly idlePollUs?: number;
  /** The servers' `workers` (sessions per model, worker executor only), `grpc-plain`'s too; default 1. Not used by inproc. */
  readonly workers?: number;
  readonly executionProvider: 'cpu' | 'cuda';
  /** Server modes run with the multi-tenant controls on (API key, limits); see ServerSpec.controls. */
  readonly controls?: boolean;
  /** The cir servers' log level (ServerSpec.logLevel); default 'info', as `cir serve`. */
  readonly serverLogLevel?: string;
  readonly requestTimeoutMs: number;
  readonly maxInFlight: number;
  readonly sloP99Ms?: number;
  readonly targetRps?: number;
  /** Boot figures with a generated sealed MLP of this many MiB; 0 = skip. */
  readonly bootModelMb: number;
  /** Warm boots after the cold one. */
  readonly warmBoots: number;
  /** Sealed-model throughput over this many MiB; 0 = skip. */
  readonly sealMb: number;
  /** Shared simulated-TEE state (created once, ~10 s of RSA-4096 key generation). */
  readonly simStateDir: string;
  readonly quick: boolean;
  readonly label?: string;
  readonly argv?: readonly string[];
  /**
   * Soak instead of the sweep: per server mode and workload, `warmupMs` of warm-up, then a
   * closed loop at `concurrency` for `durationMs`, server memory sampled every `sampleMs`.
   */
  readonly soak?: { readonly durationMs: number; readonly concurrency: number; readonly sampleMs: number };
  /** Progress (stderr bar in the CLI). */
  readonly onProgress?: (p: Progress) => void;
  /** One-line notes (server start, skipped parts). */
  readonly log?: (line: string) => void;
}

export interface Progress {
  readonly done: number;
  readonly total: number;
  /** Fraction of the current cell. */
  readonly cellFraction: number;
  readonly label: string;
  readonly etaMs: number;
}

export const DEFAULT_AUTO_RATE_FRACTIONS = Object.freeze([0.25, 0.5, 0.75, 0.9]);

/** Default location of the shared simulated-TEE state. */
export function defaultSimStateDir(): string {
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return path.join(os.tmpdir(), `cir-bench-sim-${uid}`);
}

function pkgVersion(name: string): string {
  try {
    const req = createRequire(import.meta.url);
    let dir = path.dirname(req.resolve(name));
    for (let i = 0; i < 5; i++) {
      const f = path.join(dir, 'package.json');
      if (existsSync(f)) {
        const pkg = JSON.parse(readFileSync(f, 'utf8')) as { name?: string; version?: string };
        if (pkg.name === name && pkg.version) return pkg.version;
      }
      dir = path.dirname(dir);
    }
  } catch {
    // unknown
  }
  return 'unknown';
}

function machineInfo(): Omit<BenchReport['machine'], 'loadAvgEnd'> {
  const cpus = os.cpus();
  return {
    hostname: os.hostname(),
    platform: os.platform(),
    release: os.release(),
    arch: os.arch(),
    cpuModel: cpus[0]?.model.trim() ?? 'unknown',
    cpus: cpus.length,
    totalMemBytes: os.totalmem(),
    loadAvgStart: os.loadavg(),
    confidential: {
      sevGuest: existsSync('/dev/sev-guest'),
      tdxGuest: existsSync('/dev/tdx_guest') || existsSync('/dev/tdx-guest'),
      tsmReport: existsSync('/sys/kernel/config/tsm/report'),
    },
    tuning: readMachineTuning(),
  };
}

/** Checks an execution provider by creating a session with it; returns why not when it fails. */
async function probeExecutionProvider(ep: 'cpu' | 'cuda', model: Uint8Array): Promise<{ available: boolean; detail: string }> {
  if (ep === 'cpu') return { available: true, detail: 'cpu' };
  try {
    const s = await ort.InferenceSession.create(model, { executionProviders: [{ name: 'cuda' }] });
    await s.release();
    return { available: true, detail: 'cuda session created' };
  } catch (e) {
    return { available: false, detail: `onnxruntime-node could not create a CUDA session: ${((e as Error).message ?? String(e)).split('\n')[0]}` };
  }
}

function bootSum(b: BootFigure, names: readonly string[]): number {
  return b.steps.filter((s) => names.includes(s.name) && s.ok).reduce((a, s) => a + s.ms, 0);
}
const ATTEST_STEPS = ['challenge', 'evidence', 'attest', 'release'];

function stepMs(b: BootFigure, name: string): number | undefined {
  const s = b.steps.filter((x) => x.name === name && x.ok);
  return s.length ? s.reduce((a, x) => a + x.ms, 0) : undefined;
}

/** Sealed-model seal/open throughput in this process (common/seal.ts). */
export function measureSealThroughput(mb: number, reps: number): SealThroughput {
  const plaintext = randomBytes(mb * 1024 * 1024);
  const dek = randomBytes(32);
  const sealT: number[] = [];
  const openT: number[] = [];
  let sealed = sealModel(plaintext, dek, { keyId: 'bench', keyVersion: 1 });
  openSealedModel(sealed, dek);
  for (let i = 0; i < reps; i++) {
    let t = performance.now();
    sealed = sealModel(plaintext, dek, { keyId: 'bench', keyVersion: 1 });
    sealT.push(performance.now() - t);
    t = performance.now();
    openSealedModel(sealed, dek);
    openT.push(performance.now() - t);
  }
  const gbps = (ms: number): number => plaintext.length / 1e9 / (ms / 1000);
  return { plaintextBytes: plaintext.length, chunkSize: DEFAULT_CHUNK_SIZE, reps, sealGBps: gbps(median(sealT)), openGBps: gbps(median(openT)) };
}

/**
 * Call outcomes that mean "this request is wrong for this model" (CallError statuses).
 * INTERNAL is not among them: both servers answer it for any failure they hide, an input
 * onnxruntime refuses after the server's own checks included, so the report blames the
 * server there while in process the same input is ORT_ERROR, the inputs' fault (the
 * default modes try inproc first, so it is caught there).
 */
const REJECTS_INPUT: ReadonlySet<string> = new Set(['INVALID_ARGUMENT', 'FAILED_PRECONDITION', 'OUT_OF_RANGE', 'ORT_ERROR', 'EMPTY_RESPONSE']);

/**
 * One request per mode and model before any window: a model that rejects the given inputs
 * (a wrong name, shape or datatype in `--input`), or a server that cannot run it, stops
 * the run at once with the reason instead of failing every request of a long sweep.
 */
export async function preflight(modes: readonly Mode[], workloads: readonly Workload[], targets: ReadonlyMap<Mode, Target>): Promise<void> {
  for (const mode of modes) {
    const t = targets.get(mode);
    if (!t) continue;
    for (const w of workloads) {
      try {
        await t.invoker(w)();
      } catch (e) {
        const why = e instanceof CallError ? `${e.status}: ${e.message}` : ((e as Error).message ?? String(e)).split('\n')[0];
        // Only a refusal of the request itself is the inputs' fault; a timeout, an
        // unavailable or crashed server is the server's.
        const inputs = !(e instanceof CallError) || REJECTS_INPUT.has(e.status);
        throw new ClientError(inputs ? 'ERR_CLI_BENCH_PREFLIGHT' : 'ERR_CLI_BENCH_SERVER_FAILED', { detail: `${mode}, model ${w.name}: ${why}`, cause: e });
      }
    }
  }
}

/**
 * The closed-loop peak throughput of a model in its slowest mode: the base of the `auto`
 * open-loop rates, so that every mode can carry every rate (a rate above a mode's capacity
 * would only measure its queue and its refusals).
 */
export function slowestPeak(results: readonly ResultEntry[], model: string, modes: readonly Mode[]): number {
  const peaks = modes.map((m) => Math.max(0, ...results.filter((x) => x.model === model && x.loop === 'closed' && x.mode === m).map((x) => x.throughput)));
  return peaks.length ? Math.min(...peaks) : 0;
}

/**
 * The INTERLEAVED_PAIRS whose two modes both run. Under --controls every cir mode runs the
 * controls, so neither pair with `grpc` measures what it is meant to: grpc-plain vs grpc
 * would add the controls to cir's share, and grpc vs grpc-controls compares two equal servers.
 */
export function interleavedPairs(modes: readonly Mode[], controls: boolean): (readonly [Mode, Mode])[] {
  return pairPlan(modes, controls).run;
}

/** interleavedPairs, and the pairs whose modes both run but that --controls leaves out, with why. */
function pairPlan(modes: readonly Mode[], controls: boolean): { run: (readonly [Mode, Mode])[]; skipped: { what: string; reason: string }[] } {
  const run: (readonly [Mode, Mode])[] = [];
  const skipped: { what: string; reason: string }[] = [];
  for (const [a, b] of INTERLEAVED_PAIRS) {
    if (!modes.includes(a) || !modes.includes(b)) continue;
    if (controls && (a === 'grpc' || b === 'grpc')) {
      const reason = a === 'grpc-plain' ? '--controls: grpc runs the multi-tenant controls, the plain reference has none' : '--controls: both run the multi-tenant controls';
      skipped.push({ what: `${a} vs ${b} interleaved`, reason });
    } else {
      run.push([a, b]);
    }
  }
  return { run, skipped };
}

/**
 * Per model and mode, the highest sustained throughput that met the p99 SLO: from the
 * open-loop points when there are any (latency from the intended send time), else the
 * closed-loop ones. When the highest rate offered met the SLO, the mode's limit lies above
 * it, and the row says so (`lowerBound`).
 */
export function sizingRows(results: readonly ResultEntry[], models: readonly string[], modes: readonly Mode[], sloP99Ms: number, targetRps?: number): SizingRow[] {
  const rows: SizingRow[] = [];
  for (const model of models) {
    for (const mode of modes) {
      const open = results.filter((x) => x.model === model && x.mode === mode && x.loop === 'open');
      const source: LoopKind = open.length ? 'open' : 'closed';
      const pts = (open.length ? open : results.filter((x) => x.model === model && x.mode === mode && x.loop === 'closed')).map((x) => ({
        throughput: x.throughput,
        p99Ms: x.p99Ms,
        errors: x.errors,
        ...(x.rate !== null ? { offeredRate: x.rate } : {}),
      }));
      const best = maxThroughputUnderSlo(pts, sloP99Ms);
      const top = Math.max(...pts.map((p) => p.offeredRate ?? -1));
      const lowerBound = source === 'open' && maxThroughputUnderSlo(pts.filter((p) => p.offeredRate === top), sloP99Ms) !== null;
      rows.push({ model, mode, source, maxThroughput: best, lowerBound, serversNeeded: targetRps !== undefined ? serversNeeded(targetRps, best) : null });
    }
  }
  return rows;
}

interface Cell {
  readonly workload: Workload;
  readonly loop: LoopKind;
  readonly level: number;
  readonly rep: number;
  readonly mode: Mode;
}

/** The simulated launch measurement the bench servers report and their policy allows. */
export const BENCH_MEASUREMENT = createHash('sha384').update('cir bench server image').digest('hex');

/**
 * Runs a sweep (or a soak) and returns its report. Everything the run writes (plaintext
 * model copies, each server's broker state with its keys, spec files) lives in one private
 * temporary directory that is removed however the run ends, a failure included; only a
 * killed process leaves it behind (mode 0700, under the OS temp dir).
 */
export async function runBench(o: BenchOptions): Promise<BenchReport> {
  const workDir = await mkdtemp(path.join(os.tmpdir(), 'cir-bench-'));
  // Ctrl-C or a SIGTERM would skip the `finally` below: stop the servers and remove the
  // directory first, then exit as a shell expects (128 + signal number).
  const onSignal = (signal: NodeJS.Signals): void => {
    ServerChild.killAll();
    // The servers' broker processes may still be writing there for a moment after the kill
    // (they stop when their parent's pipe closes): retry, and exit whatever happens.
    let removed = 'work directory removed';
    try {
      rmSync(workDir, { recursive: true, force: true, maxRetries: 10, retryDelay: 50 });
    } catch (e) {
      removed = `work directory ${workDir} NOT removed (${(e as NodeJS.ErrnoException).code ?? 'error'}): delete it, it holds keys`;
    }
    process.stderr.write(`\ncir bench: ${signal}: server processes stopped, ${removed}\n`);
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await benchIn(o, workDir);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(workDir, { recursive: true, force: true });
  }
}

/** A server process that failed to start: its mode and why. */
function serverStartError(mode: Mode, e: unknown): Error {
  if (isCirError(e)) return e;
  return new ClientError('ERR_CLI_BENCH_SERVER_FAILED', { detail: `${mode}: ${(e as Error).message ?? String(e)}`, cause: e });
}

async function benchIn(o: BenchOptions, workDir: string): Promise<BenchReport> {
  const started = performance.now();
  const log = o.log ?? (() => undefined);
  const machine = machineInfo();
  const skipped: { what: string; reason: string }[] = [];
  const failures: { what: string; reason: string }[] = [];
  const children = new Map<Mode, ServerChild>();
  const targets = new Map<Mode, Target>();
  const servers: ServerInfo[] = [];
  let attestedClient: BenchReport['attestedClient'] = null;
  const results: ResultEntry[] = [];
  const interleaved: InterleavedRow[] = [];
  let boot: BootReport | null = null;
  let sealThroughput: SealThroughput | null = null;
  let soak: SoakRun[] | null = null;
  const autoFractions = o.autoRateFractions ?? DEFAULT_AUTO_RATE_FRACTIONS;

  const first = o.workloads[0];
  const ep = first ? await probeExecutionProvider(o.executionProvider, first.onnx) : { available: true, detail: 'no workload' };
  let modes = [...o.modes];
  if (!ep.available) {
    skipped.push({ what: `every mode with --ep ${o.executionProvider}`, reason: ep.detail });
    log(`${o.executionProvider} execution provider unavailable: ${ep.detail}; skipping the sweep`);
    modes = [];
  } else if (o.executionProvider !== 'cpu') {
    for (const m of modes.filter((x) => x !== 'inproc')) {
      skipped.push({ what: `${m} with --ep ${o.executionProvider}`, reason: 'the cir server always creates CPU sessions (server/boot.ts executionProviders: ["cpu"])' });
    }
    modes = modes.filter((x) => x === 'inproc');
  }
  const sealedWorkload = o.workloads.find((w) => w.sealedFile);
  if (modes.includes('grpc-plain') && sealedWorkload) {
    // The reference server takes plaintext files; a sealed model is never written out decrypted.
    skipped.push({ what: 'grpc-plain', reason: `${sealedWorkload.name} is sealed; the plain reference server serves plaintext models only` });
    modes = modes.filter((x) => x !== 'grpc-plain');
  }

  try {
    // 1. Models on disk for the server processes.
    const files = new Map<string, string>();
    for (const w of o.workloads) {
      const f = path.join(workDir, `${w.name}.onnx`);
      if (!w.sealedFile) await writeFile(f, w.onnx);
      files.set(w.name, f);
    }

    // 2. Shared simulated TEE state, then the server processes (in parallel).
    const serverModes = modes.filter((m): m is Exclude<Mode, 'inproc'> => m !== 'inproc');
    if (serverModes.length > 0 || o.bootModelMb > 0) {
      const t0 = performance.now();
      await SimulatedSnp.open(o.simStateDir);
      if (performance.now() - t0 > 1000) log(`created the simulated TEE state in ${o.simStateDir} (${((performance.now() - t0) / 1000).toFixed(1)} s, reused next time)`);
    }
    const specFor = (mode: Exclude<Mode, 'inproc'>): ServerSpec => ({
      simStateDir: o.simStateDir,
      workDir: path.join(workDir, mode),
      insecure: isPlaintextMode(mode),
      measurement: BENCH_MEASUREMENT,
      intraOpThreads: o.intraOpThreads,
      interOpThreads: o.interOpThreads,
      ...(o.executor ? { executor: o.executor } : {}),
      ...(o.workers && o.workers > 1 ? { workers: o.workers } : {}),
      ...(o.idlePollUs ? { idlePollUs: o.idlePollUs } : {}),
      logLevel: o.serverLogLevel ?? 'info',
      // The server admits up to DEFAULT_MAX_CONCURRENT_INFERS calls at once and refuses the
      // rest; a closed loop or soak above that would measure refusals.
      maxConcurrentInfers: Math.max(DEFAULT_MAX_CONCURRENT_INFERS, ...o.concurrency, o.soak?.concurrency ?? 0),
      ...(mode === 'grpc-plain' ? { plain: true } : o.controls || mode === 'grpc-controls' ? { controls: true } : {}),
      models: o.workloads.map((w): ServerSpecModel => {
        if (w.sealedFile) return { name: w.name, file: w.sealedFile.file, dekFile: w.sealedFile.dekFile };
        return { name: w.name, file: files.get(w.name)!, plaintext: mode !== 'grpc-attested' };
      }),
    });
    // Every start is awaited, failed or not, so that none becomes ready after the cleanup
    // below has run (it would never be closed).
    const starts = await Promise.allSettled(
      serverModes.map(async (mode) => {
        const child = await ServerChild.start(specFor(mode), path.join(workDir, `${mode}.spec.json`));
        children.set(mode, child);
        servers.push({
          mode,
          tls: !isPlaintextMode(mode),
          sealedModels: child.ready.models.every((m) => m.sealed),
          spawnToReadyMs: child.spawnToReadyMs,
          processToReadyMs: child.ready.processToReadyMs,
          sessionsPerModel: Math.min(...child.ready.models.map((m) => m.sessions)),
          boot: child.ready.boots[0] ?? null,
        });
      }),
    );
    const failedStart = starts.findIndex((r) => r.status === 'rejected');
    if (failedStart >= 0) throw serverStartError(serverModes[failedStart]!, (starts[failedStart] as PromiseRejectedResult).reason);
    servers.sort((a, b) => modes.indexOf(a.mode) - modes.indexOf(b.mode));
    if (serverModes.length) log(`server processes ready: ${servers.map((s) => `${s.mode} pid ${children.get(s.mode)?.pid} :${children.get(s.mode)?.port}`).join(', ')}`);

    // 3. Clients.
    if (modes.includes('inproc')) {
      targets.set('inproc', await inprocTarget(o.workloads, { intraOpThreads: o.intraOpThreads, interOpThreads: o.interOpThreads, executionProvider: o.executionProvider }));
    }
    for (const mode of serverModes) {
      const t = await grpcTarget({ mode, server: children.get(mode)!, requestTimeoutMs: o.requestTimeoutMs });
      targets.set(mode, t);
      if (t.verification) attestedClient = { verifyMs: t.verification.ms, checks: t.verification.checks };
    }
    await preflight(modes, o.workloads, targets);

    // 4. The sweep (or the soak).
    if (o.soak) {
      soak = [];
      const soakModes = modes.filter((m) => m !== 'inproc');
      if (modes.includes('inproc')) skipped.push({ what: 'inproc soak', reason: 'a soak measures the server process; inproc has none' });
      const total = soakModes.length * o.workloads.length;
      let done = 0;
      for (const w of o.workloads) {
        for (const mode of soakModes) {
          const label = `soak ${mode} ${w.name} c=${o.soak.concurrency}`;
          o.onProgress?.({ done, total, cellFraction: 0, label, etaMs: (total - done) * (o.warmupMs + o.soak.durationMs) });
          soak.push(
            await runSoakCell(targets.get(mode)!, children.get(mode)!, mode, w, o.warmupMs, o.soak, (fraction) =>
              o.onProgress?.({ done, total, cellFraction: fraction, label, etaMs: (total - done - fraction) * (o.warmupMs + o.soak!.durationMs) }),
            ),
          );
          done++;
        }
      }
      o.onProgress?.({ done: total, total, cellFraction: 0, label: 'done', etaMs: 0 });
    }
    const cellMs = o.warmupMs + o.durationMs;
    const closedCells: Cell[] = [];
    for (const w of o.soak ? [] : o.workloads) {
      for (const c of o.concurrency) {
        for (let rep = 0; rep < o.reps; rep++) for (const mode of modes) closedCells.push({ workload: w, loop: 'closed', level: c, rep, mode });
      }
    }
    const openLevels = (w: Workload): number[] => {
      if (o.rates === 'auto') {
        const peak = slowestPeak(results, w.name, modes);
        if (peak > 0) return [...new Set(autoFractions.map((f) => Math.max(1, Math.round(peak * f))))];
        if (modes.length) skipped.push({ what: `open loop, ${w.name}`, reason: '--rates auto: a mode completed no request in the closed loop, so there is no peak to take rates from' });
        return [];
      }
      return [...o.rates];
    };
    const openCount = o.rates === 'auto' ? autoFractions.length : o.rates.length;
    const plan = o.soak ? { run: [], skipped: [] } : pairPlan(modes, o.controls === true);
    const pairs = plan.run;
    skipped.push(...plan.skipped);
    // An interleaved window lasts `reps` cells; it counts as that many in the progress.
    const total = closedCells.length + o.workloads.length * openCount * o.reps * modes.length + pairs.length * o.workloads.length * o.concurrency.length * o.reps;
    let done = 0;
    const reps = new Map<string, { cell: Cell; figs: RepFigures[]; maxRssKb?: number }>();
    const runCell = async (cell: Cell): Promise<void> => {
      const label = `${cell.mode} ${cell.workload.name} ${cell.loop === 'closed' ? `c=${cell.level}` : `${cell.level} req/s`} rep ${cell.rep + 1}/${o.reps}`;
      const progress = (fraction: number): void =>
        o.onProgress?.({ done, total, cellFraction: fraction, label, etaMs: (total - done - fraction) * cellMs });
      progress(0);
      const target = targets.get(cell.mode)!;
      const child = children.get(cell.mode);
      const invoke = target.invoker(cell.workload);
      const before: StatsMessage | undefined = await child?.stats();
      // A new server-side timing window as the client's window starts (the figures are read
      // only when the window served a request, so a cell never reports an earlier one's calls).
      const onMeasureStart = (): void => child?.resetTiming();
      const clientBefore = process.cpuUsage();
      let res: WindowResult;
      if (cell.loop === 'closed') {
        res = await runClosedLoop({ invoke, concurrency: cell.level, warmupMs: o.warmupMs, durationMs: o.durationMs, onProgress: progress, onMeasureStart });
      } else {
        res = await runOpenLoop({
          invoke,
          ratePerSec: cell.level,
          warmupMs: o.warmupMs,
          durationMs: o.durationMs,
          seed: o.seed + cell.rep,
          maxInFlight: o.maxInFlight,
          drainMs: Math.min(o.requestTimeoutMs, 5000),
          onProgress: progress,
          onMeasureStart,
        });
      }
      const clientCpu = process.cpuUsage(clientBefore);
      const after: StatsMessage | undefined = await child?.stats();
      const key = `${cell.workload.name}|${cell.loop}|${cell.level}|${cell.mode}`;
      const entry = reps.get(key) ?? { cell, figs: [] };
      entry.figs.push({
        p50Ms: res.latency.p50Ms,
        p90Ms: res.latency.p90Ms,
        p99Ms: res.latency.p99Ms,
        p999Ms: res.latency.p999Ms,
        maxMs: res.latency.maxMs,
        meanMs: res.latency.meanMs,
        count: res.completed,
        throughput: res.throughput,
        errors: res.errorCount,
        errorsByStatus: res.errors,
        // The window plus warm-up: both were served; per-request figures divide by all requests served.
        serverCpuMs: before && after ? (after.cpuUserUs + after.cpuSystemUs - before.cpuUserUs - before.cpuSystemUs) / 1000 : null,
        clientCpuMs: (clientCpu.user + clientCpu.system) / 1000,
        sendLagP99Ms: res.sendLag ? res.sendLag.p99Ms : null,
        ...serverTimingFigures(res.completed > 0 ? after : undefined),
        histogram: res.histogram,
      });
      if (after) entry.maxRssKb = after.maxRssKb;
      reps.set(key, entry);
      done++;
      progress(0);
    };
    const summarise = (keys: string[]): void => {
      for (const key of keys) {
        const { cell, figs, maxRssKb } = reps.get(key)!;
        const med = (pick: (x: RepFigures) => number): number => median(figs.map(pick));
        // CPU per request: the server served warm-up + window; scale by the measured fraction.
        const served = (x: RepFigures): number => x.count * (cellMs / o.durationMs);
        const cpuPerReq = figs.every((x) => x.serverCpuMs !== null) ? med((x) => (served(x) > 0 ? x.serverCpuMs! / served(x) : NaN)) : null;
        const errorsByStatus: Record<string, number> = {};
        for (const x of figs) for (const [k, v] of Object.entries(x.errorsByStatus)) errorsByStatus[k] = (errorsByStatus[k] ?? 0) + v;
        results.push({
          mode: cell.mode,
          model: cell.workload.name,
          loop: cell.loop,
          concurrency: cell.loop === 'closed' ? cell.level : null,
          rate: cell.loop === 'open' ? cell.level : null,
          reps: figs.length,
          p50Ms: med((x) => x.p50Ms),
          p90Ms: med((x) => x.p90Ms),
          p99Ms: med((x) => x.p99Ms),
          p999Ms: med((x) => x.p999Ms),
          maxMs: med((x) => x.maxMs),
          meanMs: med((x) => x.meanMs),
          throughput: med((x) => x.throughput),
          errors: figs.reduce((a, x) => a + x.errors, 0),
          errorsByStatus,
          count: figs.reduce((a, x) => a + x.count, 0),
          serverCpuMsPerRequest: cpuPerReq !== null && Number.isFinite(cpuPerReq) ? cpuPerReq : null,
          serverCpuCores: figs.every((x) => x.serverCpuMs !== null) ? med((x) => x.serverCpuMs! / cellMs) : null,
          serverMaxRssMiB: maxRssKb !== undefined ? maxRssKb / 1024 : null,
          clientCpuMsPerRequest: med((x) => (served(x) > 0 ? x.clientCpuMs / served(x) : NaN)),
          sendLagP99Ms: cell.loop === 'open' ? med((x) => x.sendLagP99Ms ?? NaN) : null,
          serverP50Ms: figs.every((x) => typeof x.serverP50Ms === 'number') ? med((x) => x.serverP50Ms!) : null,
          serverP99Ms: figs.every((x) => typeof x.serverP99Ms === 'number') ? med((x) => x.serverP99Ms!) : null,
          overhead: null,
          perRep: figs,
        });
      }
    };
    for (const cell of closedCells) await runCell(cell);
    summarise([...reps.keys()]);
    for (const w of o.soak ? [] : o.workloads) {
      const levels = openLevels(w);
      const keysBefore = new Set(reps.keys());
      for (const rate of levels) {
        for (let rep = 0; rep < o.reps; rep++) for (const mode of modes) await runCell({ workload: w, loop: 'open', level: rate, rep, mode });
      }
      summarise([...reps.keys()].filter((k) => !keysBefore.has(k)));
    }
    // Paired comparisons, request by request (see runInterleaved and INTERLEAVED_PAIRS).
    for (const [ma, mb] of pairs) {
      const ta = targets.get(ma)!;
      const tb = targets.get(mb)!;
      for (const w of o.workloads) {
        for (const c of o.concurrency) {
          const durationMs = o.durationMs * o.reps;
          const label = `${ma} vs ${mb} interleaved ${w.name} c=${c}`;
          const progress = (fraction: number): void =>
            o.onProgress?.({ done, total, cellFraction: fraction * o.reps, label, etaMs: (total - done - fraction * o.reps) * cellMs });
          progress(0);
          const cpu = async (): Promise<[StatsMessage, StatsMessage]> => Promise.all([children.get(ma)!.stats(), children.get(mb)!.stats()]);
          const before = await cpu();
          const onMeasureStart = (): void => {
            children.get(ma)!.resetTiming();
            children.get(mb)!.resetTiming();
          };
          const r = await runInterleaved({ invokeA: ta.invoker(w), invokeB: tb.invoker(w), concurrency: c, warmupMs: o.warmupMs, durationMs, onMeasureStart, onProgress: progress });
          done += o.reps;
          const after = await cpu();
          // Server CPU covers warm-up and window; scale the counted requests to both.
          const side = (i: 0 | 1, x: WindowResult): InterleavedSide => {
            const served = x.completed * ((o.warmupMs + durationMs) / durationMs);
            const used = after[i].cpuUserUs + after[i].cpuSystemUs - before[i].cpuUserUs - before[i].cpuSystemUs;
            return {
              p50Ms: x.latency.p50Ms,
              p99Ms: x.latency.p99Ms,
              count: x.completed,
              errors: x.errorCount,
              serverCpuUsPerRequest: served > 0 ? used / served : null,
              ...serverTimingFigures(x.completed > 0 ? after[i] : undefined),
            };
          };
          const sa = side(0, r.a);
          const sb = side(1, r.b);
          interleaved.push({
            a: ma,
            b: mb,
            model: w.name,
            concurrency: c,
            durationMs,
            sideA: sa,
            sideB: sb,
            p50DeltaUs: (sb.p50Ms - sa.p50Ms) * 1000,
            p99DeltaUs: (sb.p99Ms - sa.p99Ms) * 1000,
            p50Ratio: sa.p50Ms > 0 ? sb.p50Ms / sa.p50Ms : NaN,
            serverCpuDeltaUs: sa.serverCpuUsPerRequest !== null && sb.serverCpuUsPerRequest !== null ? sb.serverCpuUsPerRequest - sa.serverCpuUsPerRequest : null,
            serverP50DeltaUs: typeof sa.serverP50Ms === 'number' && typeof sb.serverP50Ms === 'number' ? (sb.serverP50Ms - sa.serverP50Ms) * 1000 : null,
          });
        }
      }
    }
    // Overhead ratios against inproc at the same model, loop and level.
    for (let i = 0; i < results.length; i++) {
      const x = results[i]!;
      if (x.mode === 'inproc') continue;
      const base = results.find((b) => b.mode === 'inproc' && b.model === x.model && b.loop === x.loop && b.concurrency === x.concurrency && b.rate === x.rate);
      if (base) results[i] = { ...x, overhead: overheadRatios(x, base) };
    }
    if (!o.soak) o.onProgress?.({ done: total, total, cellFraction: 0, label: 'done', etaMs: 0 });
  } finally {
    for (const t of targets.values()) await t.close().catch(() => undefined);
    await Promise.all([...children.values()].map((c) => c.close().catch(() => undefined)));
  }

  // 5. Other figures, after the sweep so they do not compete with it. A failure here is
  // reported (`failures`) without discarding the sweep.
  const attempt = async <T>(what: string, f: () => Promise<T> | T): Promise<T | null> => {
    try {
      return await f();
    } catch (e) {
      const reason = isCirError(e) ? `${e.code}: ${e.message}` : ((e as Error).message ?? String(e)).split('\n')[0]!;
      failures.push({ what, reason });
      log(`${what} failed: ${reason}`);
      return null;
    }
  };
  if (o.sealMb > 0) sealThroughput = await attempt('seal throughput', () => measureSealThroughput(o.sealMb, o.quick ? 3 : 5));
  if (o.bootModelMb > 0) boot = await attempt('boot figures', () => measureBoot(o, workDir));

  const sizing: BenchReport['sizing'] =
    o.sloP99Ms === undefined
      ? null
      : { sloP99Ms: o.sloP99Ms, targetRps: o.targetRps ?? null, rows: sizingRows(results, o.workloads.map((w) => w.name), modes, o.sloP99Ms, o.targetRps) };

  return {
    schema: REPORT_SCHEMA,
    createdAt: new Date().toISOString(),
    label: o.label ?? null,
    argv: o.argv ?? [],
    wallMs: performance.now() - started,
    machine: { ...machine, loadAvgEnd: os.loadavg() },
    versions: {
      cir: packageVersion(),
      node: process.versions.node,
      v8: process.versions.v8,
      openssl: process.versions.openssl ?? 'unknown',
      'onnxruntime-node': pkgVersion('onnxruntime-node'),
      '@grpc/grpc-js': pkgVersion('@grpc/grpc-js'),
      'hdr-histogram-js': pkgVersion('hdr-histogram-js'),
    },
    settings: {
      quick: o.quick,
      modes: o.modes,
      models: o.workloads.map((w) => w.name),
      concurrency: o.concurrency,
      rates: o.rates,
      autoRateFractions: autoFractions,
      warmupMs: o.warmupMs,
      durationMs: o.durationMs,
      reps: o.reps,
      seed: o.seed,
      controls: o.controls === true,
      serverLogLevel: o.serverLogLevel ?? 'info',
      intraOpThreads: o.intraOpThreads,
      interOpThreads: o.interOpThreads,
      executor: o.executor ?? 'inline',
      workers: o.workers ?? 1,
      idlePollUs: o.idlePollUs ?? 0,
      executionProvider: o.executionProvider,
      requestTimeoutMs: o.requestTimeoutMs,
      maxInFlight: o.maxInFlight,
      sloP99Ms: o.sloP99Ms ?? null,
      targetRps: o.targetRps ?? null,
      soak: o.soak ?? null,
    },
    executionProvider: { requested: o.executionProvider, ...ep },
    workloads: o.workloads.map((w) => ({
      name: w.name,
      description: w.description,
      onnxBytes: w.onnx.length,
      requestBytes: requestBytes(w),
      inputs: w.inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: t.shape })),
      generated: w.generated ?? null,
    })),
    servers,
    attestedClient,
    results,
    ...(interleaved.length > 0 ? { interleaved } : {}),
    ...(modes.includes('grpc') && modes.includes('grpc-controls') ? { controlsCost: controlsCost(results, (o.warmupMs + o.durationMs) / o.durationMs) } : {}),
    sizing,
    boot,
    sealThroughput,
    soak,
    skipped,
    failures,
  };
}

/**
 * The server-side p50 and p99 of a window (bench/server-timing.ts) from the stats read at its
 * end; null without a server or when it recorded no call.
 */
export function serverTimingFigures(st: StatsMessage | undefined): { serverP50Ms: number | null; serverP99Ms: number | null } {
  const t = st?.timing;
  return t && t.count > 0 ? { serverP50Ms: t.p50Ms, serverP99Ms: t.p99Ms } : { serverP50Ms: null, serverP99Ms: null };
}

/** Least-squares slope of y over x (per unit of x); null with fewer than 2 distinct x. */
export function slope(points: readonly { x: number; y: number }[]): number | null {
  const n = points.length;
  if (n < 2) return null;
  const mx = points.reduce((a, p) => a + p.x, 0) / n;
  const my = points.reduce((a, p) => a + p.y, 0) / n;
  let num = 0;
  let den = 0;
  for (const p of points) {
    num += (p.x - mx) * (p.y - my);
    den += (p.x - mx) ** 2;
  }
  return den > 0 ? num / den : null;
}

/**
 * One soak cell: warm-up (not recorded), then a closed loop for `durationMs` while the
 * server's memory is sampled every `sampleMs`. RSS start is taken after the warm-up, so
 * lazy one-time allocations (JIT, first buffers) are not counted as growth.
 */
async function runSoakCell(
  target: Target,
  child: ServerChild,
  mode: Mode,
  w: Workload,
  warmupMs: number,
  s: NonNullable<BenchOptions['soak']>,
  onProgress: (fraction: number) => void,
): Promise<SoakRun> {
  const invoke = target.invoker(w);
  if (warmupMs > 0) await runClosedLoop({ invoke, concurrency: s.concurrency, warmupMs: 0, durationMs: warmupMs });
  let completed = 0;
  const counted: typeof invoke = () => invoke().then((x) => ((completed += 1), x));
  const samples: SoakSample[] = [];
  const t0 = performance.now();
  const sample = async (): Promise<void> => {
    const st = await child.stats();
    samples.push({ tMs: performance.now() - t0, rssBytes: st.rssBytes, heapUsedBytes: st.heapUsedBytes ?? null, externalBytes: st.externalBytes ?? null, completed });
  };
  await sample();
  let sampling = Promise.resolve();
  const timer = setInterval(() => {
    sampling = sampling.then(sample, () => undefined);
  }, Math.max(100, s.sampleMs));
  let res: WindowResult;
  try {
    res = await runClosedLoop({ invoke: counted, concurrency: s.concurrency, warmupMs: 0, durationMs: s.durationMs, onProgress });
  } finally {
    clearInterval(timer);
  }
  await sampling;
  await sample();
  const end = await child.stats();
  const first = samples[0]!;
  const last = samples[samples.length - 1]!;
  const secondHalf = samples.filter((x) => x.tMs >= last.tMs / 2).map((x) => ({ x: x.tMs / 60_000, y: x.rssBytes }));
  return {
    mode,
    model: w.name,
    concurrency: s.concurrency,
    durationMs: s.durationMs,
    completed: res.completed,
    errors: res.errorCount,
    errorsByStatus: res.errors,
    throughput: res.throughput,
    p50Ms: res.latency.p50Ms,
    p99Ms: res.latency.p99Ms,
    maxMs: res.latency.maxMs,
    rssStartBytes: first.rssBytes,
    rssEndBytes: last.rssBytes,
    rssGrowthBytes: last.rssBytes - first.rssBytes,
    rssPeakBytes: end.maxRssKb * 1024,
    rssSlopeBytesPerMin: slope(secondHalf),
    samples,
  };
}

/**
 * Boot figures: a fresh server process with one generated sealed MLP of `bootModelMb` MiB,
 * booted once cold and `warmBoots` more times in the same process.
 */
async function measureBoot(o: BenchOptions, workDir: string): Promise<BootReport> {
  const w = mlpSizeWorkload(o.bootModelMb);
  const file = path.join(workDir, `boot-${w.name}.onnx`);
  await writeFile(file, w.onnx);
  const child = await ServerChild.start(
    {
      simStateDir: o.simStateDir,
      workDir: path.join(workDir, 'boot'),
      insecure: false,
      measurement: BENCH_MEASUREMENT,
      intraOpThreads: o.intraOpThreads,
      interOpThreads: o.interOpThreads,
      ...(o.executor ? { executor: o.executor } : {}),
      ...(o.workers && o.workers > 1 ? { workers: o.workers } : {}),
      logLevel: o.serverLogLevel ?? 'info',
      models: [{ name: w.name, file }],
      extraBoots: o.warmBoots,
    },
    path.join(workDir, 'boot.spec.json'),
  );
  await child.close();
  const [cold, ...warm] = child.ready.boots;
  if (!cold) throw new Error('boot process reported no boot');
  const plaintextBytes = (await readFile(file)).length;
  const gbps = (b: BootFigure): number | null => {
    const ms = stepMs(b, 'decrypt');
    return ms && ms > 0 ? plaintextBytes / 1e9 / (ms / 1000) : null;
  };
  const warmMedian = (pick: (b: BootFigure) => number | null): number | null => {
    const xs = warm.map(pick).filter((x): x is number => x !== null);
    return xs.length ? median(xs) : null;
  };
  return {
    model: w.name,
    plaintextBytes,
    sealedBytes: child.ready.models[0]?.bytes ?? 0,
    processToReadyMs: child.ready.processToReadyMs,
    cold,
    warm,
    attestationAndReleaseMs: { cold: bootSum(cold, ATTEST_STEPS), warm: warmMedian((b) => bootSum(b, ATTEST_STEPS)) },
    decryptGBps: { cold: gbps(cold), warm: warmMedian(gbps) },
    startToReadyMs: { cold: cold.startToReadyMs, warm: warmMedian((b) => b.startToReadyMs) },
  };
}

export { MODES, sessionOptions };
