/**
 * Test doubles for the server: an evidence provider that records report_data, and an
 * in-memory key broker that speaks the BrokerClient interface with real HPKE, so boot's
 * success path runs without a broker process or a TEE. Development and tests only;
 * nothing in the server imports this module.
 */
import { CompactSign, exportJWK, generateKeyPair, type CryptoKey } from 'jose';
import { sha256 } from '../common/bytes.js';
import { LEASE_JWS_TYPE, RELEASE_JWS_TYPE, type Lease, type LeasePayload, type LeaseRenewResponse, type ReleaseSignedPayload } from '../kms-broker/protocol.js';
import { jwksReleaseVerifier, type ReleaseVerifier } from './release-verify.js';
import { jwksLeaseVerifier, type LeaseVerifier } from './lease.js';
import { randomBytes } from 'node:crypto';
import * as ort from '../common/ort.js';
import type { ModelInferRequestIn } from './proto-types.js';
import { toRawBytes } from './tensors.js';
import type { Evidence, EvidenceProvider } from '../attestation/types.js';
import { hpkeSeal, HPKE_SUITE_ID } from '../common/hpke.js';
import {
  RELEASE_HPKE_INFO,
  releaseAad,
  type AttestRequest,
  type AttestResponse,
  type ChallengeResponse,
  type ReleaseResponse,
} from '../kms-broker/protocol.js';
import type { BrokerClient, ReleaseParams, RenewParams } from './broker-client.js';

/** Evidence provider whose "report" is just the report_data (base64). Not verifiable. */
export class RecordingEvidenceProvider implements EvidenceProvider {
  readonly tee = 'sev-snp' as const;
  readonly simulated = true;
  readonly calls: Uint8Array[] = [];
  fail = false;

  async collect(reportData: Uint8Array): Promise<Evidence> {
    if (this.fail) throw new Error('fake TEE failure');
    this.calls.push(Uint8Array.from(reportData));
    return { tee: 'sev-snp', report: Buffer.from(reportData).toString('base64') };
  }
}

export interface FakeBrokerCall {
  readonly op: 'challenge' | 'attest' | 'release' | 'renew';
  readonly keyId?: string;
}

/**
 * In-memory broker. `keys` maps `keyId` -> version -> 32-byte DEK. `failNext(op, error)`
 * queues failures; `token` is the attestation token it issues.
 */
export class FakeBroker implements BrokerClient {
  readonly calls: FakeBrokerCall[] = [];
  readonly token: string;
  readonly #keys: Map<string, Map<number, Uint8Array>>;
  readonly #nonces = new Set<string>();
  readonly #failures: { op: FakeBrokerCall['op']; error: unknown }[] = [];
  /** When set, every call of this op fails with this error. */
  always: { op: FakeBrokerCall['op']; error: unknown } | undefined;
  /** When set, release seals to this public key instead of the requester's. */
  sealTo: Uint8Array | undefined;
  /** Lifetime and renew point of the leases it grants (seconds). */
  leaseTtlSeconds = 600;
  leaseRenewAfterSeconds = 300;
  /** Leases granted (release) and renewed, in order. */
  readonly leases: LeasePayload[] = [];
  #lastNonce = '';

  constructor(keys: Map<string, Map<number, Uint8Array>>, token = `tok-${randomBytes(8).toString('hex')}`) {
    this.#keys = keys;
    this.token = token;
  }

  failNext(op: FakeBrokerCall['op'], error: unknown, times = 1): void {
    for (let i = 0; i < times; i++) this.#failures.push({ op, error });
  }

