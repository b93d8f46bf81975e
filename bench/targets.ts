/**
 * What the load generator calls, per mode:
 *
 *   inproc         onnxruntime-node InferenceSession.run in the bench process (no server):
 *                  the baseline every other mode is compared against.
 *   grpc           the cir server in a child process, plaintext HTTP/2 on loopback
 *                  (server config `insecure: true`, plain model).
 *   grpc-tls       the same over TLS, the client pinning the server's certificate
 *                  (plain model, `allowPlaintextModels`).
 *   grpc-controls  `grpc` with the multi-tenant controls of server/tenancy on: an API key on
 *                  every call, every per-key and per-tenant limit set never to refuse.
 *   grpc-plain     not cir: bench/plain-server.ts, the smallest ModelInfer server on the same
 *                  grpc-js, codec and onnxruntime settings, plaintext. `grpc` minus
 *                  `grpc-plain` is what cir's serving layer adds; `grpc-plain` minus
 *                  `inproc` is what any Node gRPC server pays on this machine.
 *   grpc-attested  the confidential path: the server boots a SEALED model through
 *                  attestation and key release; the client verifies the server once
 *                  (client/verify.ts: evidence, binding, policy) and then sends every
 *                  request over TLS pinned to the attested key. Attestation is never on
 *                  the per-request path.
 *
 * Every gRPC mode sends the same ModelInferRequest (raw_input_contents) on one channel (one
 * HTTP/2 connection; grpc-js multiplexes concurrent calls as streams). The load generator
 * is kept lean so that it measures the server, not itself: the request is serialised once
 * (the same bytes protobufjs would produce on every call, as inproc reuses its feeds),
 * while every response is decoded in full, as a real client would. Channelz and retries
 * are off on the client channel (per-call bookkeeping the bench never uses).
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { createInterface } from 'node:readline';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { loadServiceClients, loadServiceDefinitions } from '../server/proto.js';
import { verifyServer } from '../client/verify.js';
import { ClientError } from '../client/codes.js';
import { INFER_CHANNEL_OPTIONS, PINNED_CHANNEL_OPTIONS } from '../client/pinned-tls.js';
import { sessionOptionsFor } from '../server/executor.js';
import type { Invoke } from './load.js';
import type { ReadyMessage, ServerSpec, StatsMessage } from './server-process.js';
import { inferRequest, MAX_REQUEST_BYTES, ortFeeds, type Workload } from './workloads.js';

export const MODES = ['inproc', 'grpc', 'grpc-tls', 'grpc-attested', 'grpc-controls', 'grpc-plain'] as const;
export type Mode = (typeof MODES)[number];
/**
 * What a sweep runs unless `--modes` says otherwise. `grpc-controls` (plaintext gRPC with
 * the multi-tenant controls on) is asked for by name: `--modes grpc,grpc-controls` measures
 * what the controls cost, both servers in one run, repetitions alternating. So is
 * `grpc-plain`: `--modes inproc,grpc-plain,grpc` splits the gRPC overhead into the
 * transport's share and cir's.
 */
export const DEFAULT_MODES: readonly Mode[] = ['inproc', 'grpc', 'grpc-tls', 'grpc-attested'];
/** Server modes without TLS. */
export function isPlaintextMode(m: Mode): boolean {
  return m === 'grpc' || m === 'grpc-controls' || m === 'grpc-plain';
}

/** An error with a status name, as the load loops count them. */
export class CallError extends Error {
  constructor(readonly status: string, message: string) {
    super(message);
  }
}

/** Path of the compiled server-process entry (from source under vitest, or from dist/). */
export function serverProcessEntry(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  return import.meta.url.endsWith('.ts')
    ? path.resolve(here, '..', 'dist', 'bench', 'server-process.js')
    : path.join(here, 'server-process.js');
}

/** Server processes started and not yet exited (ServerChild.killAll). */
const LIVE = new Set<ChildProcessWithoutNullStreams>();

/**
 * A cir server running in a child process (bench/server-process.ts). `stats()` asks it for
 * its CPU time, peak RSS and server-side call times; `close()` ends its stdin, which stops it.
 */
export class ServerChild {
  private readonly waiters: { resolve: (m: StatsMessage) => void; reject: (e: Error) => void }[] = [];
  private exited = false;

  private constructor(
    private readonly child: ChildProcessWithoutNullStreams,
    readonly ready: ReadyMessage,
    readonly spawnToReadyMs: number,
    /** The last 4,000 characters of its stderr, for error messages. */
    private readonly stderr: { text: string },
  ) {}

