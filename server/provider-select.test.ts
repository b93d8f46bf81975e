import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { mkdtemp, mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { selectEvidenceProvider, type ProviderSelection, type ProviderSelectDeps } from './provider-select.js';
import { loadServerConfig } from './config.js';
import { isCirError } from '../common/errors.js';
import { ConfigfsTsmProvider, TSM_REPORT_ROOT } from '../attestation/tsm/configfs.js';
import { FakeTsm, type FakeTsmOptions } from '../attestation/tsm/testing.js';
import { SimulatedSnp } from '../attestation/sim/simulated-snp.js';
import { OFF_REPORT_DATA } from '../attestation/snp/layout.js';
import { parseTdxQuote } from '../attestation/tdx/parse.js';

// Real recorded Genoa report (microsoft/TEE-Attestation-Verification, see
// test/data/vectors/PROVENANCE.md) with report_data patched to what was written.
const GENOA = new Uint8Array(
  readFileSync(new URL('../test/data/vectors/sev-snp/microsoft/genoa_attestation_report.bin', import.meta.url)),
);
const recorded = (inblob: Uint8Array): Uint8Array => {
  const r = new Uint8Array(GENOA);
  r.set(inblob, OFF_REPORT_DATA);
  return r;
};
const MEASUREMENT = 'ab'.repeat(48);
// Real TDX quote (Phala-Network/dcap-qvl sample, test/data/vectors/PROVENANCE.md); its own
// report_data is what the guest wrote (a quote's report_data cannot be patched).
const TDX_QUOTE = new Uint8Array(readFileSync(new URL('../test/data/vectors/tdx/dcap-qvl/tdx_quote', import.meta.url)));
const TDX_RD = parseTdxQuote(TDX_QUOTE).body.reportData;

let base: string;
let sim: SimulatedSnp;
beforeAll(async () => {
  base = await mkdtemp(path.join(tmpdir(), 'cir-provsel-'));
  sim = await SimulatedSnp.open(path.join(base, 'sim'));
});
afterAll(async () => {
  await rm(base, { recursive: true, force: true });
});

let n = 0;
async function tsm(opts: Partial<FakeTsmOptions> = {}): Promise<FakeTsm> {
  const root = path.join(base, `t${n++}`, 'report');
  await mkdir(root, { recursive: true });
  return new FakeTsm({ root, report: recorded, auxblob: new Uint8Array([1, 2, 3]), ...opts });
}

async function tdxTsm(): Promise<FakeTsm> {
  return tsm({ provider: 'tdx_guest', report: () => TDX_QUOTE, auxblob: null });
}

interface Harness {
  readonly deps: ProviderSelectDeps;
  readonly logs: { level: number; msg: string }[];
  readonly opened: string[];
}

function harness(t: FakeTsm): Harness {
  const logs: { level: number; msg: string }[] = [];
  const opened: string[] = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => void logs.push(JSON.parse(s) as { level: number; msg: string }) });
  const openSimulator = async (d: string): Promise<SimulatedSnp> => {
    opened.push(d);
    return sim;
  };
  return { deps: { logger, tsmFs: t.fs, openSimulator }, logs, opened };
}

function sel(mode: ProviderSelection['tee']['mode'], t: FakeTsm, simulated = true, privlevel?: number): ProviderSelection {
  return {
    tee: { mode, tsmRoot: t.root, ...(privlevel !== undefined ? { privlevel } : {}) },
    ...(simulated ? { simulated: { stateDir: '/state/sim', measurement: MEASUREMENT } } : {}),
  };
}

async function configError(p: Promise<unknown>): Promise<{ code: string; detail: string | undefined; fields: unknown }> {
  try {
    await p;
  } catch (e) {
    if (isCirError(e)) return { code: e.code, detail: e.detail, fields: e.details?.['fields'] };
    throw e;
  }
  throw new Error('expected an error');
}

