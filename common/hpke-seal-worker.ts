/**
 * Worker-thread entry of `HpkeSealWorker` (hpke-sealer.ts): seals with `hpkeSeal` and posts
 * the result back. Each request's plaintext is this thread's own copy (structured clone);
 * it is zero-filled once sealed, whatever the outcome. Never logs.
 */
import { parentPort } from 'node:worker_threads';
import { hpkeSeal } from './hpke.js';
import type { SealReply, SealRequest } from './hpke-sealer.js';

const port = parentPort;
if (!port) throw new Error('hpke-seal-worker must run in a worker thread');

port.on('message', (m: SealRequest) => {
  void (async () => {
    let reply: SealReply;
    try {
      const sealed = await hpkeSeal(m.recipientPublicKey, m.plaintext, m.info, m.aad);
      reply = { id: m.id, enc: sealed.enc, ciphertext: sealed.ciphertext };
    } catch (e) {
      // A RangeError (bad public key length) or a WebCrypto failure: names no value.
      reply = { id: m.id, error: e instanceof Error ? `${e.name}: ${e.message}` : 'seal failed' };
    } finally {
      m.plaintext.fill(0);
    }
    const transfer = 'enc' in reply ? [reply.enc.buffer as ArrayBuffer, reply.ciphertext.buffer as ArrayBuffer] : [];
    port.postMessage(reply, transfer);
  })();
});
