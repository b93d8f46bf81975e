/**
 * `cir broker policy test`: in-process (runPolicyTest) on the real vectors of
 * test/data/vectors (PROVENANCE.md; times and facts as in test/snp-vectors.test.ts and
 * test/attest-cli.test.ts) and on simulated evidence, plus the command wiring through main().
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { SimulatedSnp, SIM_FILES } from '../attestation/sim/index.js';
import { mintSnpEvidence, SIM_TEST_MEASUREMENT } from '../attestation/sim/testing.js';
import { sha256, toHex } from '../common/bytes.js';
import { parseReleasePolicy, policyHash } from '../kms-broker/policy.js';
import { certificatesInFile } from './attest.js';
import { formatPolicyTest, NOTE_REPORT_DATA, runPolicyTest, type PolicyTestFlags } from './broker-policy.js';

const V = path.join(path.dirname(new URL(import.meta.url).pathname), '..', 'test', 'data', 'vectors');
const vec = (p: string): string => path.join(V, p);
const AT = '2026-06-01T00:00:00Z';
const MILAN = { report: vec('sev-snp/microsoft/milan_attestation_report.bin'), vcek: vec('sev-snp/microsoft/milan_vcek.pem') };
// test/snp-vectors.test.ts ('microsoft milan'): reportedTcb.snp 24, debug false.
const MILAN_MEASUREMENT = '5feee30d6d7e1a29f403d70a4198237ddfb13051a2d6976439487c609388ed7f98189887920ab2fa0096903a0c23fca1';
const TURIN = { report: vec('sev-snp/microsoft/turin_attestation_report.bin'), vcek: vec('sev-snp/microsoft/turin_vcek.pem') };
const DCAP = { quote: vec('tdx/dcap-qvl/tdx_quote'), collateral: vec('tdx/dcap-qvl/tdx_quote_collateral.json'), at: '2025-07-01T00:00:00Z' };
const DCAP_MRTD = '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';

const ISSUE_RULE = {
  allOf: [
    { claim: 'measurement', hexIn: [MILAN_MEASUREMENT] },
    { claim: 'reportedTcb.snp', gte: 8 },
    { claim: 'policy.debug', equals: false },
  ],
};

let tmp: string;
const file = async (name: string, content: string | Uint8Array): Promise<string> => {
  const p = path.join(tmp, name);
  await writeFile(p, content);
  return p;
};
const ENV = { CIR_SIMULATED_ROOT: '' } as NodeJS.ProcessEnv;
const run = (f: PolicyTestFlags) => runPolicyTest(f, ENV);

beforeAll(async () => {
  tmp = await mkdtemp(path.join(tmpdir(), 'cir-policy-test-'));
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('real SEV-SNP vectors', () => {
  it('the issue example allows the Milan report: exit 0 with every rule, the hash and the report_data note', async () => {
    const doc = { version: 1, tee: 'sev-snp', rule: ISSUE_RULE };
    const policy = await file('rules.json', JSON.stringify(doc));
    const r = await run({ policy, evidence: MILAN.report, cert: [MILAN.vcek], at: AT });
    expect(r).toMatchObject({ verdict: 'allow', exitCode: 0, failures: [] });
    expect(r.policy).toEqual({ kind: 'rules', tee: 'sev-snp', hash: policyHash(parseReleasePolicy(doc, { production: false })) });
    expect(r.explanation!.filter((x) => x.path.startsWith('rule')).map((x) => [x.path, x.pass])).toEqual([
      ['rule', true],
      ['rule.allOf[0]', true],
      ['rule.allOf[1]', true],
      ['rule.allOf[2]', true],
    ]);
    expect(r.explanation!.find((x) => x.claim === 'reportedTcb.snp')).toMatchObject({ expected: '>= 8', observed: '24' });
    expect(r.evidence).toEqual({ format: 'raw', tee: 'sev-snp', sha256: sha256(await readFile(MILAN.report)).toString('hex'), bytes: 1184 });
    expect(r.notes).toContain(NOTE_REPORT_DATA);
    expect(r.relaxations).toContain('report-data-unchecked');
    expect(r.at).toBe('2026-06-01T00:00:00.000Z');
    expect(formatPolicyTest(r)).toMatch(/PASS {2}rule\.allOf\[1\]: reportedTcb\.snp gte: expected >= 8; observed 24/);
    expect(formatPolicyTest(r)).toContain('verdict: ALLOW');
  });

  it('the same policy denies the Turin report (snp 4, another measurement): exit 1 naming both', async () => {
    const policy = await file('rules.yaml', `version: 1\nrule:\n${JSON.stringify(ISSUE_RULE)}\n`.replace('rule:\n', 'rule: '));
    const r = await run({ policy, evidence: TURIN.report, cert: [TURIN.vcek], at: AT, json: true });
    expect(r).toMatchObject({ verdict: 'deny', exitCode: 1 });
    expect(r.failures!.map((f) => f.field)).toEqual(['measurement', 'reportedTcb.snp']);
    expect(r.explanation!.find((x) => x.claim === 'reportedTcb.snp')).toMatchObject({ observed: '4', pass: false });
    expect(formatPolicyTest(r)).toContain('verdict: DENY (measurement, reportedTcb.snp)');
  });

  it('a per-TEE (legacy) policy is explained too', async () => {
    const policy = await file('legacy.json', JSON.stringify({ measurements: [MILAN_MEASUREMENT], allowProvisionalFirmware: true }));
    const r = await run({ policy, evidence: MILAN.report, cert: [MILAN.vcek], at: AT });
    expect(r.verdict).toBe('allow');
    expect(r.policy!.kind).toBe('sev-snp');
    expect(r.explanation!.find((x) => x.claim === 'measurement')).toMatchObject({ op: 'check', observed: MILAN_MEASUREMENT, pass: true });
  });

  it('JSON evidence as a server POSTs it ({report, certs})', async () => {
    const vcek = certificatesInFile(new Uint8Array(await readFile(MILAN.vcek)), 'vcek')[0]!;
    const ev = { report: (await readFile(MILAN.report)).toString('base64'), certs: { vcek: Buffer.from(vcek).toString('base64') } };
    const evidence = await file('milan.json', JSON.stringify(ev));
    const policy = await file('rules2.json', JSON.stringify({ version: 1, rule: ISSUE_RULE }));
    const r = await run({ policy, evidence, at: AT });
    expect(r).toMatchObject({ verdict: 'allow', exitCode: 0, evidence: { format: 'json', tee: 'sev-snp' } });
  });

  it('evidence that fails verification: exit 1 with the reason', async () => {
    const policy = await file('rules3.json', JSON.stringify({ version: 1, rule: ISSUE_RULE }));
    const r = await run({ policy, evidence: MILAN.report, cert: [TURIN.vcek], at: AT });
    expect(r.verdict).toBe('error');
    expect(r.exitCode).toBe(1);
    expect(r.code).toMatch(/^ERR_ATT_SNP_/);
    expect(r.detail).toMatch(/^evidence failed verification/);
    expect(r.policy?.hash).toMatch(/^[0-9a-f]{64}$/);
  });
});

describe('real TDX vector', () => {
  const rule = { version: 1, tee: 'tdx', rule: { allOf: [{ claim: 'measurement', hexEquals: DCAP_MRTD }, { claim: 'tcbStatus', equals: 'UpToDate' }, { claim: 'debug', equals: false }] } };

  it('raw quote with its collateral: allow; a rule on another MRTD: deny', async () => {
    const policy = await file('tdx.json', JSON.stringify(rule));
    const r = await run({ policy, evidence: DCAP.quote, collateral: DCAP.collateral, at: DCAP.at });
    expect(r).toMatchObject({ verdict: 'allow', exitCode: 0, evidence: { tee: 'tdx', format: 'raw' } });
    const other = await file('tdx-other.json', JSON.stringify({ version: 1, rule: { claim: 'mrtd', hexEquals: 'c'.repeat(96) } }));
    expect((await run({ policy: other, evidence: DCAP.quote, collateral: DCAP.collateral, at: DCAP.at })).exitCode).toBe(1);
  });

  it('JSON {tee: "tdx", quote}, and an SEV-SNP rule policy denies it on tee', async () => {
    const evidence = await file('tdx-ev.json', JSON.stringify({ tee: 'tdx', quote: (await readFile(DCAP.quote)).toString('base64') }));
    const policy = await file('tdx2.json', JSON.stringify(rule));
    expect((await run({ policy, evidence, collateral: DCAP.collateral, at: DCAP.at })).verdict).toBe('allow');
    const snp = await file('snp-only.json', JSON.stringify({ version: 1, tee: 'sev-snp', rule: ISSUE_RULE }));
    const d = await run({ policy: snp, evidence, collateral: DCAP.collateral, at: DCAP.at });
    expect(d.failures).toEqual([{ field: 'tee', expected: 'sev-snp', observed: 'tdx' }]);
  });
});

describe('simulated evidence', () => {
  let sim: SimulatedSnp;
  let evidence: string;
  beforeAll(async () => {
    sim = await SimulatedSnp.open(path.join(tmp, 'sim'), { now: new Date('2026-05-01T00:00:00Z') });
    evidence = await file('sim.json', JSON.stringify(mintSnpEvidence(sim)));
  });
  const rule = { claim: 'measurement', hexEquals: toHex(SIM_TEST_MEASUREMENT) };

  it('allowed only by a policy with allowSimulated, and with the simulated root named', async () => {
    const ark = path.join(sim.stateDir, SIM_FILES.ark);
    const allow = await file('sim-allow.json', JSON.stringify({ version: 1, allowSimulated: true, rule }));
    const r = await run({ policy: allow, evidence, at: AT, cert: [ark], allowSimulated: true });
    expect(r).toMatchObject({ verdict: 'allow', exitCode: 0 });
    expect(r.relaxations).toEqual(expect.arrayContaining(['simulated-root', 'allow-simulated', 'any-tee']));
    const strict = await file('sim-strict.json', JSON.stringify({ version: 1, rule }));
    const d = await run({ policy: strict, evidence, at: AT, cert: [ark], allowSimulated: true });
    expect(d.failures).toEqual([{ field: 'simulated', expected: 'false', observed: 'true' }]);
    // Without the root flag the chain does not verify: exit 1, verification.
    expect(await run({ policy: allow, evidence, at: AT })).toMatchObject({ verdict: 'error', exitCode: 1, code: 'ERR_ATT_SNP_UNTRUSTED_ROOT' });
    // A production decision refuses the policy itself (exit 2).
    expect(await run({ policy: allow, evidence, at: AT, cert: [ark], allowSimulated: true, production: true })).toMatchObject({
      exitCode: 2,
      code: 'ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION',
    });
  });
});

describe('usage and invalid input: exit 2', () => {
  it.each([
    [{ evidence: MILAN.report }, 'ERR_CLI_BAD_ARGUMENT'],
    [{ policy: 'x.json' }, 'ERR_CLI_BAD_ARGUMENT'],
    [{ policy: 'P', evidence: MILAN.report, at: 'yesterday' }, 'ERR_CLI_BAD_ARGUMENT'],
    [{ policy: 'P', evidence: MILAN.report, tee: 'sgx' }, 'ERR_CLI_BAD_ARGUMENT'],
    [{ policy: '/nonexistent/policy.json', evidence: MILAN.report }, 'ERR_CFG_UNREADABLE'],
    [{ policy: 'P', evidence: '/nonexistent/evidence.bin' }, 'ERR_CLI_FILE_UNREADABLE'],
  ])('%j -> %s', async (flags, code) => {
    const P = await file('ok.json', JSON.stringify({ version: 1, rule: ISSUE_RULE }));
    const given = flags as PolicyTestFlags;
    const f: PolicyTestFlags = { ...given, ...(given.policy === 'P' ? { policy: P } : {}) };
    const r = await run(f);
    expect(r).toMatchObject({ verdict: 'error', exitCode: 2, code });
  });

  it('an invalid policy, malformed JSON evidence and unknown bytes', async () => {
    const ok = await file('ok2.json', JSON.stringify({ version: 1, rule: ISSUE_RULE }));
    const bad = await file('bad.json', JSON.stringify({ version: 1, rule: { cel: 'claims.' } }));
    expect(await run({ policy: bad, evidence: MILAN.report, at: AT })).toMatchObject({ exitCode: 2, code: 'ERR_KMS_POLICY_INVALID' });
    for (const [name, content, code] of [
      ['e1.json', '{"report": 1}', 'ERR_KMS_EVIDENCE_MALFORMED'],
      ['e2.json', '{ not json', 'ERR_KMS_EVIDENCE_MALFORMED'],
      ['e3.json', '{"tee":"tdx","quote":"!!"}', 'ERR_KMS_EVIDENCE_MALFORMED'],
      ['e4.json', '{"report":"AAAA","certs":{"vcek":"AAAA"}}', 'ERR_CLI_BAD_CERT_FILE'],
      ['e5.bin', 'garbage bytes', 'ERR_CLI_UNKNOWN_EVIDENCE'],
    ] as const) {
      const r = await run({ policy: ok, evidence: await file(name, content), at: AT });
      expect(r, name).toMatchObject({ verdict: 'error', exitCode: 2, code });
    }
  });
});

describe('command wiring (cir broker policy test --json)', () => {
  it('prints exactly one JSON object and sets the exit code', async () => {
    const { main } = await import('./main.js');
    const policy = await file('wired.json', JSON.stringify({ version: 1, rule: ISSUE_RULE }));
    const out: string[] = [];
    const spy = vi.spyOn(process.stdout, 'write').mockImplementation((s: string | Uint8Array) => {
      out.push(String(s));
      return true;
    });
    const before = process.exitCode;
    try {
      const code = await main(['node', 'cir', 'broker', 'policy', 'test', '--policy', policy, '--evidence', TURIN.report, '--cert', TURIN.vcek, '--at', AT, '--json']);
      expect(code).toBe(1);
    } finally {
      spy.mockRestore();
      process.exitCode = before;
    }
    const lines = out.join('').split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    const o = JSON.parse(lines[0]!) as Record<string, unknown>;
    expect(Object.keys(o)).toEqual(expect.arrayContaining(['verdict', 'exitCode', 'policy', 'evidence', 'explanation', 'failures', 'notes', 'claims']));
    expect(o['verdict']).toBe('deny');
  });
});

describe('the README examples (kms-broker/README.md, "Release policies")', () => {
  it('parse, and decide the real vectors they name', async () => {
    const readme = await readFile(path.join(V, '..', '..', '..', 'kms-broker', 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Release policies'), readme.indexOf('## State directory'));
    const blocks = [...section.matchAll(/```yaml\n([\s\S]*?)```/g)].map((m) => m[1]!);
    expect(blocks).toHaveLength(3); // the template, SEV-SNP, TDX
    const [, snp, tdx] = blocks;
    const s = await run({ policy: await file('readme-snp.yaml', snp!), evidence: MILAN.report, cert: [MILAN.vcek], at: AT });
    expect(s.failures, JSON.stringify(s.explanation)).toEqual([]);
    expect(s.verdict).toBe('allow');
    const t = await run({ policy: await file('readme-tdx.yaml', tdx!), evidence: DCAP.quote, collateral: DCAP.collateral, at: DCAP.at });
    expect(t.verdict, JSON.stringify(t.explanation)).toBe('allow');
    // A Turin report is denied by the SEV-SNP example.
    expect((await run({ policy: await file('readme-snp2.yaml', snp!), evidence: TURIN.report, cert: [TURIN.vcek], at: AT })).verdict).toBe('deny');
  });
});
