import * as grpc from '@grpc/grpc-js';
import { afterEach, describe, expect, it } from 'vitest';
import { createServerTiming, type ServerTiming } from './server-timing.js';

const id = (b: Buffer): Buffer => b;
const method = (path: string, responseStream = false): grpc.MethodDefinition<Buffer, Buffer> => ({
  path,
  requestStream: false,
  responseStream,
  requestSerialize: id,
  requestDeserialize: id,
  responseSerialize: id,
  responseDeserialize: id,
});
const TIMED = '/t.T/Timed';
const OTHER = '/t.T/Other';
const STREAM = '/t.T/Stream';

/** What each timed call does before it answers; set per test. */
let handle: (req: Buffer) => Promise<Buffer> = async (req) => req;
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  handle = async (req) => req;
});

async function serve(timing: ServerTiming): Promise<grpc.Client> {
  const server = new grpc.Server({ interceptors: [timing.interceptor] });
  server.addService(
    { Timed: method(TIMED), Other: method(OTHER), Stream: method(STREAM, true) },
    {
      Timed: ((call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
        handle(call.request).then(
          (res) => cb(null, res),
          () => cb({ code: grpc.status.FAILED_PRECONDITION, details: 'refused' }),
        );
      }) as grpc.UntypedHandleCall,
      Other: ((call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request)) as grpc.UntypedHandleCall,
      Stream: ((call: grpc.ServerWritableStream<Buffer, Buffer>) => {
        for (let i = 0; i < 3; i++) call.write(call.request);
        call.end();
      }) as grpc.UntypedHandleCall,
    },
  );
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))),
  );
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  cleanups.push(() => server.forceShutdown());
  cleanups.push(() => client.close());
  return client;
}

function unary(client: grpc.Client, path: string, req = Buffer.from('x')): Promise<Buffer> {
  return new Promise((resolve, reject) => client.makeUnaryRequest(path, id, id, req, (e, r) => (e ? reject(e) : resolve(r!))));
}

function stream(client: grpc.Client): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    const call = client.makeServerStreamRequest(STREAM, id, id, Buffer.from('s'));
    call.on('data', () => n++);
    call.on('error', reject);
    call.on('end', () => resolve(n));
  });
}

describe('server-side timing interceptor', () => {
  it('records the span from the call reaching the interceptors to its response, on the injected clock', async () => {
    const ticks = [100, 112.5, 200, 203.25];
    const timing = createServerTiming(TIMED, () => ticks.shift()!);
    const client = await serve(timing);
    await unary(client, TIMED);
    await unary(client, TIMED);
    const s = timing.summary();
    expect(s.count).toBe(2);
    expect(s.minMs).toBe(3.25);
    expect(s.maxMs).toBeCloseTo(12.5, 2);
    expect(ticks).toEqual([]);
  });

  it('on the real clock, the server-side span holds the handler and lies inside the client round trip', async () => {
    const timing = createServerTiming(TIMED);
    const client = await serve(timing);
    let handlerMs = 0;
    handle = async (req) => {
      const t = performance.now();
      while (performance.now() - t < 15);
      handlerMs = performance.now() - t;
      return req;
    };
    const t0 = performance.now();
    await unary(client, TIMED);
    const roundTripMs = performance.now() - t0;
    const s = timing.summary();
    expect(s.count).toBe(1);
    expect(s.p50Ms).toBeGreaterThanOrEqual(Math.floor(handlerMs * 1000) / 1000 - 0.001);
    expect(s.p50Ms).toBeLessThanOrEqual(roundTripMs * 1.001 + 0.001);
  });

  it('ignores other methods, failed calls and the second and later messages of a stream', async () => {
    const timing = createServerTiming(STREAM);
    const client = await serve(timing);
    expect(await stream(client)).toBe(3);
    await unary(client, OTHER);
    expect(timing.summary().count).toBe(1);

    const unaryTiming = createServerTiming(TIMED);
    const c2 = await serve(unaryTiming);
    handle = () => Promise.reject(new Error('no'));
    await expect(unary(c2, TIMED)).rejects.toMatchObject({ code: grpc.status.FAILED_PRECONDITION });
    expect(unaryTiming.summary().count).toBe(0);
    handle = async (req) => req;
    await unary(c2, TIMED);
    expect(unaryTiming.summary().count).toBe(1);
  });

  it('reset forgets what was recorded and never records a call that started before it', async () => {
    const timing = createServerTiming(TIMED);
    const client = await serve(timing);
    await unary(client, TIMED);
    expect(timing.summary().count).toBe(1);
    timing.reset();
    expect(timing.summary()).toMatchObject({ count: 0, p50Ms: 0 });

    // A call in the handler when the reset comes answers after it: not recorded.
    let entered!: () => void;
    const inHandler = new Promise<void>((r) => (entered = r));
    let release!: () => void;
    handle = (req) => {
      entered();
      return new Promise((r) => (release = () => r(req)));
    };
    const straddling = unary(client, TIMED);
    await inHandler;
    timing.reset();
    release();
    await straddling;
    expect(timing.summary().count).toBe(0);

    handle = async (req) => req;
    await unary(client, TIMED);
    expect(timing.summary().count).toBe(1);
  });
});