describe('selectEvidenceProvider', () => {
  it('auto + configfs-tsm reporting sev_guest -> the real provider, even when the simulator is configured', async () => {
    const t = await tsm();
    const h = harness(t);
    const r = await selectEvidenceProvider(sel('auto', t), h.deps);
    expect(r.kind).toBe('configfs-tsm');
    expect(r.provider).toBeInstanceOf(ConfigfsTsmProvider);
    expect(r.provider.simulated).toBe(false);
    expect(h.opened).toEqual([]);
    expect(h.logs.some((l) => /SEV-SNP/.test(l.msg))).toBe(true);
    // The probe entry is gone, and the chosen provider collects through the same root.
    expect(await t.entries()).toEqual([]);
    const rd = new Uint8Array(64).fill(0x42);
    const ev = await r.provider.collect(rd);
    if (ev.tee !== 'sev-snp') throw new Error('expected SEV-SNP evidence');
    expect(new Uint8Array(Buffer.from(ev.report, 'base64').subarray(OFF_REPORT_DATA, OFF_REPORT_DATA + 64))).toEqual(rd);
    expect(ev.certs).toEqual({ certTable: 'AQID' });
  });

  it('auto without configfs-tsm -> the configured simulator, with a warning saying so', async () => {
    const t = await tsm();
    const h = harness(t);
    const r = await selectEvidenceProvider({ ...sel('auto', t), tee: { mode: 'auto', tsmRoot: path.join(t.root, 'absent') } }, h.deps);
    expect(r.kind).toBe('simulated');
    expect(r.provider.simulated).toBe(true);
    expect(h.opened).toEqual(['/state/sim']);
    const warn = h.logs.find((l) => l.level === 40);
    expect(warn?.msg).toMatch(/SIMULATED TEE/);
    expect(warn?.msg).toMatch(/does not exist/);
    // The simulated provider uses the configured measurement.
    const ev = await r.provider.collect(new Uint8Array(64));
    if (ev.tee !== 'sev-snp') throw new Error('expected SEV-SNP evidence');
    expect(Buffer.from(ev.report, 'base64').subarray(0x90, 0xc0).toString('hex')).toBe(MEASUREMENT);
  });

  it('auto with an unknown TEE provider or no provider -> simulator only when configured', async () => {
    for (const provider of ['arm_cca_guest', null] as const) {
      const t = await tsm({ provider });
      const h = harness(t);
      expect((await selectEvidenceProvider(sel('auto', t), h.deps)).kind).toBe('simulated');
      const e = await configError(selectEvidenceProvider(sel('auto', t, false), harness(t).deps));
      expect(e.code).toBe('ERR_SRV_CONFIG');
      expect(e.fields).toEqual(['simulated']);
    }
  });

  it('auto + configfs-tsm reporting tdx_guest -> the real TDX provider, even when the simulator is configured', async () => {
    const t = await tdxTsm();
    const h = harness(t);
    const r = await selectEvidenceProvider(sel('auto', t), h.deps);
    expect(r.kind).toBe('configfs-tsm');
    expect(r.provider).toBeInstanceOf(ConfigfsTsmProvider);
    expect(r.provider.tee).toBe('tdx');
    expect(r.provider.simulated).toBe(false);
    expect(r.reason).toMatch(/tdx_guest/);
    expect(h.opened).toEqual([]);
    expect(h.logs.some((l) => l.level === 30 && /Intel TDX/.test(l.msg))).toBe(true);
    expect(await t.entries()).toEqual([]);
    const ev = await r.provider.collect(TDX_RD);
    expect(ev).toEqual({ tee: 'tdx', quote: Buffer.from(TDX_QUOTE).toString('base64') });
  });

  it('tdx requires configfs-tsm reporting tdx_guest, and never falls back (to the simulator or SEV-SNP)', async () => {
    const t = await tdxTsm();
    const r = await selectEvidenceProvider(sel('tdx', t), harness(t).deps);
    expect(r.kind).toBe('configfs-tsm');
    expect(r.provider.tee).toBe('tdx');

    const snp = await tsm();
    const h = harness(snp);
    const e = await configError(selectEvidenceProvider(sel('tdx', snp), h.deps));
    expect(e.code).toBe('ERR_SRV_CONFIG');
    expect(e.detail).toMatch(/^tee\.mode: tdx needs configfs-tsm reporting tdx_guest/);
    expect(e.detail).toMatch(/"sev_guest"/);
    expect(e.fields).toEqual(['tee.mode', 'tee.tsmRoot']);
    expect(h.opened).toEqual([]);

    const absent = { ...sel('tdx', snp), tee: { mode: 'tdx' as const, tsmRoot: path.join(snp.root, 'x') } };
    const e2 = await configError(selectEvidenceProvider(absent, h.deps));
    expect(e2.detail).toMatch(/does not exist/);
    expect(h.opened).toEqual([]);

    // And sev-snp does not take a TDX guest.
    const e3 = await configError(selectEvidenceProvider(sel('sev-snp', t), harness(t).deps));
    expect(e3.detail).toMatch(/"tdx_guest"/);
  });

  it('tee.privlevel with a TDX guest is ERR_SRV_CONFIG naming tee.privlevel (auto and tdx)', async () => {
    for (const mode of ['auto', 'tdx'] as const) {
      const t = await tdxTsm();
      const h = harness(t);
      const e = await configError(selectEvidenceProvider(sel(mode, t, true, 0), h.deps));
      expect(e.code).toBe('ERR_SRV_CONFIG');
      expect(e.fields).toEqual(['tee.privlevel']);
      expect(h.opened).toEqual([]);
    }
  });

  it('auto with neither -> ERR_SRV_CONFIG naming the simulated field and the probe result', async () => {
    const t = await tsm();
    const h = harness(t);
    const s: ProviderSelection = { tee: { mode: 'auto', tsmRoot: path.join(t.root, 'absent') } };
    const e = await configError(selectEvidenceProvider(s, h.deps));
    expect(e.code).toBe('ERR_SRV_CONFIG');
    expect(e.detail).toMatch(/^simulated: required/);
    expect(e.detail).toMatch(/does not exist/);
    expect(h.opened).toEqual([]);
  });

  it('sev-snp never falls back to the simulator, even when it is configured', async () => {
    const absent = await tsm();
    const h = harness(absent);
    const s = { ...sel('sev-snp', absent), tee: { mode: 'sev-snp' as const, tsmRoot: path.join(absent.root, 'x') } };
    const e = await configError(selectEvidenceProvider(s, h.deps));
    expect(e.code).toBe('ERR_SRV_CONFIG');
    expect(e.detail).toMatch(/^tee\.mode: sev-snp/);
    expect(e.fields).toEqual(['tee.mode', 'tee.tsmRoot']);
    expect(h.opened).toEqual([]);

    const tdx = await tsm({ provider: 'tdx_guest' });
    const e2 = await configError(selectEvidenceProvider(sel('sev-snp', tdx), harness(tdx).deps));
    expect(e2.detail).toMatch(/"tdx_guest"/);

    const ro = await tsm();
    const eacces = { ...ro.fs, mkdir: () => Promise.reject(Object.assign(new Error('EACCES'), { code: 'EACCES' })) };
    const e3 = await configError(selectEvidenceProvider(sel('sev-snp', ro), { ...harness(ro).deps, tsmFs: eacces }));
    expect(e3.detail).toMatch(/EACCES/);
  });

  it('sev-snp with configfs-tsm reporting sev_guest -> the real provider, privlevel passed through', async () => {
    let seenPrivlevel: number | undefined;
    const t = await tsm({
      report: (i, p) => {
        seenPrivlevel = p;
        return recorded(i);
      },
    });
    const r = await selectEvidenceProvider(sel('sev-snp', t, false, 1), harness(t).deps);
    expect(r.kind).toBe('configfs-tsm');
    await r.provider.collect(new Uint8Array(64));
    expect(seenPrivlevel).toBe(1);
  });

  it('simulated forces the simulator without probing configfs-tsm, and requires its settings', async () => {
    const t = await tsm();
    const h = harness(t);
    const r = await selectEvidenceProvider(sel('simulated', t), h.deps);
    expect(r.kind).toBe('simulated');
    expect(t.created).toEqual([]);
    expect(h.logs.some((l) => l.level === 40 && /SIMULATED/.test(l.msg))).toBe(true);
    const e = await configError(selectEvidenceProvider(sel('simulated', t, false), h.deps));
    expect(e.code).toBe('ERR_SRV_CONFIG');
    expect(e.fields).toEqual(['simulated']);
  });

  it('accepts a parsed ServerConfig, and opens the real simulator state by default', async () => {
    const cfg = loadServerConfig({
      models: [{ name: 'm', path: '/m.onnx', plaintext: true }],
      allowPlaintextModels: true,
      tee: { mode: 'simulated' },
      simulated: { stateDir: path.join(base, 'sim'), measurement: MEASUREMENT },
    });
    const r = await selectEvidenceProvider(cfg);
    expect(r.kind).toBe('simulated');
  });
});

