/**
 * `cir bench`: the serving benchmark (bench/harness.ts). In-process onnxruntime vs the cir
 * server over plaintext gRPC, TLS and the attested path, closed and open loop, with a JSON
 * report (schema cir.bench.report/v1, bench/README.md), a Markdown summary (stdout, and
 * --markdown FILE) and an SVG chart (--svg FILE). Progress goes to stderr on a TTY.
 */
import { access, constants, lstat, mkdir, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { ClientError } from '../client/codes.js';
import { MAX_WORKERS_PER_MODEL } from '../server/config.js';
import { MAX_IDLE_POLL_US } from '../server/idle-poll.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { DEFAULT_AUTO_RATE_FRACTIONS, defaultSimStateDir, runBench, type Progress } from '../bench/harness.js';
import { chartPanels, markdownSummary } from '../bench/report.js';
import { latencyThroughputSvg } from '../bench/svg.js';
import { DEFAULT_MODES, MODES, type Mode } from '../bench/targets.js';
import {
  cnnWorkload,
  convNetWorkload,
  inputSizeWorkload,
  MAX_MLP_MB,
  MLP_10MS,
  mlpSizeWorkload,
  mlpWorkload,
  parseInputSizeName,
  parseInputSpecs,
  userWorkload,
  vadWorkload,
  type InputTensor,
  type Workload,
} from '../bench/workloads.js';

interface BenchFlags {
  quick?: boolean;
  json?: string;
  markdown?: string;
  svg?: string;
  outDir?: string;
  modes?: string;
  models?: string;
  model?: string;
  input: string[];
  dekFile?: string;
  concurrency?: string;
  rates?: string;
  warmup?: string;
  duration?: string;
  reps?: string;
  seed: string;
  ep: 'cpu' | 'cuda';
  executor: 'inline' | 'worker';
  serverIdlePollUs: string;
  workers: string;
  controls?: boolean;
  intraOpThreads: string;
  interOpThreads: string;
  requestTimeoutMs: string;
  maxInFlight: string;
  sloP99Ms?: string;
  targetRps?: string;
  bootModelMb?: string;
  warmBoots?: string;
  sealMb?: string;
  simState?: string;
  label?: string;
  soak?: string;
  soakConcurrency: string;
  soakSample: string;
  progress: boolean;
}

const bad = (detail: string): ClientError => new ClientError('ERR_CLI_BAD_ARGUMENT', { detail });

/** The first value a list holds twice, if any. */
const firstRepeat = <T>(xs: readonly T[]): T | undefined => xs.find((x, i) => xs.indexOf(x) !== i);

function num(name: string, v: string, { min = 0, max = Infinity, integer = false } = {}): number {
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    throw bad(`${name} must be ${integer ? 'an integer' : 'a number'} ${max === Infinity ? `>= ${min}` : `from ${min} to ${max}`}`);
  }
  return n;
}

function list(name: string, v: string, opts: { min?: number; integer?: boolean } = {}): number[] {
  const xs = v.split(',').filter((s) => s.trim() !== '').map((s) => num(name, s.trim(), opts));
  if (xs.length === 0) throw bad(`${name} needs at least one value`);
  // A repeated level would be merged into one result with twice the repetitions.
  const twice = firstRepeat(xs);
  if (twice !== undefined) throw bad(`${name}: ${twice} is given twice`);
  return xs;
}

async function builtinWorkload(name: string): Promise<Workload> {
  if (name === 'vad') return vadWorkload();
  if (name === 'mlp') return mlpWorkload(MLP_10MS);
  if (name === 'cnn') return cnnWorkload();
  if (name === 'convnet') return convNetWorkload(1);
  const m = /^mlp-(\d+)mb$/.exec(name);
  if (m) return mlpSizeWorkload(Number(m[1]));
  const bytes = parseInputSizeName(name);
  if (bytes !== undefined) return inputSizeWorkload(bytes, name);
  throw bad(`unknown model ${JSON.stringify(name)} (vad, mlp, cnn, convnet, mlp-<N>mb, input-<N>b|kb|mb; or --model FILE)`);
}

/**
 * Fails before the run, not after hours of it, when a report file cannot be written: its
 * directory must exist and be writable, and the path must not be a directory.
 */
async function checkWritable(flag: string, file: string): Promise<void> {
  const dir = path.dirname(path.resolve(file));
  try {
    await access(dir, constants.W_OK);
  } catch {
    throw bad(`${flag} ${file}: the directory ${dir} does not exist or is not writable`);
  }
  const st = await stat(file).catch(() => null);
  if (st?.isDirectory()) throw bad(`${flag} ${file}: is a directory`);
}

