// Crash-test driver for kms-broker/audit/crash.test.ts (compile-free; imports the built
// dist/). Usage: node crash-driver.mjs AUDIT_DIR PRIVATE_JWK_FILE CONCURRENCY
// Opens the log (recovering it), prints "ready <seq>", then appends from CONCURRENCY
// loops forever and prints "<seq> <hash>" for every acknowledged append. Killed by the test.
import { readFileSync } from 'node:fs';
import { CompactSign, importJWK } from 'jose';
import { AuditLog } from '../../../dist/kms-broker/audit/index.js';

const [dir, jwkFile, concurrencyArg] = process.argv.slice(2);
const jwk = JSON.parse(readFileSync(jwkFile, 'utf8'));
const key = await importJWK(jwk, 'ES256');
const signer = { sign: (payload) => new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid: jwk.kid }).sign(key) };
const log = await AuditLog.open({ dir, signer });
process.stdout.write(`ready ${log.last.seq}\n`);
let n = 0;
async function worker(w) {
  for (;;) {
    const i = n++;
    const r = await log.append({
      actor: { type: 'server', id: `w${w}`, ip: '127.0.0.1' },
      action: i % 2 ? 'release' : 'attest',
      tenant: 'acme',
      target: { keyId: 'model-a', version: 1 },
      decision: 'allow',
      detail: { i },
    });
    process.stdout.write(`${r.seq} ${r.hash}\n`);
  }
}
for (let w = 0; w < Number(concurrencyArg); w++) void worker(w);
