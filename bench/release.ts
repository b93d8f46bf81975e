/**
 * Key-release round trip benchmark: the full challenge -> attest -> release path of the key
 * broker with simulated SEV-SNP evidence, over loopback HTTP, the broker in a child process
 * (the built CLI, `cir broker --config ...`), the load generator in this one.
 *
 *   npm run bench:release -- [--concurrency 1,4,16,64] [--duration 10] [--warmup 2]
 *                            [--broker-warmup 15]
 *                            [--json FILE] [--profile DIR] [--log-level info] [--sim-state DIR]
 *
 * Setup, as an operator would do it: a simulated TEE (state reused from the `cir bench`
 * location), `cir broker keys create` (offline, on the state directory) with a release policy
 * naming the simulated measurement and a DEK this process knows, then the broker with the
 * simulated TEE allowed and rate limits raised (every virtual client shares 127.0.0.1).
 * One round trip is checked end to end first (the released DEK, HPKE-opened, equals the one
 * registered). Then the broker is warmed up as a long-running one is (`--broker-warmup`
 * seconds of round trips at concurrency 4, not recorded: a freshly started broker's
 * JavaScript is not yet optimized, and its first seconds at concurrency 1 are ~20 % slower).
 * Then, per concurrency level, N virtual clients (each with its own HPKE key,
 * born once, as a TEE's is per boot) run round trips back to back: a warm-up, then a fixed
 * window recorded in an HdrHistogram. Latency is the whole round trip, evidence minting
 * included (it is the TEE's share of a real round trip; its mean is reported separately).
 *
 * Reports p50/p90/p99, releases/s, failures by step and status (zero expected), and CPU per
 * release of the broker (from /proc) and of the load generator. With `--profile DIR` the
 * broker runs under `--cpu-prof` and its profile is summarised: CPU per component and the
 * costliest functions, per release. Asserts nothing; figures depend on the machine.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { Agent } from 'node:http';
import { createServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { constantTimeEqual } from '../common/bytes.js';
import { firstJsonLine } from './child-entry.js';
import { Attester, simProvider, type LevelResult } from './release-client.js';
import { summarizeProfile, type CpuProfile, type ProfileSummary } from './release-profile.js';
import { LatencyRecorder } from './stats.js';

const KEY_ID = 'bench-release';
const MEASUREMENT = Buffer.alloc(48, 0x42);
const TARGET_RPS = 300;
const TARGET_P50_MS = 10;
const BROKER_WARMUP_CONCURRENCY = 4;

interface Options {
  readonly concurrency: readonly number[];
  readonly durationS: number;
  readonly warmupS: number;
  /** Unrecorded round trips at concurrency 4 before the first level (JIT warm-up). */
  readonly brokerWarmupS: number;
  readonly json?: string;
  readonly profile?: string;
  readonly logLevel: string;
  readonly simState: string;
  readonly metrics: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      concurrency: { type: 'string', default: '1,4,16,64' },
      duration: { type: 'string', default: '10' },
      warmup: { type: 'string', default: '2' },
      'broker-warmup': { type: 'string', default: '15' },
      json: { type: 'string' },
      profile: { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      'sim-state': { type: 'string' },
      metrics: { type: 'boolean', default: false },
    },
  });
  const concurrency = values.concurrency!.split(',').map((s) => Number(s.trim()));
  if (concurrency.some((c) => !Number.isInteger(c) || c < 1 || c > 1024)) throw new Error('--concurrency: integers 1..1024');
  const durationS = Number(values.duration);
  const warmupS = Number(values.warmup);
  const brokerWarmupS = Number(values['broker-warmup']);
  if (!(durationS > 0) || !(warmupS >= 0) || !(brokerWarmupS >= 0)) throw new Error('--duration > 0, --warmup >= 0, --broker-warmup >= 0');
  const uid = typeof process.getuid === 'function' ? process.getuid() : 0;
  return {
    concurrency,
    durationS,
    warmupS,
    brokerWarmupS,
    ...(values.json ? { json: values.json } : {}),
    ...(values.profile ? { profile: path.resolve(values.profile) } : {}),
    logLevel: values['log-level']!,
    simState: values['sim-state'] ?? path.join(os.tmpdir(), `cir-bench-sim-${uid}`),
    metrics: values.metrics!,
  };
}

const distRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cliMain = path.join(distRoot, 'cli', 'main.js');

function runCli(args: string[], env: NodeJS.ProcessEnv): string {
  const r = spawnSync(process.execPath, [cliMain, ...args], { env, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`cir ${args.slice(0, 3).join(' ')} failed (${r.status}): ${r.stderr.slice(-2000)}`);
  return r.stdout;
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

interface Broker {
  readonly url: URL;
  readonly child: ChildProcess;
  readonly metricsUrl?: string;
  stop(): Promise<void>;
}

async function startBrokerProcess(dir: string, arkFile: string, o: Options, env: NodeJS.ProcessEnv): Promise<Broker> {
  const big = { perIp: 10_000_000, perIdentity: 10_000_000 };
  const metricsPort = o.metrics ? await freePort() : undefined;
  const config = {
    listen: { host: '127.0.0.1', port: 0 },
    stateDir: path.join(dir, 'broker'),
    attestation: { simulatedRootFile: arkFile, allowSimulated: true },
    // Every virtual client is 127.0.0.1: the production per-address bounds (16 outstanding
    // challenges, the rate limits) would refuse the load; raised here, and only here.
    maxOutstandingChallengesPerClient: 100_000,
    limits: { rate: { attest: big, release: big, admin: big, other: big }, verification: { maxConcurrent: 8, maxQueued: 4096 } },
    ...(metricsPort !== undefined ? { metrics: { host: '127.0.0.1', port: metricsPort } } : {}),
  };
  const configFile = path.join(dir, 'broker.json');
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const nodeArgs = o.profile ? ['--cpu-prof', `--cpu-prof-dir=${o.profile}`] : [];
  const logFile = path.join(dir, 'broker.log');
  const logFd = openSync(logFile, 'w');
  const child = spawn(process.execPath, [...nodeArgs, cliMain, '--log-level', o.logLevel, 'broker', '--config', configFile], {
    env,
    stdio: ['ignore', 'pipe', logFd],
  });
  closeSync(logFd);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const first = await firstJsonLine(child, 'broker', () => `; log: ${readFileSync(logFile, 'utf8').slice(-2000)}`);
  if (typeof first['broker'] !== 'string') throw new Error('broker: its first line names no URL');
  const url = new URL(first['broker']);
  return {
    url,
    child,
    ...(metricsPort !== undefined ? { metricsUrl: `http://127.0.0.1:${metricsPort}/metrics` } : {}),
    async stop() {
      child.kill('SIGINT');
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

const CLK_TCK = 100;
/** CPU time (user + system) of `pid` in ms, from /proc; undefined where there is no /proc. */
function procCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
  } catch {
    return undefined;
  }
}

async function runLevel(concurrency: number, o: Options, broker: Broker, sim: SimulatedSnp): Promise<LevelResult & { roundTrips: number }> {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency, maxFreeSockets: concurrency });
  const provider = simProvider(sim, MEASUREMENT);
  const attesters = await Promise.all(Array.from({ length: concurrency }, () => Attester.create({ agent, base: broker.url, keyId: KEY_ID, provider })));
  const hist = new LatencyRecorder();
  const errors: Record<string, number> = {};
  let mintMs = 0;
  let mints = 0;
  let roundTrips = 0;
  let recording = false;
  let stop = false;
  let released = 0;
  const loop = async (a: Attester) => {
    while (!stop) {
      const t0 = performance.now();
      const r = await a.roundTrip();
      const ms = performance.now() - t0;
      roundTrips++;
      mintMs += r.mintMs;
      mints++;
      if (r.ok) {
        if (recording) {
          hist.recordMs(ms);
          released++;
        }
      } else {
        const k = `${r.step}:${r.status}`;
        errors[k] = (errors[k] ?? 0) + 1;
      }
    }
  };
  const loops = attesters.map(loop);
  await new Promise((r) => setTimeout(r, o.warmupS * 1000));
  const cpu0 = process.cpuUsage();
  const b0 = procCpuMs(broker.child.pid);
  const t0 = performance.now();
  recording = true;
  await new Promise((r) => setTimeout(r, o.durationS * 1000));
  recording = false;
  const elapsedS = (performance.now() - t0) / 1000;
  const cpu1 = process.cpuUsage(cpu0);
  const b1 = procCpuMs(broker.child.pid);
  stop = true;
  await Promise.all(loops);
  agent.destroy();
  const s = hist.summary();
  return {
    concurrency,
    durationS: round(elapsedS, 2),
    releases: released,
    releasesPerSecond: round(released / elapsedS, 1),
    latencyMs: { p50: round(s.p50Ms, 2), p90: round(s.p90Ms, 2), p99: round(s.p99Ms, 2), max: round(s.maxMs, 2), mean: round(s.meanMs, 2) },
    errors,
    mintMeanMs: round(mints ? mintMs / mints : 0, 3),
    clientCpuMsPerRelease: round(released ? (cpu1.user + cpu1.system) / 1000 / released : 0, 3),
    brokerCpuMsPerRelease: b0 !== undefined && b1 !== undefined && released ? round((b1 - b0) / released, 3) : null,
    roundTrips,
  };
}

function round(x: number, d: number): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

function table(rows: readonly LevelResult[]): string {
  const head = ['conc', 'releases/s', 'p50 ms', 'p90 ms', 'p99 ms', 'max ms', 'errors', 'mint ms', 'broker CPU ms/rel', 'client CPU ms/rel'];
  const lines = rows.map((r) => [
    String(r.concurrency),
    r.releasesPerSecond.toFixed(1),
    r.latencyMs.p50.toFixed(2),
    r.latencyMs.p90.toFixed(2),
    r.latencyMs.p99.toFixed(2),
    r.latencyMs.max.toFixed(2),
    String(Object.values(r.errors).reduce((a, b) => a + b, 0)),
    r.mintMeanMs.toFixed(3),
    r.brokerCpuMsPerRelease === null ? '-' : r.brokerCpuMsPerRelease.toFixed(2),
    r.clientCpuMsPerRelease.toFixed(2),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...lines.map((l) => l[i]!.length)));
  const fmt = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  return [fmt(head), ...lines.map(fmt)].join('\n');
}

function profileReport(s: ProfileSummary, releases: number): string {
  const busy = s.totalMs - s.idleMs;
  const per = (ms: number) => (releases ? (ms / releases).toFixed(3) : '-');
  const out = [`broker CPU profile (main thread, the event loop), load phase only: ${busy.toFixed(0)} ms busy of ${s.totalMs.toFixed(0)} ms sampled, ${releases} round trips (ms per release in the last column)`];
  out.push('  by component:');
  for (const c of s.components.slice(0, 16)) out.push(`    ${((100 * c.ms) / busy).toFixed(1).padStart(5)}%  ${c.name.padEnd(44)} ${per(c.ms)}`);
  out.push('  cir functions, inclusive:');
  for (const f of s.inclusive.slice(0, 15)) out.push(`    ${((100 * f.ms) / busy).toFixed(1).padStart(5)}%  ${f.fn.padEnd(70)} ${per(f.ms)}`);
  out.push('  self time:');
  for (const f of s.self.slice(0, 15)) out.push(`    ${((100 * f.ms) / busy).toFixed(1).padStart(5)}%  ${f.fn.padEnd(70)} ${per(f.ms)}`);
  return out.join('\n');
}

async function main(): Promise<void> {
  const o = parseOptions(process.argv.slice(2));
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'cir-bench-release-'));
  let broker: Broker | undefined;
  try {
    const t0 = performance.now();
    const sim = await SimulatedSnp.open(o.simState);
    if (performance.now() - t0 > 1000) log(`created the simulated TEE state in ${o.simState} (reused next time)`);
    const arkFile = path.join(dir, 'sim-ark.pem');
    await writeFile(arkFile, sim.arkPem);
    const env: NodeJS.ProcessEnv = { ...process.env, NODE_ENV: 'development' };
    delete env.CIR_KMS_ADMIN_TOKEN;
    delete env.CIR_KMS_MASTER_KEY;
    // The key, created offline on the state directory as an operator would, under a DEK we know.
    const dek = randomBytes(32);
    const dekFile = path.join(dir, 'dek.b64');
    await writeFile(dekFile, dek.toString('base64url'), { mode: 0o600 });
    const policyFile = path.join(dir, 'policy.json');
    await writeFile(policyFile, JSON.stringify({ allowSimulated: true, measurements: [MEASUREMENT.toString('hex')] }));
    runCli(['broker', 'keys', 'create', '--state-dir', path.join(dir, 'broker'), '--key-id', KEY_ID, '--policy', policyFile, '--dek-file', dekFile], env);
    await rm(dekFile);
    if (o.profile) await mkdir(o.profile, { recursive: true });
    broker = await startBrokerProcess(dir, arkFile, o, env);
    log(`broker (pid ${broker.child.pid}) at ${broker.url.href}, log level ${o.logLevel}${o.profile ? `, profiling into ${o.profile}` : ''}`);

    // One checked round trip: the released DEK is the registered one.
    const agent = new Agent({ keepAlive: true });
    const probe = await (await Attester.create({ agent, base: broker.url, keyId: KEY_ID, provider: simProvider(sim, MEASUREMENT) })).roundTrip(true);
    agent.destroy();
    if (!probe.ok) throw new Error(`check round trip failed at ${probe.step}: HTTP ${probe.status}`);
    if (!probe.dek || !constantTimeEqual(probe.dek, dek)) throw new Error('check round trip: the released DEK is not the registered one');
    log('check round trip: released DEK matches the registered one');

    let brokerWarmup: { readonly seconds: number; readonly releases: number; readonly errors: Readonly<Record<string, number>> } | undefined;
    if (o.brokerWarmupS > 0) {
      log(`broker warm-up: ${o.brokerWarmupS}s at concurrency ${BROKER_WARMUP_CONCURRENCY}, not recorded`);
      const w = await runLevel(BROKER_WARMUP_CONCURRENCY, { ...o, warmupS: 0, durationS: o.brokerWarmupS }, broker, sim);
      brokerWarmup = { seconds: o.brokerWarmupS, releases: w.releases, errors: w.errors };
      const failed = Object.values(w.errors).reduce((a, b) => a + b, 0);
      log(`broker warm-up: ${w.releases} releases, ${failed} errors${failed ? ` ${JSON.stringify(w.errors)}` : ''}`);
    }
    const levels: (LevelResult & { roundTrips: number })[] = [];
    // Other work on the machine skews every figure on a small VM: record how busy it was.
    const loadAvgStart = os.loadavg().map((x) => round(x, 2));
    // The profile counts only the load (monotonic clock, as V8's profiler uses on Linux).
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    for (const c of o.concurrency) {
      log(`concurrency ${c}: ${o.warmupS}s warm-up, ${o.durationS}s measured`);
      levels.push(await runLevel(c, o, broker, sim));
    }
    const toUs = Number(process.hrtime.bigint() / 1000n);
    const loadAvgEnd = os.loadavg().map((x) => round(x, 2));
    let metricsText: string | undefined;
    if (broker.metricsUrl) metricsText = await (await fetch(broker.metricsUrl)).text();
    await broker.stop();
    const stoppedBroker = broker;
    broker = undefined;

    let profile: ProfileSummary | undefined;
    /** Busy ms of each of the broker's worker threads (the HPKE sealer), load phase only. */
    const workerBusyMs: number[] = [];
    if (o.profile) {
      // Node names profiles CPU.<date>.<time>.<pid>.<thread id>.<seq>.cpuprofile; thread 0 is
      // the main thread (the event loop), others are worker threads.
      const files = (await readdir(o.profile)).filter((f) => f.endsWith('.cpuprofile'));
      const pidFiles = files.filter((f) => f.includes(`.${stoppedBroker.child.pid}.`));
      const main = pidFiles.filter((f) => f.includes(`.${stoppedBroker.child.pid}.0.`)).sort().at(-1) ?? (pidFiles.length ? pidFiles : files).sort().at(-1);
      const load = async (f: string) => summarizeProfile(JSON.parse(await readFile(path.join(o.profile!, f), 'utf8')) as CpuProfile, 25, { fromUs, toUs });
      if (main) profile = await load(main);
      for (const f of pidFiles.filter((x) => x !== main)) {
        const w = await load(f);
        workerBusyMs.push(w.totalMs - w.idleMs);
      }
    }

    const rows = levels.map(({ roundTrips: _r, ...l }) => l);
    process.stdout.write(`\nKey release round trip (challenge -> attest -> release), simulated SEV-SNP, loopback HTTP, ${os.cpus().length} CPUs\n`);
    process.stdout.write(`${table(rows)}\n`);
    process.stdout.write(`load average (1/5/15 min): ${loadAvgStart.join(' ')} at start, ${loadAvgEnd.join(' ')} at end\n`);
    const best = rows.reduce((a, b) => (b.releasesPerSecond > a.releasesPerSecond ? b : a), rows[0]!);
    const c1 = rows.find((r) => r.concurrency === 1);
    process.stdout.write(
      `targets: >= ${TARGET_RPS} releases/s (best ${best.releasesPerSecond} at concurrency ${best.concurrency}); ` +
        `p50 <= ${TARGET_P50_MS} ms (${c1 ? `${c1.latencyMs.p50} ms at concurrency 1` : 'concurrency 1 not run'})\n`,
    );
    const totalRoundTrips = levels.reduce((a, l) => a + l.roundTrips, 0);
    if (profile) process.stdout.write(`\n${profileReport(profile, totalRoundTrips)}\n`);
    if (workerBusyMs.length) {
      const per = workerBusyMs.map((ms) => (totalRoundTrips ? (ms / totalRoundTrips).toFixed(3) : '-'));
      process.stdout.write(`broker worker threads (HPKE sealer), busy ms per release: ${per.join(', ')}\n`);
    }
    if (metricsText) {
      const decisions = metricsText.split('\n').filter((l) => l.startsWith('cir_broker_decisions_total{'));
      process.stdout.write(`\nbroker metrics (decisions):\n${decisions.map((l) => `  ${l}`).join('\n')}\n`);
    }
    if (o.json) {
      const report = {
        benchmark: 'kms-broker release round trip',
        date: new Date().toISOString(),
        machine: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? null, node: process.version, platform: process.platform, loadAvgStart, loadAvgEnd },
        options: { concurrency: o.concurrency, durationS: o.durationS, warmupS: o.warmupS, brokerWarmupS: o.brokerWarmupS, logLevel: o.logLevel, profile: o.profile !== undefined, metrics: o.metrics },
        targets: { releasesPerSecond: TARGET_RPS, p50Ms: TARGET_P50_MS },
        ...(brokerWarmup ? { brokerWarmup } : {}),
        levels: rows,
        ...(profile ? { profile: { roundTrips: totalRoundTrips, ...profile } } : {}),
      };
      await writeFile(o.json, `${JSON.stringify(report, null, 2)}\n`);
      log(`wrote ${o.json}`);
    }
  } finally {
    await broker?.stop().catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench:release failed: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  },
);
