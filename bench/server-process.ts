/**
 * The benchmark's server process: builds a whole cir stack in THIS process (simulated
 * TEE, key broker on loopback, sealed models registered with a release policy, the cir
 * server), waits until the server is ready, and then talks to the harness over stdio:
 *
 *   stdout line 1   {"type":"ready", port, certPem, arkPem, measurement, models, boots, processToReadyMs}
 *   stdin  line     {"cmd":"stats"}  -> stdout {"type":"stats", cpuUserUs, cpuSystemUs, maxRssKb, rssBytes, timing}
 *   stdin  line     {"cmd":"timing-reset"}  (no reply) starts a new server-side timing window
 *   stdin  EOF      stop the server and the broker process, exit 0
 *
 * Started by bench/harness.ts as `node dist/bench/server-process.js SPEC_FILE` where
 * SPEC_FILE holds a ServerSpec (JSON). Logs (pino): see benchLogDestination. Failures print
 * {"type":"error", message} on stdout and exit 1. A spec with `plain` starts
 * bench/plain-server.ts instead of cir (the `grpc-plain` mode), with the same protocol.
 *
 * The broker runs in a process of its own (bench/broker-child.ts), as it does when deployed:
 * the server process holds only the server, so its CPU, memory and garbage collection are
 * the same in every server mode, and the broker's lease renewals do not run on the server's
 * event loop. Its boot-time work is part of the boot figures. The simulated TEE's state
 * (RSA-4096 keys, ~10 s to generate) is shared across processes and runs through
 * `simStateDir`.
 */
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { sealModel, readSealedHeader } from '../common/seal.js';
import { pino, type DestinationStream } from 'pino';
import { createLogger } from '../common/logger.js';
import { ROUTES, BROKER_JWKS_FILE } from '../kms-broker/protocol.js';
import { buildServer, type CirServer } from '../server/app.js';
import { loadServiceDefinitions } from '../server/proto.js';
import { DEFAULT_MAX_CONCURRENT_INFERS, loadServerConfig } from '../server/config.js';
import { sessionsIn } from '../server/session-pool.js';
import type { BrokerChildReady } from './broker-child.js';
import { firstJsonLine, runChild, send } from './child-entry.js';
import { MAX_REQUEST_BYTES, readDekFile } from './workloads.js';
import { issueKey } from '../server/tenancy/key-admin.js';
import { startPlainServer } from './plain-server.js';
import { createServerTiming, type ServerTiming } from './server-timing.js';
import type { LatencySummary } from './stats.js';

export interface ServerSpecModel {
  readonly name: string;
  /** Plain ONNX file; sealed by this process under a fresh key unless `plaintext`. */
  readonly file: string;
  /** Serve the plain file (allowPlaintextModels). */
  readonly plaintext?: boolean;
  /** `file` is already sealed under the key in this file (raw/hex/base64); registered as is. */
  readonly dekFile?: string;
}

export interface ServerSpec {
  readonly simStateDir: string;
  /** Per-process directory: broker state and sealed model files. */
  readonly workDir: string;
  readonly insecure: boolean;
  /** 96 hex chars: the simulated launch measurement, allowed by the release policy. */
  readonly measurement: string;
  readonly models: readonly ServerSpecModel[];
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  /** The server's `executor` (server/config.ts); the server's default when absent. */
  readonly executor?: 'inline' | 'worker';
  /** The server's `idlePollUs` (server/idle-poll.ts); the server's default (0, off) when absent. */
  readonly idlePollUs?: number;
  /** The server's `workers` (sessions per model, worker executor only); the server's default (1) when absent. */
  readonly workers?: number;
  readonly maxConcurrentInfers?: number;
  /** Further boots of a second server with the same config after the first (warm figures). */
  readonly extraBoots?: number;
  /**
   * The cir server's log level (default info, as `cir serve`): at info the tenancy layer
   * writes its access-log line per call (`observability.accessLog`, default `all`), so the
   * bench pays what a deployed server pays. See benchLogDestination for where lines go.
   */
  readonly logLevel?: string;
  /**
   * Run the multi-tenant controls (issue 7): an API-key store with one key, every per-key
   * and per-tenant limit configured (set high enough never to refuse the bench), so the
   * figures measure their cost, not their refusals. Off: `auth: { mode: 'none' }`.
   */
  readonly controls?: boolean;
  /**
   * Serve the models with bench/plain-server.ts instead of cir (the `grpc-plain` mode): no
   * simulated TEE, broker or controls. Every model must be `plaintext`.
   */
  readonly plain?: boolean;
}

