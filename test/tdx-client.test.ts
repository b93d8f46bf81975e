/**
 * The verifying client against a server that presents Intel TDX evidence. There is no
 * simulated TDX root, so the server here serves a real recorded quote (dcap-qvl) whose
 * report_data cannot bind this client's nonce: the client must run the TDX verifier and
 * refuse, naming the binding, and must refuse outright without TDX collateral.
 */
import { describe, it, expect, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLogger } from '../common/logger.js';
import { buildServer, type CirServer } from '../server/app.js';
import { loadServerConfig } from '../server/config.js';
import { verifyServer } from '../client/verify.js';
import { loadTdxCollateral } from '../attestation/tdx/index.js';
import type { EvidenceProvider, TdxEvidence } from '../attestation/types.js';
import { vadModelPath } from './helpers/stack.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const TDX = path.join(here, 'data', 'vectors', 'tdx', 'dcap-qvl');
const quote = readFileSync(path.join(TDX, 'tdx_quote'));
const NOW = new Date('2025-07-01T00:00:00Z');
// MANIFEST.md "Key facts": dcap-qvl/tdx_quote mrtd.
const MRTD = '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';

const recordedTdx: EvidenceProvider<TdxEvidence> = {
  tee: 'tdx',
  simulated: false,
  async collect() {
    return { tee: 'tdx', quote: quote.toString('base64') };
  },
};

let server: CirServer | undefined;
afterAll(async () => {
  await server?.stop();
});

describe('client verification of an Intel TDX server', () => {
  it('runs the TDX verifier and refuses evidence that does not bind its nonce; refuses without collateral', async () => {
    server = buildServer(
      loadServerConfig({
        listen: { host: '127.0.0.1', port: 0 },
        models: [{ name: 'vad', path: vadModelPath(), plaintext: true }],
        allowPlaintextModels: true,
      }),
      { provider: recordedTdx, logger: createLogger({ level: 'silent' }) },
    );
    const { port } = await server.start();
    const base = { server: `127.0.0.1:${port}`, expectMeasurements: [MRTD], now: NOW };

    const noCollateral = await verifyServer(base);
    expect(noCollateral.ok).toBe(false);
    expect(noCollateral.checks.find((c) => !c.ok)?.detail).toMatch(/TDX collateral/);

    const collateral = await loadTdxCollateral(path.join(TDX, 'tdx_quote_collateral.json'));
    const r = await verifyServer({ ...base, tdx: { collateral } });
    expect(r.ok).toBe(false);
    expect(r.credentials).toBeUndefined();
    const failed = r.checks.find((c) => !c.ok);
    expect(failed?.name).toBe('signature+chain');
    expect(failed?.detail).toMatch(/ERR_ATT_TDX_REPORT_DATA_MISMATCH/);
  });
});
