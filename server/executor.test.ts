import { describe, expect, it } from 'vitest';
import type { InferenceSession } from 'onnxruntime-node';
import { loadServerConfig } from './config.js';
import { createSessionFactory, hotPathServerOptions, resolveThreads, sessionOptionsFor } from './executor.js';
import type { InferenceSessionLike } from './registry.js';

describe('onnxruntime threads and execution mode', () => {
  it('0 intra-op threads leaves one core to the event loop (at least 1 thread)', () => {
    expect(resolveThreads({ intraOpThreads: 0, interOpThreads: 0 }, 1)).toEqual({ intraOpNumThreads: 1 });
    expect(resolveThreads({ intraOpThreads: 0, interOpThreads: 0 }, 2)).toEqual({ intraOpNumThreads: 1 });
    expect(resolveThreads({ intraOpThreads: 0, interOpThreads: 0 }, 16)).toEqual({ intraOpNumThreads: 15 });
  });

  it('configured counts win; inter-op is passed only when set', () => {
    expect(resolveThreads({ intraOpThreads: 3, interOpThreads: 0 }, 2)).toEqual({ intraOpNumThreads: 3 });
    expect(resolveThreads({ intraOpThreads: 2, interOpThreads: 4 }, 2)).toEqual({ intraOpNumThreads: 2, interOpNumThreads: 4 });
  });

  it('sessionOptionsFor keeps the base options and overrides threads and mode', () => {
    const base: InferenceSession.SessionOptions = { executionProviders: ['cpu'], graphOptimizationLevel: 'all', intraOpNumThreads: 9, interOpNumThreads: 9, executionMode: 'parallel' };
    expect(sessionOptionsFor(base, { intraOpThreads: 0, interOpThreads: 0, executionMode: 'sequential' }, 4)).toEqual({
      executionProviders: ['cpu'],
      graphOptimizationLevel: 'all',
      intraOpNumThreads: 3,
      executionMode: 'sequential',
      extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } },
    });
    // Spinning is opt-in: with it on, no config entry is added.
    expect(sessionOptionsFor(base, { intraOpThreads: 0, interOpThreads: 0, executionMode: 'sequential', spinning: true }, 4)).not.toHaveProperty('extra');
  });

  it('the session factory hands the resolved options to onnxruntime, from server config', async () => {
    const seen: InferenceSession.SessionOptions[] = [];
    const fake = async (_m: Uint8Array, o: InferenceSession.SessionOptions): Promise<InferenceSessionLike> => {
      seen.push(o);
      return {} as InferenceSessionLike;
    };
    const config = loadServerConfig({ models: [{ name: 'm', path: 'm.onnx', plaintext: true }], allowPlaintextModels: true, executionMode: 'parallel', interOpThreads: 2 });
    expect(config.executionMode).toBe('parallel');
    await createSessionFactory(config, fake, 8)(new Uint8Array(1), { executionProviders: ['cpu'] });
    expect(seen).toEqual([{ executionProviders: ['cpu'], intraOpNumThreads: 7, interOpNumThreads: 2, executionMode: 'parallel', extra: { session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } } }]);
    expect(loadServerConfig({ models: [{ name: 'm', path: 'm.onnx', plaintext: true }], allowPlaintextModels: true }).executionMode).toBe('sequential');
    expect(() => loadServerConfig({ models: [{ name: 'm', path: 'm.onnx', plaintext: true }], allowPlaintextModels: true, executionMode: 'fast' })).toThrow(
      expect.objectContaining({ code: 'ERR_SRV_CONFIG' }),
    );
  });

  it('a real onnxruntime session is created with the factory defaults', async () => {
    const { mlpModel } = await import('../bench/onnx-gen.js');
    const session = await createSessionFactory({ intraOpThreads: 0, interOpThreads: 0, executionMode: 'sequential' })(mlpModel({ layers: 1, dim: 4 }), {
      executionProviders: ['cpu'],
    });
    expect(session.inputNames).toEqual(['x']);
    await session.release();
  });
});

describe('gRPC server options of the hot path', () => {
  it('turn channelz off and bound streams per connection above the infer limit', () => {
    expect(hotPathServerOptions(64)).toEqual({ 'grpc.enable_channelz': 0, 'grpc.max_concurrent_streams': 80 });
    expect(hotPathServerOptions(0)['grpc.max_concurrent_streams']).toBe(17);
  });
});
