/**
 * Client-side verification of a cir server, before any input is sent to it.
 *
 * Checks, in order, and reports each one:
 *  1. tls        - the certificate the server presents; its SPKI hash becomes the candidate pin.
 *  2. evidence   - GetEvidence with a fresh 32-byte nonce, over a channel pinned to that certificate.
 *  3. tls-binding - the server says it serves the same TLS key we pinned.
 *  4. signature+chain - the SNP report verifies to a pinned AMD ARK (or the simulated root,
 *                 only with --allow-simulated), at the injectable `now`.
 *  5. report-data binding - report_data = SHA-512(label ‖ nonce ‖ SPKI hash ‖ HPKE key), so the
 *                 evidence is fresh and was made by whoever holds the pinned TLS key.
 *  6. policy     - measurement allow-list, debug, TCB and the other SNP policy checks.
 * It does not check that the measurement corresponds to any particular source code: the
 * operator supplies the expected measurement.
 */
import { randomBytes } from 'node:crypto';
import type * as grpc from '@grpc/grpc-js';
import { serverReportData, type TlsKeyOrigin } from '../attestation/binding.js';
import type { PolicyFailure, SnpClaims, TdxEvidence } from '../attestation/types.js';
import { verifyTdxQuote, validateTdxClaims, parseTdxPolicy, type TdxClaims, type TdxCollateral, type TdxCollateralSource, type TdxPolicyInput } from '../attestation/tdx/index.js';
import { verifySnpEvidence } from '../attestation/snp/verify.js';
import { validateSnpClaims } from '../attestation/snp/validate.js';
import { SnpPolicySchema, type SnpPolicy } from '../attestation/snp/policy.js';
import { constantTimeEqual, fromBase64, toHex } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { loadServiceClients } from '../server/proto.js';
import { ClientError } from './codes.js';
import { fetchPresentedCertificate, parseTarget, pinnedCredentials } from './pinned-tls.js';
import { PINNED_CHANNEL_OPTIONS } from './pinned-tls.js';

/** What a verified server proved about itself, per TEE family. */
export type ServerClaims = SnpClaims | TdxClaims;

export interface Check {
  readonly name: string;
  readonly ok: boolean;
  readonly detail: string;
}

export interface VerifyServerOptions {
  /** HOST:PORT */
  readonly server: string;
  /** Accepted launch measurements (96 hex chars each). At least one. */
  readonly expectMeasurements: readonly string[];
  readonly allowSimulated?: boolean;
  /** PEM of the simulated ARK; required to accept simulated evidence. */
  readonly simulatedRootPem?: string;
  /** Further SNP policy settings (minimum TCB, VMPL, ...). */
  readonly policy?: Partial<SnpPolicy>;
  readonly now?: Date;
  readonly timeoutMs?: number;
  /**
   * Accept a server whose TLS key was imported from outside the TEE (operator files).
   * Such a key may exist elsewhere too, so this is a relaxation; off by default.
   */
  readonly allowImportedTls?: boolean;
  /** Needed to verify an Intel TDX server: collateral (no network) and extra policy. */
  readonly tdx?: {
    readonly collateral: TdxCollateral | TdxCollateralSource;
    readonly policy?: Partial<TdxPolicyInput>;
    readonly allowMissingCrls?: boolean;
  };
}

export interface VerifyServerResult {
  readonly ok: boolean;
  readonly checks: readonly Check[];
  readonly claims?: ServerClaims;
  readonly hpkePublicKey?: Buffer;
  /** Channel credentials pinned to the attested TLS key. Present only when ok. */
  readonly credentials?: grpc.ChannelCredentials;
  readonly target: string;
}

interface EvidenceResponse {
  tee: string;
  evidence: Buffer;
  tls_spki_sha256: Buffer;
  hpke_public_key: Buffer;
  hpke_suite: string;
  tls_key_origin: string;
}

function unary<Req, Res>(client: grpc.Client, method: string, req: Req, timeoutMs: number): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = (client as unknown as Record<string, Function>)[method]!;
    fn.call(client, req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: Res) => {
      if (err) reject(new ClientError('ERR_CLI_RPC_FAILED', { detail: `${method}: ${err.details || err.message}`, cause: err }));
      else resolve(res);
    });
  });
}

