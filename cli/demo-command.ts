import path from 'node:path';
import type { Command } from 'commander';
import { createLogger } from '../common/logger.js';
import { runDemo, type DemoStep } from './demo.js';
import { mark } from './output.js';

const LABELS: Record<string, string> = {
  'simulated-tee': 'Simulated TEE ready',
  'broker-start': 'Key broker listening',
  seal: 'Model sealed, key registered',
  challenge: 'Broker challenge (nonce)',
  evidence: 'Evidence collected in the TEE',
  'broker-verification': 'Broker verified evidence + policy',
  'key-release': 'Key released (HPKE-sealed DEK)',
  'model-decryption': 'Model decrypted in memory',
  'model-load': 'onnxruntime session created',
  'client-verification': 'Client verified the server',
  inference: 'Inference over attested TLS',
  'reference-check': 'Matches in-process onnxruntime',
};

export function registerDemoCommand(program: Command): void {
  program
    .command('demo')
    .description('run the whole confidential path on the simulated TEE: broker, sealed model, attested server, verifying client')
    .option('--json', 'print one JSON object {ok, steps, output} on stdout; logs go to stderr')
    .option('--keep', 'keep the temporary directory')
    .option('--state-dir <dir>', "keep the broker's state (keys, policies, signing keys, audit log) in DIR; then check it with cir broker audit verify --dir DIR")
    .action(async (f: { json?: boolean; keep?: boolean; stateDir?: string }) => {
      const level = (program.opts() as { logLevel: string }).logLevel;
      // The demo narrates its own steps; service logs below `error` would only interleave with them.
      const logger = createLogger({ level: level === 'info' ? 'error' : level, name: 'cir-demo' });
      const print = (s: DemoStep) => {
        if (f.json) return;
        const label = LABELS[s.name] ?? s.name;
        process.stdout.write(`${mark(s.ok)} ${label.padEnd(36)} ${String(s.ms).padStart(8)} ms  ${s.detail ?? ''}\n`);
      };
      if (!f.json) process.stdout.write('cir demo: simulated SEV-SNP TEE, all parts real and on loopback\n\n');
      const t0 = performance.now();
      const r = await runDemo({ logger, onStep: print, keep: !!f.keep, ...(f.stateDir ? { stateDir: path.resolve(f.stateDir) } : {}) });
      if (f.json) {
        process.stdout.write(`${JSON.stringify({ ok: r.ok, steps: r.steps, output: r.output ?? null, ...(r.error ? { error: r.error } : {}) })}\n`);
      } else {
        process.stdout.write('\n');
        if (r.ok) {
          process.stdout.write(`Inference result: ${JSON.stringify(r.output)}\n`);
          process.stdout.write(`demo ok in ${Math.round(performance.now() - t0)} ms\n`);
          if (f.stateDir) process.stdout.write(`broker state kept in ${f.stateDir}; check its audit trail with: cir broker audit verify --dir ${f.stateDir}\n`);
        } else {
          process.stdout.write(`demo FAILED: ${r.error?.code ?? ''} ${r.error?.message ?? ''}\n`);
        }
      }
      process.exitCode = r.ok ? 0 : 1;
    });
}
