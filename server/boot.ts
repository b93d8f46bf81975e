/**
 * Boot sequence of a cir server: attested key release, in-memory decryption, model load.
 *
 *   1. read every model file and parse sealed headers (no key needed; fails fast)
 *   2. key release, retried as a whole with exponential backoff and jitter:
 *        challenge -> evidence = provider.collect(kmsReportData(nonce, hpkePublicKey))
 *        -> attest -> for each distinct (keyId, keyVersion): release -> HPKE open
 *   3. for each sealed model: decrypt in memory (common/seal.ts) -> create the session
 *   4. publish every model to the registry at once, then report 'ready'
 *
 * TLS and the HPKE key pair are created by the caller (app.ts) before boot: both public
 * keys must exist to answer GetEvidence while boot is still running.
 *
 * Retry policy: only step 2 is retried (broker, verifier and TEE failures may be
 * transient, and a denied policy may be fixed by the operator). Missing files, tampered
 * sealed files and models onnxruntime cannot load are not: retrying cannot help, so boot
 * rejects at once. A rejected boot leaves the server NOT_READY; it never serves.
 *
 * SECURITY: the DEKs and plaintext weights exist only in memory. DEKs are zeroed right
 * after use, plaintext buffers right after onnxruntime has built its session. Tokens,
 * keys and evidence are never logged; failures are logged by code, broker code and the
 * broker's failing policy rules (public values).
 *
 * Leases: every release carries a signed lease (kms-broker/leases.ts), checked here with
 * `leaseVerifier` (bound to our HPKE key and the nonce we attested with) and handed to
 * `onLeases` once the models are published; lease.ts keeps them alive. `releaseAndLoad`
 * is the same release -> decrypt -> load for one key, used by lease.ts to bring withdrawn
 * models back.
 */
import { readFile } from 'node:fs/promises';
import * as ort from '../common/ort.js';
import type { InferenceSession } from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { EvidenceProvider } from '../attestation/types.js';
import { kmsReportData } from '../attestation/binding.js';
import { sha256, toHex } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { hpkeOpen, type HpkeKeyPair } from '../common/hpke.js';
import { openSealedModel, readSealedHeader, type SealedHeader } from '../common/seal.js';
import { RELEASE_HPKE_INFO, releaseAad } from '../kms-broker/protocol.js';
import type { BrokerClient } from './broker-client.js';
import { ServerError } from './codes.js';
import type { InferenceSessionLike, LoadedModel, ModelRegistry } from './registry.js';
import type { ReleaseVerifier } from './release-verify.js';
import type { LeaseVerifier, ReleasedLease, VerifiedLease } from './lease.js';
import { signatureFromSession } from './tensors.js';

export type BootStepName = 'tls' | 'challenge' | 'evidence' | 'attest' | 'release' | 'decrypt' | 'load' | 'ready';

export interface BootStep {
  readonly name: BootStepName;
  readonly ok: boolean;
  /** Wall-clock duration of the step. */
  readonly ms: number;
  /** Public specifics: model name, key id and version, error code. Never secrets. */
  readonly detail?: string;
  /** Key-release attempt this step belongs to (1-based), for steps inside the retry loop. */
  readonly attempt?: number;
}

export interface ModelSource {
  readonly name: string;
  /** Sealed model file (or a plain ONNX file when `plaintext` and allowed). */
  readonly path: string;
  readonly version?: string;
  /** Dev only: the file is plain ONNX. Requires `allowPlaintextModels`. */
  readonly plaintext?: boolean;
}

export interface RetryPolicy {
  /** First backoff delay. */
  readonly initialMs: number;
  /** Cap on any one delay. */
  readonly maxMs: number;
  /** Give up after this many key-release attempts; unlimited when absent. */
  readonly maxAttempts?: number;
}

export type SessionFactory = (
  model: Uint8Array,
  options: InferenceSession.SessionOptions,
) => Promise<InferenceSessionLike>;

export interface RetryInfo {
  readonly attempt: number;
  readonly delayMs: number;
  readonly error: unknown;
}