const BINDING_DETAIL = 'report_data = SHA-512(label ‖ client nonce ‖ TLS key hash ‖ HPKE key)';

/** Adds one check per policy failure, with the measurement and TCB ones named as such. */
function policyChecks(checks: Check[], failures: readonly PolicyFailure[], measurementField: string, measurement: string, tcb: (f: string) => boolean, tcbDetail: string): void {
  const m = failures.find((f) => f.field === measurementField);
  checks.push({ name: 'measurement', ok: !m, detail: m ? `expected ${m.expected}, observed ${m.observed}` : measurement });
  checks.push({ name: 'tcb', ok: !failures.some((f) => tcb(f.field)), detail: tcbDetail });
  for (const f of failures) {
    if (f.field === measurementField || tcb(f.field)) continue;
    checks.push({ name: `policy:${f.field}`, ok: false, detail: `expected ${f.expected}, observed ${f.observed}` });
  }
}

async function checkSnp(evidence: unknown, expectedReportData: Uint8Array, opts: VerifyServerOptions, checks: Check[]): Promise<SnpClaims> {
  const policy = SnpPolicySchema.parse({
    ...opts.policy,
    measurements: opts.expectMeasurements.map((m) => m.toLowerCase()),
    allowSimulated: opts.allowSimulated ?? false,
  });
  const claims = await verifySnpEvidence(evidence, {
    now: opts.now ?? new Date(),
    expectedReportData,
    trust: {
      allowSimulated: opts.allowSimulated ?? false,
      ...(opts.simulatedRootPem ? { simulatedRoot: { arkDer: pemToDer(opts.simulatedRootPem) } } : {}),
    },
  });
  const chainName = claims.signingKey === 'vlek' ? 'VLEK → ASVK → ARK' : 'VCEK → ASK → ARK';
  checks.push({
    name: 'signature+chain',
    ok: true,
    detail: `${chainName} (${claims.product}${claims.simulated ? ', SIMULATED root' : ', pinned AMD root'}), report v${claims.reportVersion}`,
  });
  checks.push({ name: 'binding', ok: true, detail: BINDING_DETAIL });
  policyChecks(checks, validateSnpClaims(claims, policy), 'measurement', claims.measurement, (f) => /tcb/i.test(f), `reported ${tcbString(claims.reportedTcb)}`);
  return claims;
}

async function checkTdx(evidence: TdxEvidence, expectedReportData: Uint8Array, opts: VerifyServerOptions, checks: Check[]): Promise<TdxClaims> {
  if (!opts.tdx) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: 'the server sent Intel TDX evidence: give TDX collateral (--tdx-collateral DIR|FILE)' });
  }
  const quote = typeof evidence.quote === 'string' ? fromBase64(evidence.quote) : undefined;
  if (!quote) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: 'TDX evidence quote is not base64' });
  const policy = parseTdxPolicy({ ...opts.tdx.policy, mrtd: opts.expectMeasurements.map((m) => m.toLowerCase()) });
  const claims = await verifyTdxQuote(quote, {
    now: opts.now ?? new Date(),
    expectedReportData,
    collateral: opts.tdx.collateral,
    ...(opts.tdx.allowMissingCrls ? { allowMissingCrls: true } : {}),
  });
  checks.push({ name: 'signature+chain', ok: true, detail: `quote → PCK → pinned Intel SGX Root CA, quote v${claims.quoteVersion}` });
  checks.push({ name: 'binding', ok: true, detail: BINDING_DETAIL });
  policyChecks(checks, validateTdxClaims(claims, policy), 'mrtd', claims.mrtd, (f) => /tcb/i.test(f), `TCB status ${claims.tcbStatus}, QE ${claims.qeTcbStatus}`);
  return claims;
}

function tcbString(t: SnpClaims['reportedTcb']): string {
  return `${t.fmc !== undefined ? `fmc=${t.fmc} ` : ''}bl=${t.bootloader} tee=${t.tee} snp=${t.snp} ucode=${t.microcode}`;
}

