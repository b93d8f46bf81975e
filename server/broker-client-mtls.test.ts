/**
 * The server's broker client presents its configured mTLS client certificate
 * (`broker.clientCertFile` / `broker.clientKeyFile`) on every broker request: a full key
 * release and a lease renewal through the real broker in `tls.workloadClientCerts:
 * require`, with the simulated TEE and the broker's real evidence verifier.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kmsReportData } from '../attestation/binding.js';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { isCirError } from '../common/errors.js';
import { generateHpkeKeyPair, hpkeOpen, type HpkeKeyPair } from '../common/hpke.js';
import { loadBrokerConfig } from '../kms-broker/config.js';
import { startBroker, type RunningBroker } from '../kms-broker/main.js';
import { BROKER_JWKS_FILE, RELEASE_HPKE_INFO, releaseAad, ROUTES } from '../kms-broker/protocol.js';
import { fetchWithCa, HttpBrokerClient, readBrokerTls, type BrokerTlsFiles } from './broker-client.js';
import { jwksLeaseVerifier } from './lease.js';
import { jwksReleaseVerifier, readPinnedJwks } from './release-verify.js';
import { loadServerConfig } from './config.js';
import { createSelfSignedTls, type TlsMaterial } from './tls.js';

const KEY_ID = 'mtls-model';
const MEASUREMENT = createHash('sha384').update('cir mtls image').digest();
const ADMIN_TOKEN = randomBytes(32).toString('base64url');

let dir: string;
let broker: RunningBroker;
let sim: SimulatedSnp;
let serverTls: TlsMaterial;
let workload: TlsMaterial;
let other: TlsMaterial;
const dek = randomBytes(32);

/** The broker section files of a server config, as written for `cert`. */
async function files(name: string, cert: TlsMaterial, keyMode = 0o600): Promise<BrokerTlsFiles> {
  const certFile = path.join(dir, `${name}.crt`);
  const keyFile = path.join(dir, `${name}.key`);
  await writeFile(certFile, cert.certPem);
  await writeFile(keyFile, cert.keyPem, { mode: keyMode });
  await chmod(keyFile, keyMode);
  return { caFile: path.join(dir, 'broker-ca.pem'), clientCertFile: certFile, clientKeyFile: keyFile };
}

async function client(f: BrokerTlsFiles): Promise<HttpBrokerClient> {
  const { ca, clientCert } = await readBrokerTls(f);
  return new HttpBrokerClient({ url: broker.url, timeoutMs: 5000, ...(ca ? { ca } : {}), ...(clientCert ? { clientCert } : {}) });
}

/** challenge -> simulated evidence -> attest, as boot.ts does. */
async function attest(c: HttpBrokerClient, kp: HpkeKeyPair): Promise<{ token: string; nonce: string }> {
  const ch = await c.challenge();
  const evidence = await sim.provider({ measurement: MEASUREMENT }).collect(kmsReportData(Buffer.from(ch.nonce, 'base64url'), kp.publicKey));
  const at = await c.attest({ nonce: ch.nonce, evidence: evidence as unknown as Record<string, unknown>, publicKey: Buffer.from(kp.publicKey).toString('base64url') });
  return { token: at.token, nonce: ch.nonce };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    const brokerCode = isCirError(e) ? e.details?.['brokerCode'] : undefined;
    return isCirError(e) ? `${e.code}${typeof brokerCode === 'string' ? ` ${brokerCode}` : ''}` : `raw:${String(e)}`;
  }
  return 'resolved';
}

const payloadOf = (jws: string): Record<string, unknown> => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
const thumb = (t: TlsMaterial): string => createHash('sha256').update(new X509Certificate(t.certPem).raw).digest('base64url');

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'cir-broker-mtls-'));
  sim = await SimulatedSnp.open(path.join(dir, 'sim'));
  [serverTls, workload, other] = await Promise.all([
    createSelfSignedTls({ commonName: 'broker' }),
    createSelfSignedTls({ commonName: 'cir-server' }),
    createSelfSignedTls({ commonName: 'cir-server-2' }),
  ]);
  await writeFile(path.join(dir, 'sim-ark.pem'), sim.arkPem);
  await writeFile(path.join(dir, 'broker-ca.pem'), serverTls.certPem);
  await writeFile(path.join(dir, 'broker.crt'), serverTls.certPem);
  await writeFile(path.join(dir, 'broker.key'), serverTls.keyPem, { mode: 0o600 });
  // Both workload certificates chain to the client CA (each is its own CA here).
  await writeFile(path.join(dir, 'workload-ca.pem'), workload.certPem + other.certPem);
  const env = { NODE_ENV: 'test', CIR_KMS_ADMIN_TOKEN: ADMIN_TOKEN };
  const config = loadBrokerConfig(
    {
      stateDir: path.join(dir, 'broker'),
      listen: { host: '127.0.0.1', port: 0 },
      attestation: { allowSimulated: true, simulatedRootFile: path.join(dir, 'sim-ark.pem') },
      tls: {
        certFile: path.join(dir, 'broker.crt'),
        keyFile: path.join(dir, 'broker.key'),
        clientCaFile: path.join(dir, 'workload-ca.pem'),
        workloadClientCerts: 'require',
      },
    },
    { env },
  );
  broker = await startBroker(config, { logger: pino({ level: 'silent' }), env });
  const res = await fetchWithCa(serverTls.certPem)(new URL(ROUTES.adminKeys, broker.url), {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ keyId: KEY_ID, dek: dek.toString('base64url'), policy: { allowSimulated: true, measurements: [MEASUREMENT.toString('hex')] } }),
  });
  expect(res.status, await res.clone().text()).toBe(201);
}, 60_000);