export interface BootOptions {
  readonly models: readonly ModelSource[];
  readonly provider: EvidenceProvider;
  /** Required when any model is sealed. */
  readonly broker?: BrokerClient;
  /** Authenticates releases (required with `broker`); see release-verify.ts. */
  readonly releaseVerifier?: ReleaseVerifier;
  /** Checks the lease of each release (required with `broker`); see lease.ts. */
  readonly leaseVerifier?: LeaseVerifier;
  /** Receives the lease of every released key, once its models are published. */
  readonly onLeases?: (leases: readonly ReleasedLease[]) => void;
  readonly hpke: HpkeKeyPair;
  readonly registry: ModelRegistry;
  readonly retry: RetryPolicy;
  /** Dev only. Off by default: a plain model is refused. */
  readonly allowPlaintextModels?: boolean;
  readonly intraOpThreads?: number;
  readonly interOpThreads?: number;
  readonly signal?: AbortSignal;
  readonly onStep?: (step: BootStep) => void;
  readonly onRetry?: (info: RetryInfo) => void;
  readonly logger?: Logger;
  // Injected for tests.
  readonly readModelFile?: (path: string) => Promise<Uint8Array>;
  readonly createSession?: SessionFactory;
  readonly random?: () => number;
  readonly sleep?: (ms: number, signal?: AbortSignal) => Promise<void>;
  readonly now?: () => number;
}

/** Delay before retry number `attempt` (1-based): exponential, capped, "equal jitter". */
export function backoffDelay(policy: RetryPolicy, attempt: number, random: () => number): number {
  const exp = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.min(attempt - 1, 30));
  const half = exp / 2;
  return Math.round(half + random() * half);
}

/** Sleep that rejects with ERR_SRV_BOOT_ABORTED when `signal` fires. */
export function abortableSleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(new ServerError('ERR_SRV_BOOT_ABORTED'));
      return;
    }
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(new ServerError('ERR_SRV_BOOT_ABORTED'));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const defaultSessionFactory: SessionFactory = (model, options) => ort.InferenceSession.create(model, options);

interface ReadModel {
  readonly source: ModelSource;
  readonly bytes: Uint8Array;
  /** Absent for plaintext models. */
  readonly header?: SealedHeader;
}

function keyRef(h: SealedHeader): string {
  return `${h.keyId}\0${h.keyVersion}`;
}

function errorCode(e: unknown): string {
  return isCirError(e) ? e.code : 'ERR_UNEXPECTED';
}

/**
 * Runs the boot sequence and publishes the loaded models to `opts.registry`. Resolves
 * with the models once the registry is ready; rejects with a ServerError (or the last
 * key-release error when attempts run out, or ERR_SRV_BOOT_ABORTED when cancelled).
 */
export async function boot(opts: BootOptions): Promise<readonly LoadedModel[]> {
  const clock = opts.now ?? (() => performance.now());
  const step = async <T>(name: BootStepName, detail: string | undefined, attempt: number | undefined, fn: () => Promise<T>): Promise<T> => {
    const t0 = clock();
    const base = { name, ...(attempt !== undefined ? { attempt } : {}) };
    try {
      const r = await fn();
      opts.onStep?.({ ...base, ok: true, ms: clock() - t0, ...(detail !== undefined ? { detail } : {}) });
      return r;
    } catch (e) {
      const d = detail !== undefined ? `${detail}: ${errorCode(e)}` : errorCode(e);
      opts.onStep?.({ ...base, ok: false, ms: clock() - t0, detail: d });
      throw e;
    }
  };
  const checkAbort = (): void => {
    if (opts.signal?.aborted) throw new ServerError('ERR_SRV_BOOT_ABORTED');
  };

  // 1. Read files and parse headers.
  const read = await readModels(opts);
  checkAbort();

  // 2. Key release (retried).
  const sealed = read.filter((m) => m.header !== undefined);
  const released = sealed.length > 0 ? await releaseWithRetry(opts, sealed, step, checkAbort) : emptyRelease();
  const deks = released.deks;

  // 3. Decrypt and load.
  const loaded: LoadedModel[] = [];
  try {
    for (const m of read) {
      checkAbort();
      loaded.push(await decryptAndLoad(opts, m, deks, step));
    }
  } catch (e) {
    await Promise.allSettled(loaded.map((m) => m.session.release()));
    throw e;
  } finally {
    // SECURITY: DEKs are not needed once every model is decrypted (or boot failed).
    for (const dek of deks.values()) dek.fill(0);
  }

  // 4. Publish, then report ready.
  await step('ready', `${loaded.length} model(s)`, undefined, async () => {
    checkAbort();
    opts.registry.publish(loaded);
    if (!opts.registry.ready) throw new ServerError('ERR_SRV_INTERNAL', { detail: 'registry not ready after publish' });
  }).catch(async (e: unknown) => {
    await Promise.allSettled(loaded.map((m) => m.session.release()));
    throw e;
  });
  opts.onLeases?.(leasesOf(released, read));
  return loaded;
}

