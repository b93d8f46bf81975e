/**
 * mTLS client certificates as an alternative to bearer tokens for admin identities, over a
 * real TLS listener on 127.0.0.1.
 */
import { createHash, X509Certificate } from 'node:crypto';
import { writeFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createSelfSignedTls, type TlsMaterial } from '../server/tls.js';
import { loadBrokerConfig, type BrokerConfig } from './config.js';
import { startBroker, type RunningBroker } from './main.js';
import { openIdentityStore } from './state.js';
import { captureLogs, fakeVerifier, tempDir } from './testdata/harness.js';

function get(url: string, opts: { ca: string; cert?: TlsMaterial; headers?: Record<string, string> }): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method: 'GET',
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert.certPem, key: opts.cert.keyPem } : {}),
        ...(opts.headers ? { headers: opts.headers } : {}),
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

describe('admin identities over mTLS', () => {
  let dir: string;
  let config: BrokerConfig;
  let broker: RunningBroker | undefined;
  let serverTls: TlsMaterial;
  let clientTls: TlsMaterial;
  const env = { NODE_ENV: 'test' };

  beforeEach(async () => {
    dir = await tempDir();
    serverTls = await createSelfSignedTls({ commonName: 'broker' });
    clientTls = await createSelfSignedTls({ commonName: 'admin-alice' });
    await writeFile(path.join(dir, 'cert.pem'), serverTls.certPem);
    await writeFile(path.join(dir, 'key.pem'), serverTls.keyPem, { mode: 0o600 });
    // The client's self-signed certificate is its own CA here; a deployment uses its admin CA.
    await writeFile(path.join(dir, 'client-ca.pem'), clientTls.certPem);
    config = loadBrokerConfig(
      {
        stateDir: path.join(dir, 'state'),
        listen: { host: '127.0.0.1', port: 0 },
        tls: { certFile: path.join(dir, 'cert.pem'), keyFile: path.join(dir, 'key.pem'), clientCaFile: path.join(dir, 'client-ca.pem') },
      },
      { env },
    );
  });
  afterEach(async () => {
    await broker?.close();
    broker = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  it('a registered, CA-verified client certificate authenticates as its identity; others do not', async () => {
    const der = new X509Certificate(clientTls.certPem).raw;
    const identities = await openIdentityStore(config, { env });
    const { identity } = await identities.create(
      { tenant: 'acme', subject: 'alice', roles: ['auditor'], ttlSeconds: 3600, bearer: false, certSha256: createHash('sha256').update(der).digest('hex') },
      'test',
    );
    broker = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
    const url = `${broker.url}/v1/admin/whoami`;

    const ok = await get(url, { ca: serverTls.certPem, cert: clientTls });
    expect(ok.status).toBe(200);
    expect(JSON.parse(ok.body)).toMatchObject({ id: identity.id, tenant: 'acme', roles: ['auditor'], via: 'mtls' });

    // No certificate: the connection is allowed (servers attest), the admin API says 401.
    expect((await get(url, { ca: serverTls.certPem })).status).toBe(401);

    // A certificate the CA did not issue, even one registered to an identity, is not accepted.
    const stranger = await createSelfSignedTls({ commonName: 'mallory' });
    const strangerDer = new X509Certificate(stranger.certPem).raw;
    await identities.create(
      { tenant: 'acme', subject: 'mallory', roles: ['key-admin'], ttlSeconds: 3600, bearer: false, certSha256: createHash('sha256').update(strangerDer).digest('hex') },
      'test',
    );
    expect((await get(url, { ca: serverTls.certPem, cert: stranger })).status).toBe(401);

    // Revocation takes effect on the next request.
    await identities.revoke(identity.id);
    expect((await get(url, { ca: serverTls.certPem, cert: clientTls })).status).toBe(401);
  });
});
