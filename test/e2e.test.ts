/**
 * End to end, over real loopback HTTP and gRPC/TLS: broker and server on 127.0.0.1:0, a
 * simulated SEV-SNP TEE, a sealed real model, and the verifying client.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFile, writeFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { verifyServer } from '../client/verify.js';
import { inferVerified } from '../client/infer.js';
import { isCirError } from '../common/errors.js';
import { generateHpkeKeyPair } from '../common/hpke.js';
import { kmsReportData } from '../attestation/binding.js';
import { ROUTES } from '../kms-broker/protocol.js';
import { loadServiceClients } from '../server/proto.js';
import type { SessionFactory } from '../server/boot.js';
import { createStack, vadInput, vadModelPath, GOOD_MEASUREMENT, OTHER_MEASUREMENT, type Stack } from './helpers/stack.js';

let stack: Stack;

beforeAll(async () => {
  stack = await createStack();
});

afterAll(async () => {
  await stack?.close();
});

const policyFor = (measurement: string) => ({ allowSimulated: true, measurements: [measurement] });

function rpc<T>(client: grpc.Client, method: string, req: unknown): Promise<T> {
  return new Promise((resolve, reject) => {
    const md = new grpc.Metadata();
    md.set('authorization', `Bearer ${stack.apiKey}`);
    (client as unknown as Record<string, Function>)[method]!.call(client, req, md, (err: grpc.ServiceError | null, res: T) =>
      err ? reject(err) : resolve(res),
    );
  });
}

function inferenceStub(port: number, certPem: string): grpc.Client {
  const { GRPCInferenceService } = loadServiceClients();
  return new GRPCInferenceService(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(certPem)), {
    'grpc.ssl_target_name_override': 'localhost',
  });
}

async function localInference(input: ReturnType<typeof vadInput>): Promise<Record<string, number[]>> {
  const session = await ort.InferenceSession.create(await readFile(vadModelPath()), { intraOpNumThreads: 1 });
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of input.inputs) {
    feeds[t.name] =
      t.datatype === 'INT64'
        ? new ort.Tensor('int64', BigInt64Array.from(t.data.map(BigInt)), t.shape)
        : new ort.Tensor('float32', Float32Array.from(t.data), t.shape);
  }
  const out = await session.run(feeds);
  await session.release();
  return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, Array.from(v.data as Float32Array)]));
}

/** Wraps the real session factory to count how many inferences reach the model. */
function countingSessions(): { factory: SessionFactory; runs: () => number } {
  let runs = 0;
  const factory: SessionFactory = async (model, options) => {
    const s = await ort.InferenceSession.create(model, options);
    return new Proxy(s, {
      get(target, prop, receiver) {
        if (prop === 'run') {
          return (...args: Parameters<typeof s.run>) => {
            runs++;
            return target.run(...args);
          };
        }
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as unknown as Awaited<ReturnType<SessionFactory>>;
  };
  return { factory, runs: () => runs };
}

describe('attested serving, end to end', () => {
  it('boots through key release, then the client verifies and infers; output equals in-process onnxruntime', async () => {
    const sealed = await stack.sealedModel('e2e-good', policyFor(GOOD_MEASUREMENT));
    const server = stack.server(sealed, GOOD_MEASUREMENT);
    const { port } = await server.start();
    await server.whenReady();

    const verification = await verifyServer({
      server: `127.0.0.1:${port}`,
      expectMeasurements: [GOOD_MEASUREMENT],
      allowSimulated: true,
      simulatedRootPem: stack.sim.arkPem,
    });
    expect(verification.ok).toBe(true);
    expect(verification.checks.map((c) => c.name)).toEqual(
      expect.arrayContaining(['tls', 'evidence', 'signature+chain', 'binding', 'measurement', 'tcb']),
    );
    expect(verification.claims).toMatchObject({ simulated: true, measurement: GOOD_MEASUREMENT, product: 'Genoa' });

    const input = vadInput(7);
    const result = await inferVerified({
      server: `127.0.0.1:${port}`,
      model: 'vad',
      input,
      expectMeasurements: [GOOD_MEASUREMENT],
      allowSimulated: true,
      simulatedRootPem: stack.sim.arkPem,
      apiKey: stack.apiKey,
    });
    const local = await localInference(input);
    expect(result.outputs.map((o) => o.name).sort()).toEqual(Object.keys(local).sort());
    for (const o of result.outputs) expect(o.data).toEqual(local[o.name]);
  });

  it('refuses simulated evidence unless the client explicitly allows it', async () => {
    const sealed = await stack.sealedModel('e2e-nosim', policyFor(GOOD_MEASUREMENT));
    const server = stack.server(sealed, GOOD_MEASUREMENT);
    const { port } = await server.start();
    await server.whenReady();
    const v = await verifyServer({ server: `127.0.0.1:${port}`, expectMeasurements: [GOOD_MEASUREMENT], simulatedRootPem: stack.sim.arkPem });
    expect(v.ok).toBe(false);
    expect(v.credentials).toBeUndefined();
    expect(v.checks.find((c) => !c.ok)?.name).toBe('signature+chain');
  });
});

describe('attested serving, negative paths', () => {
  it('denies a server whose measurement the release policy does not allow; it stays NOT_READY', async () => {
    const sealed = await stack.sealedModel('e2e-deny', policyFor(GOOD_MEASUREMENT));
    const server = stack.server(sealed, OTHER_MEASUREMENT);
    const retries: unknown[] = [];
    server.events.on('retry', (r) => retries.push(r.error));
    const { port } = await server.start();
    await expect.poll(() => retries.length, { timeout: 10_000 }).toBeGreaterThanOrEqual(2);

    expect(server.ready).toBe(false);
    const denial = retries[0];
    expect(isCirError(denial) && denial.code).toBe('ERR_SRV_BROKER_DENIED');
    const failures = (denial as { details?: { failures?: { field: string; expected: string; observed: string }[] } }).details?.failures ?? [];
    expect(failures).toContainEqual(expect.objectContaining({ field: 'measurement', observed: OTHER_MEASUREMENT }));

    const client = inferenceStub(port, server.certPem!);
    try {
      expect(await rpc<{ ready: boolean }>(client, 'ServerReady', {})).toEqual({ ready: false });
      const err = await rpc(client, 'ModelInfer', { model_name: 'vad', inputs: [] }).catch((e: grpc.ServiceError) => e);
      expect((err as grpc.ServiceError).code).toBe(grpc.status.UNAVAILABLE);
    } finally {
      client.close();
    }
    // The broker logged the denial with the failing rule, expected and observed.
    const denialLog = stack.logs.lines.find((l) => l.includes('"e2e-deny"') && l.includes('release denied'));
    if (!denialLog) throw new Error(`no denial log line among:\n${stack.logs.lines.filter((l) => l.includes('e2e-deny')).join('')}`);
    expect(denialLog).toContain(OTHER_MEASUREMENT);
  });

  it('denies a replayed nonce', async () => {
    const hpke = await generateHpkeKeyPair();
    const post = (route: string, body: unknown) =>
      fetch(new URL(route, stack.broker.url), { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    const { nonce } = (await (await post(ROUTES.challenge, {})).json()) as { nonce: string };
    const evidence = await stack.sim
      .provider({ measurement: Buffer.from(GOOD_MEASUREMENT, 'hex') })
      .collect(kmsReportData(Buffer.from(nonce, 'base64url'), hpke.publicKey));
    const body = { nonce, evidence, publicKey: Buffer.from(hpke.publicKey).toString('base64url') };

    const first = await post(ROUTES.attest, body);
    expect(first.status).toBe(200);
    const replay = await post(ROUTES.attest, body);
    expect(replay.status).toBe(403);
    expect(replay.headers.get('content-type')).toMatch(/application\/problem\+json/);
    expect(((await replay.json()) as { code: string }).code).toBe('ERR_KMS_NONCE_INVALID');
  });

  it('a client expecting another measurement refuses to send anything', async () => {
    const sealed = await stack.sealedModel('e2e-client-refuses', policyFor(GOOD_MEASUREMENT));
    const counting = countingSessions();
    const server = stack.server(sealed, GOOD_MEASUREMENT, { createSession: counting.factory });
    const { port } = await server.start();
    await server.whenReady();

    const err = await inferVerified({
      server: `127.0.0.1:${port}`,
      model: 'vad',
      input: vadInput(),
      expectMeasurements: [OTHER_MEASUREMENT],
      allowSimulated: true,
      simulatedRootPem: stack.sim.arkPem,
    }).catch((e: unknown) => e);
    expect(isCirError(err) && err.code).toBe('ERR_CLI_NOT_VERIFIED');
    const checks = (err as { details?: { checks?: { name: string; ok: boolean }[] } }).details?.checks ?? [];
    expect(checks.find((c) => c.name === 'measurement')?.ok).toBe(false);
    expect(counting.runs()).toBe(0);
  });

  it('refuses a tampered sealed model and never becomes ready', async () => {
    const sealed = await stack.sealedModel('e2e-tampered', policyFor(GOOD_MEASUREMENT));
    const bytes = await readFile(sealed);
    bytes[bytes.length - 100] = bytes[bytes.length - 100]! ^ 0x01;
    await writeFile(sealed, bytes);
    const server = stack.server(sealed, GOOD_MEASUREMENT);
    const failed = new Promise<unknown>((resolve) => server.events.once('boot-failed', resolve));
    await server.start();
    const error = await failed;
    expect(isCirError(error) && error.code).toBe('ERR_SRV_MODEL_SEALED');
    const cause = (error as Error).cause;
    expect(isCirError(cause) && cause.code).toBe('ERR_SEAL_AUTH_FAILED');
    expect(server.ready).toBe(false);
  });
});

describe('imported TLS keys', () => {
  it('a server using operator-supplied TLS files is refused unless the client allows imported keys', async () => {
    const { createSelfSignedTls } = await import('../server/tls.js');
    const { writeFile: wf } = await import('node:fs/promises');
    const path = await import('node:path');
    const tls = await createSelfSignedTls({});
    const certFile = path.join(stack.dir, 'op-cert.pem');
    const keyFile = path.join(stack.dir, 'op-key.pem');
    await wf(certFile, tls.certPem);
    await wf(keyFile, tls.keyPem, { mode: 0o600 });
    const sealed = await stack.sealedModel('e2e-imported-tls', policyFor(GOOD_MEASUREMENT));
    const server = stack.server(sealed, GOOD_MEASUREMENT, {}, { tls: { certFile, keyFile } });
    const { port } = await server.start();
    await server.whenReady();
    const base = { server: `127.0.0.1:${port}`, expectMeasurements: [GOOD_MEASUREMENT], allowSimulated: true, simulatedRootPem: stack.sim.arkPem };
    const refused = await verifyServer(base);
    expect(refused.ok).toBe(false);
    expect(refused.checks.find((c) => !c.ok)?.name).toBe('tls-binding');
    const allowed = await verifyServer({ ...base, allowImportedTls: true });
    expect(allowed.ok).toBe(true);
  });
});
