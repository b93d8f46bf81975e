import { access } from 'node:fs/promises';
import { readArgFile } from '../client/arg-file.js';
import { randomBytes } from 'node:crypto';
import type { Command } from 'commander';
import { sealModel, DEFAULT_CHUNK_SIZE } from '../common/seal.js';
import { writeFileAtomic } from '../common/atomic-file.js';
import { readConfigFile } from '../common/config.js';
import { ClientError } from '../client/codes.js';
import { KEY_ID_RE } from '../kms-broker/protocol.js';
import { AdminClient, readAdminToken } from './admin-client.js';

interface SealFlags {
  in: string;
  out?: string;
  keyId: string;
  policy: string;
  broker: string;
  adminTokenFile?: string;
  chunkSize: string;
  force?: boolean;
}

export function registerSealCommand(program: Command): void {
  program
    .command('seal')
    .description('encrypt an .onnx model with a fresh 256-bit key (chunked AES-256-GCM) and register the key and its release policy with the broker')
    .requiredOption('--in <model.onnx>', 'plaintext model')
    .option('--out <file>', 'sealed output (default: <in>.sealed)')
    .requiredOption('--key-id <id>', 'broker key id for this model')
    .requiredOption('--policy <file>', 'release policy (YAML or JSON) for the key')
    .requiredOption('--broker <url>', 'key broker base URL')
    .option('--admin-token-file <file>', 'file holding the broker admin token (default: $CIR_KMS_ADMIN_TOKEN)')
    .option('--chunk-size <bytes>', 'plaintext bytes per chunk', String(DEFAULT_CHUNK_SIZE))
    .option('--force', 'overwrite an existing output file')
    .action(async (f: SealFlags) => {
      if (!KEY_ID_RE.test(f.keyId)) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--key-id must be 1-128 chars of [A-Za-z0-9._-]' });
      const chunkSize = Number(f.chunkSize);
      const out = f.out ?? `${f.in}.sealed`;
      if (!f.force && (await access(out).then(() => true, () => false))) {
        throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `${out} exists (use --force to overwrite)` });
      }
      const policy = await readConfigFile(f.policy);
      const token = await readAdminToken(f.adminTokenFile);
      const model = await readArgFile('--in', f.in);
      const dek = randomBytes(32);
      try {
        let sealed: Buffer;
        try {
          sealed = sealModel(model, dek, { keyId: f.keyId, keyVersion: 1 }, { chunkSize });
        } catch (e) {
          if (e instanceof RangeError) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: e.message });
          throw e;
        }
        // Register first: a sealed file whose key the broker does not hold is useless.
        const meta = await new AdminClient(f.broker, token).createKey(f.keyId, dek, policy);
        await writeFileAtomic(out, sealed, 0o644);
        process.stdout.write(`${JSON.stringify({ sealed: out, bytes: sealed.length, key: meta })}\n`);
      } finally {
        dek.fill(0);
      }
    });
}
