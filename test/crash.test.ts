/**
 * Crash safety of the broker state: a child process creates, rotates and re-policies keys
 * (every step audited) and is killed with SIGKILL at random moments, 60 times over one
 * state directory. Afterwards the key store opens, every acknowledged key version holds
 * its DEK, every acknowledged policy change is in effect, and the audit chain verifies (a
 * torn last line may be discarded, and only one that was never acknowledged).
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { verifyAuditLog } from '../kms-broker/audit/index.js';
import { loadBrokerConfig } from '../kms-broker/config.js';
import { openKeyStore } from '../kms-broker/keystore.js';

const DRIVER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'helpers', 'crash-driver.mjs');
const KILLS = 50;
const dekFor = (keyId: string, version: number) => createHash('sha256').update(`dek/${keyId}/${version}`).digest();

/** Runs the driver until it has acknowledged something, then kills it after a random delay. */
function runAndKill(stateDir: string, runId: number, delayMs: number): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [DRIVER, stateDir, String(runId)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | undefined;
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (c: string) => {
      out += c;
      if (timer === undefined && out.includes('READY\n')) timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.stderr.on('data', (c: Buffer) => (err += c.toString()));
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      if (signal !== 'SIGKILL') reject(new Error(`driver exited ${code ?? signal} before the kill: ${err.slice(0, 2000)}`));
      // Only complete lines were acknowledged; a partial last line was not.
      else resolve(out.split('\n').slice(0, -1));
    });
  });
}

describe('SIGKILL during key creation, rotation and audit appends', () => {
  it(`survives ${KILLS} kills: acknowledged keys intact, audit chain verifies`, { timeout: 240_000 }, async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-crash-'));
    try {
      const stateDir = path.join(dir, 'state');
      const acked = new Map<string, number>();
      const policyAcked = new Set<string>();
      let tornTails = 0;
      for (let run = 0; run < KILLS; run++) {
        // Kill anywhere from during start-up recovery to well into the loop.
        const lines = await runAndKill(stateDir, run, Math.floor(Math.random() * 120));
        for (const line of lines) {
          const [tag, keyId, version] = line.split(' ');
          if (tag === 'ACK') acked.set(keyId!, Math.max(acked.get(keyId!) ?? 0, Number(version)));
          if (tag === 'ACKPOLICY') policyAcked.add(keyId!);
        }
        const v = await verifyAuditLog({ dir: stateDir });
        expect(v.ok, JSON.stringify(v)).toBe(true);
        if (v.ok && v.tornTail) tornTails++;
      }
      expect(acked.size).toBeGreaterThan(10);
      const config = loadBrokerConfig({ stateDir }, { env: { NODE_ENV: 'test' } });
      const store = await openKeyStore(config, { env: { NODE_ENV: 'test' } });
      for (const [keyId, version] of acked) {
        for (let v = 1; v <= version; v++) {
          const got = await store.unwrap({ tenant: 'crash', keyId }, v);
          expect(got.dek.equals(dekFor(keyId, v))).toBe(true);
        }
        if (policyAcked.has(keyId)) expect((await store.get({ tenant: 'crash', keyId })).policyVersion).toBe(2);
      }
      // Every listed key opens (no half-written record), acknowledged or not.
      const all = await store.list('crash');
      expect(all.length).toBeGreaterThanOrEqual(acked.size);
      const final = await verifyAuditLog({ dir: stateDir });
      expect(final.ok).toBe(true);
      if (final.ok) {
        // Each acknowledged operation left an audit entry: creates, rotations, policy sets.
        const acks = [...acked.values()].reduce((n, v) => n + v, 0) + policyAcked.size;
        expect(final.entries).toBeGreaterThanOrEqual(acks);
      }
      console.log(`crash test: ${KILLS} kills, ${acked.size} keys acknowledged, ${tornTails} torn audit tails seen`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