export async function verifyServer(opts: VerifyServerOptions): Promise<VerifyServerResult> {
  const checks: Check[] = [];
  const fail = (name: string, detail: string): VerifyServerResult => {
    checks.push({ name, ok: false, detail });
    return { ok: false, checks, target: opts.server };
  };
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const target = parseTarget(opts.server);
  const policy = SnpPolicySchema.parse({
    ...opts.policy,
    measurements: opts.expectMeasurements.map((m) => m.toLowerCase()),
    allowSimulated: opts.allowSimulated ?? false,
  });

  // 1. The certificate the server presents.
  const presented = await fetchPresentedCertificate(target, timeoutMs);
  checks.push({ name: 'tls', ok: true, detail: `server key SPKI SHA-256 ${toHex(presented.spkiSha256)}` });

  // 2. Evidence over a channel pinned to exactly that key.
  const credentials = pinnedCredentials(presented, presented.spkiSha256);
  const { AttestationService } = loadServiceClients();
  const client = new AttestationService(`${target.host.includes(':') ? `[${target.host}]` : target.host}:${target.port}`, credentials, PINNED_CHANNEL_OPTIONS);
  const nonce = randomBytes(32);
  let res: EvidenceResponse;
  try {
    res = await unary<{ client_nonce: Buffer }, EvidenceResponse>(client, 'GetEvidence', { client_nonce: nonce }, timeoutMs);
  } finally {
    client.close();
  }
  let evidence: unknown;
  try {
    evidence = JSON.parse(res.evidence.toString('utf8'));
  } catch {
    return fail('evidence', 'server returned evidence that is not JSON');
  }
  checks.push({ name: 'evidence', ok: true, detail: `${res.tee} evidence for nonce ${toHex(nonce).slice(0, 16)}…` });

  // 3. The server claims the key we pinned.
  if (!constantTimeEqual(res.tls_spki_sha256, presented.spkiSha256)) {
    return fail('tls-binding', 'server reports a different TLS key than the one it presented');
  }
  if (res.hpke_public_key.length !== 32) return fail('tls-binding', 'server HPKE public key is not 32 bytes');
  const origin: TlsKeyOrigin = res.tls_key_origin === 'imported' ? 'imported' : 'tee';
  if (res.tls_key_origin !== 'tee' && res.tls_key_origin !== 'imported') {
    return fail('tls-binding', 'server did not say where its TLS key came from');
  }
  if (origin === 'imported' && !opts.allowImportedTls) {
    return fail('tls-binding', 'the server TLS key was imported from outside the TEE (accept with --allow-imported-tls)');
  }
  checks.push({ name: 'tls-binding', ok: true, detail: origin === 'tee' ? 'TLS key generated inside the TEE' : 'TLS key IMPORTED (relaxation)' });

  // 4 + 5. Signature, chain to a pinned root, and report_data binding; 6. policy.
  const expectedReportData = serverReportData(nonce, presented.spkiSha256, res.hpke_public_key, origin);
  const tee = typeof evidence === 'object' && evidence !== null ? (evidence as { tee?: unknown }).tee : undefined;
  let claims: ServerClaims;
  try {
    claims =
      tee === 'tdx'
        ? await checkTdx(evidence as TdxEvidence, expectedReportData, opts, checks)
        : await checkSnp(evidence, expectedReportData, opts, checks);
  } catch (e) {
    if (isCirError(e)) return fail('signature+chain', `${e.code}: ${e.message}`);
    throw e;
  }
  const ok = checks.every((c) => c.ok);
  return ok
    ? { ok, checks, claims, hpkePublicKey: res.hpke_public_key, credentials, target: opts.server }
    : { ok, checks, claims, target: opts.server };
}

export function pemToDer(pem: string): Buffer {
  const m = /-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+)-----END CERTIFICATE-----/.exec(pem);
  if (!m) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: 'simulated root is not a PEM certificate' });
  return Buffer.from(m[1]!.replace(/\s+/g, ''), 'base64');
}
