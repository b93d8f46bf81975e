import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { compactVerify, createLocalJWKSet, decodeJwt, decodeProtectedHeader, type JSONWebKeySet } from 'jose';
import { generateHpkeKeyPair, hpkeOpen, hpkeSeal } from '../common/hpke.js';
import { sha256 } from '../common/bytes.js';
import {
  ProblemSchema,
  RELEASE_HPKE_INFO,
  ReleaseResponseSchema,
  TOKEN_AUDIENCE,
  AttestResponseSchema,
  releaseAad,
  PROBLEM_CONTENT_TYPE,
  RELEASE_JWS_TYPE,
  ReleaseSignedPayloadSchema,
} from './protocol.js';
import {
  attest,
  challenge,
  createKeyViaApi,
  makeHarness,
  release,
  MEASUREMENT_A,
  MEASUREMENT_B,
  fakeVerifier,
  adminHeaders,
  ADMIN_TOKEN,
  type Harness,
} from './testdata/harness.js';
import { buildApp, MAX_EVIDENCE_DEPTH, type EvidenceVerifier } from './app.js';
import type { KeyStore } from './keystore.js';

const DEK = Buffer.alloc(32, 7);
const POLICY = { measurements: [MEASUREMENT_A] };

function expectProblem(res: { statusCode: number; headers: Record<string, unknown>; json(): unknown }, status: number, code: string) {
  expect(res.statusCode).toBe(status);
  expect(String(res.headers['content-type'])).toContain(PROBLEM_CONTENT_TYPE);
  const p = ProblemSchema.parse(res.json());
  expect(p).toMatchObject({ status, code, type: `urn:cir:error:${code}` });
  return p;
}

