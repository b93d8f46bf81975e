/**
 * Test harness for kms-broker unit tests: a broker on a temp state dir with a fixed clock,
 * an in-test evidence verifier and a log capture. Not part of the build (testdata/).
 */
import type { HpkeSealFn } from '../../common/hpke-sealer.js';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { pino } from 'pino';
import { REDACT_PATHS, type Logger } from '../../common/logger.js';
import { CirError } from '../../common/errors.js';
import { generateHpkeKeyPair, type HpkeKeyPair } from '../../common/hpke.js';
import { kmsReportData } from '../../attestation/binding.js';
import type { TdxClaims } from '../../attestation/tdx/index.js';
import type { SnpClaims } from '../../attestation/types.js';
import { buildApp, type EvidenceVerifier } from '../app.js';
import type { BrokerClaims } from '../policy.js';
import { loadBrokerConfig, type BrokerConfigInput, type BrokerConfig } from '../config.js';
import { openKeyStore, type FileKeyStore } from '../keystore.js';
import { MemoryAuditSink } from '../audit-sink.js';
import { FileIdentityStore, type Role } from '../identities.js';
import { openIdentityStore } from '../state.js';
import { TokenService } from '../tokens.js';

export const MEASUREMENT_A = 'a'.repeat(96);
export const MEASUREMENT_B = 'b'.repeat(96);
export const T0 = new Date('2030-01-01T00:00:00Z');
export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';

export function makeClaims(over: Partial<SnpClaims> = {}): SnpClaims {
  const tcb = { bootloader: 10, tee: 0, snp: 23, microcode: 213 };
  return {
    tee: 'sev-snp',
    simulated: false,
    product: 'Genoa',
    reportVersion: 3,
    signingKey: 'vcek',
    measurement: MEASUREMENT_A,
    reportData: '00'.repeat(64),
    hostData: '00'.repeat(32),
    idKeyDigest: '00'.repeat(48),
    authorKeyDigest: '00'.repeat(48),
    familyId: '00'.repeat(16),
    imageId: '00'.repeat(16),
    reportId: '00'.repeat(32),
    chipId: '00'.repeat(64),
    guestSvn: 1,
    vmpl: 0,
    policy: { abiMajor: 1, abiMinor: 0, smt: true, migrationAgent: false, debug: false, singleSocket: false },
    platform: { smtEnabled: true, tsmeEnabled: false },
    currentTcb: tcb,
    reportedTcb: tcb,
    committedTcb: tcb,
    launchTcb: tcb,
    firmware: { current: '1.55.23', committed: '1.55.23' },
    relaxations: [],
    ...over,
  };
}

/**
 * MRTD of the real Intel TDX quote test/data/vectors/tdx/dcap-qvl/tdx_quote (what
 * `verifyTdxQuote` reports for it at 2025-07-01 with its dcap-qvl collateral).
 */
export const TDX_MRTD = '91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7';
export const TDX_MRTD_OTHER = 'c'.repeat(96);

/**
 * TdxClaims as `verifyTdxQuote` returns them for the real dcap-qvl quote (UpToDate, TD 1.0
 * body, no relaxations); `tdx-claims.test.ts` keeps this copy equal to the verifier's output.
 */
export function makeTdxClaims(over: Partial<TdxClaims> = {}): TdxClaims {
  const zero48 = '00'.repeat(48);
  return {
    tee: 'tdx',
    simulated: false,
    quoteVersion: 4,
    bodyType: 2,
    mrtd: TDX_MRTD,
    rtmr: [
      '44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0',
      '0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378',
      'd833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132',
      zero48,
    ],
    mrseam: '5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1',
    mrsignerseam: zero48,
    mrconfigid: zero48,
    mrowner: zero48,
    mrownerconfig: zero48,
    reportData: '9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44aed55d51ec39b7e518fadb92c2b523f20',
    tdAttributes: { hex: '0000001000000000', debug: false, septVeDisable: true, migratable: false, pks: false, kl: false, perfmon: false },
    seamAttributes: '0000000000000000',
    xfam: 'e702060000000000',
    teeTcbSvn: '06010300000000000000000000000000',
    fmspc: 'b0c06f000000',
    pceId: '0000',
    tcbStatus: 'UpToDate',
    platformTcbStatus: 'UpToDate',
    tdxModuleTcbStatus: 'UpToDate',
    tdxModuleId: 'TDX_01',
    qeTcbStatus: 'UpToDate',
    tcbDate: '2024-03-13T00:00:00.000Z',
    advisoryIds: [],
    tcbEvaluationDataNumber: 17,
    relaxations: [],
    ...over,
  };
}

