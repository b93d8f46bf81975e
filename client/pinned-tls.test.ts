import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INFER_CHANNEL_OPTIONS } from './pinned-tls.js';

// A plain HTTP/2 server stands in for the inference server: what is checked is what the
// grpc-js client announces in its SETTINGS frame and connection WINDOW_UPDATE.
describe('INFER_CHANNEL_OPTIONS', () => {
  let server: http2.Http2Server;
  let port = 0;
  const sessions: http2.ServerHttp2Session[] = [];

  beforeAll(async () => {
    server = http2.createServer();
    server.on('session', (s) => sessions.push(s));
    server.on('stream', (stream) => {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      stream.end(Buffer.from([0, 0, 0, 0, 0]));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const s of sessions) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  async function remoteWindow(options: Record<string, number>): Promise<{ stream: number; connection: number }> {
    const before = sessions.length;
    const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), options);
    const id = (b: Buffer): Buffer => b;
    await new Promise<void>((resolve, reject) =>
      client.makeUnaryRequest('/t.T/M', id, id, Buffer.alloc(0), (e) => (e ? reject(e) : resolve())),
    );
    const session = sessions[before]!;
    // The connection-level window is raised with a WINDOW_UPDATE right after SETTINGS.
    const deadline = Date.now() + 5000;
    while ((session.state.remoteWindowSize ?? 0) <= 65_535 && options['grpc-node.flow_control_window'] && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const out = { stream: session.remoteSettings.initialWindowSize ?? 0, connection: session.state.remoteWindowSize ?? 0 };
    client.close();
    return out;
  }

  it('opens the client receive window to 1 MiB, per stream and per connection', async () => {
    const w = await remoteWindow({ ...INFER_CHANNEL_OPTIONS });
    expect(w.stream).toBe(1 << 20);
    expect(w.connection).toBeGreaterThanOrEqual((1 << 20) - 65_535);
  });

  it('leaves grpc-js at the 64 KiB HTTP/2 default without it (what the option changes)', async () => {
    const w = await remoteWindow({});
    expect(w.stream).toBe(65_535);
  });
});
