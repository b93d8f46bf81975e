// Child process of test/crash.test.ts: mutates a broker state directory as fast as it can
// (key creation, rotation, policy changes, each audited) and prints one line per
// acknowledged operation. The test kills it with SIGKILL at random moments.
// Imports the compiled build (npm test builds first).
import { createHash } from 'node:crypto';
import { loadBrokerConfig } from '../../dist/kms-broker/config.js';
import { createKey, rotateKey, setKeyPolicy } from '../../dist/kms-broker/admin.js';
import { ROLES } from '../../dist/kms-broker/identities.js';
import { openOfflineState } from '../../dist/kms-broker/state.js';
import { createLogger } from '../../dist/common/logger.js';

const [stateDir, runId] = process.argv.slice(2);
const dekFor = (keyId, version) => createHash('sha256').update(`dek/${keyId}/${version}`).digest();
const config = loadBrokerConfig({ stateDir }, { env: { NODE_ENV: 'test' } });
const state = await openOfflineState(config, { logger: createLogger({ level: 'silent', name: 'crash-driver' }), env: { NODE_ENV: 'test' } });
const ctx = { store: state.store, policy: { production: false }, audit: state.audit };
const p = { id: 'cli', tenant: 'crash', subject: 'cli:crash', roles: ROLES, via: 'cli' };
process.stdout.write('READY\n');
let i = 0;
for (;;) {
  const keyId = `k-${runId}-${i++}`;
  await createKey(ctx, p, { keyId, dek: dekFor(keyId, 1), policy: { anyMeasurement: true } });
  process.stdout.write(`ACK ${keyId} 1\n`);
  const m = await rotateKey(ctx, p, keyId, dekFor(keyId, 2));
  process.stdout.write(`ACK ${keyId} ${m.currentVersion}\n`);
  await setKeyPolicy(ctx, p, keyId, { measurements: ['ab'.repeat(48)] });
  process.stdout.write(`ACKPOLICY ${keyId}\n`);
}