/**
 * What the fake TEE puts in "evidence": the report_data it was asked for plus claim
 * overrides. `tee: 'tdx'` makes the fake verifier return TdxClaims (`makeTdxClaims`).
 */
export interface FakeEvidence {
  tee?: 'tdx';
  reportData: string;
  claims?: Partial<SnpClaims> | Partial<TdxClaims>;
  fail?: 'verification' | 'bad-input' | 'crash';
}

/**
 * In-test verifier. `strict` (default) checks report_data against `expectedReportData`
 * like a real verifier; non-strict returns whatever the evidence says, to exercise the
 * broker's own binding re-check.
 */
export function fakeVerifier(opts: { strict?: boolean } = {}): EvidenceVerifier & { calls: number } {
  const v = {
    calls: 0,
    async verify(evidence: unknown, o: { now: Date; expectedReportData: Uint8Array }): Promise<BrokerClaims> {
      v.calls++;
      const e = evidence as FakeEvidence;
      if (e.fail === 'verification') throw new CirError('ERR_ATT_FAKE_BAD_SIGNATURE', { category: 'verification', message: 'bad signature' });
      if (e.fail === 'bad-input') throw new CirError('ERR_ATT_FAKE_PARSE', { category: 'bad-input', message: 'bad report' });
      if (e.fail === 'crash') throw new Error('verifier exploded with internal secret /etc/shadow');
      if (typeof e.reportData !== 'string') throw new CirError('ERR_ATT_FAKE_PARSE', { category: 'bad-input', message: 'bad report' });
      if ((opts.strict ?? true) && e.reportData !== Buffer.from(o.expectedReportData).toString('hex')) {
        throw new CirError('ERR_ATT_FAKE_REPORT_DATA', { category: 'verification', message: 'report_data mismatch' });
      }
      if (e.tee === 'tdx') return makeTdxClaims({ ...(e.claims as Partial<TdxClaims>), reportData: e.reportData });
      return makeClaims({ ...(e.claims as Partial<SnpClaims>), reportData: e.reportData });
    },
  };
  return v;
}

export interface LogCapture {
  readonly logger: Logger;
  readonly lines: string[];
  text(): string;
}

/** A pino logger with the production redaction list, writing into memory. */
export function captureLogs(): LogCapture {
  const lines: string[] = [];
  const dest = new Writable({
    write(chunk, _enc, cb) {
      lines.push(...chunk.toString('utf8').split('\n').filter((l: string) => l.length > 0));
      cb();
    },
  });
  const logger = pino({ level: 'trace', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, dest);
  return { logger, lines, text: () => lines.join('\n') };
}

export class Clock {
  t: number;
  constructor(start: Date = T0) {
    this.t = start.getTime();
  }
  now = (): Date => new Date(this.t);
  advance(seconds: number): void {
    this.t += seconds * 1000;
  }
}

export interface Harness {
  app: FastifyInstance;
  config: BrokerConfig;
  store: FileKeyStore;
  identities: FileIdentityStore;
  audit: MemoryAuditSink;
  /** Creates an admin identity and returns its Authorization header. */
  identity(tenant: string, roles: Role[], subject?: string): Promise<{ id: string; headers: Record<string, string> }>;
  tokens: TokenService;
  verifier: EvidenceVerifier & { calls?: number };
  clock: Clock;
  logs: LogCapture;
  dir: string;
  close(): Promise<void>;
}

export async function tempDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'cir-kms-test-'));
}