  #maybeFail(op: FakeBrokerCall['op']): void {
    this.calls.push({ op });
    if (this.always?.op === op) throw this.always.error;
    const i = this.#failures.findIndex((f) => f.op === op);
    if (i >= 0) {
      const [f] = this.#failures.splice(i, 1);
      throw f!.error;
    }
  }

  async challenge(): Promise<ChallengeResponse> {
    this.#maybeFail('challenge');
    const nonce = randomBytes(32).toString('base64url');
    this.#nonces.add(nonce);
    return { nonce, expiresAt: new Date(Date.now() + 60_000).toISOString() };
  }

  async attest(req: AttestRequest): Promise<AttestResponse> {
    this.#maybeFail('attest');
    if (!this.#nonces.delete(req.nonce)) throw new Error('fake broker: unknown nonce');
    this.#lastNonce = req.nonce;
    return { token: this.token, expiresAt: new Date(Date.now() + 60_000).toISOString(), claims: { simulated: true } };
  }

  async release(keyId: string, params: ReleaseParams): Promise<ReleaseResponse> {
    this.#maybeFail('release');
    if (params.token !== this.token) throw new Error('fake broker: bad token');
    const versions = this.#keys.get(keyId);
    const version = params.version ?? Math.max(...(versions?.keys() ?? [0]));
    const dek = versions?.get(version);
    if (!dek) throw new Error('fake broker: no such key');
    const to = this.sealTo ?? Buffer.from(params.publicKey, 'base64url');
    const sealed = await hpkeSeal(to, dek, RELEASE_HPKE_INFO, releaseAad(keyId, version));
    const enc = Buffer.from(sealed.enc).toString('base64url');
    const payload: ReleaseSignedPayload = {
      iss: 'fake-broker',
      iat: Math.floor(Date.now() / 1000),
      keyId,
      version,
      suite: HPKE_SUITE_ID,
      enc,
      ciphertextSha256: sha256(sealed.ciphertext).toString('base64url'),
      keyHash: sha256(to).toString('base64url'),
    };
    const { privateKey } = await this.#signingKeys();
    const signature = await new CompactSign(Buffer.from(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'ES256', kid: 'fake', typ: RELEASE_JWS_TYPE })
      .sign(privateKey);
    const lease = await this.#lease(randomBytes(16).toString('base64url'), keyId, version, sha256(to).toString('base64url'));
    return { keyId, version, suite: HPKE_SUITE_ID, enc, ciphertext: Buffer.from(sealed.ciphertext).toString('base64url'), signature, lease };
  }

  /** Renews any lease it granted (no checks beyond the token); `failNext('renew', ...)` refuses. */
  async renew(params: RenewParams): Promise<LeaseRenewResponse> {
    this.#maybeFail('renew');
    if (params.token !== this.token) throw new Error('fake broker: bad token');
    const prev = JSON.parse(Buffer.from(params.lease.split('.')[1] ?? '', 'base64url').toString('utf8')) as LeasePayload;
    this.calls[this.calls.length - 1] = { op: 'renew', keyId: prev.keyId };
    return { lease: await this.#lease(prev.lid, prev.keyId, prev.version, sha256(Buffer.from(params.publicKey, 'base64url')).toString('base64url')) };
  }

  async #lease(lid: string, keyId: string, version: number, keyHash: string): Promise<Lease> {
    const iat = Math.floor(Date.now() / 1000);
    const payload: LeasePayload = {
      iss: 'fake-broker',
      lid,
      tenant: 'default',
      keyId,
      version,
      measurement: '00'.repeat(48),
      keyHash,
      nonce: this.#lastNonce,
      iat,
      exp: iat + this.leaseTtlSeconds,
      renewAfter: iat + this.leaseRenewAfterSeconds,
    };
    this.leases.push(payload);
    const { privateKey } = await this.#signingKeys();
    const token = await new CompactSign(Buffer.from(JSON.stringify(payload)))
      .setProtectedHeader({ alg: 'ES256', kid: 'fake', typ: LEASE_JWS_TYPE })
      .sign(privateKey);
    return { id: lid, expiresAt: new Date(payload.exp * 1000).toISOString(), renewAfter: new Date(payload.renewAfter * 1000).toISOString(), token };
  }

  #keyPair: Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }> | undefined;

  #signingKeys(): Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }> {
    this.#keyPair ??= generateKeyPair('ES256') as Promise<{ privateKey: CryptoKey; publicKey: CryptoKey }>;
    return this.#keyPair;
  }

  /** A verifier pinned to this fake broker's release-signing key. */
  async releaseVerifier(): Promise<ReleaseVerifier> {
    const jwk = await exportJWK((await this.#signingKeys()).publicKey);
    return jwksReleaseVerifier({ keys: [{ ...jwk, kid: 'fake', alg: 'ES256', use: 'sig' }] });
  }

  /** A lease verifier pinned to the same key. */
  async leaseVerifier(): Promise<LeaseVerifier> {
    const jwk = await exportJWK((await this.#signingKeys()).publicKey);
    return jwksLeaseVerifier({ keys: [{ ...jwk, kid: 'fake', alg: 'ES256', use: 'sig' }] });
  }
}

/**
 * A ModelInferRequest for the bundled Silero VAD model (96 ms of a sine tone plus noise,
 * random state) and the same tensors as onnxruntime feeds, for comparing the server's
 * outputs with in-process onnxruntime.
 */
export function vadRequest(): { req: ModelInferRequestIn; feeds: Record<string, ort.Tensor> } {
  const audio = new Float32Array(1536);
  for (let i = 0; i < audio.length; i++) audio[i] = Math.sin(i / 7) * 0.3 + (Math.random() - 0.5) * 0.05;
  const h = Float32Array.from({ length: 128 }, () => Math.random() * 0.1);
  const c = Float32Array.from({ length: 128 }, () => Math.random() * 0.1);
  const sr = BigInt64Array.from([16000n]);
  return {
    req: {
      model_name: 'vad',
      id: 'req-1',
      inputs: [
        { name: 'input', datatype: 'FP32', shape: [1, 1536] },
        { name: 'sr', datatype: 'INT64', shape: [] },
        { name: 'h', datatype: 'FP32', shape: [2, 1, 64] },
        { name: 'c', datatype: 'FP32', shape: [2, 1, 64] },
      ],
      raw_input_contents: [toRawBytes(audio), toRawBytes(sr), toRawBytes(h), toRawBytes(c)],
    },
    feeds: {
      input: new ort.Tensor('float32', audio, [1, 1536]),
      sr: new ort.Tensor('int64', sr, []),
      h: new ort.Tensor('float32', h, [2, 1, 64]),
      c: new ort.Tensor('float32', c, [2, 1, 64]),
    },
  };
}