/**
 * One key's release -> decrypt -> load, for lease.ts to bring withdrawn models back: reads
 * the model files again, releases key `keyId` v`version` once (no retry: the caller has
 * its own backoff), decrypts and loads every model sealed under it. Does NOT publish (the
 * caller republishes) and reports no boot steps. DEKs and plaintext are zeroed as in boot.
 * Throws like boot's steps 1-3; `ERR_SRV_INTERNAL` when no configured model uses the key.
 */
export async function releaseAndLoad(
  opts: BootOptions,
  keyId: string,
  version: number,
  signal: AbortSignal,
): Promise<{ models: LoadedModel[]; lease: ReleasedLease }> {
  const o: BootOptions = { ...opts, signal };
  const read = (await readModels(o)).filter((m) => m.header?.keyId === keyId && m.header.keyVersion === version);
  if (read.length === 0) throw new ServerError('ERR_SRV_INTERNAL', { detail: `no model is sealed under ${keyId} v${version}` });
  assertReleaseReady(o);
  const quiet: StepFn = (_name, _detail, _attempt, fn) => fn();
  const released = await releaseOnce(o, o.broker!, read, quiet, 1);
  const loaded: LoadedModel[] = [];
  try {
    for (const m of read) {
      if (signal.aborted) throw new ServerError('ERR_SRV_BOOT_ABORTED');
      loaded.push(await decryptAndLoad(o, m, released.deks, quiet));
    }
  } catch (e) {
    await Promise.allSettled(loaded.map((m) => m.session.release()));
    throw e;
  } finally {
    // SECURITY: as in boot, no DEK outlives the load.
    for (const dek of released.deks.values()) dek.fill(0);
  }
  const [lease] = leasesOf(released, read);
  if (!lease) throw new ServerError('ERR_SRV_INTERNAL', { detail: 'release without a lease' });
  return { models: loaded, lease };
}

/** What one release round yields: a DEK and a checked lease per key. */
interface Released {
  readonly deks: Map<string, Uint8Array>;
  readonly leases: Map<string, { readonly lease: VerifiedLease; readonly obtainedAt: number }>;
}

function emptyRelease(): Released {
  return { deks: new Map(), leases: new Map() };
}

function leasesOf(released: Released, read: readonly ReadModel[]): ReleasedLease[] {
  return [...released.leases.entries()].map(([ref, l]) => ({
    keyId: l.lease.keyId,
    version: l.lease.version,
    models: read.filter((m) => m.header !== undefined && keyRef(m.header) === ref).map((m) => m.source.name),
    lease: l.lease,
    obtainedAt: l.obtainedAt,
  }));
}