describe('kms-broker app', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness();
    expect((await createKeyViaApi(h.app, 'model-a', DEK, POLICY)).statusCode).toBe(201);
  });
  afterEach(async () => h.close());

  describe('attest', () => {
    it('issues an ES256 token bound to the public key, nonce and claims', async () => {
      const { res, keyPair, nonce } = await attest(h.app);
      expect(res.statusCode).toBe(200);
      const body = AttestResponseSchema.parse(res.json());
      expect(decodeProtectedHeader(body.token)).toMatchObject({ alg: 'ES256', kid: h.tokens.kid });
      const p = decodeJwt(body.token);
      expect(p.aud).toBe(TOKEN_AUDIENCE);
      expect(p.iss).toBe('cir-kms-broker');
      expect(p.eat_nonce).toBe(nonce.toString('base64url'));
      expect(p.eat_profile).toBe('tag:ietf.org,2025-07:ear');
      expect(p['cir.tenant']).toBe('default');
      expect(p['cir.key-hash']).toBe(sha256(keyPair.publicKey).toString('base64url'));
      expect(typeof p.jti).toBe('string');
      expect(p.exp! - p.iat!).toBeLessThanOrEqual(300);
      expect((p['cir.claims'] as { measurement: string }).measurement).toBe(MEASUREMENT_A);
      expect(p['cir.relaxations']).toContain('any-measurement');
      expect((p.submods as { cpu: { 'ear.status': string } }).cpu['ear.status']).toBe('affirming');
      expect(new Date(body.expiresAt).getTime()).toBe(p.exp! * 1000);
    });

    it('denies evidence whose report_data binds another public key (strict verifier)', async () => {
      const other = await generateHpkeKeyPair();
      const nonce = await challenge(h.app);
      const { kmsReportData } = await import('../attestation/binding.js');
      const { res } = await attest(h.app, { nonce, reportData: kmsReportData(nonce, other.publicKey) });
      const p = expectProblem(res, 403, 'ERR_KMS_EVIDENCE_REJECTED');
      expect(p.detail).toContain('ERR_ATT_FAKE_REPORT_DATA');
    });

    it('re-checks the binding itself when a verifier ignores expectedReportData', async () => {
      await h.close();
      h = await makeHarness({ verifier: fakeVerifier({ strict: false }) });
      const { res } = await attest(h.app, { reportData: Buffer.alloc(64, 1) });
      expectProblem(res, 403, 'ERR_KMS_BINDING_MISMATCH');
    });

    it('denies a replayed nonce', async () => {
      const first = await attest(h.app);
      expect(first.res.statusCode).toBe(200);
      const again = await attest(h.app, { nonce: first.nonce, keyPair: first.keyPair });
      const p = expectProblem(again.res, 403, 'ERR_KMS_NONCE_INVALID');
      expect(p.detail).toBe('unknown or already used');
    });

    it('burns the nonce even when verification fails', async () => {
      const nonce = await challenge(h.app);
      const bad = await attest(h.app, { nonce, fail: 'verification' });
      expectProblem(bad.res, 403, 'ERR_KMS_EVIDENCE_REJECTED');
      const retry = await attest(h.app, { nonce });
      expectProblem(retry.res, 403, 'ERR_KMS_NONCE_INVALID');
    });

    it('denies an expired nonce and an unknown one', async () => {
      const nonce = await challenge(h.app);
      h.clock.advance(60);
      expectProblem((await attest(h.app, { nonce })).res, 403, 'ERR_KMS_NONCE_INVALID');
      expectProblem((await attest(h.app, { nonce: Buffer.alloc(32, 9) })).res, 403, 'ERR_KMS_NONCE_INVALID');
      expect(h.verifier.calls).toBe(0);
    });

    it('maps verifier bad-input to 400 and an untyped verifier crash to a typed 403, not a 500', async () => {
      expectProblem((await attest(h.app, { fail: 'bad-input' })).res, 400, 'ERR_KMS_EVIDENCE_MALFORMED');
      const crash = await attest(h.app, { fail: 'crash' });
      const p = expectProblem(crash.res, 403, 'ERR_KMS_EVIDENCE_REJECTED');
      expect(p.detail).toBe('verifier error');
      expect(crash.res.body).not.toContain('shadow');
      expect(crash.res.body).not.toContain('exploded');
      expect(h.logs.text()).not.toContain('shadow');
    });

    // Bug: a verifier throwing a plain TypeError on hostile evidence gave a 500 and an
    // error-level log line with its stack.
    it('bug: a verifier throwing a plain TypeError gives 403 ERR_KMS_EVIDENCE_REJECTED, logged at warn by name only', async () => {
      await h.close();
      const throwing: EvidenceVerifier & { calls: number } = {
        calls: 0,
        async verify() {
          throwing.calls++;
          throw new TypeError("Cannot read properties of undefined (reading 'CANARY-EVIDENCE-BYTES')");
        },
      };
      h = await makeHarness({ verifier: throwing as ReturnType<typeof fakeVerifier> });
      const { res } = await attest(h.app);
      expectProblem(res, 403, 'ERR_KMS_EVIDENCE_REJECTED');
      expect(throwing.calls).toBe(1);
      expect(res.body).not.toContain('CANARY');
      const lines = h.logs.lines.map((l) => JSON.parse(l) as { level: number; verifierError?: string; msg: string });
      expect(lines.some((l) => l.level === 40 && l.verifierError === 'TypeError')).toBe(true);
      expect(lines.filter((l) => l.level >= 50)).toEqual([]);
      expect(h.logs.text()).not.toContain('CANARY');
    });

    // Bug: JSON.stringify(evidence) for the log digest threw RangeError on ~200k nested
    // arrays (well inside the 1 MiB body limit): a 500 instead of a typed 4xx.
    it('bug: deeply nested evidence gives 400 ERR_KMS_EVIDENCE_MALFORMED, not a 500', async () => {
      // limits: the ~400 KB body needs an evidence limit above the 128 KiB default.
      await h.close();
      h = await makeHarness({ config: { limits: { maxEvidenceBytes: 1024 * 1024 } } });
      const depth = 200_000;
      const nested = '['.repeat(depth) + ']'.repeat(depth);
      const nonce = await challenge(h.app);
      const publicKey = Buffer.alloc(32, 1).toString('base64url');
      const payload = `{"nonce":"${nonce.toString('base64url')}","publicKey":"${publicKey}","evidence":{"report":${nested}}}`;
      expect(payload.length).toBeLessThan(h.config.bodyLimit);
      const res = await h.app.inject({ method: 'POST', url: '/v1/attest', headers: { 'content-type': 'application/json' }, payload });
      const p = expectProblem(res, 400, 'ERR_KMS_EVIDENCE_MALFORMED');
      expect(p.detail).toContain(String(MAX_EVIDENCE_DEPTH));
      expect(h.verifier.calls).toBe(0);
      expect(h.logs.lines.map((l) => JSON.parse(l) as { level: number }).filter((l) => l.level >= 50)).toEqual([]);
    });

    it('accepts evidence at exactly MAX_EVIDENCE_DEPTH and refuses one level deeper', async () => {
      const nest = (d: number): unknown => (d <= 1 ? {} : { n: nest(d - 1) });
      // evidence itself is depth 1
      const ok = await attest(h.app, { extraEvidence: { n: nest(MAX_EVIDENCE_DEPTH - 1) } });
      expect(ok.res.statusCode).toBe(200);
      const deep = await attest(h.app, { extraEvidence: { n: nest(MAX_EVIDENCE_DEPTH) } });
      expectProblem(deep.res, 400, 'ERR_KMS_EVIDENCE_MALFORMED');
    });

    it('refuses a debug guest under the default attestation policy', async () => {
      const debug = { abiMajor: 1, abiMinor: 0, smt: true, migrationAgent: false, debug: true, singleSocket: false };
      expectProblem((await attest(h.app, { claims: { policy: debug } })).res, 403, 'ERR_KMS_ATTESTATION_DENIED');
    });

    it('refuses simulated evidence unless attestation.allowSimulated', async () => {
      const { res } = await attest(h.app, { claims: { simulated: true } });
      const p = expectProblem(res, 403, 'ERR_KMS_ATTESTATION_DENIED');
      expect(p.failures?.some((f) => f.field === 'simulated')).toBe(true);
    });

    it('applies the configured attestation policy', async () => {
      await h.close();
      h = await makeHarness({ config: { attestation: { policy: { measurements: [MEASUREMENT_B] } } } });
      const { res } = await attest(h.app);
      const p = expectProblem(res, 403, 'ERR_KMS_ATTESTATION_DENIED');
      expect(p.failures?.length).toBeGreaterThan(0);
      expect(JSON.stringify(p.failures)).toContain(MEASUREMENT_A);
    });

    it('names the bad field of a malformed request', async () => {
      const res = await h.app.inject({ method: 'POST', url: '/v1/attest', payload: { nonce: 'short', evidence: {}, publicKey: 'x' } });
      const p = expectProblem(res, 400, 'ERR_KMS_BAD_REQUEST');
      expect(p.detail).toMatch(/nonce/);
      expect(p.detail).toMatch(/publicKey/);
    });
  });

  describe('release', () => {
    async function token(claims?: Parameters<typeof attest>[1]) {
      const a = await attest(h.app, claims);
      expect(a.res.statusCode).toBe(200);
      return { token: a.res.json().token as string, keyPair: a.keyPair };
    }

    it('signs the release: the JWS verifies against the JWKS route and its payload matches the response', async () => {
      const t = await token();
      const res = await release(h.app, 'model-a', t.token, t.keyPair.publicKey);
      expect(res.statusCode).toBe(200);
      const body = ReleaseResponseSchema.parse(res.json());
      const jwks = (await h.app.inject({ method: 'GET', url: '/.well-known/jwks.json' })).json() as JSONWebKeySet;
      const { payload, protectedHeader } = await compactVerify(body.signature, createLocalJWKSet(jwks), { algorithms: ['ES256'] });
      expect(protectedHeader).toEqual({ alg: 'ES256', kid: h.tokens.kid, typ: RELEASE_JWS_TYPE });
      const signed = ReleaseSignedPayloadSchema.parse(JSON.parse(Buffer.from(payload).toString('utf8')));
      expect(signed).toEqual({
        iss: h.config.issuer,
        iat: Math.floor(h.clock.now().getTime() / 1000),
        keyId: body.keyId,
        version: body.version,
        suite: body.suite,
        enc: body.enc,
        ciphertextSha256: sha256(Buffer.from(body.ciphertext, 'base64url')).toString('base64url'),
        keyHash: sha256(t.keyPair.publicKey).toString('base64url'),
      });
    });

    /** Intercepts the harness sink's appends of `action`; every other event goes through. */
    function interceptAudit(action: string, onAppend: () => Promise<void>): { options: Map<string, unknown> } {
      const sink = h.audit;
      const original = sink.append.bind(sink);
      const options = new Map<string, unknown>();
      sink.append = async (event, opts) => {
        options.set(event.action, opts);
        if (event.action === action) await onAppend();
        return original(event, opts);
      };
      return { options };
    }

    it('fails closed when the release cannot be audited: 503, no key material in the answer', async () => {
      const t = await token();
      interceptAudit('release', () => Promise.reject(new Error('disk full')));
      const res = await release(h.app, 'model-a', t.token, t.keyPair.publicKey);
      const p = expectProblem(res, 503, 'ERR_KMS_AUDIT_UNAVAILABLE');
      expect(res.body).not.toContain('ciphertext');
      expect(res.body).not.toContain('disk full');
      expect(p).not.toHaveProperty('enc');
    });

    it('answers a release only once its audit entry is durable', async () => {
      const t = await token();
      let durable!: () => void;
      const gate = new Promise<void>((r) => (durable = r));
      interceptAudit('release', () => gate);
      let answered = false;
      const pending = release(h.app, 'model-a', t.token, t.keyPair.publicKey).then((r) => {
        answered = true;
        return r;
      });
      // The seal, the signatures and the lease all finish well within this; the audit does not.
      for (let i = 0; i < 20 && !answered; i++) await new Promise((r) => setTimeout(r, 10));
      expect(answered).toBe(false);
      durable();
      const res = await pending;
      expect(res.statusCode).toBe(200);
      expect(ReleaseResponseSchema.parse(res.json()).keyId).toBe('model-a');
    });

    it('defers the challenge and attestation entries, never the release entry', async () => {
      const { options } = interceptAudit('none', async () => undefined);
      const t = await token();
      expect((await release(h.app, 'model-a', t.token, t.keyPair.publicKey)).statusCode).toBe(200);
      expect(options.get('challenge')).toEqual({ defer: true });
      expect(options.get('attest')).toEqual({ defer: true });
      expect(options.has('release')).toBe(true);
      expect(options.get('release')).toBeUndefined();
    });

    it('a release signature does not verify against another broker JWKS, nor after payload tampering', async () => {
      const t = await token();
      const body = ReleaseResponseSchema.parse((await release(h.app, 'model-a', t.token, t.keyPair.publicKey)).json());
      const { TokenService } = await import('./tokens.js');
      const other = await TokenService.generate({ issuer: h.config.issuer, ttlSeconds: 300 });
      await expect(compactVerify(body.signature, createLocalJWKSet(other.jwks()))).rejects.toThrow();
      const [hd, pl, sig] = body.signature.split('.') as [string, string, string];
      const forged = JSON.parse(Buffer.from(pl, 'base64url').toString('utf8'));
      forged.ciphertextSha256 = Buffer.alloc(32).toString('base64url');
      const tampered = `${hd}.${Buffer.from(JSON.stringify(forged)).toString('base64url')}.${sig}`;
      await expect(compactVerify(tampered, createLocalJWKSet(h.tokens.jwks()))).rejects.toThrow();
    });

    it('seals the DEK to the bound key: HPKE open yields the DEK', async () => {
      const t = await token();
      const res = await release(h.app, 'model-a', t.token, t.keyPair.publicKey);
      expect(res.statusCode).toBe(200);
      const body = ReleaseResponseSchema.parse(res.json());
      expect(body).toMatchObject({ keyId: 'model-a', version: 1 });
      const dek = await hpkeOpen(
        t.keyPair,
        { enc: Buffer.from(body.enc, 'base64url'), ciphertext: Buffer.from(body.ciphertext, 'base64url') },
        RELEASE_HPKE_INFO,
        releaseAad('model-a', 1),
      );
      expect(Buffer.from(dek).equals(DEK)).toBe(true);
      // Bound to key id and version: another AAD does not open.
      await expect(
        hpkeOpen(t.keyPair, { enc: Buffer.from(body.enc, 'base64url'), ciphertext: Buffer.from(body.ciphertext, 'base64url') }, RELEASE_HPKE_INFO, releaseAad('model-b', 1)),
      ).rejects.toThrow();
    });

    it('seals inline for a lone release and on the off-loop sealer once releases overlap', async () => {
      const offloaded: number[] = [];
      const h2 = await makeHarness({
        hpkeSeal: async (...args) => {
          offloaded.push(1);
          return hpkeSeal(...args);
        },
      });
      try {
        expect((await createKeyViaApi(h2.app, 'model-a', DEK, POLICY)).statusCode).toBe(201);
        const lone = await attest(h2.app);
        const r1 = await release(h2.app, 'model-a', lone.res.json().token as string, lone.keyPair.publicKey);
        expect(r1.statusCode).toBe(200);
        expect(offloaded).toHaveLength(0);
        const many = await Promise.all(Array.from({ length: 8 }, () => attest(h2.app)));
        const res = await Promise.all(many.map((a) => release(h2.app, 'model-a', a.res.json().token as string, a.keyPair.publicKey)));
        expect(offloaded.length).toBeGreaterThan(0);
        // Whichever path sealed it, every release opens to the DEK under its own key.
        for (let i = 0; i < res.length; i++) {
          expect(res[i]!.statusCode).toBe(200);
          const body = ReleaseResponseSchema.parse(res[i]!.json());
          const dek = await hpkeOpen(many[i]!.keyPair, { enc: Buffer.from(body.enc, 'base64url'), ciphertext: Buffer.from(body.ciphertext, 'base64url') }, RELEASE_HPKE_INFO, releaseAad('model-a', 1));
          expect(Buffer.from(dek).equals(DEK)).toBe(true);
        }
      } finally {
        await h2.close();
      }
    });

    it('releases an explicit version and 404s an unknown one', async () => {
      const t = await token();
      expect((await release(h.app, 'model-a', t.token, t.keyPair.publicKey, 1)).statusCode).toBe(200);
      expectProblem(await release(h.app, 'model-a', t.token, t.keyPair.publicKey, 2), 404, 'ERR_KMS_KEY_VERSION_NOT_FOUND');
      expectProblem(await release(h.app, 'nope', t.token, t.keyPair.publicKey), 404, 'ERR_KMS_KEY_NOT_FOUND');
    });

    it('denies a token presented with another public key', async () => {
      const t = await token();
      const thief = await generateHpkeKeyPair();
      expectProblem(await release(h.app, 'model-a', t.token, thief.publicKey), 403, 'ERR_KMS_KEY_BINDING_MISMATCH');
    });

    it('denies by policy and lists each failing rule', async () => {
      expect((await createKeyViaApi(h.app, 'model-strict', DEK, { measurements: [MEASUREMENT_A], minGuestSvn: 5 })).statusCode).toBe(201);
      const t = await token({ claims: { measurement: MEASUREMENT_B, guestSvn: 1 } });
      const p = expectProblem(await release(h.app, 'model-strict', t.token, t.keyPair.publicKey), 403, 'ERR_KMS_POLICY_DENIED');
      expect(p.failures!.length).toBeGreaterThanOrEqual(2);
      const text = JSON.stringify(p.failures);
      expect(text).toContain(MEASUREMENT_B); // observed
      expect(text).toContain(MEASUREMENT_A); // expected
    });

    it('follows a policy change made after the token was issued', async () => {
      const t = await token();
      const put = await h.app.inject({
        method: 'PUT',
        url: '/v1/admin/keys/model-a/policy',
        headers: { authorization: 'Bearer test-admin-token-0123456789abcdef' },
        payload: { policy: { measurements: [MEASUREMENT_B] } },
      });
      expect(put.statusCode).toBe(200);
      expectProblem(await release(h.app, 'model-a', t.token, t.keyPair.publicKey), 403, 'ERR_KMS_POLICY_DENIED');
    });

    it('401s a missing, malformed, forged or expired token with WWW-Authenticate', async () => {
      const t = await token();
      const r1 = await release(h.app, 'model-a', undefined, t.keyPair.publicKey);
      expectProblem(r1, 401, 'ERR_KMS_TOKEN_MISSING');
      expect(r1.headers['www-authenticate']).toMatch(/^Bearer /);
      const r2 = await release(h.app, 'model-a', 'not a token', t.keyPair.publicKey);
      expectProblem(r2, 401, 'ERR_KMS_TOKEN_INVALID');
      const [hd, pl] = t.token.split('.');
      const forged = `${hd}.${pl}.${Buffer.alloc(64).toString('base64url')}`;
      const r3 = await release(h.app, 'model-a', forged, t.keyPair.publicKey);
      expectProblem(r3, 401, 'ERR_KMS_TOKEN_INVALID');
      expect(r3.headers['www-authenticate']).toContain('invalid_token');
      h.clock.advance(301);
      expectProblem(await release(h.app, 'model-a', t.token, t.keyPair.publicKey), 401, 'ERR_KMS_TOKEN_INVALID');
    });

    it('rejects a path-traversal key id', async () => {
      const t = await token();
      expectProblem(await release(h.app, '../master', t.token, t.keyPair.publicKey), 400, 'ERR_KMS_BAD_KEY_ID');
      expectProblem(await release(h.app, '.hidden', t.token, t.keyPair.publicKey), 400, 'ERR_KMS_BAD_KEY_ID');
    });
  });

  describe('problem documents and misc routes', () => {
    it("logs no per-request lines of fastify's own (the routes log their decisions), even at trace", async () => {
      await challenge(h.app);
      expectProblem(await h.app.inject({ method: 'GET', url: '/nope' }), 404, 'ERR_KMS_NOT_FOUND');
      const msgs = h.logs.lines.map((l) => (JSON.parse(l) as { msg?: string }).msg);
      expect(msgs).not.toContain('incoming request');
      expect(msgs).not.toContain('request completed');
      expect(msgs.some((m) => m?.startsWith('Route GET:/nope not found'))).toBe(false);
    });

    it('404s an unknown route as a problem', async () => {
      expectProblem(await h.app.inject({ method: 'GET', url: '/nope' }), 404, 'ERR_KMS_NOT_FOUND');
    });

    it('400s malformed JSON without echoing it', async () => {
      const res = await h.app.inject({
        method: 'POST',
        url: '/v1/attest',
        headers: { 'content-type': 'application/json' },
        payload: '{"nonce": SECRETISH',
      });
      expectProblem(res, 400, 'ERR_KMS_BAD_REQUEST');
      expect(res.body).not.toContain('SECRETISH');
    });

    it('413s an oversized body and 415s a non-JSON one', async () => {
      const big = { nonce: 'a', evidence: { x: 'y'.repeat(1024 * 1024) }, publicKey: 'a' };
      expectProblem(await h.app.inject({ method: 'POST', url: '/v1/attest/challenge', payload: big }), 413, 'ERR_KMS_BODY_TOO_LARGE');
      // limits: the attest body has the tighter evidence limit.
      expectProblem(await h.app.inject({ method: 'POST', url: '/v1/attest', payload: big }), 413, 'ERR_KMS_EVIDENCE_TOO_LARGE');
      expectProblem(
        await h.app.inject({ method: 'POST', url: '/v1/attest', headers: { 'content-type': 'text/plain' }, payload: 'hi' }),
        415,
        'ERR_KMS_UNSUPPORTED_MEDIA_TYPE',
      );
    });

    it('accepts an empty JSON object or no body for a challenge', async () => {
      const a = await h.app.inject({ method: 'POST', url: '/v1/attest/challenge', payload: {} });
      expect(a.statusCode).toBe(200);
      const nonce = Buffer.from(a.json().nonce, 'base64url');
      expect(nonce).toHaveLength(32);
      expect(new Date(a.json().expiresAt).getTime()).toBe(h.clock.now().getTime() + 60_000);
    });

    it('publishes the token key as a JWKS with an RFC 7638 kid', async () => {
      const res = await h.app.inject({ method: 'GET', url: '/.well-known/jwks.json' });
      expect(res.statusCode).toBe(200);
      const { keys } = res.json();
      expect(keys).toHaveLength(1);
      expect(keys[0]).toMatchObject({ kty: 'EC', crv: 'P-256', kid: h.tokens.kid, alg: 'ES256', use: 'sig' });
      expect(keys[0].d).toBeUndefined();
      const { calculateJwkThumbprint } = await import('jose');
      expect(await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: keys[0].x, y: keys[0].y })).toBe(keys[0].kid);
    });

    it('answers /healthz', async () => {
      const res = await h.app.inject({ method: 'GET', url: '/healthz' });
      expect(res.statusCode).toBe(200);
      expect(res.json()).toEqual({ status: 'ok' });
    });

    it('turns a thrown internal error into a generic 500', async () => {
      const broken = {
        ...h.store,
        list: async () => {
          throw new Error('db password is hunter2');
        },
      } as unknown as KeyStore;
      const app = buildApp(h.config, { logger: h.logs.logger, verifier: h.verifier, keyStore: broken, tokens: h.tokens, adminToken: ADMIN_TOKEN, env: {} });
      try {
        const res = await app.inject({ method: 'GET', url: '/v1/admin/keys', headers: adminHeaders() });
        const p = expectProblem(res, 500, 'ERR_KMS_INTERNAL');
        expect(p.title).toBe('internal error');
        expect(res.body).not.toContain('hunter2');
      } finally {
        await app.close();
      }
    });

    it('does not leak the detail of a non-public KmsError (corrupt store) to the caller', async () => {
      const { writeFile } = await import('node:fs/promises');
      const path = await import('node:path');
      await writeFile(path.join(h.dir, 'tenants', 'default', 'keys', 'model-a.json'), '{"half":');
      const res = await h.app.inject({ method: 'GET', url: '/v1/admin/keys/model-a', headers: adminHeaders() });
      const p = expectProblem(res, 500, 'ERR_KMS_INTERNAL');
      expect(p.detail).toBeUndefined();
      expect(h.logs.text()).toContain('ERR_KMS_STORE_CORRUPT');
    });
  });
});
