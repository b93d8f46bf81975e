import { describe, expect, it } from 'vitest';
import { assertAdminTransport, isLoopbackHost, loadBrokerConfig } from './config.js';

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
      maxOutstandingChallengesPerClient: 16,
      allowInsecureAdmin: false,
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
    [{ stateDir: '/x', maxOutstandingChallengesPerClient: 0 }, 'maxOutstandingChallengesPerClient'],
    [{ stateDir: '/x', allowInsecureAdmin: 'yes' }, 'allowInsecureAdmin'],
    [{ stateDir: '/x', masterKeyEnv: 'not an env name' }, 'masterKeyEnv'],
    [{ stateDir: '/x', adminToken: 'inline-secret-value' }, 'adminToken'],
    [{ stateDir: '/x', attestation: { policy: { allowDebug: 'yes' } } }, 'attestation.policy'],
    [{ stateDir: '/x', tls: { certFile: 'c' } }, 'tls.keyFile'],
    [{ stateDir: '/x', attestation: { tdxCollateral: '' } }, 'attestation.tdxCollateral'],
    [{ stateDir: '/x', attestation: { tdxCollateral: 42 } }, 'attestation.tdxCollateral'],
    [{ stateDir: '/x', attestation: { tdxCollateral: '/c', tdxAllowMissingCrls: 'yes' } }, 'attestation.tdxAllowMissingCrls'],
    [{ stateDir: '/x', attestation: { tdxAllowMissingCrls: true } }, 'attestation.tdxAllowMissingCrls'],
    [{ stateDir: '/x', attestation: { policy: { tee: 'tdx', anyMrtd: true, measurements: ['aa'] } } }, 'attestation.policy: unknown field(s) measurements'],
    [{ stateDir: '/x', attestation: { policy: { tee: 'tdx', mrtd: ['zz'] } } }, 'attestation.policy.mrtd.0'],
    [{ stateDir: '/x', attestation: { policy: { tee: 'sgx' } } }, 'attestation.policy.tee'],
    [{ stateDir: '/x', attestation: { policy: [{ anyMeasurement: true }, { tee: 'sev-snp', anyMeasurement: true }] } }, 'attestation.policy: at most one policy per TEE'],
    [{ stateDir: '/x', attestation: { policy: [{ anyMeasurement: true }, { tee: 'tdx' }] } }, 'attestation.policy.1.mrtd'],
    [{ stateDir: '/x', attestation: { policy: [] } }, 'attestation.policy'],
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

  it('accepts TDX settings: collateral, the CRL relaxation, and one attestation policy per TEE', () => {
    const c = loadBrokerConfig(
      {
        stateDir: '/x',
        attestation: {
          tdxCollateral: '/etc/cir/tdx-bundle',
          tdxAllowMissingCrls: true,
          policy: [{ anyMeasurement: true }, { tee: 'tdx', mrtd: ['AB'.repeat(48)] }],
        },
      },
      DEV,
    );
    expect(c.attestation).toMatchObject({
      tdxCollateral: '/etc/cir/tdx-bundle',
      tdxAllowMissingCrls: true,
      policy: [{ anyMeasurement: true }, { tee: 'tdx', mrtd: ['ab'.repeat(48)], acceptedTcbStatuses: ['UpToDate'] }],
    });
    const d = loadBrokerConfig({ stateDir: '/x' }, DEV);
    expect(d.attestation.tdxAllowMissingCrls).toBe(false);
    expect(d.attestation.tdxCollateral).toBeUndefined();
    expect(loadBrokerConfig({ stateDir: '/x', attestation: { policy: { tee: 'tdx', anyMrtd: true } } }, PROD).attestation.policy).toMatchObject({ tee: 'tdx' });
  });

  it('refuses to trust the simulated TEE in production, in either place', () => {
    expect(() => loadBrokerConfig({ stateDir: '/x', attestation: { allowSimulated: true } }, PROD)).toThrow(
      expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID' }),
    );
    expect(() =>
      loadBrokerConfig({ stateDir: '/x', attestation: { policy: { allowSimulated: true, anyMeasurement: true } } }, PROD),
    ).toThrow(expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID' }));
    expect(() =>
      loadBrokerConfig({ stateDir: '/x', attestation: { policy: [{ tee: 'tdx', anyMrtd: true }, { allowSimulated: true, anyMeasurement: true }] } }, PROD),
    ).toThrow(expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID', detail: expect.stringContaining('attestation.policy.allowSimulated') }));
    expect(loadBrokerConfig({ stateDir: '/x', attestation: { allowSimulated: true } }, DEV).attestation.allowSimulated).toBe(true);
    expect(loadBrokerConfig({ stateDir: '/x' }, PROD).attestation.allowSimulated).toBe(false);
  });
});

describe('isLoopbackHost', () => {
  it.each([
    ['127.0.0.1', true],
    ['127.255.0.9', true],
    ['::1', true],
    ['0:0:0:0:0:0:0:1', true],
    ['::ffff:127.0.0.1', true],
    ['localhost', true],
    ['LOCALHOST', true],
    ['0.0.0.0', false],
    ['::', false],
    ['10.0.0.1', false],
    ['128.0.0.1', false],
    ['::ffff:10.0.0.1', false],
    ['broker.example', false],
    ['localhost.example', false],
  ])('%s -> %s', (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});

describe('assertAdminTransport', () => {
  const cfg = (host: string, extra: Record<string, unknown> = {}) => loadBrokerConfig({ stateDir: '/x', listen: { host }, ...extra }, DEV);
  const warnings = () => {
    const seen: unknown[] = [];
    return { seen, logger: { warn: (...a: unknown[]) => void seen.push(a) } };
  };

  it('refuses the admin API over plain HTTP on a non-loopback host, naming allowInsecureAdmin', () => {
    for (const host of ['0.0.0.0', '::', '192.0.2.10']) {
      let err: unknown;
      try {
        assertAdminTransport(cfg(host), { adminEnabled: true, tls: false });
      } catch (e) {
        err = e;
      }
      expect(err, host).toMatchObject({ code: 'ERR_KMS_CONFIG_INVALID' });
      expect((err as { detail: string }).detail).toContain('allowInsecureAdmin');
    }
  });

  it('allows it on loopback, with TLS, or with the admin API off, without a warning', () => {
    const w = warnings();
    assertAdminTransport(cfg('127.0.0.1'), { adminEnabled: true, tls: false, logger: w.logger });
    assertAdminTransport(cfg('::1'), { adminEnabled: true, tls: false, logger: w.logger });
    assertAdminTransport(cfg('0.0.0.0'), { adminEnabled: true, tls: true, logger: w.logger });
    assertAdminTransport(cfg('0.0.0.0'), { adminEnabled: false, tls: false, logger: w.logger });
    expect(w.seen).toEqual([]);
  });

  it('allows it with allowInsecureAdmin: true, and warns', () => {
    const w = warnings();
    expect(() => assertAdminTransport(cfg('0.0.0.0', { allowInsecureAdmin: true }), { adminEnabled: true, tls: false, logger: w.logger })).not.toThrow();
    expect(w.seen).toHaveLength(1);
  });
});