afterAll(async () => {
  await broker?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('HttpBrokerClient with broker.clientCertFile / clientKeyFile', () => {
  it('presents the certificate on challenge, attest, release and renew (broker in require mode)', async () => {
    const c = await client(await files('workload', workload));
    const kp = await generateHpkeKeyPair();
    const { token, nonce } = await attest(c, kp);
    // The broker bound the token to the certificate this client presented.
    expect(payloadOf(token).cnf).toEqual({ 'x5t#S256': thumb(workload) });

    const rel = await c.release(KEY_ID, { token, publicKey: Buffer.from(kp.publicKey).toString('base64url') });
    const jwks = await readPinnedJwks(path.join(dir, 'broker', BROKER_JWKS_FILE));
    await jwksReleaseVerifier(jwks).verify(rel, kp.publicKey);
    const opened = await hpkeOpen(
      kp,
      { enc: Buffer.from(rel.enc, 'base64url'), ciphertext: Buffer.from(rel.ciphertext, 'base64url') },
      RELEASE_HPKE_INFO,
      releaseAad(KEY_ID, rel.version),
    );
    expect(Buffer.from(opened).equals(dek)).toBe(true);
    const lease = await jwksLeaseVerifier(jwks).verify(rel.lease, { keyId: KEY_ID, version: rel.version, hpkePublicKey: kp.publicKey, nonce });
    expect(lease.cnf).toEqual({ 'x5t#S256': thumb(workload) });

    // Renewal with a fresh attestation, over the same certificate.
    const fresh = await attest(c, kp);
    const renewed = await c.renew({ token: fresh.token, lease: rel.lease.token, publicKey: Buffer.from(kp.publicKey).toString('base64url') });
    expect(renewed.lease.id).toBe(rel.lease.id);

    // Another server's certificate cannot use this server's token or lease.
    const thief = await client(await files('other', other));
    expect(await codeOf(thief.release(KEY_ID, { token, publicKey: Buffer.from(kp.publicKey).toString('base64url') }))).toBe(
      'ERR_SRV_BROKER_UNAUTHORIZED ERR_KMS_CLIENT_CERT_MISMATCH',
    );
  });

  it('without a client certificate the broker refuses at the challenge', async () => {
    const c = await client({ caFile: path.join(dir, 'broker-ca.pem') });
    expect(await codeOf(c.challenge())).toBe('ERR_SRV_BROKER_UNAUTHORIZED ERR_KMS_CLIENT_CERT_REQUIRED');
  });

  it('refuses a key file that group or others can read, and a certificate without its key', async () => {
    const f = await files('loose', workload, 0o644);
    const code = await codeOf(readBrokerTls(f));
    expect(code).toBe('ERR_SRV_CONFIG');
    await expect(readBrokerTls(f)).rejects.toThrow(/clientKeyFile.*chmod 600/);
    expect(await codeOf(readBrokerTls({ clientCertFile: f.clientCertFile }))).toBe('ERR_SRV_CONFIG');
    // The key never appears in the error.
    await expect(readBrokerTls(f)).rejects.not.toThrow(workload.keyPem.split('\n')[1]!);
  });

  it('refuses a client certificate over http or through an injected fetch', () => {
    const clientCert = { cert: workload.certPem, key: workload.keyPem };
    expect(() => new HttpBrokerClient({ url: 'http://127.0.0.1:1', clientCert })).toThrow(/https/);
    expect(() => new HttpBrokerClient({ url: 'https://127.0.0.1:1', clientCert, fetch: globalThis.fetch })).toThrow(/injected fetch/);
  });
});

describe('server config: broker.clientCertFile / clientKeyFile', () => {
  const base = { models: [{ name: 'm', path: 'm.sealed' }], broker: { url: 'https://broker.example:8443', jwksFile: 'jwks.json' } };
  const fieldsOf = (broker: Record<string, unknown>): string => {
    try {
      loadServerConfig({ ...base, broker: { ...base.broker, ...broker } });
      return 'ok';
    } catch (e) {
      return isCirError(e) ? `${e.code} ${String((e.details?.['fields'] as string[] | undefined)?.join(','))}` : 'raw';
    }
  };

  it('are optional, go together, and need an https broker', () => {
    expect(loadServerConfig(base).broker?.clientCertFile).toBeUndefined();
    expect(fieldsOf({ clientCertFile: 'c.pem', clientKeyFile: 'k.pem' })).toBe('ok');
    expect(fieldsOf({ clientCertFile: 'c.pem' })).toBe('ERR_SRV_CONFIG broker.clientCertFile');
    expect(fieldsOf({ clientKeyFile: 'k.pem' })).toBe('ERR_SRV_CONFIG broker.clientCertFile');
    expect(fieldsOf({ url: 'http://broker.example:8200', clientCertFile: 'c.pem', clientKeyFile: 'k.pem' })).toBe('ERR_SRV_CONFIG broker.clientCertFile');
    expect(fieldsOf({ clientCertFile: '', clientKeyFile: 'k.pem' })).toMatch(/^ERR_SRV_CONFIG broker\.clientCertFile/);
  });
});
