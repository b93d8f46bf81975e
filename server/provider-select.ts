/**
 * Evidence provider selection for `cir serve`: the real TEE guest interface (configfs-tsm,
 * SEV-SNP or Intel TDX) or the simulated TEE, from `config.tee` and `config.simulated`.
 *
 *   tee.mode = 'sev-snp'    configfs-tsm at tee.tsmRoot must report `sev_guest`; else ERR_SRV_CONFIG.
 *   tee.mode = 'tdx'        configfs-tsm at tee.tsmRoot must report `tdx_guest`; else ERR_SRV_CONFIG.
 *   tee.mode = 'simulated'  the simulator from `simulated` (required); configfs-tsm is not probed.
 *   tee.mode = 'auto'       configfs-tsm if it reports `sev_guest` or `tdx_guest`; otherwise the
 *                           simulator when `simulated` is configured, with a warning saying why;
 *                           otherwise ERR_SRV_CONFIG naming the `simulated` field and the probe result.
 *
 * `tee.privlevel` (SEV-SNP VMPL) is refused with ERR_SRV_CONFIG when the provider is TDX,
 * which has no privilege levels.
 *
 * SECURITY: a request for the real TEE never falls back to the simulator (nor to the other
 * TEE); in `auto` the fallback needs the operator to have configured the simulator, and is
 * logged. Simulated evidence is still refused by any verifier or policy that does not allow
 * it explicitly.
 *
 * A TDX guest's evidence is verified by the broker only when it has Intel collateral
 * (`attestation.tdxCollateral`); otherwise the broker answers ERR_KMS_TEE_NOT_CONFIGURED.
 */
import type { Logger } from 'pino';
import type { EvidenceProvider } from '../attestation/types.js';
import { SimulatedSnp } from '../attestation/sim/simulated-snp.js';
import {
  ConfigfsTsmProvider,
  probeConfigfsTsm,
  TSM_PROVIDER_SEV_GUEST,
  TSM_PROVIDER_TDX_GUEST,
  type TsmFs,
  type TsmGuestProvider,
  type TsmProbe,
} from '../attestation/tsm/configfs.js';
import { ServerError } from './codes.js';
import type { ServerConfig } from './config.js';

export type TeeMode = 'auto' | 'sev-snp' | 'tdx' | 'simulated';

export interface ProviderSelection {
  readonly tee: { readonly mode: TeeMode; readonly tsmRoot: string; readonly privlevel?: number | undefined };
  readonly simulated?: { readonly stateDir: string; readonly measurement: string } | undefined;
}

export interface ProviderSelectDeps {
  readonly logger?: Logger;
  /** configfs-tsm file operations (tests). */
  readonly tsmFs?: TsmFs;
  /** Opens the simulator state (tests); default SimulatedSnp.open. */
  readonly openSimulator?: (stateDir: string) => Promise<SimulatedSnp>;
}

export interface SelectedProvider {
  readonly provider: EvidenceProvider;
  readonly kind: 'configfs-tsm' | 'simulated';
  /** Why this provider, for the start-up log. */
  readonly reason: string;
}

function probeText(p: TsmProbe): string {
  return p.state === 'present' ? `configfs-tsm provider is ${JSON.stringify(p.provider.slice(0, 32))}` : p.reason;
}

async function simulator(sel: ProviderSelection, deps: ProviderSelectDeps, why: string): Promise<SelectedProvider> {
  const s = sel.simulated;
  if (!s) throw new ServerError('ERR_SRV_CONFIG', { detail: `simulated: required (${why})`, details: { fields: ['simulated'] } });
  const sim = await (deps.openSimulator ?? ((d: string) => SimulatedSnp.open(d)))(s.stateDir);
  return { provider: sim.provider({ measurement: Buffer.from(s.measurement, 'hex') }), kind: 'simulated', reason: why };
}

