import { describe, it, expect, beforeAll } from 'vitest';
import { randomBytes } from 'node:crypto';
import { writeFile, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CompactSign, exportJWK, generateKeyPair } from 'jose';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../common/hpke.js';
import { isCirError } from '../common/errors.js';
import { sha256 } from '../common/bytes.js';
import { RELEASE_JWS_TYPE, type ReleaseResponse } from '../kms-broker/protocol.js';
import { FakeBroker } from './testing.js';
import { jwksReleaseVerifier, loadReleaseVerifier, type ReleaseVerifier } from './release-verify.js';

let broker: FakeBroker;
let verifier: ReleaseVerifier;
let hpke: HpkeKeyPair;
let rel: ReleaseResponse;

async function code(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'OK';
  } catch (e) {
    return isCirError(e) ? e.code : `untyped: ${String(e)}`;
  }
}

beforeAll(async () => {
  broker = new FakeBroker(new Map([['k', new Map([[1, randomBytes(32)]])]]));
  verifier = await broker.releaseVerifier();
  hpke = await generateHpkeKeyPair();
  const { nonce } = await broker.challenge();
  const { token } = await broker.attest({ nonce, evidence: {}, publicKey: Buffer.from(hpke.publicKey).toString('base64url') });
  rel = await broker.release('k', { token, publicKey: Buffer.from(hpke.publicKey).toString('base64url'), version: 1 });
});

describe('key release authentication', () => {
  it('accepts an authentic release sealed to our key', async () => {
    expect(await code(verifier.verify(rel, hpke.publicKey))).toBe('OK');
  });

  it('rejects a release sealed to another key', async () => {
    const other = await generateHpkeKeyPair();
    expect(await code(verifier.verify(rel, other.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
  });

  it('rejects a swapped ciphertext, enc, key id or version', async () => {
    const swapped: ReleaseResponse[] = [
      { ...rel, ciphertext: randomBytes(48).toString('base64url') },
      { ...rel, enc: randomBytes(32).toString('base64url') },
      { ...rel, keyId: 'other' },
      { ...rel, version: 2 },
    ];
    for (const r of swapped) expect(await code(verifier.verify(r, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
  });

  it('rejects a tampered signature, a missing one, and one from an unpinned key', async () => {
    const parts = rel.signature.split('.');
    const sig = Buffer.from(parts[2]!, 'base64url');
    sig[0] = sig[0]! ^ 1;
    const tampered = [parts[0], parts[1], sig.toString('base64url')].join('.');
    expect(await code(verifier.verify({ ...rel, signature: tampered }, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
    expect(await code(verifier.verify({ ...rel, signature: 'x' }, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');

    // The host's own key, with a correct payload: not pinned, so refused.
    const { privateKey } = await generateKeyPair('ES256');
    const payload = JSON.parse(Buffer.from(parts[1]!, 'base64url').toString('utf8')) as Record<string, unknown>;
    const forged = await new CompactSign(Buffer.from(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'ES256', kid: 'fake', typ: RELEASE_JWS_TYPE })
      .sign(privateKey);
    expect(await code(verifier.verify({ ...rel, signature: forged }, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
  });

  it('rejects a JWS of another type even when signed by the pinned key', async () => {
    const { privateKey, publicKey } = await generateKeyPair('ES256');
    const v = jwksReleaseVerifier({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1', alg: 'ES256' }] });
    const payload = {
      iss: 'x', iat: 1, keyId: rel.keyId, version: rel.version, suite: rel.suite, enc: rel.enc,
      ciphertextSha256: sha256(Buffer.from(rel.ciphertext, 'base64url')).toString('base64url'),
      keyHash: sha256(hpke.publicKey).toString('base64url'),
    };
    const sign = (typ: string) =>
      new CompactSign(Buffer.from(JSON.stringify(payload))).setProtectedHeader({ alg: 'ES256', kid: 'k1', typ }).sign(privateKey);
    expect(await code(v.verify({ ...rel, signature: await sign(RELEASE_JWS_TYPE) }, hpke.publicKey))).toBe('OK');
    expect(await code(v.verify({ ...rel, signature: await sign('JWT') }, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
  });

  it('loads a pinned JWKS file and refuses a broken one with a config error', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-jwks-'));
    await writeFile(path.join(dir, 'bad.json'), '{"keys": "nope"}');
    expect(await code(loadReleaseVerifier(path.join(dir, 'bad.json')))).toBe('ERR_SRV_CONFIG');
    expect(await code(loadReleaseVerifier(path.join(dir, 'missing.json')))).toBe('ERR_SRV_CONFIG');
  });
});

describe('key release authentication across a broker signing-key rotation', () => {
  it('accepts releases signed by any key in the pinned JWKS (two keys), and refuses a key no longer pinned', async () => {
    const { rm } = await import('node:fs/promises');
    const { TokenService } = await import('../kms-broker/tokens.js');
    const { rotateSigningKey, retireSigningKey } = await import('../kms-broker/signing-keys.js');
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-ring-'));
    try {
      const svc = await TokenService.openRing(dir, { issuer: 'cir-kms-broker', ttlSeconds: 300, watch: false, reloadIntervalMs: 0 });
      const body = {
        keyId: rel.keyId,
        version: rel.version,
        suite: rel.suite,
        enc: rel.enc,
        ciphertextSha256: sha256(Buffer.from(rel.ciphertext, 'base64url')).toString('base64url'),
        keyHash: sha256(hpke.publicKey).toString('base64url'),
      };
      const at = new Date('2030-01-01T00:00:00Z');
      const byA = await svc.signRelease(body, at);
      const a = svc.kid;
      await rotateSigningKey(dir, { now: at });
      const byB = await svc.signRelease(body, at);
      expect(svc.kid).not.toBe(a);
      const pinnedBoth = jwksReleaseVerifier(svc.jwks(), 'cir-kms-broker');
      expect(svc.jwks().keys).toHaveLength(2);
      expect(await code(pinnedBoth.verify({ ...rel, signature: byA }, hpke.publicKey))).toBe('OK');
      expect(await code(pinnedBoth.verify({ ...rel, signature: byB }, hpke.publicKey))).toBe('OK');
      // After A is retired the published set holds B only: A's signatures no longer verify.
      await retireSigningKey(dir, a, { ttlSeconds: 300, now: new Date(at.getTime() + 300_000) });
      await svc.reload();
      const pinnedB = jwksReleaseVerifier(svc.jwks(), 'cir-kms-broker');
      expect(await code(pinnedB.verify({ ...rel, signature: byA }, hpke.publicKey))).toBe('ERR_SRV_RELEASE_SIGNATURE');
      expect(await code(pinnedB.verify({ ...rel, signature: byB }, hpke.publicKey))).toBe('OK');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
