import { createHash, randomBytes } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { compactVerify, createLocalJWKSet, type JSONWebKeySet } from 'jose';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { kmsReportData } from '../attestation/binding.js';
import { SimulatedSnp } from '../attestation/sim/index.js';
import { generateHpkeKeyPair, hpkeOpen } from '../common/hpke.js';
import { loadBrokerConfig } from './config.js';
import { startBroker, type RunningBroker } from './main.js';
import {
  AttestResponseSchema,
  ChallengeResponseSchema,
  ProblemSchema,
  RELEASE_HPKE_INFO,
  ReleaseResponseSchema,
  ReleaseSignedPayloadSchema,
  BROKER_JWKS_FILE,
  ROUTES,
  releaseAad,
} from './protocol.js';
import { buildApp } from './app.js';
import { openKeyStore } from './keystore.js';
import { TokenService } from './tokens.js';
import { captureLogs, fakeVerifier, tempDir } from './testdata/harness.js';

const ADMIN = randomBytes(24).toString('base64url');
const MEASUREMENT = createHash('sha384').update('kms-broker test image').digest();
const OTHER_MEASUREMENT = createHash('sha384').update('some other image').digest();

async function post(url: string, body: unknown, headers: Record<string, string> = {}) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

describe('startBroker with the simulated SEV-SNP TEE (real HTTP on 127.0.0.1)', () => {
  let dir: string;
  let sim: SimulatedSnp;
  let broker: RunningBroker;
  const env = { NODE_ENV: 'development', CIR_KMS_ADMIN_TOKEN: ADMIN };
  const logs = captureLogs();

  beforeAll(async () => {
    dir = await tempDir();
    sim = await SimulatedSnp.open(path.join(dir, 'sim'));
    const arkFile = path.join(dir, 'sim-ark.pem');
    await writeFile(arkFile, sim.arkPem);
    const config = loadBrokerConfig(
      { listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(dir, 'broker'), attestation: { simulatedRootFile: arkFile, allowSimulated: true } },
      { env },
    );
    broker = await startBroker(config, { logger: logs.logger, env });
    const created = await post(
      new URL(ROUTES.adminKeys, broker.url).href,
      { keyId: 'sim-model', dek: Buffer.alloc(32, 0x5a).toString('base64url'), policy: { allowSimulated: true, measurements: [MEASUREMENT.toString('hex')] } },
      { authorization: `Bearer ${ADMIN}` },
    );
    expect(created.status).toBe(201);
  }, 120_000);

  afterAll(async () => {
    await broker?.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function attestWith(measurement: Buffer, bindKey?: Uint8Array) {
    const keyPair = await generateHpkeKeyPair();
    const ch = ChallengeResponseSchema.parse((await post(new URL(ROUTES.challenge, broker.url).href, {})).json);
    const nonce = Buffer.from(ch.nonce, 'base64url');
    const evidence = await sim.provider({ measurement }).collect(kmsReportData(nonce, bindKey ?? keyPair.publicKey));
    const res = await post(new URL(ROUTES.attest, broker.url).href, { nonce: ch.nonce, evidence, publicKey: Buffer.from(keyPair.publicKey).toString('base64url') });
    return { res, keyPair };
  }

  it('challenge -> simulated evidence -> token -> release -> HPKE open yields the DEK', async () => {
    const { res, keyPair } = await attestWith(MEASUREMENT);
    expect(res.status).toBe(200);
    const { token, claims } = AttestResponseSchema.parse(res.json);
    expect(claims).toMatchObject({ simulated: true, measurement: MEASUREMENT.toString('hex') });
    const rel = await post(
      new URL(ROUTES.release('sim-model'), broker.url).href,
      { publicKey: Buffer.from(keyPair.publicKey).toString('base64url') },
      { authorization: `Bearer ${token}` },
    );
    expect(rel.status).toBe(200);
    const body = ReleaseResponseSchema.parse(rel.json);
    const dek = await hpkeOpen(
      keyPair,
      { enc: Buffer.from(body.enc, 'base64url'), ciphertext: Buffer.from(body.ciphertext, 'base64url') },
      RELEASE_HPKE_INFO,
      releaseAad('sim-model', body.version),
    );
    expect(Buffer.from(dek).equals(Buffer.alloc(32, 0x5a))).toBe(true);
    // What a server does: verify the release signature against the pinned JWKS file.
    const pinned = JSON.parse(await readFile(path.join(dir, 'broker', BROKER_JWKS_FILE), 'utf8')) as JSONWebKeySet;
    const { payload } = await compactVerify(body.signature, createLocalJWKSet(pinned), { algorithms: ['ES256'] });
    const signed = ReleaseSignedPayloadSchema.parse(JSON.parse(Buffer.from(payload).toString('utf8')));
    expect(signed).toMatchObject({ keyId: 'sim-model', version: body.version, enc: body.enc });
    expect(signed.ciphertextSha256).toBe(createHash('sha256').update(Buffer.from(body.ciphertext, 'base64url')).digest('base64url'));
  });

  it('rejects real simulated evidence bound to another key (the real verifier checks report_data)', async () => {
    const other = await generateHpkeKeyPair();
    const { res } = await attestWith(MEASUREMENT, other.publicKey);
    expect(res.status).toBe(403);
    expect(ProblemSchema.parse(res.json).code).toBe('ERR_KMS_EVIDENCE_REJECTED');
  });

  it('denies release to another measurement, listing the failure', async () => {
    const { res, keyPair } = await attestWith(OTHER_MEASUREMENT);
    expect(res.status).toBe(200);
    const rel = await post(
      new URL(ROUTES.release('sim-model'), broker.url).href,
      { publicKey: Buffer.from(keyPair.publicKey).toString('base64url') },
      { authorization: `Bearer ${AttestResponseSchema.parse(res.json).token}` },
    );
    const p = ProblemSchema.parse(rel.json);
    expect(p).toMatchObject({ status: 403, code: 'ERR_KMS_POLICY_DENIED' });
    expect(p.failures).toEqual([expect.objectContaining({ field: 'measurement', observed: OTHER_MEASUREMENT.toString('hex') })]);
  });

  it('a broker without allowSimulated rejects simulated evidence', async () => {
    const cfg = loadBrokerConfig({ listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(dir, 'strict') }, { env: { NODE_ENV: 'test' } });
    const strict = await startBroker(cfg, { logger: captureLogs().logger, env: { NODE_ENV: 'test' } });
    try {
      const keyPair = await generateHpkeKeyPair();
      const ch = ChallengeResponseSchema.parse((await post(new URL(ROUTES.challenge, strict.url).href, {})).json);
      const evidence = await sim.provider({ measurement: MEASUREMENT }).collect(kmsReportData(Buffer.from(ch.nonce, 'base64url'), keyPair.publicKey));
      const res = await post(new URL(ROUTES.attest, strict.url).href, { nonce: ch.nonce, evidence, publicKey: Buffer.from(keyPair.publicKey).toString('base64url') });
      expect(res.status).toBe(403);
      expect(ProblemSchema.parse(res.json).code).toBe('ERR_KMS_EVIDENCE_REJECTED');
    } finally {
      await strict.close();
    }
  });
});

describe('startBroker state and lifecycle', () => {
  it('creates 0700 dirs and 0600 secrets, keeps the token key across restarts, closes idempotently', async () => {
    const dir = await tempDir();
    try {
      const env = { NODE_ENV: 'test' };
      const config = loadBrokerConfig({ listen: { host: '127.0.0.1', port: 0 }, stateDir: path.join(dir, 'state') }, { env });
      const a = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
      expect(a.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
      const jwks1 = (await (await fetch(new URL(ROUTES.jwks, a.url))).json()) as { keys: { kid: string }[] };
      expect((await fetch(new URL(ROUTES.health, a.url))).status).toBe(200);
      // admin disabled: no token configured
      expect((await fetch(new URL(ROUTES.adminKeys, a.url))).status).toBe(404);
      await a.close();
      await a.close();
      for (const [p, m] of [
        ['state', 0o700],
        ['state/master.key', 0o600],
        ['state/audit', 0o700],
        ['state/audit/audit.jsonl', 0o600],
        ['state/signing-keys', 0o700],
        ['state/signing-keys/ring.json', 0o600],
      ] as const) {
        expect((await stat(path.join(dir, p))).mode & 0o777, p).toBe(m);
      }
      const b = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
      const jwks2 = (await (await fetch(new URL(ROUTES.jwks, b.url))).json()) as { keys: { kid: string }[] };
      expect(jwks2.keys[0]!.kid).toBe(jwks1.keys[0]!.kid);
      await b.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('publishes the JWKS to <stateDir>/jwks.json (0644, same as the route), replacing a stale copy on start', async () => {
    const dir = await tempDir();
    try {
      const env = { NODE_ENV: 'test' };
      const stateDir = path.join(dir, 'state');
      const config = loadBrokerConfig({ listen: { host: '127.0.0.1', port: 0 }, stateDir }, { env });
      const logs = captureLogs();
      const file = path.join(stateDir, BROKER_JWKS_FILE);
      const a = await startBroker(config, { logger: logs.logger, env, verifier: fakeVerifier() });
      try {
        expect((await stat(file)).mode & 0o777).toBe(0o644);
        const served = await (await fetch(new URL(ROUTES.jwks, a.url))).json();
        expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(served);
        expect(logs.lines.some((l) => l.includes('"file"') && l.includes(file) && l.includes('JWKS'))).toBe(true);
      } finally {
        await a.close();
      }
      await writeFile(file, '{"keys":[{"kty":"EC","kid":"stale"}]}', { mode: 0o666 });
      const b = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
      try {
        const served = await (await fetch(new URL(ROUTES.jwks, b.url))).json();
        expect(JSON.parse(await readFile(file, 'utf8'))).toEqual(served);
        expect((await stat(file)).mode & 0o777).toBe(0o644);
      } finally {
        await b.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('a running broker picks up a signing-key rotation made by the CLI and re-publishes jwks.json and jwks-archive.json', async () => {
    const { rotateSigningKey } = await import('./signing-keys.js');
    const dir = await tempDir();
    try {
      const env = { NODE_ENV: 'test' };
      const stateDir = path.join(dir, 'state');
      const config = loadBrokerConfig({ listen: { host: '127.0.0.1', port: 0 }, stateDir }, { env });
      const b = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
      try {
        const file = path.join(stateDir, BROKER_JWKS_FILE);
        const kidsIn = async (f: string) => (JSON.parse(await readFile(f, 'utf8')) as { keys: { kid: string }[] }).keys.map((k) => k.kid).sort();
        const [a] = await kidsIn(file);
        const next = (await rotateSigningKey(stateDir)).kid;
        const want = [a!, next].sort();
        for (let i = 0; i < 50 && JSON.stringify(await kidsIn(file)) !== JSON.stringify(want); i++) await new Promise((r) => setTimeout(r, 100));
        expect(await kidsIn(file)).toEqual(want);
        expect(await kidsIn(path.join(stateDir, 'jwks-archive.json'))).toEqual(want);
        const served = (await (await fetch(new URL(ROUTES.jwks, b.url))).json()) as { keys: { kid: string }[] };
        expect(served.keys.map((k) => k.kid).sort()).toEqual(want);
      } finally {
        await b.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  // Bug: with an admin token and no TLS, listen.host 0.0.0.0 served the admin bearer token
  // (and DEKs on create) in clear to the network.
  it('bug: refuses to start the admin API over plain HTTP on a non-loopback host', async () => {
    const dir = await tempDir();
    try {
      const env = { NODE_ENV: 'test', CIR_KMS_ADMIN_TOKEN: ADMIN };
      const config = loadBrokerConfig({ listen: { host: '0.0.0.0', port: 0 }, stateDir: path.join(dir, 'state') }, { env });
      let started: RunningBroker | undefined;
      try {
        started = await startBroker(config, { logger: captureLogs().logger, env, verifier: fakeVerifier() });
      } catch (e) {
        expect(e).toMatchObject({ code: 'ERR_KMS_CONFIG_INVALID' });
        expect((e as { detail: string }).detail).toContain('allowInsecureAdmin');
      } finally {
        await started?.close();
      }
      expect(started).toBeUndefined();
      // Without an admin token the same host is fine (nothing secret on the wire): checked
      // without listening, through buildApp, which applies the same rule.
      const store = await openKeyStore(config, { env });
      const tokens = await TokenService.generate({ issuer: config.issuer, ttlSeconds: config.tokenTtlSeconds });
      const deps = { logger: captureLogs().logger, verifier: fakeVerifier(), keyStore: store, tokens, env };
      expect(() => buildApp(config, { ...deps, adminToken: ADMIN })).toThrow(expect.objectContaining({ code: 'ERR_KMS_CONFIG_INVALID' }));
      await buildApp(config, { ...deps, adminToken: undefined }).close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('serves the admin API over plain HTTP on a non-loopback host only with allowInsecureAdmin, warning', async () => {
    const dir = await tempDir();
    try {
      const env = { NODE_ENV: 'test' };
      const config = loadBrokerConfig({ listen: { host: '0.0.0.0', port: 0 }, stateDir: dir, allowInsecureAdmin: true }, { env });
      const logs = captureLogs();
      const store = await openKeyStore(config, { env });
      const tokens = await TokenService.generate({ issuer: config.issuer, ttlSeconds: config.tokenTtlSeconds });
      const app = buildApp(config, { logger: logs.logger, verifier: fakeVerifier(), keyStore: store, tokens, env, adminToken: ADMIN });
      try {
        const res = await app.inject({ method: 'GET', url: ROUTES.adminKeys, headers: { authorization: `Bearer ${ADMIN}` } });
        expect(res.statusCode).toBe(200);
        const warn = logs.lines.map((l) => JSON.parse(l) as { level: number; allowInsecureAdmin?: boolean }).find((l) => l.allowInsecureAdmin);
        expect(warn?.level).toBe(40);
        expect(logs.text()).not.toContain(ADMIN);
      } finally {
        await app.close();
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses to start in production when a stored key policy allows the simulated TEE', async () => {
    const dir = await tempDir();
    try {
      const dev = { NODE_ENV: 'development', CIR_KMS_ADMIN_TOKEN: ADMIN };
      const config = loadBrokerConfig({ listen: { host: '127.0.0.1', port: 0 }, stateDir: dir }, { env: dev });
      const a = await startBroker(config, { logger: captureLogs().logger, env: dev, verifier: fakeVerifier() });
      const created = await post(
        new URL(ROUTES.adminKeys, a.url).href,
        { keyId: 'dev-key', dek: Buffer.alloc(32).toString('base64url'), policy: { allowSimulated: true, anyMeasurement: true } },
        { authorization: `Bearer ${ADMIN}` },
      );
      expect(created.status).toBe(201);
      await a.close();
      await expect(
        startBroker(config, { logger: captureLogs().logger, env: { NODE_ENV: 'production' }, verifier: fakeVerifier() }),
      ).rejects.toMatchObject({ code: 'ERR_KMS_CONFIG_INVALID' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