  static async start(spec: ServerSpec, specFile: string, timeoutMs = 120_000): Promise<ServerChild> {
    await writeFile(specFile, JSON.stringify(spec), { mode: 0o600 });
    const t0 = performance.now();
    // CIR_BENCH_SERVER_NODE_ARGS: extra node flags for the server process (e.g. --cpu-prof).
    const nodeArgs = (process.env['CIR_BENCH_SERVER_NODE_ARGS'] ?? '').split(' ').filter(Boolean);
    const child = spawn(process.execPath, [...nodeArgs, serverProcessEntry(), specFile], { stdio: ['pipe', 'pipe', 'pipe'] });
    LIVE.add(child);
    child.once('exit', () => LIVE.delete(child));
    // A write to a server that has just died fails with EPIPE, reported as an 'error' event:
    // unhandled, it would end the bench before its cleanup. The 'exit' handlers report the death.
    child.stdin.on('error', () => undefined);
    const stderr = { text: '' };
    child.stderr.on('data', (d: Buffer) => {
      stderr.text = (stderr.text + d.toString()).slice(-4000);
    });
    const lines = createInterface({ input: child.stdout });
    let self: ServerChild | undefined;
    let exitBeforeReady: ((code: number | null) => void) | undefined;
    const ready = await new Promise<ReadyMessage>((resolve, reject) => {
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`server process did not become ready within ${timeoutMs} ms\n${stderr.text}`));
      }, timeoutMs);
      exitBeforeReady = (code) => {
        clearTimeout(timer);
        reject(new Error(`server process exited with code ${code} before ready\n${stderr.text}`));
      };
      child.once('exit', exitBeforeReady);
      child.once('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`server process could not be started: ${e.message}`));
      });
      lines.on('line', (line) => {
        let msg: { type?: string; message?: string };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          return;
        }
        if (msg.type === 'ready') {
          clearTimeout(timer);
          resolve(msg as ReadyMessage);
        } else if (msg.type === 'error') {
          clearTimeout(timer);
          reject(new Error(`server process failed: ${msg.message}\n${stderr.text}`));
        } else if (msg.type === 'stats') {
          self?.waiters.shift()?.resolve(msg as unknown as StatsMessage);
        }
      });
    });
    self = new ServerChild(child, ready, performance.now() - t0, stderr);
    child.off('exit', exitBeforeReady!);
    // A stats() still waiting when the process dies gets an error, not a hang.
    child.once('exit', (code, signal) => {
      self!.exited = true;
      const e = new Error(`server process exited (${signal ?? `code ${code}`})\n${stderr.text}`);
      for (const w of self!.waiters.splice(0)) w.reject(e);
    });
    return self;
  }

  get port(): number {
    return this.ready.port;
  }

  /**
   * SIGKILLs every server process this process has started and that is still running (the
   * harness's interrupt path). Their broker processes exit when their parent does.
   */
  static killAll(): void {
    for (const c of LIVE) c.kill('SIGKILL');
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  stats(): Promise<StatsMessage> {
    if (this.exited) return Promise.reject(new Error(`server process exited\n${this.stderr.text}`));
    return new Promise((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.child.stdin.write(`${JSON.stringify({ cmd: 'stats' })}\n`);
    });
  }

  /**
   * Starts a new server-side timing window (no reply): the next `stats()` reports the
   * ModelInfer calls that started after the server read this. Lines are read in order, so a
   * later `stats()` always sees the reset; requests travel over TCP, so against the client's
   * window the edge is approximate (a call or two).
   */
  resetTiming(): void {
    if (!this.exited) this.child.stdin.write(`${JSON.stringify({ cmd: 'timing-reset' })}\n`);
  }

  /** Stops the server (stdin EOF), then SIGKILL after `graceMs`. */
  async close(graceMs = 10_000): Promise<void> {
    if (this.exited) return;
    const done = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.stdin.end();
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await done;
    clearTimeout(timer);
  }
}

/** A connected target: `invoker(workload)` returns the call the load loops repeat. */
export interface Target {
  readonly mode: Mode;
  invoker(w: Workload): Invoke;
  close(): Promise<void>;
}

export interface InprocOptions {
  readonly intraOpThreads: number;
  readonly interOpThreads: number;
  readonly executionProvider: 'cpu' | 'cuda';
}

/**
 * onnxruntime session options for the in-process baseline: boot.ts's base options (graph
 * optimisation 'all') with threads, execution mode and spin-waiting resolved by the server's
 * own `sessionOptionsFor`, so `--intra-op-threads 0` means max(1, cores - 1) with spinning
 * off here exactly as in the servers. Only the execution provider can differ (`--ep`).
 */
export function sessionOptions(o: InprocOptions): ort.InferenceSession.SessionOptions {
  return sessionOptionsFor(
    { executionProviders: [o.executionProvider], graphOptimizationLevel: 'all' },
    { intraOpThreads: o.intraOpThreads, interOpThreads: o.interOpThreads, executionMode: 'sequential' },
  );
}