/** Report paths that mean this process's standard output. */
const STDOUT_PATHS: ReadonlySet<string> = new Set(['-', '/dev/stdout']);

/**
 * A report file: a regular file (or a new one) is replaced atomically, so an interrupted
 * run leaves the previous report or none, never half of one. `-` and /dev/stdout are this
 * process's stdout, written directly (reopening it would fail on a socket, and truncate a
 * file it is redirected to). Anything else that exists and is not a regular file (a pipe,
 * /dev/fd/N from a shell's process substitution) is written in place: renaming over it
 * would replace it.
 */
async function writeReport(file: string, text: string): Promise<void> {
  if (STDOUT_PATHS.has(file)) {
    await new Promise<void>((resolve, reject) => process.stdout.write(text, (e) => (e ? reject(e) : resolve())));
    return;
  }
  const st = await lstat(file).catch(() => null);
  if (st && !st.isFile()) await writeFile(file, text);
  else await writeFileAtomic(file, text, 0o644, { syncDir: false });
}

function progressBar(): (p: Progress) => void {
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < 200 && p.done < p.total) return;
    last = now;
    const frac = p.total ? Math.min(1, (p.done + p.cellFraction) / p.total) : 1;
    const width = 30;
    const filled = Math.round(frac * width);
    const eta = Math.max(0, Math.round(p.etaMs / 1000));
    const line = `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${String(Math.round(frac * 100)).padStart(3)}% ${p.done}/${p.total} ${p.label} ETA ${eta}s`;
    process.stderr.write(`\r${line.slice(0, (process.stderr.columns || 100) - 1).padEnd((process.stderr.columns || 100) - 1)}`);
    if (p.done >= p.total) process.stderr.write('\n');
  };
}