/** What each real-TEE mode requires configfs-tsm to report. */
const MODE_PROVIDER: Readonly<Record<'sev-snp' | 'tdx', TsmGuestProvider>> = {
  'sev-snp': TSM_PROVIDER_SEV_GUEST,
  tdx: TSM_PROVIDER_TDX_GUEST,
};
const PROVIDER_NAME: Readonly<Record<TsmGuestProvider, string>> = {
  [TSM_PROVIDER_SEV_GUEST]: 'SEV-SNP',
  [TSM_PROVIDER_TDX_GUEST]: 'Intel TDX',
};

function isGuestProvider(p: string): p is TsmGuestProvider {
  return p === TSM_PROVIDER_SEV_GUEST || p === TSM_PROVIDER_TDX_GUEST;
}

function tsmProvider(sel: ProviderSelection, deps: ProviderSelectDeps, expect: TsmGuestProvider): ConfigfsTsmProvider<TsmGuestProvider> {
  if (expect === TSM_PROVIDER_TDX_GUEST && sel.tee.privlevel !== undefined) {
    throw new ServerError('ERR_SRV_CONFIG', {
      detail: `tee.privlevel: applies to SEV-SNP only, but configfs-tsm at ${sel.tee.tsmRoot} reports ${TSM_PROVIDER_TDX_GUEST}`,
      details: { fields: ['tee.privlevel'] },
    });
  }
  return new ConfigfsTsmProvider<TsmGuestProvider>({
    root: sel.tee.tsmRoot,
    expect,
    ...(sel.tee.privlevel !== undefined ? { privlevel: sel.tee.privlevel } : {}),
    ...(deps.tsmFs ? { fs: deps.tsmFs } : {}),
  });
}

/**
 * Picks the evidence provider as described in the module comment. Throws ERR_SRV_CONFIG
 * (detail names the field) when the requested or required provider is not available;
 * ERR_ATT_SIM_STATE_CORRUPT when the simulator state is broken.
 */
export async function selectEvidenceProvider(
  sel: ProviderSelection | ServerConfig,
  deps: ProviderSelectDeps = {},
): Promise<SelectedProvider> {
  const { mode, tsmRoot } = sel.tee;
  if (mode === 'simulated') {
    const r = await simulator(sel, deps, 'tee.mode is simulated');
    deps.logger?.warn({ tee: r.kind }, 'evidence provider: SIMULATED TEE (tee.mode: simulated; development only)');
    return r;
  }
  const probe = await probeConfigfsTsm(tsmRoot, deps.tsmFs);
  const wanted = mode === 'auto' ? undefined : MODE_PROVIDER[mode];
  if (probe.state === 'present' && isGuestProvider(probe.provider) && (wanted === undefined || probe.provider === wanted)) {
    const reason = `configfs-tsm at ${tsmRoot} reports ${probe.provider}`;
    const provider = tsmProvider(sel, deps, probe.provider);
    deps.logger?.info({ tee: 'configfs-tsm', provider: probe.provider, tsmRoot }, `evidence provider: ${PROVIDER_NAME[probe.provider]} (${reason})`);
    return { provider, kind: 'configfs-tsm', reason };
  }
  if (wanted !== undefined) {
    // SECURITY: never fall back from an explicit real-TEE request (to the simulator or the other TEE).
    throw new ServerError('ERR_SRV_CONFIG', {
      detail: `tee.mode: ${mode} needs configfs-tsm reporting ${wanted} at tee.tsmRoot (${probeText(probe)})`,
      details: { fields: ['tee.mode', 'tee.tsmRoot'] },
    });
  }
  const why = `tee.mode is auto and no SEV-SNP or TDX guest was found: ${probeText(probe)}`;
  const r = await simulator(sel, deps, why);
  deps.logger?.warn({ tee: r.kind, tsmRoot, probe: probe.state }, `evidence provider: SIMULATED TEE, fallback configured by 'simulated' (${why})`);
  return r;
}
