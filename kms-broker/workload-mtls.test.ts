/**
 * Workload client certificates (`tls.workloadClientCerts`, workload-mtls.ts): RFC 8705-style
 * certificate-bound attestation tokens and leases, over a real TLS listener on 127.0.0.1.
 */
import { createHash, randomBytes, X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request } from 'node:https';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { connect, type TLSSocket } from 'node:tls';
import type { FastifyRequest } from 'fastify';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { kmsReportData } from '../attestation/binding.js';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../common/hpke.js';
import { createSelfSignedTls, type TlsMaterial } from '../server/tls.js';
import { authenticateAdmin } from './admin.js';
import { buildApp } from './app.js';
import { isKmsError } from './codes.js';
import { loadBrokerConfig, type BrokerConfigInput } from './config.js';
import { LeaseService, renewLease } from './leases.js';
import { startBroker, type RunningBroker } from './main.js';
import { PROBLEM_CONTENT_TYPE, ROUTES } from './protocol.js';
import type { FileIdentityStore } from './identities.js';
import { ADMIN_TOKEN, captureLogs, fakeVerifier, makeClaims, MEASUREMENT_A, tempDir, type LogCapture } from './testdata/harness.js';
import { TokenService } from './tokens.js';
import { clientCertOf, cnfOf } from './workload-mtls.js';

interface Answer {
  status: number;
  type: string | undefined;
  json: Record<string, unknown>;
}