/** The in-process baseline: one session per workload in this process. */
export async function inprocTarget(workloads: readonly Workload[], o: InprocOptions): Promise<Target> {
  const sessions = new Map<string, { session: ort.InferenceSession; feeds: Record<string, ort.Tensor> }>();
  for (const w of workloads) {
    sessions.set(w.name, { session: await ort.InferenceSession.create(w.onnx, sessionOptions(o)), feeds: ortFeeds(w) });
  }
  return {
    mode: 'inproc',
    invoker(w) {
      const s = sessions.get(w.name);
      if (!s) throw new Error(`no session for ${w.name}`);
      return () =>
        s.session.run(s.feeds).catch((e: unknown) => {
          throw new CallError('ORT_ERROR', (e as Error).message);
        });
    },
    async close() {
      for (const s of sessions.values()) await s.session.release().catch(() => undefined);
    },
  };
}

export interface GrpcTargetOptions {
  readonly mode: Exclude<Mode, 'inproc'>;
  readonly server: ServerChild;
  readonly requestTimeoutMs: number;
}

export interface GrpcTarget extends Target {
  /** grpc-attested only: the one-time client verification (ms) and its checks. */
  readonly verification?: { readonly ms: number; readonly checks: readonly { name: string; ok: boolean }[] };
}

/**
 * Client channel options of the load generator: no channelz, no retry bookkeeping, and the
 * cir client's 1 MiB HTTP/2 receive window (client/pinned-tls.ts INFER_CHANNEL_OPTIONS).
 */
export const LEAN_CLIENT_OPTIONS: Readonly<Record<string, number>> = Object.freeze({
  'grpc.enable_channelz': 0,
  'grpc.enable_retries': 0,
  ...INFER_CHANNEL_OPTIONS,
});

const identity = (b: Buffer): Buffer => b;

/** The workload's ModelInferRequest, serialised once with the server's own codec. */
export function preSerializedRequest(w: Workload): Buffer {
  const method = loadServiceDefinitions().inference['ModelInfer']!;
  return method.requestSerialize(inferRequest(w));
}

const STATUS_NAMES: Readonly<Record<number, string>> = Object.fromEntries(
  Object.entries(grpc.status).filter(([, v]) => typeof v === 'number').map(([k, v]) => [v as number, k]),
);

/** A gRPC client for one of the server modes; grpc-attested verifies the server first. */
export async function grpcTarget(o: GrpcTargetOptions): Promise<GrpcTarget> {
  const address = `127.0.0.1:${o.server.port}`;
  let credentials: grpc.ChannelCredentials;
  let options: Record<string, string | number> = {};
  let verification: GrpcTarget['verification'];
  if (isPlaintextMode(o.mode)) {
    credentials = grpc.credentials.createInsecure();
  } else if (o.mode === 'grpc-tls') {
    const cert = o.server.ready.certPem;
    if (!cert) throw new Error('grpc-tls: the server has no certificate');
    credentials = grpc.credentials.createSsl(Buffer.from(cert));
    options = { 'grpc.ssl_target_name_override': 'localhost', 'grpc.default_authority': 'localhost' };
  } else {
    const t0 = performance.now();
    const v = await verifyServer({
      server: address,
      expectMeasurements: [o.server.ready.measurement],
      allowSimulated: true,
      simulatedRootPem: o.server.ready.arkPem,
    });
    const ms = performance.now() - t0;
    if (!v.ok || !v.credentials) {
      throw new ClientError('ERR_CLI_NOT_VERIFIED', { detail: `grpc-attested: ${v.checks.filter((c) => !c.ok).map((c) => `${c.name} (${c.detail})`).join(', ')}` });
    }
    verification = { ms, checks: v.checks.map((c) => ({ name: c.name, ok: c.ok })) };
    credentials = v.credentials;
    options = { ...PINNED_CHANNEL_OPTIONS };
  }
  const { GRPCInferenceService } = loadServiceClients();
  const client = new GRPCInferenceService(address, credentials, {
    ...options,
    ...LEAN_CLIENT_OPTIONS,
    'grpc.max_receive_message_length': MAX_REQUEST_BYTES,
    'grpc.max_send_message_length': MAX_REQUEST_BYTES,
  });
  const method = loadServiceDefinitions().inference['ModelInfer']!;
  const path = method.path;
  const deserialize = method.responseDeserialize as (b: Buffer) => { outputs?: unknown[] };
  // With --controls the server requires the bench's API key on every call.
  const metadata = new grpc.Metadata();
  if (o.server.ready.apiKey) metadata.set('authorization', `Bearer ${o.server.ready.apiKey}`);
  return {
    mode: o.mode,
    ...(verification ? { verification } : {}),
    invoker(w) {
      const request = preSerializedRequest(w);
      return () =>
        new Promise<void>((resolve, reject) => {
          client.makeUnaryRequest(path, identity, deserialize, request, metadata, { deadline: Date.now() + o.requestTimeoutMs }, (err, res) => {
            if (err) reject(new CallError(STATUS_NAMES[err.code] ?? `CODE_${err.code}`, err.details || err.message));
            else if (!res?.outputs || res.outputs.length === 0) reject(new CallError('EMPTY_RESPONSE', 'no outputs'));
            else resolve();
          });
        });
    },
    async close() {
      client.close();
    },
  };
}