async function readModels(opts: BootOptions): Promise<ReadModel[]> {
  const readFn = opts.readModelFile ?? ((p: string) => readFile(p));
  const out: ReadModel[] = [];
  for (const source of opts.models) {
    if (source.plaintext && !opts.allowPlaintextModels) {
      // SECURITY: a plain model bypasses attestation-gated release; dev option only.
      throw new ServerError('ERR_SRV_MODEL_PLAINTEXT_FORBIDDEN', { detail: `model ${JSON.stringify(source.name)}` });
    }
    let bytes: Uint8Array;
    try {
      bytes = await readFn(source.path);
    } catch (cause) {
      throw new ServerError('ERR_SRV_MODEL_READ', { detail: `model ${JSON.stringify(source.name)} (${source.path})`, cause });
    }
    if (source.plaintext) {
      out.push({ source, bytes });
      continue;
    }
    let header: SealedHeader;
    try {
      header = readSealedHeader(bytes);
    } catch (cause) {
      throw new ServerError('ERR_SRV_MODEL_SEALED', {
        detail: `model ${JSON.stringify(source.name)}: ${errorCode(cause)}`,
        cause,
      });
    }
    out.push({ source, bytes, header });
  }
  return out;
}

type StepFn = <T>(name: BootStepName, detail: string | undefined, attempt: number | undefined, fn: () => Promise<T>) => Promise<T>;

async function releaseWithRetry(
  opts: BootOptions,
  sealed: readonly ReadModel[],
  step: StepFn,
  checkAbort: () => void,
): Promise<Released> {
  assertReleaseReady(opts);
  const broker = opts.broker!;
  if (opts.releaseVerifier!.unsigned) {
    opts.logger?.warn('broker.allowUnsignedRelease: key releases are NOT authenticated (development only)');
  }
  const random = opts.random ?? Math.random;
  const sleep = opts.sleep ?? abortableSleep;
  for (let attempt = 1; ; attempt++) {
    checkAbort();
    try {
      return await releaseOnce(opts, broker, sealed, step, attempt);
    } catch (e) {
      if (isCirError(e) && e.code === 'ERR_SRV_BOOT_ABORTED') throw e;
      checkAbort();
      const failures = isCirError(e) ? e.details?.['failures'] : undefined;
      const status = isCirError(e) ? e.details?.['status'] : undefined;
      const brokerCode = isCirError(e) ? e.details?.['brokerCode'] : undefined;
      const max = opts.retry.maxAttempts;
      if (max !== undefined && attempt >= max) {
        opts.logger?.error({ code: errorCode(e), attempt, status, brokerCode, failures }, 'key release failed; giving up');
        throw e;
      }
      const delayMs = backoffDelay(opts.retry, attempt, random);
      opts.logger?.warn(
        { code: errorCode(e), attempt, delayMs, status, brokerCode, failures },
        'key release failed; retrying',
      );
      opts.onRetry?.({ attempt, delayMs, error: e });
      await sleep(delayMs, opts.signal);
    }
  }
}

function assertReleaseReady(opts: BootOptions): void {
  if (!opts.broker) throw new ServerError('ERR_SRV_CONFIG', { detail: 'sealed models need broker settings' });
  if (!opts.releaseVerifier) {
    throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.jwksFile: no pinned broker key to authenticate key releases' });
  }
  if (!opts.leaseVerifier) {
    throw new ServerError('ERR_SRV_CONFIG', { detail: 'broker.jwksFile: no pinned broker key to check key leases' });
  }
}