export interface BootFigure {
  /** From server.start() to ready: TLS key, HPKE key, bind, challenge..load. */
  readonly startToReadyMs: number;
  readonly steps: readonly { readonly name: string; readonly ms: number; readonly ok: boolean }[];
}

export interface ReadyMessage {
  readonly type: 'ready';
  readonly port: number;
  readonly certPem: string | null;
  readonly arkPem: string;
  readonly measurement: string;
  /** `sessions`: how many sessions serve the model, as the server built them (server/config.ts `workers`). */
  readonly models: readonly { readonly name: string; readonly sealed: boolean; readonly bytes: number; readonly sessions: number }[];
  /** boots[0] is the cold boot (first in a fresh process); the rest are warm. */
  readonly boots: readonly BootFigure[];
  /** With `controls`: the bearer token of the bench's API key (a throwaway key for this process). */
  readonly apiKey?: string;
  /** From this process's start to the first server being ready (includes sealing and broker start). */
  readonly processToReadyMs: number;
}

export interface StatsMessage {
  readonly type: 'stats';
  readonly cpuUserUs: number;
  readonly cpuSystemUs: number;
  readonly maxRssKb: number;
  readonly rssBytes: number;
  readonly heapUsedBytes?: number;
  readonly externalBytes?: number;
  /**
   * Server-side time of the ModelInfer calls that started since the last `timing-reset`
   * (bench/server-timing.ts): from the call's arrival in grpc-js to its response handed to
   * HTTP/2.
   */
  readonly timing?: LatencySummary;
  /** Log lines the cir server process has written since it started, every level (absent for grpc-plain, which logs nothing). */
  readonly logLines?: number;
}