export function registerBenchCommand(program: Command): void {
  program
    .command('bench')
    .description('benchmark serving: in-process onnxruntime vs the cir server over gRPC, TLS and the attested path')
    .option('--quick', 'a short sweep (all modes, vad + cnn, concurrency 1 and 4, 2 s windows): about a minute')
    .option('--json <file>', 'write the JSON report (schema cir.bench.report/v1); - for stdout')
    .option('--markdown <file>', 'write the Markdown summary (also printed on stdout)')
    .option('--svg <file>', 'write the latency-vs-throughput chart')
    .option('--out-dir <dir>', 'write bench.json, bench.md and bench.svg into this directory')
    .option('--modes <list>', `comma-separated modes (${MODES.join(', ')}; default ${DEFAULT_MODES.join(',')}); grpc,grpc-controls measures what the multi-tenant controls cost; inproc,grpc-plain,grpc splits the gRPC overhead into the transport's share and cir's`)
    .option('--models <list>', 'built-in models: vad, mlp (~7.5-9 ms, 128 KiB tensors), cnn (~11-12.5 ms, compute-bound), convnet, mlp-<N>mb, input-<N>b|kb|mb (a request of that size, almost no compute; e.g. input-64b,input-16kb,input-1mb) (default vad,mlp,cnn,convnet)')
    .option('--model <file>', 'your own .onnx (or sealed file with --dek-file); needs --input')
    .option('--input <spec>', 'input of --model as name:dtype:dims[:value], e.g. x:fp32:1x3x224x224 (repeatable)', (v: string, prev: string[]) => [...prev, v], [] as string[])
    .option('--dek-file <file>', '32-byte key of a sealed --model (raw, hex or base64)')
    .option('--concurrency <list>', 'closed-loop concurrency levels (default 1,2,4,8,16,32,64)')
    .option('--rates <list>', `open-loop Poisson rates in req/s, "auto" (${DEFAULT_AUTO_RATE_FRACTIONS.join('/')} of the slowest mode's closed-loop peak, so every mode can carry every rate) or "none" (default auto)`)
    .option('--warmup <seconds>', 'warm-up per cell (default 2)')
    .option('--duration <seconds>', 'measured window per cell (default 10)')
    .option('--reps <n>', 'repetitions per cell; figures are medians (default 3)')
    .option('--seed <n>', 'seed of the arrival schedules and inputs', '1')
    .addOption(new Option('--ep <provider>', 'onnxruntime execution provider').choices(['cpu', 'cuda']).default('cpu'))
    .option('--intra-op-threads <n>', 'onnxruntime intra-op threads, in-process and server (0 = max(1, cores - 1), as the server default)', '1')
    .option('--inter-op-threads <n>', 'onnxruntime inter-op threads (0 = onnxruntime decides)', '0')
    .addOption(new Option('--executor <kind>', "the servers' executor: inline (onnxruntime on the event loop) or worker (a worker thread per model, gRPC I/O overlapping compute)").choices(['inline', 'worker']).default('inline'))
    .option('--workers <n>', `the servers' workers: sessions per model, each in its own worker thread, so n requests of a model run at once (1 to ${MAX_WORKERS_PER_MODEL}; more than 1 needs --executor worker)`, '1')
    .option('--server-idle-poll-us <us>', `the servers' idlePollUs: keep the event loop polling this long after each call that leaves a server idle, 0 to ${MAX_IDLE_POLL_US} (0 = off, the server default)`, '0')
    .option('--controls', 'run the server modes with the multi-tenant controls on (API key on every call, per-key and per-tenant limits set never to refuse): compare with a run without it for their cost')
    .option('--request-timeout-ms <ms>', 'gRPC deadline per request', '30000')
    .option('--max-in-flight <n>', 'open loop: most outstanding requests', '1024')
    .option('--slo-p99-ms <ms>', 'size against this p99 SLO: highest sustained req/s per mode')
    .option('--target-rps <r>', 'with --slo-p99-ms: servers needed for this many req/s')
    .option('--boot-model-mb <n>', 'boot figures with a sealed generated MLP of N MiB; 0 skips (default 100)')
    .option('--warm-boots <n>', 'warm boots after the cold one (default 2; quick 1)')
    .option('--seal-mb <n>', 'sealed-model seal/open throughput over N MiB; 0 skips (default 64; quick 32)')
    .option('--sim-state <dir>', 'shared simulated-TEE state (created once)')
    .option('--label <text>', 'a label for this machine/run (e.g. "cc-on"), kept in the report')
    .option('--soak <seconds>', 'soak instead of the sweep: closed loop at --soak-concurrency for this long per server mode and model, server RSS sampled (defaults: --modes grpc, --models mlp, 5 s warm-up, no boot/seal figures)')
    .option('--soak-concurrency <n>', 'outstanding requests during the soak (saturation)', '16')
    .option('--soak-sample <seconds>', 'server memory sampling interval during the soak', '5')
    .option('--no-progress', 'no progress bar')
    .action(async (f: BenchFlags) => {
      const q = !!f.quick;
      const soakS = f.soak !== undefined ? num('--soak', f.soak, { min: 1 }) : undefined;
      const modes = (f.modes ? f.modes.split(',').map((s) => s.trim()) : soakS !== undefined ? ['grpc'] : [...DEFAULT_MODES]) as Mode[];
      for (const m of modes) if (!MODES.includes(m)) throw bad(`unknown mode ${JSON.stringify(m)} (${MODES.join(', ')})`);
      const twice = firstRepeat(modes);
      if (twice) throw bad(`mode ${JSON.stringify(twice)} is given twice in --modes`);
      if (f.input.length > 0 && !f.model) throw bad('--input needs --model');
      const seed = num('--seed', f.seed, { integer: true });
      const workloads: Workload[] = [];
      const names = f.models
        ? f.models.split(',').map((s) => s.trim()).filter(Boolean)
        : f.model
          ? []
          : soakS !== undefined
            ? ['mlp']
            : q
              ? ['vad', 'cnn']
              : ['vad', 'mlp', 'cnn', 'convnet'];
      for (const n of names) workloads.push(await builtinWorkload(n));
      if (f.model) {
        // Both throw typed errors (ERR_CLI_BAD_ARGUMENT, ERR_CLI_FILE_UNREADABLE) that name the flag.
        const inputs: InputTensor[] = parseInputSpecs(f.input, seed);
        workloads.push(await userWorkload(f.model, inputs, f.dekFile));
      }
      if (new Set(workloads.map((w) => w.name)).size !== workloads.length) throw bad('two models have the same name');
      const rates = f.rates === undefined ? (q ? [] : 'auto') : f.rates === 'auto' ? 'auto' : f.rates === 'none' ? [] : list('--rates', f.rates, { min: 0.001 });
      const sloP99Ms = f.sloP99Ms !== undefined ? num('--slo-p99-ms', f.sloP99Ms, { min: 0.001 }) : undefined;
      const targetRps = f.targetRps !== undefined ? num('--target-rps', f.targetRps, { min: 0 }) : undefined;
      if (targetRps !== undefined && sloP99Ms === undefined) throw bad('--target-rps needs --slo-p99-ms');
      const workers = num('--workers', f.workers, { min: 1, max: MAX_WORKERS_PER_MODEL, integer: true });
      if (workers > 1 && f.executor !== 'worker') throw bad('--workers above 1 needs --executor worker (inline sessions all run on the event loop)');
      const bootModelMb = num('--boot-model-mb', f.bootModelMb ?? (soakS !== undefined ? '0' : '100'), { integer: true });
      // Checked now: the boot figures come after the sweep.
      if (bootModelMb > MAX_MLP_MB) throw bad(`--boot-model-mb must be at most ${MAX_MLP_MB} (onnxruntime reads models below 2 GiB)`);
      if (f.outDir) {
        await mkdir(f.outDir, { recursive: true });
        await checkWritable('--out-dir', path.join(f.outDir, 'bench.json'));
      }
      for (const [flag, file] of [['--json', f.json], ['--markdown', f.markdown], ['--svg', f.svg]] as const) if (file && !STDOUT_PATHS.has(file)) await checkWritable(flag, file);
      const showProgress = f.progress && process.stderr.isTTY === true;
      const note = (line: string): void => void process.stderr.write(`${showProgress ? '\r\x1b[K' : ''}cir bench: ${line}\n`);

      const report = await runBench({
        modes,
        workloads,
        concurrency: list('--concurrency', f.concurrency ?? (q ? '1,4' : '1,2,4,8,16,32,64'), { min: 1, integer: true }),
        rates,
        warmupMs: num('--warmup', f.warmup ?? (soakS !== undefined ? '5' : q ? '0.5' : '2')) * 1000,
        durationMs: num('--duration', f.duration ?? (q ? '2' : '10'), { min: 0.1 }) * 1000,
        reps: num('--reps', f.reps ?? (q ? '1' : '3'), { min: 1, integer: true }),
        seed,
        intraOpThreads: num('--intra-op-threads', f.intraOpThreads, { integer: true }),
        interOpThreads: num('--inter-op-threads', f.interOpThreads, { integer: true }),
        executor: f.executor,
        ...(workers > 1 ? { workers } : {}),
        idlePollUs: num('--server-idle-poll-us', f.serverIdlePollUs, { min: 0, max: MAX_IDLE_POLL_US, integer: true }),
        executionProvider: f.ep,
        ...(f.controls ? { controls: true } : {}),
        serverLogLevel: (program.opts() as { logLevel?: string }).logLevel ?? 'info',
        requestTimeoutMs: num('--request-timeout-ms', f.requestTimeoutMs, { min: 1, integer: true }),
        maxInFlight: num('--max-in-flight', f.maxInFlight, { min: 1, integer: true }),
        ...(sloP99Ms !== undefined ? { sloP99Ms } : {}),
        ...(targetRps !== undefined ? { targetRps } : {}),
        bootModelMb,
        warmBoots: num('--warm-boots', f.warmBoots ?? (q ? '1' : '2'), { integer: true }),
        sealMb: num('--seal-mb', f.sealMb ?? (soakS !== undefined ? '0' : q ? '32' : '64'), { integer: true }),
        ...(soakS !== undefined
          ? {
              soak: {
                durationMs: soakS * 1000,
                concurrency: num('--soak-concurrency', f.soakConcurrency, { min: 1, integer: true }),
                sampleMs: num('--soak-sample', f.soakSample, { min: 0.1 }) * 1000,
              },
            }
          : {}),
        simStateDir: f.simState ?? defaultSimStateDir(),
        quick: q,
        ...(f.label !== undefined ? { label: f.label } : {}),
        argv: process.argv.slice(2),
        ...(showProgress ? { onProgress: progressBar() } : {}),
        log: note,
      });

      const md = markdownSummary(report);
      const svg = latencyThroughputSvg(chartPanels(report), { title: `cir bench${report.label ? ` (${report.label})` : ''}: p99 latency vs throughput` });
      const json = `${JSON.stringify(report, null, 2)}\n`;
      const outputs: [string | undefined, string][] = [
        [f.json, json],
        [f.markdown, md],
        [f.svg, svg],
      ];
      if (f.outDir) {
        outputs.push([path.join(f.outDir, 'bench.json'), json], [path.join(f.outDir, 'bench.md'), md], [path.join(f.outDir, 'bench.svg'), svg]);
      }
      for (const [file, text] of outputs) if (file) await writeReport(file, text);
      // The summary goes to stdout too, unless a report already did (it would not parse).
      if (!outputs.some(([file]) => file && STDOUT_PATHS.has(file))) process.stdout.write(md);
      const errors =
        report.results.reduce((a, x) => a + x.errors, 0) +
        (report.soak ?? []).reduce((a, x) => a + x.errors, 0) +
        (report.interleaved ?? []).reduce((a, x) => a + x.sideA.errors + x.sideB.errors, 0);
      if (errors > 0) note(`${errors} request(s) failed; see errorsByStatus in the report`);
      // Exit 1 when the run is not clean: a failed request, a failed figure, or no such execution provider.
      process.exitCode = report.executionProvider.available && errors === 0 && !report.failures?.length ? 0 : 1;
    });
}