export async function makeHarness(
  opts: {
    config?: Partial<BrokerConfigInput>;
    env?: Record<string, string | undefined>;
    adminToken?: string | undefined;
    /** Pass no identity store to the app (the admin API then rests on the bootstrap token alone). */
    noIdentities?: boolean;
    verifier?: EvidenceVerifier & { calls?: number };
    /** Builds the verifier from the loaded config (e.g. `createDefaultVerifier`); wins over `verifier`. */
    makeVerifier?: (config: BrokerConfig, env: Record<string, string | undefined>) => Promise<EvidenceVerifier>;
    /** The off-loop HPKE sealer (main.ts passes the worker's); default none (inline only). */
    hpkeSeal?: HpkeSealFn;
  } = {},
): Promise<Harness> {
  const dir = await tempDir();
  const env = { NODE_ENV: 'test', CIR_KMS_MASTER_KEY: undefined, ...opts.env };
  const config = loadBrokerConfig({ stateDir: dir, ...opts.config }, { env });
  const clock = new Clock();
  const logs = captureLogs();
  const store = await openKeyStore(config, { env, now: clock.now });
  const identities = await openIdentityStore(config, { env, now: clock.now });
  const audit = new MemoryAuditSink();
  const tokens = await TokenService.generate({ issuer: config.issuer, ttlSeconds: config.tokenTtlSeconds });
  const verifier = opts.makeVerifier ? await opts.makeVerifier(config, env) : (opts.verifier ?? fakeVerifier());
  const app = buildApp(config, {
    logger: logs.logger,
    verifier,
    keyStore: store,
    ...(opts.noIdentities ? {} : { identities }),
    audit,
    tokens,
    adminToken: 'adminToken' in opts ? opts.adminToken : ADMIN_TOKEN,
    ...(opts.hpkeSeal ? { hpkeSeal: opts.hpkeSeal } : {}),
    now: clock.now,
    env,
  });
  await app.ready();
  return {
    app,
    config,
    store,
    identities,
    audit,
    identity: async (tenant, roles, subject) => {
      const { identity, token } = await identities.create({ tenant, subject: subject ?? `${tenant}-${roles.join('+')}`, roles, ttlSeconds: 86400 }, 'test');
      return { id: identity.id, headers: { authorization: `Bearer ${token!}` } };
    },
    tokens,
    verifier,
    clock,
    logs,
    dir,
    close: async () => {
      await app.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

export async function challenge(app: FastifyInstance): Promise<Buffer> {
  const res = await app.inject({ method: 'POST', url: '/v1/attest/challenge' });
  if (res.statusCode !== 200) throw new Error(`challenge: ${res.statusCode} ${res.body}`);
  return Buffer.from(res.json().nonce, 'base64url');
}

export async function attest(
  app: FastifyInstance,
  opts: {
    keyPair?: HpkeKeyPair;
    nonce?: Buffer;
    claims?: Partial<SnpClaims> | Partial<TdxClaims>;
    /** Fake Intel TDX evidence: the fake verifier returns TdxClaims. */
    tee?: 'tdx';
    reportData?: Buffer;
    fail?: FakeEvidence['fail'];
    /** Extra members merged into the evidence object (the fake verifier ignores them). */
    extraEvidence?: Record<string, unknown>;
    /** The tenant the token is for (absent: the broker's default). */
    tenant?: string;
  } = {},
) {
  const keyPair = opts.keyPair ?? (await generateHpkeKeyPair());
  const nonce = opts.nonce ?? (await challenge(app));
  const reportData = opts.reportData ?? kmsReportData(nonce, keyPair.publicKey);
  const evidence: FakeEvidence = {
    ...opts.extraEvidence,
    ...(opts.tee ? { tee: opts.tee } : {}),
    reportData: reportData.toString('hex'),
    ...(opts.claims ? { claims: opts.claims } : {}),
    ...(opts.fail ? { fail: opts.fail } : {}),
  };
  const res = await app.inject({
    method: 'POST',
    url: '/v1/attest',
    payload: {
      nonce: nonce.toString('base64url'),
      evidence,
      publicKey: Buffer.from(keyPair.publicKey).toString('base64url'),
      ...(opts.tenant !== undefined ? { tenant: opts.tenant } : {}),
    },
  });
  return { res, keyPair, nonce };
}

export async function release(app: FastifyInstance, keyId: string, token: string | undefined, publicKey: Uint8Array, version?: number, tenant?: string) {
  return app.inject({
    method: 'POST',
    url: tenant === undefined ? `/v1/keys/${encodeURIComponent(keyId)}/release` : `/v1/tenants/${encodeURIComponent(tenant)}/keys/${encodeURIComponent(keyId)}/release`,
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
    payload: { publicKey: Buffer.from(publicKey).toString('base64url'), ...(version !== undefined ? { version } : {}) },
  });
}

export function adminHeaders(token = ADMIN_TOKEN): Record<string, string> {
  return { authorization: `Bearer ${token}` };
}

export async function createKeyViaApi(app: FastifyInstance, keyId: string, dek: Buffer, policy: unknown) {
  return app.inject({ method: 'POST', url: '/v1/admin/keys', headers: adminHeaders(), payload: { keyId, dek: dek.toString('base64url'), policy } });
}