describe('server config: tee', () => {
  const base = { models: [{ name: 'm', path: '/m.onnx', plaintext: true }], allowPlaintextModels: true };
  it('defaults to auto at the standard configfs-tsm root', () => {
    expect(loadServerConfig(base).tee).toEqual({ mode: 'auto', tsmRoot: TSM_REPORT_ROOT });
  });
  it('rejects an unknown mode, a bad privlevel, unknown keys, and simulated mode without settings, naming the field', () => {
    const fields = (o: unknown): unknown => {
      try {
        loadServerConfig(o);
        return 'ok';
      } catch (e) {
        return isCirError(e) ? e.details?.['fields'] : e;
      }
    };
    expect(fields({ ...base, tee: { mode: 'sgx' } })).toEqual(['tee.mode']);
    expect(fields({ ...base, tee: { mode: 'tdx' } })).toBe('ok');
    expect(fields({ ...base, tee: { privlevel: 4 } })).toEqual(['tee.privlevel']);
    expect(fields({ ...base, tee: { tsmroot: '/x' } })).toEqual(['tee']);
    expect(fields({ ...base, tee: { mode: 'simulated' } })).toEqual(['simulated']);
    expect(fields({ ...base, tee: { mode: 'sev-snp', tsmRoot: '/x', privlevel: 0 } })).toBe('ok');
  });
});