async function releaseOnce(
  opts: BootOptions,
  broker: BrokerClient,
  sealed: readonly ReadModel[],
  step: StepFn,
  attempt: number,
): Promise<Released> {
  const { signal } = opts;
  // Lease durations run from when this round started, so no delay below extends them.
  const obtainedAt = (opts.now ?? (() => performance.now()))();
  const challenge = await step('challenge', undefined, attempt, () => broker.challenge(signal));
  const nonce = Buffer.from(challenge.nonce, 'base64url');
  const evidence = await step('evidence', opts.provider.tee, attempt, async () => {
    try {
      return await opts.provider.collect(kmsReportData(nonce, opts.hpke.publicKey));
    } catch (cause) {
      throw new ServerError('ERR_SRV_EVIDENCE', { cause });
    }
  });
  const publicKey = Buffer.from(opts.hpke.publicKey).toString('base64url');
  const attested = await step('attest', undefined, attempt, () =>
    broker.attest(
      { nonce: challenge.nonce, evidence: evidence as unknown as Record<string, unknown>, publicKey },
      signal,
    ),
  );

  const releaseVerifier = opts.releaseVerifier!;
  const leaseVerifier = opts.leaseVerifier!;
  const deks = new Map<string, Uint8Array>();
  const leases: Released['leases'] = new Map();
  try {
    for (const m of sealed) {
      const h = m.header!;
      const ref = keyRef(h);
      if (deks.has(ref)) continue;
      const detail = `${h.keyId} v${h.keyVersion}`;
      const dek = await step('release', detail, attempt, async () => {
        const rel = await broker.release(h.keyId, { token: attested.token, publicKey, version: h.keyVersion }, signal);
        if (rel.keyId !== h.keyId || rel.version !== h.keyVersion) {
          throw new ServerError('ERR_SRV_BROKER_PROTOCOL', { detail: 'release is for another key or version' });
        }
        // SECURITY: authenticate the release before its DEK is used for anything.
        await releaseVerifier.verify(rel, opts.hpke.publicKey);
        // A release whose lease is not ours, for this key and this attestation, is refused too.
        const lease = await leaseVerifier.verify(rel.lease, {
          keyId: h.keyId,
          version: h.keyVersion,
          hpkePublicKey: opts.hpke.publicKey,
          nonce: challenge.nonce,
        });
        leases.set(ref, { lease, obtainedAt });
        let key: Uint8Array;
        try {
          key = await hpkeOpen(
            opts.hpke,
            { enc: Buffer.from(rel.enc, 'base64url'), ciphertext: Buffer.from(rel.ciphertext, 'base64url') },
            RELEASE_HPKE_INFO,
            releaseAad(h.keyId, h.keyVersion),
          );
        } catch (cause) {
          throw new ServerError('ERR_SRV_RELEASE_DECRYPT', { detail: detail, cause });
        }
        if (key.length !== 32) {
          key.fill(0);
          throw new ServerError('ERR_SRV_RELEASE_DECRYPT', { detail: `${detail}: key is not 32 bytes` });
        }
        return key;
      });
      deks.set(ref, dek);
    }
  } catch (e) {
    for (const dek of deks.values()) dek.fill(0);
    throw e;
  }
  return { deks, leases };
}

async function decryptAndLoad(
  opts: BootOptions,
  m: ReadModel,
  deks: ReadonlyMap<string, Uint8Array>,
  step: StepFn,
): Promise<LoadedModel> {
  const name = JSON.stringify(m.source.name);
  let plaintext: Uint8Array;
  if (m.header) {
    const dek = deks.get(keyRef(m.header));
    if (!dek) throw new ServerError('ERR_SRV_INTERNAL', { detail: `no key for model ${name}` });
    plaintext = await step('decrypt', m.source.name, undefined, async () => {
      try {
        return openSealedModel(m.bytes, dek);
      } catch (cause) {
        throw new ServerError('ERR_SRV_MODEL_SEALED', { detail: `model ${name}: ${errorCode(cause)}`, cause });
      }
    });
  } else {
    plaintext = m.bytes;
  }
  const digest = toHex(sha256(plaintext));
  const createSession = opts.createSession ?? defaultSessionFactory;
  try {
    return await step('load', m.source.name, undefined, async () => {
      let session: InferenceSessionLike;
      try {
        session = await createSession(plaintext, {
          executionProviders: ['cpu'],
          graphOptimizationLevel: 'all',
          ...(opts.intraOpThreads ? { intraOpNumThreads: opts.intraOpThreads } : {}),
          ...(opts.interOpThreads ? { interOpNumThreads: opts.interOpThreads } : {}),
        });
      } catch (cause) {
        throw new ServerError('ERR_SRV_MODEL_LOAD', { detail: `model ${name}`, cause });
      }
      try {
        const signature = signatureFromSession(session);
        return Object.freeze({
          name: m.source.name,
          version: m.source.version ?? '1',
          session,
          signature,
          sealed: m.header !== undefined,
          sha256: digest,
        });
      } catch (e) {
        await session.release().catch(() => undefined);
        throw e;
      }
    });
  } finally {
    // SECURITY: onnxruntime has parsed the model into its own memory; drop our copy of
    // the decrypted weights now rather than when the GC gets to it.
    if (m.header) plaintext.fill(0);
  }
}
