/**
 * The `cir` command line as a user runs it: the compiled entry point in a child process.
 * `npm test` builds first, so dist/ is current.
 */
import { cir, CLI, STACK_TRACE } from './helpers/cli.js';
import { describe, it, expect, beforeAll } from 'vitest';
import { existsSync } from 'node:fs';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';

beforeAll(() => {
  if (!existsSync(CLI)) throw new Error('dist/cli/main.js missing: run `npm run build` (npm test does)');
});

describe('cir command line', () => {
  const commands = [[], ['broker'], ['broker', 'keys'], ['broker', 'keys', 'create'], ['serve'], ['seal'], ['verify'], ['infer'], ['demo']];
  it.each(commands.map((c) => [c.join(' '), c] as const))(
    'cir %s --help',
    async (_name, cmd) => {
      const r = await cir([...cmd, '--help']);
      expect(r.code).toBe(0);
      expect(r.stdout).toMatch(/^Usage: cir/);
    },
  );

  it('lists every subcommand', async () => {
    const r = await cir(['--help']);
    for (const c of ['broker', 'serve', 'seal', 'verify', 'infer', 'demo']) expect(r.stdout).toContain(c);
  });

  it('a bad config names the field and the reason, exits non-zero, and prints no stack trace', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-cli-'));
    const file = path.join(dir, 'server.yaml');
    await writeFile(file, 'listen:\n  port: 99999\nmodels: []\nbogus: 1\n');
    const r = await cir(['serve', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_SRV_CONFIG/);
    expect(r.stderr).toMatch(/listen\.port: /);
    expect(r.stderr).toMatch(/models: /);
    expect(r.stderr).toMatch(/bogus/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('a broker config that is not YAML is reported as such', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-cli-'));
    const file = path.join(dir, 'broker.yaml');
    await writeFile(file, 'listen: [unclosed\n');
    const r = await cir(['broker', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/ERR_CFG_SYNTAX/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('a broker config with a bad field names it', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-cli-'));
    const file = path.join(dir, 'broker.json');
    await writeFile(file, JSON.stringify({ stateDir: dir, challengeTtlSeconds: 600 }));
    const r = await cir(['broker', '--config', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/challengeTtlSeconds/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('verify rejects a malformed measurement before connecting', async () => {
    const r = await cir(['verify', '--server', '127.0.0.1:1', '--expect-measurement', 'zz']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/--expect-measurement must be 96 hex/);
  });

  it('verify against nothing listening fails cleanly', async () => {
    const r = await cir(['verify', '--server', '127.0.0.1:1', '--expect-measurement', 'ab'.repeat(48)]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/ERR_CLI_TLS_FETCH_FAILED/);
    expect(r.stderr).not.toMatch(STACK_TRACE);
  });

  it('an unknown option is a usage error', async () => {
    const r = await cir(['demo', '--no-such-flag']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/unknown option/);
  });

  it('cir demo --json prints exactly one JSON object with ok, steps and output', async () => {
    const r = await cir(['demo', '--json']);
    expect(r.code).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const out = JSON.parse(lines[0]!) as { ok: boolean; steps: { name: string; ok: boolean; ms: number }[]; output: { speechProbability: number } };
    expect(out.ok).toBe(true);
    const names = out.steps.map((s) => s.name);
    for (const n of ['challenge', 'evidence', 'broker-verification', 'key-release', 'model-decryption', 'client-verification', 'inference']) {
      expect(names).toContain(n);
    }
    for (const s of out.steps) {
      expect(s.ok).toBe(true);
      expect(typeof s.ms).toBe('number');
    }
    expect(out.output.speechProbability).toBeGreaterThanOrEqual(0);
    expect(out.output.speechProbability).toBeLessThanOrEqual(1);
  });
});

describe('files named on the command line', () => {
  it('a missing --in, --admin-token-file, --api-key-file or --simulated-root is ERR_CLI_FILE_UNREADABLE naming the flag, exit 2, no stack trace', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-cli-files-'));
    const policy = path.join(dir, 'policy.json');
    await writeFile(policy, JSON.stringify({ allowSimulated: true, measurements: ['a'.repeat(96)] }));
    const token = path.join(dir, 'token');
    await writeFile(token, 'tok\n');
    const gone = path.join(dir, 'gone');
    for (const [args, flag] of [
      [['seal', '--in', gone, '--key-id', 'k', '--policy', policy, '--broker', 'http://127.0.0.1:1', '--admin-token-file', token], '--in'],
      [['seal', '--in', policy, '--key-id', 'k', '--policy', policy, '--broker', 'http://127.0.0.1:1', '--admin-token-file', gone], '--admin-token-file'],
      [['infer', '--server', '127.0.0.1:1', '--expect-measurement', 'a'.repeat(96), '--model', 'm', '--input', policy, '--api-key-file', gone], '--api-key-file'],
      [['verify', '--server', '127.0.0.1:1', '--expect-measurement', 'a'.repeat(96), '--allow-simulated', '--simulated-root', gone], '--simulated-root'],
    ] as const) {
      const r = await cir([...args]);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toContain(`error [ERR_CLI_FILE_UNREADABLE]: a file named on the command line cannot be read: ${flag} ${gone}: no such file`);
      expect(r.stderr).not.toMatch(STACK_TRACE);
    }
  });

  it('cir infer says a missing --input is missing, and an --input that is not JSON is not JSON; a key file is bounded', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'cir-cli-files-'));
    const gone = path.join(dir, 'gone.json');
    const notJson = path.join(dir, 'in.json');
    await writeFile(notJson, '{"inputs": [');
    const infer = ['infer', '--server', '127.0.0.1:1', '--expect-measurement', 'a'.repeat(96), '--model', 'm', '--input'];
    const missing = await cir([...infer, gone]);
    expect(missing.code, missing.stderr).toBe(2);
    expect(missing.stderr).toContain(`ERR_CLI_FILE_UNREADABLE]: a file named on the command line cannot be read: --input ${gone}: no such file`);
    const bad = await cir([...infer, notJson]);
    expect(bad.code, bad.stderr).toBe(2);
    expect(bad.stderr).toContain(`ERR_CLI_BAD_INPUT_FILE]: invalid inference input file: --input ${notJson}: not valid JSON`);
    // A device named by mistake is refused after its first 256 KiB, not read into memory.
    const good = path.join(dir, 'good.json');
    await writeFile(good, '{"inputs": []}');
    const zero = await cir([...infer, good, '--api-key-file', '/dev/zero']);
    expect(zero.code, zero.stderr).toBe(2);
    expect(zero.stderr).toContain('--api-key-file /dev/zero: larger than 262144 bytes');
    for (const r of [missing, bad, zero]) expect(r.stderr).not.toMatch(STACK_TRACE);
  });
});

