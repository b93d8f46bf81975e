import { describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { loadServerConfig } from './config.js';

const base = {
  models: [{ name: 'vad', path: '/m/vad.sealed' }],
  broker: { url: 'http://127.0.0.1:8200', jwksFile: '/etc/cir/broker-jwks.json' },
};

function problems(obj: unknown): string {
  try {
    loadServerConfig(obj);
  } catch (e) {
    if (isCirError(e)) {
      expect(e.code).toBe('ERR_SRV_CONFIG');
      return e.detail ?? '';
    }
    throw e;
  }
  return 'ok';
}

describe('loadServerConfig', () => {
  it('fills safe defaults and freezes the result', () => {
    const c = loadServerConfig(base);
    expect(c.listen).toEqual({ host: '127.0.0.1', port: 8443 });
    expect(c.insecure).toBe(false);
    expect(c.allowPlaintextModels).toBe(false);
    expect(c.maxMessageBytes).toBe(16 << 20);
    expect(c.models[0]!.plaintext).toBe(false);
    expect(c.broker!.timeoutMs).toBe(10_000);
    expect(c.retry).toEqual({ initialMs: 500, maxMs: 30_000 });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.models[0])).toBe(true);
  });

  it.each([
    [{ ...base, lsiten: {} }, 'lsiten'],
    [{ ...base, models: [] }, 'models'],
    [{ ...base, models: [{ name: '../x', path: 'p' }] }, 'models.0.name'],
    [{ ...base, models: [base.models[0], base.models[0]] }, 'models.1.name: duplicate'],
    [{ models: base.models }, 'broker: required'],
    [{ ...base, models: [{ name: 'a', path: 'p', plaintext: true }] }, 'models.0.plaintext'],
    [{ ...base, broker: { url: 'ftp://x' } }, 'broker.url'],
    [{ ...base, broker: { url: 'http://127.0.0.1:8200' } }, 'broker.jwksFile: required'],
    [{ ...base, broker: { url: 'http://127.0.0.1:8200', jwksFile: '/j', allowUnsignedRelease: true } }, 'broker.allowUnsignedRelease'],
    [{ ...base, tls: { certFile: 'c' } }, 'tls'],
    [{ ...base, maxMessageBytes: 10 }, 'maxMessageBytes'],
    [{ ...base, listen: { port: 70000 } }, 'listen.port'],
    [{ ...base, retry: { initialMs: 1000, maxMs: 10 } }, 'retry.maxMs'],
    [{ ...base, simulated: { stateDir: '/s', measurement: 'ab' } }, 'simulated.measurement'],
    [{ ...base, executor: 'threads' }, 'executor'],
    [{ ...base, idlePollUs: 5001 }, 'idlePollUs'],
    [{ ...base, idlePollUs: 2.5 }, 'idlePollUs'],
    [{ ...base, idlePollUs: -1 }, 'idlePollUs'],
    ['nope', '(root)'],
  ])('rejects %j naming %s', (obj, field) => {
    expect(problems(obj)).toContain(field);
  });

  it('never echoes a rejected value', () => {
    const secret = 'SECRET-VALUE-1234567890';
    expect(problems({ ...base, listen: { host: 5, port: secret } })).not.toContain(secret);
    expect(problems({ ...base, simulated: { stateDir: '/s', measurement: secret } })).not.toContain(secret);
  });

  it('accepts plaintext models only with allowPlaintextModels, and then needs no broker', () => {
    expect(problems({ models: [{ name: 'a', path: 'p', plaintext: true }], allowPlaintextModels: true })).toBe('ok');
  });

  it('runs onnxruntime inline unless the worker executor is chosen', () => {
    expect(loadServerConfig(base).executor).toBe('inline');
    expect(loadServerConfig({ ...base, executor: 'worker' }).executor).toBe('worker');
  });

  it('polls the event loop when idle only when asked, for at most 5 ms', () => {
    expect(loadServerConfig(base).idlePollUs).toBe(0);
    expect(loadServerConfig({ ...base, idlePollUs: 5000 }).idlePollUs).toBe(5000);
  });

  it('accepts a simulated TEE measurement of 96 hex characters', () => {
    expect(problems({ ...base, simulated: { stateDir: '/s', measurement: 'a'.repeat(96) } })).toBe('ok');
  });
});
