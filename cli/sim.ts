import path from 'node:path';
import type { Command } from 'commander';
import { SimulatedSnp, SIM_FILES } from '../attestation/sim/index.js';

export function registerSimCommand(program: Command): void {
  const sim = program
    .command('sim')
    .description('the simulated SEV-SNP TEE (development only: whoever holds its state directory can mint evidence)');
  sim
    .command('init')
    .description('create the simulated TEE chain (ARK/ASK RSA-4096 PSS, VCEK P-384) in a state directory, or reuse it; prints the ARK path to trust')
    .option('--state-dir <dir>', 'simulated TEE state directory', '.cir-state/sim')
    .action(async (f: { stateDir: string }) => {
      const s = await SimulatedSnp.open(f.stateDir);
      process.stdout.write(
        `${JSON.stringify({ stateDir: s.stateDir, simulatedRoot: path.join(s.stateDir, SIM_FILES.ark), product: 'Genoa (simulated)' })}\n`,
      );
    });
}
