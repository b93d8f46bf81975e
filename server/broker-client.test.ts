import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { PROBLEM_CONTENT_TYPE, problemType, ROUTES } from '../kms-broker/protocol.js';
import { brokerFailures, HttpBrokerClient } from './broker-client.js';
import { createSelfSignedTls } from './tls.js';

type Handler = (req: IncomingMessage, body: string, res: ServerResponse) => void;

const servers: Server[] = [];
afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

async function broker(handler: Handler): Promise<string> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => handler(req, body, res));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function json(res: ServerResponse, status: number, body: unknown, type = 'application/json'): void {
  res.writeHead(status, { 'content-type': type });
  res.end(JSON.stringify(body));
}

function problem(res: ServerResponse, status: number, code: string, failures?: unknown[]): void {
  json(res, status, { type: problemType(code), title: 'x', status, code, ...(failures ? { failures } : {}) }, PROBLEM_CONTENT_TYPE);
}

const b64 = (n: number): string => randomBytes(n).toString('base64url');
const LEASE = { id: b64(16), expiresAt: 'later', renewAfter: 'soon', token: 'h.p.s' };

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isCirError(e) ? e.code : `raw:${String(e)}`;
  }
  return 'resolved';
}

describe('HttpBrokerClient', () => {
  it('speaks the protocol: challenge, attest, release and renew with a Bearer token', async () => {
    const seen: { url: string; auth?: string; body: string }[] = [];
    const url = await broker((req, body, res) => {
      seen.push({ url: req.url!, body, ...(req.headers.authorization ? { auth: req.headers.authorization } : {}) });
      if (req.url === ROUTES.challenge) return json(res, 200, { nonce: b64(32), expiresAt: 'soon' });
      if (req.url === ROUTES.attest) return json(res, 200, { token: 'TKN', expiresAt: 'soon', claims: { a: 1 } });
      if (req.url === ROUTES.tenantRelease('default', 'k1')) {
        return json(res, 200, { keyId: 'k1', version: 3, suite: 's', enc: b64(32), ciphertext: b64(48), signature: 'h.p.s', lease: LEASE });
      }
      if (req.url === ROUTES.leaseRenew) return json(res, 200, { lease: { ...LEASE, token: 'h.p2.s' } });
      problem(res, 404, 'ERR_KMS_NOT_FOUND');
    });
    const c = new HttpBrokerClient({ url, timeoutMs: 2000 });
    const ch = await c.challenge();
    const pk = b64(32);
    const at = await c.attest({ nonce: ch.nonce, evidence: { tee: 'sev-snp', report: 'x' }, publicKey: pk });
    expect(at.token).toBe('TKN');
    const rel = await c.release('k1', { token: at.token, publicKey: pk, version: 3 });
    expect(rel.version).toBe(3);
    expect(seen.map((s) => s.url)).toEqual([ROUTES.challenge, ROUTES.attest, ROUTES.tenantRelease('default', 'k1')]);
    expect(seen[2]!.auth).toBe('Bearer TKN');
    expect(seen[1]!.auth).toBeUndefined();
    expect(JSON.parse(seen[2]!.body)).toEqual({ publicKey: pk, version: 3 });
    expect(rel.lease).toEqual(LEASE);
    const renewed = await c.renew({ token: 'TKN2', lease: rel.lease.token, publicKey: pk });
    expect(renewed.lease.token).toBe('h.p2.s');
    expect(seen[3]).toEqual({ url: ROUTES.leaseRenew, auth: 'Bearer TKN2', body: JSON.stringify({ lease: 'h.p.s', publicKey: pk }) });
    // A request that fails the protocol schema never leaves the client.
    expect(await codeOf(c.renew({ token: 'T', lease: '', publicKey: pk }))).toBe('ERR_SRV_BROKER_PROTOCOL');
    expect(seen).toHaveLength(4);
  });

  it('attests for its configured tenant and releases from that tenant', async () => {
    const seen: { url: string; body: string }[] = [];
    const url = await broker((req, body, res) => {
      seen.push({ url: req.url!, body });
      if (req.url === ROUTES.attest) return json(res, 200, { token: 'TKN', expiresAt: 'soon', claims: {} });
      if (req.url === ROUTES.tenantRelease('acme', 'k1')) {
        return json(res, 200, { keyId: 'k1', version: 1, suite: 's', enc: b64(32), ciphertext: b64(48), signature: 'h.p.s', lease: LEASE });
      }
      problem(res, 404, 'ERR_KMS_NOT_FOUND');
    });
    const c = new HttpBrokerClient({ url, tenant: 'acme' });
    const pk = b64(32);
    await c.attest({ nonce: b64(32), evidence: { tee: 'sev-snp' }, publicKey: pk });
    await c.release('k1', { token: 'TKN', publicKey: pk, version: 1 });
    expect(JSON.parse(seen[0]!.body).tenant).toBe('acme');
    expect(seen[1]!.url).toBe('/v1/tenants/acme/keys/k1/release');
    expect(() => new HttpBrokerClient({ url, tenant: '../x' })).toThrow(/tenant|configuration/);
  });

  it('refuses a release or renewal without a well-formed lease', async () => {
    const url = await broker((req, _body, res) => {
      if (req.url === ROUTES.tenantRelease('default', 'k1')) return json(res, 200, { keyId: 'k1', version: 3, suite: 's', enc: b64(32), ciphertext: b64(48), signature: 'h.p.s' });
      return json(res, 200, { lease: { ...LEASE, id: 'short' } });
    });
    const c = new HttpBrokerClient({ url });
    expect(await codeOf(c.release('k1', { token: 't', publicKey: b64(32), version: 3 }))).toBe('ERR_SRV_BROKER_PROTOCOL');
    expect(await codeOf(c.renew({ token: 't', lease: 'h.p.s', publicKey: b64(32) }))).toBe('ERR_SRV_BROKER_PROTOCOL');
  });

  it('maps problem documents to typed errors carrying the broker code and failures', async () => {
    const failures = [{ field: 'measurement', expected: 'aa', observed: 'bb' }];
    const responses: [number, string, unknown[]?][] = [
      [403, 'ERR_KMS_ATTESTATION_DENIED', failures],
      [403, 'ERR_KMS_EVIDENCE_REJECTED'],
      [403, 'ERR_KMS_NONCE_INVALID'],
      [401, 'ERR_KMS_TOKEN_INVALID'],
      [404, 'ERR_KMS_KEY_NOT_FOUND'],
      [400, 'ERR_KMS_BAD_REQUEST'],
      [503, 'ERR_KMS_VERIFIER_UNAVAILABLE'],
      [429, 'ERR_KMS_CHALLENGES_EXHAUSTED'],
    ];
    let i = 0;
    const url = await broker((_req, _b, res) => {
      const [status, code, f] = responses[i++]!;
      problem(res, status, code, f);
    });
    const c = new HttpBrokerClient({ url });
    const expected = [
      'ERR_SRV_BROKER_DENIED',
      'ERR_SRV_BROKER_VERIFICATION',
      'ERR_SRV_BROKER_VERIFICATION',
      'ERR_SRV_BROKER_UNAUTHORIZED',
      'ERR_SRV_BROKER_NOT_FOUND',
      'ERR_SRV_BROKER_REJECTED',
      'ERR_SRV_BROKER_UNAVAILABLE',
      'ERR_SRV_BROKER_UNAVAILABLE',
    ];
    for (const [j, want] of expected.entries()) {
      const e = await c.challenge().catch((x: unknown) => x);
      expect(isCirError(e) && e.code, `response ${j}`).toBe(want);
      if (isCirError(e)) expect(e.details?.['brokerCode']).toBe(responses[j]![1]);
      if (j === 0) expect(brokerFailures(e)).toEqual(failures);
    }
  });

  it('rejects responses that violate the schema, non-JSON bodies and oversized bodies', async () => {
    const bodies = [
      () => ({ nonce: b64(16), expiresAt: 'x' }), // wrong nonce length
      () => ({ nonce: b64(32), expiresAt: 'x', extra: 1 }), // strict object
      () => 'not json',
      () => ({ nonce: 'A'.repeat(2_000_000), expiresAt: 'x' }),
    ];
    let i = 0;
    const url = await broker((_req, _b, res) => {
      const b = bodies[i++]!();
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(typeof b === 'string' ? b : JSON.stringify(b));
    });
    const c = new HttpBrokerClient({ url });
    for (let j = 0; j < bodies.length; j++) expect(await codeOf(c.challenge())).toBe('ERR_SRV_BROKER_PROTOCOL');
  });

  it('checks that a release is for the requested key and version', async () => {
    const url = await broker((_req, _b, res) =>
      json(res, 200, { keyId: 'k1', version: 4, suite: 's', enc: b64(32), ciphertext: b64(48), signature: 'h.p.s' }),
    );
    const c = new HttpBrokerClient({ url });
    expect(await codeOf(c.release('k1', { token: 't', publicKey: b64(32), version: 3 }))).toBe('ERR_SRV_BROKER_PROTOCOL');
    expect(await codeOf(c.release('../admin', { token: 't', publicKey: b64(32) }))).toBe('ERR_SRV_BROKER_PROTOCOL');
  });

  it('times out, reports unreachable brokers, and honours cancellation', async () => {
    const url = await broker(() => {
      /* never answers */
    });
    const c = new HttpBrokerClient({ url, timeoutMs: 100 });
    expect(await codeOf(c.challenge())).toBe('ERR_SRV_BROKER_UNAVAILABLE');
    const ac = new AbortController();
    const p = c.challenge(ac.signal);
    ac.abort();
    expect(await codeOf(p)).toBe('ERR_SRV_BOOT_ABORTED');
    const dead = new HttpBrokerClient({ url: 'http://127.0.0.1:1', timeoutMs: 1000 });
    expect(await codeOf(dead.challenge())).toBe('ERR_SRV_BROKER_UNAVAILABLE');
  });

  it('refuses bad base URLs', () => {
    expect(() => new HttpBrokerClient({ url: 'ftp://x' })).toThrow(/broker/);
    expect(() => new HttpBrokerClient({ url: 'http://u:p@127.0.0.1' })).toThrow(/credentials|configuration/);
  });

  it('talks to an https broker trusting only the given CA', async () => {
    const tls = await createSelfSignedTls();
    const other = await createSelfSignedTls();
    const server = createHttpsServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
      req.resume();
      req.on('end', () => json(res, 200, { nonce: b64(32), expiresAt: 'soon' }));
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    expect((await new HttpBrokerClient({ url, ca: tls.certPem }).challenge()).nonce).toHaveLength(43);
    expect(await codeOf(new HttpBrokerClient({ url, ca: other.certPem, timeoutMs: 2000 }).challenge())).toBe(
      'ERR_SRV_BROKER_UNAVAILABLE',
    );
    expect(await codeOf(new HttpBrokerClient({ url, timeoutMs: 2000 }).challenge())).toBe('ERR_SRV_BROKER_UNAVAILABLE');
    expect(() => new HttpBrokerClient({ url: 'http://127.0.0.1:1', ca: tls.certPem })).toThrow(/https/);
  });
});
