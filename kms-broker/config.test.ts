import { describe, expect, it } from 'vitest';
import { loadBrokerConfig } from './config.js';

const DEV = { env: { NODE_ENV: 'development' } };
const PROD = { env: { NODE_ENV: 'production' } };

describe('loadBrokerConfig', () => {
  it('applies defaults and freezes the result', () => {
    const c = loadBrokerConfig({ stateDir: '/tmp/x' }, DEV);
    expect(c).toMatchObject({
      listen: { host: '127.0.0.1', port: 8443 },
      masterKeyEnv: 'CIR_KMS_MASTER_KEY',
      adminTokenEnv: 'CIR_KMS_ADMIN_TOKEN',
      maxOutstandingChallenges: 10_000,
      challengeTtlSeconds: 60,
      tokenTtlSeconds: 300,
      attestation: { allowSimulated: false },
      bodyLimit: 1024 * 1024,
      issuer: 'cir-kms-broker',
    });
    expect(Object.isFrozen(c)).toBe(true);
    expect(Object.isFrozen(c.listen)).toBe(true);
    expect(Object.isFrozen(c.attestation)).toBe(true);
  });

  it.each([
    [{}, 'stateDir'],
    [{ stateDir: '/x', challengeTtlSeconds: 61 }, 'challengeTtlSeconds'],
    [{ stateDir: '/x', tokenTtlSeconds: 301 }, 'tokenTtlSeconds'],
    [{ stateDir: '/x', listen: { port: 70000 } }, 'listen.port'],
    [{ stateDir: '/x', maxOutstandingChallenges: 0 }, 'maxOutstandingChallenges'],
    [{ stateDir: '/x', masterKeyEnv: 'not an env name' }, 'masterKeyEnv'],
    [{ stateDir: '/x', adminToken: 'inline-secret-value' }, 'adminToken'],
    [{ stateDir: '/x', attestation: { policy: { allowDebug: 'yes' } } }, 'attestation.policy'],
    [{ stateDir: '/x', tls: { certFile: 'c' } }, 'tls.keyFile'],
  ])('names the bad field: %j -> %s', (input, field) => {
    let err: unknown;
    try {
      loadBrokerConfig(input, DEV);
    } catch (e) {
      err = e;
    }
    expect(err).toMatchObject({ code: 'ERR_KMS_CONFIG_INVALID', name: 'KmsError' });
    expect((err as { detail: string }).detail).toContain(field);
  });

  it('never echoes values in the error', () => {
    const secret = 'sup3r-s3cret-v4lue';
    for (const input of [{ stateDir: '/x', adminToken: secret }, { stateDir: '/x', masterKeyEnv: secret }, { stateDir: 42, issuer: { x: secret } }]) {
      try {
        loadBrokerConfig(input, DEV);
        expect.unreachable();
      } catch (e) {
        expect((e as Error).message).not.toContain('s3cret');
        expect(JSON.stringify(e)).not.toContain('s3cret');
      }
    }
  });

  it('refuses to trust the simulated TEE in production, in either place', () => {
    expect(() => loadBrokerConfig({ stateDir: '/x', attestation: { allowSimulated: true } }, PROD)).toThrow(
      expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID' }),
    );
    expect(() =>
      loadBrokerConfig({ stateDir: '/x', attestation: { policy: { allowSimulated: true, anyMeasurement: true } } }, PROD),
    ).toThrow(expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID' }));
    expect(loadBrokerConfig({ stateDir: '/x', attestation: { allowSimulated: true } }, DEV).attestation.allowSimulated).toBe(true);
    expect(loadBrokerConfig({ stateDir: '/x' }, PROD).attestation.allowSimulated).toBe(false);
  });
});