/** One request on its own TLS connection (no agent: no reuse of another certificate's connection or session). */
function call(
  url: string,
  opts: { ca: string; cert?: TlsMaterial | undefined; method?: string; body?: unknown; bearer?: string },
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const req = request(
      url,
      {
        method: opts.method ?? 'POST',
        agent: false,
        ca: opts.ca,
        ...(opts.cert ? { cert: opts.cert.certPem, key: opts.cert.keyPem } : {}),
        headers: {
          ...(payload !== undefined ? { 'content-type': 'application/json' } : {}),
          ...(opts.bearer ? { authorization: `Bearer ${opts.bearer}` } : {}),
        },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () =>
          resolve({
            status: res.statusCode ?? 0,
            type: res.headers['content-type']?.split(';')[0],
            json: text ? (JSON.parse(text) as Record<string, unknown>) : {},
          }),
        );
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

const der = (t: TlsMaterial): Buffer => new X509Certificate(t.certPem).raw;
const thumb = (t: TlsMaterial): string => createHash('sha256').update(der(t)).digest('base64url');
const thumbHex = (t: TlsMaterial): string => createHash('sha256').update(der(t)).digest('hex');
const payloadOf = (jws: string): Record<string, unknown> => JSON.parse(Buffer.from(jws.split('.')[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;

function expectProblem(a: Answer, status: number, code: string): void {
  expect(a.status, JSON.stringify(a.json)).toBe(status);
  expect(a.type).toBe(PROBLEM_CONTENT_TYPE);
  expect(a.json.code).toBe(code);
  // RFC 7807, never a stack trace.
  expect(JSON.stringify(a.json)).not.toMatch(/\bat .*\.[jt]s:\d+/);
}

// Certificates are made once: A and B chain to the client CA bundle, the stranger does not.
let serverTls: TlsMaterial;
let certA: TlsMaterial;
let certB: TlsMaterial;
let stranger: TlsMaterial;
beforeAll(async () => {
  [serverTls, certA, certB, stranger] = await Promise.all([
    createSelfSignedTls({ commonName: 'broker' }),
    createSelfSignedTls({ commonName: 'workload-a' }),
    createSelfSignedTls({ commonName: 'workload-b' }),
    createSelfSignedTls({ commonName: 'stranger' }),
  ]);
});

interface Broker {
  url: string;
  dir: string;
  logs: LogCapture;
  running: RunningBroker;
  /** Closes this broker and keeps its state directory (for a restart on it). */
  stop(): Promise<void>;
  /** Challenge + attest (fake verifier) over a connection with `cert`. */
  attest(cert: TlsMaterial | undefined, keyPair: HpkeKeyPair): Promise<Answer>;
  release(cert: TlsMaterial | undefined, token: string, keyPair: HpkeKeyPair): Promise<Answer>;
  renew(cert: TlsMaterial | undefined, token: string, lease: string, keyPair: HpkeKeyPair): Promise<Answer>;
  audit(): Promise<Record<string, unknown>[]>;
}

const KEY_ID = 'model-key';
let brokers: Broker[] = [];
const stopped = new WeakSet<Broker>();
afterEach(async () => {
  for (const b of brokers) {
    if (!stopped.has(b)) await b.running.close();
    await rm(b.dir, { recursive: true, force: true });
  }
  brokers = [];
});

/**
 * A broker over TLS with the client CA of certificates A and B. `restartIn`: the directory
 * of a stopped broker, whose state (signing keys, keys, audit) it starts on; `clientCaFile:
 * false`: a listener that asks for no client certificate.
 */
async function startWith(tls: Partial<NonNullable<BrokerConfigInput['tls']>>, opts: { restartIn?: string; clientCaFile?: boolean } = {}): Promise<Broker> {
  const dir = opts.restartIn ?? (await tempDir());
  if (opts.restartIn === undefined) {
    await writeFile(path.join(dir, 'cert.pem'), serverTls.certPem);
    await writeFile(path.join(dir, 'key.pem'), serverTls.keyPem, { mode: 0o600 });
    // Each self-signed workload certificate is its own CA; a deployment uses its workload CA.
    await writeFile(path.join(dir, 'client-ca.pem'), certA.certPem + certB.certPem);
  }
  const env = { NODE_ENV: 'test', CIR_KMS_ADMIN_TOKEN: ADMIN_TOKEN };
  const config = loadBrokerConfig(
    {
      stateDir: path.join(dir, 'state'),
      listen: { host: '127.0.0.1', port: 0 },
      tls: {
        certFile: path.join(dir, 'cert.pem'),
        keyFile: path.join(dir, 'key.pem'),
        ...(opts.clientCaFile === false ? {} : { clientCaFile: path.join(dir, 'client-ca.pem') }),
        ...tls,
      },
    },
    { env },
  );
  const logs = captureLogs();
  const running = await startBroker(config, { logger: logs.logger, env, verifier: fakeVerifier() });
  const url = running.url;
  const ca = serverTls.certPem;
  if (opts.restartIn === undefined) {
    // Admin over TLS with the bootstrap token and no client certificate: unaffected by the mode.
    const created = await call(`${url}${ROUTES.adminKeys}`, { ca, bearer: ADMIN_TOKEN, body: { keyId: KEY_ID, policy: { measurements: [MEASUREMENT_A] } } });
    expect(created.status, JSON.stringify(created.json)).toBe(201);
  }
  const b: Broker = {
    url,
    dir,
    logs,
    running,
    async stop() {
      stopped.add(b);
      await running.close();
    },
    async attest(cert, keyPair) {
      const ch = await call(`${url}${ROUTES.challenge}`, { ca, cert, body: {} });
      if (ch.status !== 200) return ch;
      const nonce = Buffer.from(String(ch.json.nonce), 'base64url');
      const evidence = { reportData: kmsReportData(nonce, keyPair.publicKey).toString('hex') };
      return call(`${url}${ROUTES.attest}`, {
        ca,
        cert,
        body: { nonce: nonce.toString('base64url'), evidence, publicKey: Buffer.from(keyPair.publicKey).toString('base64url') },
      });
    },
    release: (cert, token, keyPair) =>
      call(`${url}${ROUTES.release(KEY_ID)}`, { ca, cert, bearer: token, body: { publicKey: Buffer.from(keyPair.publicKey).toString('base64url') } }),
    renew: (cert, token, lease, keyPair) =>
      call(`${url}${ROUTES.leaseRenew}`, { ca, cert, bearer: token, body: { lease, publicKey: Buffer.from(keyPair.publicKey).toString('base64url') } }),
    async audit() {
      const text = await readFile(path.join(dir, 'state', 'audit', 'audit.jsonl'), 'utf8');
      return text
        .split('\n')
        .filter((l) => l.length > 0)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    },
  };
  brokers.push(b);
  return b;
}

describe("tls.workloadClientCerts: 'bind'", () => {
  it('binds the token to the certificate it was attested over; release and renewal need that certificate', async () => {
    const b = await startWith({ workloadClientCerts: 'bind' });
    const kp = await generateHpkeKeyPair();

    const attested = await b.attest(certA, kp);
    expect(attested.status, JSON.stringify(attested.json)).toBe(200);
    const token = String(attested.json.token);
    expect(payloadOf(token).cnf).toEqual({ 'x5t#S256': thumb(certA) });

    // Another certificate of the same CA, no certificate, a certificate of no trusted CA: refused.
    expectProblem(await b.release(certB, token, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');
    expectProblem(await b.release(undefined, token, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await b.release(stranger, token, kp), 401, 'ERR_KMS_CLIENT_CERT_UNTRUSTED');

    const released = await b.release(certA, token, kp);
    expect(released.status, JSON.stringify(released.json)).toBe(200);
    const lease = (released.json.lease as { token: string }).token;
    expect(payloadOf(lease).cnf).toEqual({ 'x5t#S256': thumb(certA) });

    // Renewal: a fresh token bound to A renews the lease over A only.
    const fresh = String((await b.attest(certA, kp)).json.token);
    expectProblem(await b.renew(certB, fresh, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');
    expectProblem(await b.renew(undefined, fresh, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    const renewed = await b.renew(certA, fresh, lease, kp);
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    expect(payloadOf((renewed.json.lease as { token: string }).token).cnf).toEqual({ 'x5t#S256': thumb(certA) });

    // A stolen lease with an unbound token of the thief's own: the lease's binding still holds.
    const unbound = String((await b.attest(undefined, kp)).json.token);
    expect(payloadOf(unbound).cnf).toBeUndefined();
    expectProblem(await b.renew(undefined, unbound, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await b.renew(certB, unbound, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');

    // The audit trail and the decision logs name the certificate by its SHA-256, never its bytes.
    const entries = await b.audit();
    const attestAllow = entries.filter((e) => e.action === 'attest' && e.decision === 'allow');
    expect(attestAllow.map((e) => e.clientCertSha256)).toEqual([thumbHex(certA), thumbHex(certA), undefined]);
    const releases = entries.filter((e) => e.action === 'release');
    expect(releases.map((e) => [e.decision, e.reason, e.clientCertSha256])).toEqual([
      ['deny', 'ERR_KMS_CLIENT_CERT_MISMATCH', thumbHex(certB)],
      ['deny', 'ERR_KMS_CLIENT_CERT_REQUIRED', undefined],
      ['deny', 'ERR_KMS_CLIENT_CERT_UNTRUSTED', undefined],
      ['allow', undefined, thumbHex(certA)],
    ]);
    expect(entries.find((e) => e.action === 'lease.renew' && e.decision === 'allow')?.clientCertSha256).toBe(thumbHex(certA));
    const logs = b.logs.text();
    expect(logs).toContain(thumbHex(certA));
    const pemBody = certA.certPem.split('\n')[1]!;
    expect(logs).not.toContain(pemBody);
    expect(JSON.stringify(entries)).not.toContain(pemBody);
  });

  it('a token without cnf still works over any connection; its lease binds to the releasing certificate', async () => {
    const b = await startWith({ workloadClientCerts: 'bind' });
    const kp = await generateHpkeKeyPair();
    const token = String((await b.attest(undefined, kp)).json.token);
    expect(payloadOf(token).cnf).toBeUndefined();
    const plain = await b.release(undefined, token, kp);
    expect(plain.status, JSON.stringify(plain.json)).toBe(200);
    expect(payloadOf((plain.json.lease as { token: string }).token).cnf).toBeUndefined();
    const overB = await b.release(certB, token, kp);
    expect(overB.status).toBe(200);
    expect(payloadOf((overB.json.lease as { token: string }).token).cnf).toEqual({ 'x5t#S256': thumb(certB) });
    // A certificate of no trusted CA is refused on every workload route, challenge included.
    expectProblem(await call(`${b.url}${ROUTES.challenge}`, { ca: serverTls.certPem, cert: stranger, body: {} }), 401, 'ERR_KMS_CLIENT_CERT_UNTRUSTED');
  });
});

describe("tls.workloadClientCerts: 'require'", () => {
  it('refuses every workload route without a verified certificate; every token is bound', async () => {
    const b = await startWith({ workloadClientCerts: 'require' });
    const ca = serverTls.certPem;
    const kp = await generateHpkeKeyPair();
    expectProblem(await call(`${b.url}${ROUTES.challenge}`, { ca, body: {} }), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await call(`${b.url}${ROUTES.challenge}`, { ca, cert: stranger, body: {} }), 401, 'ERR_KMS_CLIENT_CERT_UNTRUSTED');

    // A nonce fetched over A, then attest without a certificate: refused, and the nonce is not spent.
    const ch = await call(`${b.url}${ROUTES.challenge}`, { ca, cert: certA, body: {} });
    expect(ch.status).toBe(200);
    const nonce = Buffer.from(String(ch.json.nonce), 'base64url');
    const body = {
      nonce: nonce.toString('base64url'),
      evidence: { reportData: kmsReportData(nonce, kp.publicKey).toString('hex') },
      publicKey: Buffer.from(kp.publicKey).toString('base64url'),
    };
    expectProblem(await call(`${b.url}${ROUTES.attest}`, { ca, body }), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    const attested = await call(`${b.url}${ROUTES.attest}`, { ca, cert: certA, body });
    expect(attested.status, JSON.stringify(attested.json)).toBe(200);
    const token = String(attested.json.token);
    expect(payloadOf(token).cnf).toEqual({ 'x5t#S256': thumb(certA) });

    expectProblem(await b.release(undefined, token, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await b.release(certB, token, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');
    const released = await b.release(certA, token, kp);
    expect(released.status).toBe(200);
    const lease = (released.json.lease as { token: string }).token;
    expectProblem(await b.renew(undefined, token, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expect((await b.renew(certA, token, lease, kp)).status).toBe(200);

    // Not workload routes: health, JWKS and the admin API (bearer) answer without a certificate.
    expect((await call(`${b.url}${ROUTES.health}`, { ca, method: 'GET' })).status).toBe(200);
    expect((await call(`${b.url}${ROUTES.jwks}`, { ca, method: 'GET' })).status).toBe(200);
    expect((await call(`${b.url}${ROUTES.adminKeys}`, { ca, method: 'GET', bearer: ADMIN_TOKEN })).status).toBe(200);
  });
});

describe("tls.workloadClientCerts: 'off' (default)", () => {
  it('changes nothing: a presented certificate binds nothing and is not recorded', async () => {
    const b = await startWith({});
    const kp = await generateHpkeKeyPair();
    const attested = await b.attest(certA, kp);
    expect(attested.status).toBe(200);
    const token = String(attested.json.token);
    expect(payloadOf(token).cnf).toBeUndefined();
    const overB = await b.release(certB, token, kp);
    expect(overB.status).toBe(200);
    expect(payloadOf((overB.json.lease as { token: string }).token).cnf).toBeUndefined();
    // A certificate of no trusted CA is ignored too, as before.
    expect((await b.attest(stranger, kp)).status).toBe(200);
    expect((await b.release(undefined, token, kp)).status).toBe(200);
    const entries = await b.audit();
    expect(entries.some((e) => e.clientCertSha256 !== undefined)).toBe(false);
    expect(b.logs.text()).not.toContain(thumbHex(certA));
  });
});

describe('a binding outlives a configuration change', () => {
  it("a token and lease bound under 'bind' stay bound after a restart under 'off' (same state directory), with or without clientCaFile", async () => {
    const bind = await startWith({ workloadClientCerts: 'bind' });
    const kp = await generateHpkeKeyPair();
    const token = String((await bind.attest(certA, kp)).json.token);
    expect(payloadOf(token).cnf).toEqual({ 'x5t#S256': thumb(certA) });
    const released = await bind.release(certA, token, kp);
    expect(released.status, JSON.stringify(released.json)).toBe(200);
    const lease = (released.json.lease as { token: string }).token;
    expect(payloadOf(lease).cnf).toEqual({ 'x5t#S256': thumb(certA) });
    await bind.stop();

    // 'off', the client CA still configured: the listener still verifies certificates.
    const off = await startWith({ workloadClientCerts: 'off' }, { restartIn: bind.dir });
    expectProblem(await off.release(certB, token, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');
    expectProblem(await off.release(undefined, token, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await off.release(stranger, token, kp), 401, 'ERR_KMS_CLIENT_CERT_UNTRUSTED');
    // The lease, renewed with a token 'off' issued (unbound): its own binding still holds.
    const unbound = String((await off.attest(certB, kp)).json.token);
    expect(payloadOf(unbound).cnf).toBeUndefined();
    expectProblem(await off.renew(certB, unbound, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_MISMATCH');
    expectProblem(await off.renew(undefined, unbound, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    // Over the bound certificate both still work, and what they issue stays bound: a renewed
    // lease keeps its binding, a lease released with a bound token inherits the token's.
    const renewed = await off.renew(certA, unbound, lease, kp);
    expect(renewed.status, JSON.stringify(renewed.json)).toBe(200);
    expect(payloadOf((renewed.json.lease as { token: string }).token).cnf).toEqual({ 'x5t#S256': thumb(certA) });
    const again = await off.release(certA, token, kp);
    expect(again.status, JSON.stringify(again.json)).toBe(200);
    expect(payloadOf((again.json.lease as { token: string }).token).cnf).toEqual({ 'x5t#S256': thumb(certA) });
    // An unbound token over A under 'off': the lease binds nothing.
    const fresh = await off.release(certA, unbound, kp);
    expect(fresh.status, JSON.stringify(fresh.json)).toBe(200);
    expect(payloadOf((fresh.json.lease as { token: string }).token).cnf).toBeUndefined();
    await off.stop();

    // 'off' without clientCaFile: the listener asks for no certificate, so none is presented
    // (not even A) and nothing bound is accepted.
    const plain = await startWith({ workloadClientCerts: 'off' }, { restartIn: bind.dir, clientCaFile: false });
    expectProblem(await plain.release(certA, token, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await plain.release(undefined, token, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    expectProblem(await plain.renew(certA, unbound, lease, kp), 401, 'ERR_KMS_CLIENT_CERT_REQUIRED');
    // Unbound tokens work as before.
    expect((await plain.release(undefined, unbound, kp)).status).toBe(200);
  });
});

/** A TLS 1.2 connection presenting `cert` (TLS 1.3 has no renegotiation). */
async function tls12(port: number, cert: TlsMaterial): Promise<TLSSocket> {
  const socket = connect({ host: '127.0.0.1', port, ca: serverTls.certPem, cert: cert.certPem, key: cert.keyPem, maxVersion: 'TLSv1.2' });
  await once(socket, 'secureConnect');
  expect(socket.getProtocol()).toBe('TLSv1.2');
  return socket;
}

/** One HTTP/1.1 GET on an open (kept-alive) connection; the JSON body of the answer. */
async function getOver(socket: TLSSocket, pathname: string): Promise<Record<string, unknown>> {
  socket.write(`GET ${pathname} HTTP/1.1\r\nhost: localhost\r\n\r\n`);
  let text = '';
  for (;;) {
    const [chunk] = (await once(socket, 'data')) as [Buffer];
    text += chunk.toString('utf8');
    const head = text.indexOf('\r\n\r\n');
    const length = /content-length: (\d+)/i.exec(text)?.[1];
    if (head >= 0 && length !== undefined && text.length - head - 4 >= Number(length)) return JSON.parse(text.slice(head + 4)) as Record<string, unknown>;
  }
}

/** Client-initiated renegotiation: 'renegotiated', or 'refused' (error or connection closed). */
function renegotiate(socket: TLSSocket): Promise<'renegotiated' | 'refused'> {
  return new Promise((resolve) => {
    socket.once('close', () => resolve('refused'));
    socket.once('error', () => resolve('refused'));
    const started = socket.renegotiate({}, (err) => resolve(err ? 'refused' : 'renegotiated'));
    if (!started) resolve('refused');
  });
}

describe('TLS renegotiation', () => {
  it('the broker refuses renegotiation on its TLS listener (client CA configured)', async () => {
    const b = await startWith({ workloadClientCerts: 'bind' });
    const socket = await tls12(Number(new URL(b.url).port), certA);
    try {
      expect(await getOver(socket, ROUTES.health)).toEqual({ status: 'ok' });
      expect(await renegotiate(socket)).toBe('refused');
      expect(socket.destroyed).toBe(true);
    } finally {
      socket.destroy();
    }
    // The listener still serves new connections.
    expect((await call(`${b.url}${ROUTES.health}`, { ca: serverTls.certPem, cert: certA, method: 'GET' })).status).toBe(200);
  });

  it('a failed re-verification leaves socket.authorized true in Node; workload and admin certificate checks treat it as untrusted', async () => {
    // What app.ts's refusal of renegotiation guards against, on a listener that allows it:
    // Node re-verifies the client certificate on every handshake but never clears
    // `authorized`; a failure only sets `authorizationError`. Here the certificate expires
    // between the first handshake and the renegotiation (what a client presenting another,
    // untrusted certificate on renegotiation gets too; Node's client cannot switch).
    // Valid for about 3 more seconds (X.509 times have whole seconds).
    const expiring = await createSelfSignedTls({ commonName: 'expiring', validityDays: 1, now: () => new Date(Date.now() - 86_400_000 + 3000) });
    // An admin identity registered to that certificate.
    const identities = {
      authenticateCertificate: async (hex: string) => (hex === thumbHex(expiring) ? { id: 'alice', tenant: 'acme', subject: 'alice', roles: ['auditor'], via: 'mtls' } : undefined),
    } as unknown as FileIdentityStore;
    // The broker's listener options (app.ts), without the refusal of renegotiation.
    const server = createServer({ cert: serverTls.certPem, key: serverTls.keyPem, ca: expiring.certPem, requestCert: true, rejectUnauthorized: false }, (req, res) => {
      const request = { raw: req, headers: req.headers } as unknown as FastifyRequest;
      const s = req.socket as TLSSocket;
      void authenticateAdmin(request, identities, undefined).then((principal) =>
        res.end(JSON.stringify({ authorized: s.authorized, authorizationError: s.authorizationError ?? null, cert: clientCertOf(request).kind, admin: principal?.id ?? null })),
      );
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    const socket = await tls12((server.address() as AddressInfo).port, expiring);
    try {
      expect(await getOver(socket, '/')).toEqual({ authorized: true, authorizationError: null, cert: 'verified', admin: 'alice' });
      await new Promise((r) => setTimeout(r, Math.max(0, expiring.notAfter.getTime() + 1100 - Date.now())));
      expect(await renegotiate(socket)).toBe('renegotiated');
      expect(await getOver(socket, '/')).toEqual({ authorized: true, authorizationError: 'CERT_HAS_EXPIRED', cert: 'untrusted', admin: null });
    } finally {
      socket.destroy();
      server.close();
    }
  });
});

describe('configuration', () => {
  const base = { stateDir: '/state', tls: { certFile: 'c.pem', keyFile: 'k.pem' } };
  const codeOf = (input: unknown): string => {
    try {
      loadBrokerConfig(input, { env: { NODE_ENV: 'test' } });
      return 'ok';
    } catch (e) {
      return isKmsError(e) ? `${e.code} ${e.detail ?? ''}` : 'raw';
    }
  };

  it("defaults to 'off'; 'bind' and 'require' need tls.clientCaFile", () => {
    expect(loadBrokerConfig(base, { env: {} }).tls?.workloadClientCerts).toBe('off');
    for (const mode of ['bind', 'require']) {
      expect(codeOf({ ...base, tls: { ...base.tls, workloadClientCerts: mode } })).toMatch(/^ERR_KMS_CONFIG_INVALID tls\.workloadClientCerts/);
      expect(codeOf({ ...base, tls: { ...base.tls, clientCaFile: 'ca.pem', workloadClientCerts: mode } })).toBe('ok');
    }
    expect(codeOf({ ...base, tls: { ...base.tls, clientCaFile: 'ca.pem', workloadClientCerts: 'optional' } })).toMatch(/^ERR_KMS_CONFIG_INVALID tls\.workloadClientCerts/);
    expect(codeOf({ ...base, tls: { ...base.tls, workloadClientCerts: 'off' } })).toBe('ok');
  });

  it('buildApp refuses bind or require without a listener that asks for client certificates', async () => {
    const config = loadBrokerConfig({ ...base, tls: { ...base.tls, clientCaFile: 'ca.pem', workloadClientCerts: 'bind' } }, { env: {} });
    const tokens = await TokenService.generate({ issuer: 'i', ttlSeconds: 60 });
    const deps = { logger: captureLogs().logger, verifier: fakeVerifier(), keyStore: {} as never, tokens, adminToken: undefined, env: { NODE_ENV: 'test' } };
    let code = '';
    try {
      buildApp(config, { ...deps, https: { cert: Buffer.from(serverTls.certPem), key: Buffer.from(serverTls.keyPem) } });
    } catch (e) {
      code = isKmsError(e) ? e.code : 'raw';
    }
    expect(code).toBe('ERR_KMS_CONFIG_INVALID');
  });
});

describe('renewLease', () => {
  it('without a connection to check against, a bound lease or token fails closed', async () => {
    const tokens = await TokenService.generate({ issuer: 'i', ttlSeconds: 60 });
    const leases = new LeaseService(tokens, { ttlSeconds: 60, renewFraction: 0.5, issuer: 'i' });
    const publicKey = randomBytes(32);
    const keyHash = createHash('sha256').update(publicKey).digest('base64url');
    const now = new Date();
    const subject = { tenant: 'default', keyId: 'k', version: 1, measurement: MEASUREMENT_A, keyHash, nonce: randomBytes(32).toString('base64url') };
    const deps = {
      leases,
      revocations: { matches: () => undefined },
      checkKey: async () => ({ policy: {} }),
      evaluate: () => ({ allowed: true, failures: [], explanation: [], relaxations: [], policyHash: '0'.repeat(64) }) as never,
    };
    const attestation = { claims: makeClaims(), keyHash, nonce: randomBytes(32).toString('base64url') };
    const bound = await leases.issue({ ...subject, cnf: cnfOf(randomBytes(32)) }, now);
    await expect(renewLease({ leaseJws: bound.token, publicKey, attestation, now }, deps)).rejects.toMatchObject({ code: 'ERR_KMS_CLIENT_CERT_REQUIRED' });
    const unbound = await leases.issue(subject, now);
    await expect(
      renewLease({ leaseJws: unbound.token, publicKey, attestation: { ...attestation, cnf: cnfOf(randomBytes(32)) }, now }, deps),
    ).rejects.toMatchObject({ code: 'ERR_KMS_CLIENT_CERT_REQUIRED' });
    // Unbound lease and token: renewed as before, and still unbound.
    const r = await renewLease({ leaseJws: unbound.token, publicKey, attestation, now }, deps);
    expect(payloadOf(r.lease.token).cnf).toBeUndefined();
  });
});