/** Starts bench/broker-child.js and waits for its URL; `stop` closes its stdin and waits for it to exit. */
async function startBrokerChild(configFile: string, env: NodeJS.ProcessEnv): Promise<{ url: string; stop(): Promise<void> }> {
  const entry = path.join(path.dirname(fileURLToPath(import.meta.url)), 'broker-child.js');
  const child = spawn(process.execPath, [entry, configFile], { env, stdio: ['pipe', 'pipe', 'inherit'] });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const msg = await firstJsonLine(child, 'broker process').catch((e: unknown) => {
    child.kill('SIGKILL');
    throw e;
  });
  if (msg['type'] !== 'ready' || typeof msg['url'] !== 'string') {
    child.kill('SIGKILL');
    throw new Error(`broker process failed: ${typeof msg['message'] === 'string' ? msg['message'] : 'no ready line'}`);
  }
  const ready = msg as unknown as BrokerChildReady;
  return {
    url: ready.url,
    async stop() {
      child.stdin.end();
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Answers `{"cmd":"stats"}` and `{"cmd":"timing-reset"}` lines on stdin until stdin closes. */
async function serveStats(timing: ServerTiming, logLines?: () => number): Promise<void> {
  const rl = createInterface({ input: process.stdin });
  rl.on('line', (line) => {
    let cmd: unknown;
    try {
      cmd = (JSON.parse(line) as { cmd?: unknown }).cmd;
    } catch {
      return;
    }
    if (cmd === 'timing-reset') {
      timing.reset();
    } else if (cmd === 'stats') {
      const cpu = process.cpuUsage();
      const mem = process.memoryUsage();
      const msg: StatsMessage = {
        type: 'stats',
        cpuUserUs: cpu.user,
        cpuSystemUs: cpu.system,
        maxRssKb: process.resourceUsage().maxRSS,
        rssBytes: mem.rss,
        heapUsedBytes: mem.heapUsed,
        externalBytes: mem.external,
        timing: timing.summary(),
        ...(logLines ? { logLines: logLines() } : {}),
      };
      send(msg);
    }
  });
  await new Promise<void>((resolve) => rl.once('close', resolve));
}

/** Server-side timing of ModelInfer, the same in the cir and the plain server. */
function inferTiming(): ServerTiming {
  return createServerTiming(loadServiceDefinitions().inference['ModelInfer']!.path);
}

/** The `grpc-plain` reference: bench/plain-server.ts with the spec's models and threads. */
async function mainPlain(spec: ServerSpec): Promise<void> {
  const notPlain = spec.models.find((m) => !m.plaintext);
  if (notPlain) throw new Error(`the plain reference server serves plaintext models only (${notPlain.name} is sealed)`);
  // From reading the files, as the cir server's boot figure includes reading its model files.
  const t0 = performance.now();
  const models = await Promise.all(spec.models.map(async (m) => ({ name: m.name, onnx: await readFile(m.file) })));
  const timing = inferTiming();
  const server = await startPlainServer({
    interceptors: [timing.interceptor],
    models,
    execution: {
      intraOpThreads: spec.intraOpThreads,
      interOpThreads: spec.interOpThreads,
      executionMode: 'sequential',
      executor: spec.executor ?? 'inline',
      ...(spec.workers ? { workers: spec.workers } : {}),
    },
    maxMessageBytes: MAX_REQUEST_BYTES,
    maxConcurrentInfers: spec.maxConcurrentInfers ?? DEFAULT_MAX_CONCURRENT_INFERS,
    ...(spec.idlePollUs ? { idlePollUs: spec.idlePollUs } : {}),
  });
  const ready: ReadyMessage = {
    type: 'ready',
    port: server.port,
    certPem: null,
    arkPem: '',
    measurement: spec.measurement,
    models: models.map((m) => ({ name: m.name, sealed: false, bytes: m.onnx.length, sessions: server.sessions.get(m.name) ?? 0 })),
    boots: [{ startToReadyMs: performance.now() - t0, steps: [] }],
    processToReadyMs: process.uptime() * 1000,
  };
  send(ready);
  await serveStats(timing);
  await server.close();
}

/**
 * Where the server's log lines go. Every line is serialised and written synchronously, as
 * `cir serve` does to stderr, but lines below warn are written to /dev/null: had they gone
 * to the harness over a pipe, draining them would wake the load generator once per call
 * and load the very process that measures. Warnings and errors also go to stderr, whose
 * tail the harness keeps for failure messages.
 */
function benchLogDestination(): { destination: DestinationStream; lines: () => number } {
  const devNull = pino.destination({ dest: '/dev/null', sync: true });
  let lines = 0;
  const counted: DestinationStream = {
    write(line: string): void {
      lines++;
      devNull.write(line);
    },
  };
  return {
    destination: pino.multistream([
      { level: 'trace', stream: counted },
      { level: 'warn', stream: pino.destination({ fd: 2, sync: true }) },
    ]),
    lines: () => lines,
  };
}

async function main(specFile: string): Promise<void> {
  const spec = JSON.parse(await readFile(specFile, 'utf8')) as ServerSpec;
  if (spec.plain) return mainPlain(spec);
  const log = benchLogDestination();
  const logger = createLogger({ level: spec.logLevel ?? 'info', name: 'cir-bench-server', destination: log.destination });
  await mkdir(spec.workDir, { recursive: true, mode: 0o700 });
  const sim = await SimulatedSnp.open(spec.simStateDir);
  const arkFile = path.join(spec.workDir, 'sim-ark.pem');
  await writeFile(arkFile, sim.arkPem);

  const closers: (() => Promise<unknown>)[] = [];
  const needsBroker = spec.models.some((m) => !m.plaintext);
  let brokerUrl: string | undefined;
  const adminToken = randomBytes(32).toString('base64url');
  if (needsBroker) {
    const configFile = path.join(spec.workDir, 'broker.json');
    const brokerConfig = { listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(spec.workDir, 'broker'), attestation: { simulatedRootFile: arkFile, allowSimulated: true } };
    await writeFile(configFile, JSON.stringify(brokerConfig), { mode: 0o600 });
    const broker = await startBrokerChild(configFile, { ...process.env, NODE_ENV: 'development', CIR_KMS_ADMIN_TOKEN: adminToken, CIR_LOG_LEVEL: spec.logLevel ?? 'info' });
    brokerUrl = broker.url;
    closers.push(() => broker.stop());
  }
  const register = async (keyId: string, dek: Uint8Array): Promise<void> => {
    const res = await fetch(new URL(ROUTES.adminKeys, brokerUrl), {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
      body: JSON.stringify({ keyId, dek: Buffer.from(dek).toString('base64url'), policy: { allowSimulated: true, measurements: [spec.measurement] } }),
    });
    if (res.status !== 201) throw new Error(`key registration failed: HTTP ${res.status}`);
  };

  const models: { name: string; path: string; plaintext: boolean }[] = [];
  const modelInfo: { name: string; sealed: boolean; bytes: number }[] = [];
  for (const m of spec.models) {
    if (m.plaintext) {
      models.push({ name: m.name, path: m.file, plaintext: true });
      modelInfo.push({ name: m.name, sealed: false, bytes: (await readFile(m.file)).length });
    } else if (m.dekFile !== undefined) {
      const sealed = await readFile(m.file);
      const dek = await readDekFile(m.dekFile);
      await register(readSealedHeader(sealed).keyId, dek);
      dek.fill(0);
      models.push({ name: m.name, path: m.file, plaintext: false });
      modelInfo.push({ name: m.name, sealed: true, bytes: sealed.length });
    } else {
      const dek = randomBytes(32);
      const keyId = `bench-${m.name}`.slice(0, 128);
      const sealed = sealModel(await readFile(m.file), dek, { keyId, keyVersion: 1 });
      await register(keyId, dek);
      dek.fill(0);
      const out = path.join(spec.workDir, `${m.name}.sealed`);
      await writeFile(out, sealed);
      models.push({ name: m.name, path: out, plaintext: false });
      modelInfo.push({ name: m.name, sealed: true, bytes: sealed.length });
    }
  }

  const benchKey = spec.controls
    ? await issueKey(path.join(spec.workDir, 'api-keys.json'), {
        tenant: 'default',
        owner: 'bench',
        environment: 'bench',
        operations: ['infer', 'metadata'],
        models: '*',
        now: new Date(),
      })
    : undefined;
  // The server admits `admit` calls at once (ERR_SRV_OVERLOADED above it). Its tenancy layer
  // also sheds a tenant holding its fair share once 3/4 of that are in flight, and the bench
  // is one tenant: shedding starts at `admit` instead, so a closed loop up to the harness's
  // concurrency measures serving, not refusals (an explicit relaxation, like auth none).
  const admit = spec.maxConcurrentInfers ?? DEFAULT_MAX_CONCURRENT_INFERS;
  const shedding = { maxInflight: admit, shedAt: admit };
  const config = loadServerConfig({
    listen: { host: '127.0.0.1', port: 0 },
    models,
    ...(brokerUrl ? { broker: { url: brokerUrl, jwksFile: path.join(spec.workDir, 'broker', BROKER_JWKS_FILE) } } : {}),
    insecure: spec.insecure,
    ...(benchKey
      ? {
          auth: { mode: 'api-keys', storeFile: path.join(spec.workDir, 'api-keys.json') },
          limits: {
            perKey: { ratePerSec: 1e6, burst: 1e6, maxConcurrent: 1000, dailyRequests: 1e12 },
            perTenant: { ratePerSec: 1e6, maxConcurrent: 1000 },
            shedding,
          },
        }
      : // Without --controls the bench measures bare serving (explicit relaxation).
        { auth: { mode: 'none' }, limits: { shedding } }),
    allowPlaintextModels: models.some((m) => m.plaintext),
    intraOpThreads: spec.intraOpThreads,
    interOpThreads: spec.interOpThreads,
    ...(spec.executor ? { executor: spec.executor } : {}),
    ...(spec.workers ? { workers: spec.workers } : {}),
    ...(spec.idlePollUs ? { idlePollUs: spec.idlePollUs } : {}),
    ...(spec.maxConcurrentInfers ? { maxConcurrentInfers: spec.maxConcurrentInfers } : {}),
    maxMessageBytes: MAX_REQUEST_BYTES,
    retry: { initialMs: 50, maxMs: 500, maxAttempts: 5 },
  });
  const provider = sim.provider({ measurement: Buffer.from(spec.measurement, 'hex') });

  const timing = inferTiming();
  const bootOnce = async (): Promise<{ server: CirServer; port: number; figure: BootFigure; sessions: ReadonlyMap<string, number> }> => {
    const steps: { name: string; ms: number; ok: boolean }[] = [];
    const server = buildServer(config, {
      provider,
      logger,
      onStep: (s) => steps.push({ name: s.name, ms: s.ms, ok: s.ok }),
      grpcInterceptors: [timing.interceptor],
    });
    let sessions: ReadonlyMap<string, number> = new Map();
    server.events.on('ready', (loaded) => (sessions = new Map(loaded.map((m) => [m.name, sessionsIn(m.session)]))));
    const t0 = performance.now();
    const { port } = await server.start();
    await server.whenReady();
    return { server, port, figure: { startToReadyMs: performance.now() - t0, steps }, sessions };
  };

  const first = await bootOnce();
  closers.unshift(() => first.server.stop());
  const processToReadyMs = process.uptime() * 1000;
  const boots = [first.figure];
  for (let i = 0; i < (spec.extraBoots ?? 0); i++) {
    const again = await bootOnce();
    boots.push(again.figure);
    await again.server.stop();
  }

  const ready: ReadyMessage = {
    type: 'ready',
    port: first.port,
    certPem: first.server.certPem ?? null,
    arkPem: sim.arkPem,
    measurement: spec.measurement,
    models: modelInfo.map((m) => ({ ...m, sessions: first.sessions.get(m.name) ?? 0 })),
    boots,
    ...(benchKey ? { apiKey: benchKey.token } : {}),
    processToReadyMs,
  };
  send(ready);
  await serveStats(timing, log.lines);
  for (const c of closers) await c().catch(() => undefined);
}

runChild('server-process.js SPEC_FILE', main);
