/**
 * The `grpc-plain` reference server: it must compute what onnxruntime computes in process
 * (otherwise the mode would measure a different job), build its tensors the way the cir
 * server does (zero-copy only when aligned), and answer bad requests with a status rather
 * than crash. Plus the harness's refusal to serve a sealed model through it.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as ort from '../common/ort.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INFERENCE_SERVICE_NAME, loadServiceDefinitions } from '../server/proto.js';
import { decodeInferResponse } from '../server/tensors.js';
import { runBench } from './harness.js';
import { smallBenchOptions } from '../test/helpers/bench-options.js';
import { asStatus, plainFeeds, plainResponse, startPlainServer, type PlainServer } from './plain-server.js';
import { ServerChild, serverProcessEntry } from './targets.js';
import { convNetWorkload, inferRequest, mlpWorkload, ortFeeds, vadWorkload, type Workload } from './workloads.js';

const SETTINGS = { intraOpThreads: 1, interOpThreads: 0, executionMode: 'sequential', executor: 'inline' } as const;
const LIMITS = { maxTensorElements: 1 << 24 };

function call(port: number, request: Record<string, unknown>): Promise<unknown> {
  const method = loadServiceDefinitions().inference['ModelInfer']!;
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(`/${INFERENCE_SERVICE_NAME}/ModelInfer`, method.requestSerialize, method.responseDeserialize, request, (err, res) => {
      client.close();
      if (err) reject(err);
      else resolve(res);
    });
  });
}

describe('plain reference server', () => {
  let server: PlainServer;
  let workloads: Workload[];

  beforeAll(async () => {
    workloads = [await vadWorkload(), convNetWorkload(1), mlpWorkload({ layers: 2, dim: 32, batch: 3 }, 'tiny')];
    server = await startPlainServer({ models: workloads.map((w) => ({ name: w.name, onnx: w.onnx })), execution: SETTINGS, maxMessageBytes: 1 << 26, maxConcurrentInfers: 8 });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('returns what onnxruntime computes in process, for every output (FP32 and INT64 inputs)', async () => {
    for (const w of workloads) {
      const res = await call(server.port, inferRequest(w));
      const got = decodeInferResponse(res, LIMITS);
      const session = await ort.InferenceSession.create(w.onnx, { intraOpNumThreads: 1 });
      const want = await session.run(ortFeeds(w));
      await session.release();
      expect(got.map((t) => t.name), w.name).toEqual(session.outputNames);
      for (const t of got) {
        expect(t.shape, `${w.name} ${t.name}`).toEqual(want[t.name]!.dims.map(Number));
        expect(Array.from(t.data as Float32Array), `${w.name} ${t.name}`).toEqual(Array.from(want[t.name]!.data as Float32Array));
      }
    }
  });

  it('answers bad requests with a status and keeps serving', async () => {
    const w = workloads[1]!;
    await expect(call(server.port, inferRequest(w, 'nope'))).rejects.toMatchObject({ code: grpc.status.NOT_FOUND });
    const req = inferRequest(w) as { inputs: { name: string }[] };
    await expect(call(server.port, { ...req, raw_input_contents: [] })).rejects.toMatchObject({ code: grpc.status.INVALID_ARGUMENT });
    await expect(call(server.port, { ...req, inputs: req.inputs.map((i) => ({ ...i, name: 'not-an-input' })) })).rejects.toMatchObject({
      code: grpc.status.INTERNAL,
      details: 'inference failed',
    });
    expect(decodeInferResponse(await call(server.port, inferRequest(w)), LIMITS)).toHaveLength(1);
  });

  it('builds tensors zero-copy when aligned and copies unaligned bytes', () => {
    const values = new Float32Array([1.5, -2, 3.25, 4]);
    const backing = Buffer.alloc(17);
    Buffer.from(values.buffer).copy(backing, 1);
    const unaligned = backing.subarray(1, 17);
    const aligned = Buffer.from(values.buffer);
    const input = { name: 'x', datatype: 'FP32', shape: ['2', '2'] };
    const a = plainFeeds({ inputs: [input], raw_input_contents: [aligned] })['x']!;
    const u = plainFeeds({ inputs: [input], raw_input_contents: [unaligned] })['x']!;
    expect((a.data as Float32Array).buffer).toBe(aligned.buffer);
    expect((u.data as Float32Array).buffer).not.toBe(backing.buffer);
    expect(Array.from(u.data as Float32Array)).toEqual(Array.from(values));
    expect(u.dims).toEqual([2, 2]);
  });

  it('refuses malformed inputs before onnxruntime sees them', () => {
    const ok = { name: 'x', datatype: 'FP32', shape: ['2'] };
    const bytes = Buffer.alloc(8);
    const bad = (req: object) => () => plainFeeds(req);
    expect(bad({ inputs: [ok], raw_input_contents: [Buffer.alloc(7)] })).toThrow(/shape and byte length disagree/);
    expect(bad({ inputs: [{ ...ok, shape: ['-2'] }], raw_input_contents: [bytes] })).toThrow(/disagree/);
    expect(bad({ inputs: [{ ...ok, datatype: 'BYTES' }], raw_input_contents: [bytes] })).toThrow(/needs a name, a datatype/);
    expect(bad({ inputs: [ok], raw_input_contents: ['x'] })).toThrow(/needs a name/);
    expect(bad({ inputs: [ok] })).toThrow(/raw_input_contents/);
    expect(bad({})).toThrow(/raw_input_contents/);
    expect(bad({ inputs: [ok, ok], raw_input_contents: [bytes, bytes] })).toThrow(/input 1 repeats the name/);
    expect(bad({ inputs: [ok], raw_input_contents: [Buffer.alloc(7)] })).toThrow(expect.objectContaining({ code: grpc.status.INVALID_ARGUMENT }));
    // An input named __proto__ is an ordinary feed name, not a prototype change.
    const feeds = plainFeeds({ inputs: [{ ...ok, name: '__proto__' }], raw_input_contents: [bytes] });
    expect(Object.keys(feeds)).toEqual(['__proto__']);
  });

  it('copies unaligned INT64 bytes (8-byte alignment) and reads them little-endian', () => {
    const values = new BigInt64Array([1n, -2n, 2n ** 40n]);
    const backing = Buffer.alloc(28);
    Buffer.from(values.buffer).copy(backing, 4);
    const t = plainFeeds({ inputs: [{ name: 'n', datatype: 'INT64', shape: ['3'] }], raw_input_contents: [backing.subarray(4)] })['n']!;
    expect(t.type).toBe('int64');
    expect((t.data as BigInt64Array).buffer).not.toBe(backing.buffer);
    expect(Array.from(t.data as BigInt64Array)).toEqual([1n, -2n, 2n ** 40n]);
  });

  it('turns an unexpected error into a fixed INTERNAL, never its message', () => {
    // A null input (not reachable through the proto decoder, which fills defaults) throws a TypeError.
    let thrown: unknown;
    try {
      plainFeeds({ inputs: [null], raw_input_contents: [Buffer.alloc(4)] });
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(TypeError);
    expect(asStatus(thrown)).toMatchObject({ code: grpc.status.INTERNAL, details: 'request failed' });
    const own = (() => {
      try {
        plainFeeds({});
      } catch (e) {
        return e;
      }
    })();
    expect(asStatus(own)).toBe(own);
    expect(asStatus('text')).toMatchObject({ code: grpc.status.INTERNAL });
  });

  it('refuses an output it cannot encode', () => {
    const strings = new ort.Tensor('string', ['a'], [1]);
    expect(() => plainResponse('m', 'id', ['y'], { y: strings })).toThrow(/output 0 has no supported tensor/);
    expect(() => plainResponse('m', 'id', ['y'], {})).toThrow(/output 0/);
  });
});

describe('grpc-plain in the harness', () => {
  it('the server process refuses a sealed model', async () => {
    expect(existsSync(serverProcessEntry()), 'run `npm run build` first').toBe(true);
    const dir = await mkdtemp(path.join(os.tmpdir(), 'cir-plain-'));
    try {
      const file = path.join(dir, 'm.onnx');
      await writeFile(file, mlpWorkload({ layers: 1, dim: 4, batch: 1 }).onnx);
      const spec = { simStateDir: dir, workDir: dir, insecure: true, measurement: '00'.repeat(48), intraOpThreads: 1, interOpThreads: 0, plain: true, models: [{ name: 'm', file }] };
      await expect(ServerChild.start(spec, path.join(dir, 'spec.json'))).rejects.toThrow(/serves plaintext models only \(m is sealed\)/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('skips grpc-plain, with its reason, when the workload is a sealed model', async () => {
    const w = mlpWorkload({ layers: 1, dim: 4, batch: 1 }, 'sealed-user-model');
    const report = await runBench(
      smallBenchOptions({ modes: ['grpc-plain'], workloads: [{ ...w, sealedFile: { file: 'never-read.sealed', dekFile: 'never-read.dek' } }] }),
    );
    expect(report.results).toEqual([]);
    expect(report.skipped).toEqual([{ what: 'grpc-plain', reason: 'sealed-user-model is sealed; the plain reference server serves plaintext models only' }]);
  });
});
