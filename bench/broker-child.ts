/**
 * The key broker of `cir bench`'s server processes, in a process of its own (as in a
 * deployment, where the broker is a separate service): `node dist/bench/broker-child.js
 * CONFIG_FILE`, started by bench/server-process.ts.
 *
 *   stdout line 1   {"type":"ready", url}     the broker listens
 *   stdin  EOF      close the broker, exit 0
 *
 * The broker stops when its stdin closes, which also happens when the parent dies (even by
 * SIGKILL), so a benchmark never leaves a broker behind. CONFIG_FILE holds a broker config
 * (kms-broker/config.ts); the environment gives NODE_ENV and CIR_KMS_ADMIN_TOKEN. Logs (pino,
 * level from CIR_LOG_LEVEL, default warn) go to stderr. Failures print {"type":"error",
 * message} on stdout and exit 1.
 */
import { readFile } from 'node:fs/promises';
import { createLogger } from '../common/logger.js';
import { loadBrokerConfig } from '../kms-broker/config.js';
import { startBroker } from '../kms-broker/main.js';
import { runChild, send } from './child-entry.js';

export interface BrokerChildReady {
  readonly type: 'ready';
  readonly url: string;
}

async function main(configFile: string): Promise<void> {
  const env = process.env;
  const logger = createLogger({ level: env['CIR_LOG_LEVEL'] ?? 'warn', name: 'cir-bench-broker' });
  const config = loadBrokerConfig(JSON.parse(await readFile(configFile, 'utf8')) as unknown, { env });
  const broker = await startBroker(config, { logger, env });
  const ready: BrokerChildReady = { type: 'ready', url: broker.url };
  send(ready);
  await new Promise<void>((resolve) => {
    process.stdin.once('end', resolve);
    process.stdin.once('close', resolve);
    process.stdin.resume();
  });
  await broker.close();
}

runChild('broker-child.js CONFIG_FILE', main);
