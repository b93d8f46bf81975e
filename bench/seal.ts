/**
 * Sealed-model throughput: how fast `cir seal` encrypts and the server decrypts a model,
 * in GB/s, for a few sizes and chunk sizes. Prints figures; asserts nothing.
 *
 *   npm run build && node dist/bench/seal.js [--mb 100] [--reps 5]
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { sealModel, openSealedModel } from '../common/seal.js';
import { scriptArgs } from './script-args.js';

const { sizeMb, reps } = scriptArgs('bench/seal', () => {
  const { values } = parseArgs({
    options: { mb: { type: 'string', default: '64' }, reps: { type: 'string', default: '5' } },
  });
  const mb = Number(values.mb);
  const n = Number(values.reps);
  if (!(mb > 0) || !(n > 0)) throw new Error('--mb and --reps must be positive numbers');
  // One buffer holds the model: Node's limit for a single allocation is just under 2 GiB.
  if (mb * 2 ** 20 > 2 ** 31 - 1) throw new Error('--mb must be below 2048 (MiB)');
  if (!Number.isInteger(n)) throw new Error('--reps must be a whole number');
  return { sizeMb: mb, reps: n };
});

const plaintext = randomBytes(Math.ceil(sizeMb * 2 ** 20));
const dek = randomBytes(32);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

console.log(`sealed-model throughput, ${sizeMb} MiB model, median of ${reps} runs (node ${process.version})`);
console.log('chunk      seal GB/s   open GB/s');
for (const chunkSize of [64 * 1024, 1024 * 1024, 4 * 1024 * 1024]) {
  const sealT: number[] = [];
  const openT: number[] = [];
  let sealed = sealModel(plaintext, dek, { keyId: 'bench', keyVersion: 1 }, { chunkSize });
  openSealedModel(sealed, dek); // warm-up
  for (let i = 0; i < reps; i++) {
    let t = performance.now();
    sealed = sealModel(plaintext, dek, { keyId: 'bench', keyVersion: 1 }, { chunkSize });
    sealT.push(performance.now() - t);
    t = performance.now();
    openSealedModel(sealed, dek);
    openT.push(performance.now() - t);
  }
  const gbps = (ms: number) => (plaintext.length / 1e9 / (ms / 1000)).toFixed(2);
  console.log(`${String(chunkSize / 1024).padStart(5)} KiB  ${gbps(median(sealT)).padStart(9)}   ${gbps(median(openT)).padStart(9)}`);
}
