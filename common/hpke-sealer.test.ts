import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateHpkeKeyPair, hpkeOpen, type HpkeKeyPair } from './hpke.js';
import { createHpkeSealer, HpkeSealWorker, hpkeSealWorkerEntry, HpkeWorkerError } from './hpke-sealer.js';

// The worker runs the built entry (dist/common/hpke-seal-worker.js); `npm test` builds first.
const info = Buffer.from('cir test info');
const aad = Buffer.from('cir test aad');

describe('HpkeSealWorker (HPKE sealing on a worker thread)', () => {
  let kp: HpkeKeyPair;
  let dir: string;
  beforeAll(async () => {
    expect(HpkeSealWorker.available()).toBe(true);
    kp = await generateHpkeKeyPair();
    dir = await mkdtemp(path.join(os.tmpdir(), 'cir-hpke-worker-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('seals what hpkeOpen opens, for many concurrent seals, and leaves the caller its plaintext', async () => {
    const w = new HpkeSealWorker();
    try {
      const deks = Array.from({ length: 24 }, () => randomBytes(32));
      const copies = deks.map((d) => Buffer.from(d));
      const sealed = await Promise.all(deks.map((d) => w.seal(kp.publicKey, d, info, aad)));
      for (let i = 0; i < deks.length; i++) {
        expect(Buffer.from(await hpkeOpen(kp, sealed[i]!, info, aad)).equals(copies[i]!)).toBe(true);
        // The worker zeroes its own copy, never the caller's.
        expect(deks[i]!.equals(copies[i]!)).toBe(true);
      }
      // Fresh encapsulations: no two seals share an enc.
      expect(new Set(sealed.map((s) => Buffer.from(s.enc).toString('hex'))).size).toBe(deks.length);
      // info and aad are bound.
      await expect(hpkeOpen(kp, sealed[0]!, Buffer.from('other'), aad)).rejects.toThrow();
    } finally {
      await w.close();
    }
  });

  it('rejects a bad recipient key with the HPKE error, naming no bytes, and keeps working', async () => {
    const w = new HpkeSealWorker();
    try {
      const secret = Buffer.from('00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff', 'hex');
      const err = (await w.seal(new Uint8Array(31), secret, info, aad).then(
        () => undefined,
        (e: unknown) => e,
      )) as Error;
      expect(err).toBeInstanceOf(Error);
      expect(err.message).toMatch(/RangeError: HPKE recipient public key must be 32 bytes/);
      expect(err.message).not.toContain(secret.toString('hex'));
      const ok = await w.seal(kp.publicKey, secret, info, aad);
      expect(Buffer.from(await hpkeOpen(kp, ok, info, aad)).equals(secret)).toBe(true);
    } finally {
      await w.close();
    }
  });

  it('rejects pending seals when the worker dies, and starts a fresh worker for the next', async () => {
    // A worker that runs the real entry but exits when asked to seal with an empty `info`.
    const entry = path.join(dir, 'crashing-worker.mjs');
    await writeFile(
      entry,
      `import { parentPort } from 'node:worker_threads';\n` +
        `await import(${JSON.stringify(pathToFileURL(hpkeSealWorkerEntry()).href)});\n` +
        `parentPort.on('message', (m) => { if (m.info.length === 0) process.exit(3); });\n`,
    );
    const w = new HpkeSealWorker({ entry });
    try {
      const dek = randomBytes(32);
      const first = await w.seal(kp.publicKey, dek, info, aad);
      expect(Buffer.from(await hpkeOpen(kp, first, info, aad)).equals(dek)).toBe(true);
      const doomed = w.seal(kp.publicKey, dek, new Uint8Array(0), aad);
      await expect(doomed).rejects.toBeInstanceOf(HpkeWorkerError);
      await expect(doomed).rejects.toThrow(/exited with code 3/);
      const again = await w.seal(kp.publicKey, dek, info, aad);
      expect(Buffer.from(await hpkeOpen(kp, again, info, aad)).equals(dek)).toBe(true);
    } finally {
      await w.close();
    }
  });

  it('fails every seal after close(), and a worker that cannot start rejects instead of hanging', async () => {
    const w = new HpkeSealWorker();
    await w.seal(kp.publicKey, randomBytes(32), info, aad);
    await w.close();
    await expect(w.seal(kp.publicKey, randomBytes(32), info, aad)).rejects.toThrow(/closed/);

    const broken = new HpkeSealWorker({ entry: path.join(dir, 'no-such-worker.js') });
    await expect(broken.seal(kp.publicKey, randomBytes(32), info, aad)).rejects.toBeInstanceOf(HpkeWorkerError);
    await broken.close();
  });

  it('falls back to inline sealing after repeated worker failures, and says so', async () => {
    const broken = new HpkeSealWorker({ entry: path.join(dir, 'no-such-worker.js'), maxStartFailures: 2 });
    try {
      for (let i = 0; i < 2; i++) await expect(broken.seal(kp.publicKey, randomBytes(32), info, aad)).rejects.toBeInstanceOf(HpkeWorkerError);
      expect(broken.onWorker).toBe(false);
      const dek = randomBytes(32);
      const sealed = await broken.seal(kp.publicKey, dek, info, aad);
      expect(Buffer.from(await hpkeOpen(kp, sealed, info, aad)).equals(dek)).toBe(true);
    } finally {
      await broken.close();
    }
  });

  it('sends the worker exact-size copies, never the shared pool block a small Buffer lives in', async () => {
    // A stand-in worker that reports the size of the buffers it received.
    const entry = path.join(dir, 'sizes-worker.mjs');
    await writeFile(
      entry,
      `import { parentPort } from 'node:worker_threads';\n` +
        `parentPort.on('message', (m) => parentPort.postMessage({ id: m.id, error: [m.recipientPublicKey, m.plaintext, m.info, m.aad].map((x) => x.buffer.byteLength).join(',') }));\n`,
    );
    const w = new HpkeSealWorker({ entry });
    try {
      // Buffer.concat of small buffers allocates from Node's shared 8 KiB pool.
      const pooledDek = Buffer.concat([randomBytes(16), randomBytes(16)]);
      expect(pooledDek.buffer.byteLength).toBeGreaterThan(32);
      const pooledKey = Buffer.concat([Buffer.from(kp.publicKey)]);
      const err = (await w.seal(pooledKey, pooledDek, Buffer.concat([info]), Buffer.concat([aad])).then(
        () => undefined,
        (e: unknown) => e,
      )) as Error;
      expect(err.message).toBe(`32,32,${info.length},${aad.length}`);
      // The caller's views are untouched (copies were moved, not the caller's buffers).
      expect(pooledDek.byteLength).toBe(32);
    } finally {
      await w.close();
    }
  });

  it('rejects a seal the worker never answers, after the timeout, and recovers', async () => {
    const entry = path.join(dir, 'silent-worker.mjs');
    await writeFile(entry, `import { parentPort } from 'node:worker_threads';\nparentPort.on('message', () => undefined);\n`);
    const w = new HpkeSealWorker({ entry, timeoutMs: 200 });
    try {
      await expect(w.seal(kp.publicKey, randomBytes(32), info, aad)).rejects.toThrow(/did not answer within 200 ms/);
      expect(w.onWorker).toBe(true);
    } finally {
      await w.close();
    }
  });

  it('createHpkeSealer uses the worker when the build has it', async () => {
    const s = createHpkeSealer();
    try {
      expect(s.onWorker).toBe(true);
      const dek = randomBytes(32);
      expect(Buffer.from(await hpkeOpen(kp, await s.seal(kp.publicKey, dek, info, aad), info, aad)).equals(dek)).toBe(true);
    } finally {
      await s.close();
    }
  });
});
