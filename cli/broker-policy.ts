/**
 * `cir broker policy test`: replays recorded evidence against a release policy before it is
 * rolled out, with no running broker.
 *
 *   cir broker policy test --policy FILE --evidence FILE [--at ISO-8601] [--json]
 *       [--tee sev-snp|tdx] [--cert FILE]... [--collateral DIR|FILE] [--allow-simulated]
 *       [--allow-missing-crls] [--production]
 *
 * Pipeline: read and parse the policy (any release policy kind: SEV-SNP, TDX or rules;
 * kms-broker/policy.ts) -> read the evidence -> verify it exactly as `cir attest verify`
 * does (cli/attest.ts: pinned AMD / Intel roots, offline collateral, `--cert`, simulated
 * root from `--cert` or $CIR_SIMULATED_ROOT with `--allow-simulated`) but with no policy of
 * its own -> `evaluatePolicy` (the broker's function, with its fail-closed rules) -> every
 * rule with pass/fail, expected vs observed, the policy hash and the verdict.
 *
 * Evidence: a raw SEV-SNP report or TDX quote (as `cir attest verify` takes), or the JSON
 * evidence object a server POSTs to the broker: `{report, certs}` (SEV-SNP; `certs.ark`
 * is ignored: trust comes from the pinned roots, or the simulated root given on the command
 * line) or `{tee: "tdx", quote}`.
 *
 * What a replay cannot check, said in every result (`notes`): report_data (the broker
 * binds it to its own challenge nonce and the server's key; a recording has neither), and
 * the broker's attestation policy (`attestation.policy`), which runs before release.
 *
 * Exit codes: 0 allow; 1 deny, or the evidence failed verification (the reason is given);
 * 2 usage, unreadable or invalid policy/evidence files; 3 an internal error (a bug). With
 * `--json`, stdout holds exactly one JSON object in every case this command handles.
 */
import { ANY_REPORT_DATA, verifyTdxQuote, type SnpClaims, type TdxClaims } from '../attestation/index.js';
import type { PolicyFailure } from '../attestation/types.js';
import { readConfigFile } from '../common/config.js';
import { fromBase64, sha256 } from '../common/bytes.js';
import { exitCodeFor, isCirError } from '../common/errors.js';
import { ClientError } from '../client/codes.js';
import { readArgFile } from '../client/arg-file.js';
import { KmsError } from '../kms-broker/codes.js';
import { isProduction } from '../kms-broker/config.js';
import { evaluatePolicy, isRulesPolicy, parseReleasePolicy, policyHash, type BrokerClaims, type ReleasePolicy, type RuleResult } from '../kms-broker/policy.js';
import { TdxEvidenceSchema } from '../kms-broker/verifier.js';
import { z } from 'zod';
import { parseAt, prepareAttestInput, verifySnpInput, type AttestVerifyFlags, type PreparedAttest } from './attest.js';

/** Flags as commander hands them over. */
export interface PolicyTestFlags {
  readonly policy?: string;
  readonly evidence?: string;
  readonly at?: string;
  readonly json?: boolean;
  readonly tee?: string;
  readonly cert?: readonly string[];
  readonly collateral?: string;
  readonly allowSimulated?: boolean;
  readonly allowMissingCrls?: boolean;
  /** Evaluate as a production broker (also when NODE_ENV=production). */
  readonly production?: boolean;
}

export interface PolicyTestResult {
  /** `error`: the policy or evidence could not be used (see `code`, `detail`). */
  readonly verdict: 'allow' | 'deny' | 'error';
  readonly exitCode: 0 | 1 | 2 | 3;
  readonly code?: string;
  readonly detail?: string;
  readonly policy?: { readonly hash: string; readonly kind: 'rules' | 'sev-snp' | 'tdx'; readonly tee: string };
  readonly evidence?: { readonly format: 'raw' | 'json'; readonly tee?: string; readonly sha256: string; readonly bytes: number };
  /** The time the evidence was verified as of (ISO 8601). */
  readonly at: string;
  readonly production: boolean;
  readonly explanation?: readonly RuleResult[];
  readonly failures?: readonly PolicyFailure[];
  readonly relaxations?: readonly string[];
  /** The verified claims the policy decided on (public values). */
  readonly claims?: BrokerClaims;
  readonly notes: readonly string[];
}

/** Largest evidence file accepted: a 64 KiB quote as base64 in JSON, with room for certificates. */
export const MAX_POLICY_TEST_EVIDENCE_BYTES = 256 * 1024;

export const NOTE_REPORT_DATA =
  'report_data binding is not checked on a replay: the broker binds it to its own challenge nonce and the server key, which a recording cannot reproduce';
export const NOTE_ATTESTATION_POLICY =
  "only this release policy was evaluated; a broker also applies its attestation policy (attestation.policy) before it issues a token";

const b64 = z.string().max(Math.ceil(MAX_POLICY_TEST_EVIDENCE_BYTES / 3) * 4);
/** SEV-SNP evidence as a server POSTs it (`SnpEvidence`, `tee` optional). */
const SnpJsonEvidenceSchema = z.strictObject({
  tee: z.literal('sev-snp').optional(),
  report: b64,
  certs: z
    .strictObject({ vcek: b64.optional(), vlek: b64.optional(), ask: b64.optional(), asvk: b64.optional(), ark: b64.optional(), certTable: b64.optional() })
    .optional(),
});

const malformed = (detail: string): KmsError => new KmsError('ERR_KMS_EVIDENCE_MALFORMED', { detail });
const badArg = (detail: string): ClientError => new ClientError('ERR_CLI_BAD_ARGUMENT', { detail });

function decode(s: string, field: string): Uint8Array {
  const b = fromBase64(s);
  if (!b || b.length === 0) throw malformed(`${field}: must be standard base64`);
  return new Uint8Array(b);
}

/** The attest flags that select verification inputs only: no policy, no expectations. */
function attestFlags(f: PolicyTestFlags, tee: string | undefined): AttestVerifyFlags {
  return {
    ...(f.evidence !== undefined ? { evidence: f.evidence } : {}),
    ...(tee !== undefined ? { tee } : {}),
    cert: [...(f.cert ?? [])],
    ...(f.collateral !== undefined ? { collateral: f.collateral } : {}),
    ...(f.at !== undefined ? { at: f.at } : {}),
    expectMeasurement: [],
    expectMrtd: [],
    expectRtmr: [],
    acceptTcbStatus: [],
    ...(f.allowSimulated ? { allowSimulated: true } : {}),
    ...(f.allowMissingCrls ? { allowMissingCrls: true } : {}),
  };
}

/**
 * Evidence file -> verification inputs. Raw bytes go to `prepareAttestInput` as they are;
 * JSON evidence is unpacked first (typed ERR_KMS_EVIDENCE_MALFORMED when it is not one of
 * the two shapes). Throws typed errors only.
 */
async function prepareEvidence(
  raw: Uint8Array,
  f: PolicyTestFlags,
  env: NodeJS.ProcessEnv,
): Promise<{ prepared: PreparedAttest; format: 'raw' | 'json' }> {
  const text = Buffer.from(raw).toString('utf8');
  if (!text.trimStart().startsWith('{')) {
    return { prepared: await prepareAttestInput(attestFlags(f, f.tee), env, raw), format: 'raw' };
  }
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw malformed('evidence: neither raw evidence nor valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw malformed('evidence: must be a JSON object');
  const named = (doc as { tee?: unknown }).tee;
  const tee = named === 'tdx' ? 'tdx' : 'sev-snp';
  if (f.tee !== undefined && f.tee !== tee) throw badArg(`--tee ${f.tee.slice(0, 16)} contradicts the evidence (${tee})`);
  if (tee === 'tdx') {
    const r = TdxEvidenceSchema.safeParse(doc);
    if (!r.success) throw malformed('evidence: TDX evidence must be exactly {tee: "tdx", quote: <base64>}');
    return { prepared: await prepareAttestInput(attestFlags(f, 'tdx'), env, decode(r.data.quote, 'quote')), format: 'json' };
  }
  const r = SnpJsonEvidenceSchema.safeParse(doc);
  if (!r.success) throw malformed('evidence: SEV-SNP evidence must be {report: <base64>, certs?: {vcek, vlek, ask, asvk, ark, certTable}}');
  const p = await prepareAttestInput(attestFlags(f, 'sev-snp'), env, decode(r.data.report, 'report'));
  if (p.tee !== 'sev-snp') throw malformed('evidence: not SEV-SNP evidence');
  const c = r.data.certs ?? {};
  const carried: { der: Uint8Array; source: string }[] = [];
  // SECURITY: the evidence's own ARK is not used: trust comes from the pinned AMD roots, or
  // from a simulated root the user names on the command line, never from the evidence.
  for (const k of ['vcek', 'vlek', 'ask', 'asvk'] as const) {
    const v = c[k];
    if (v !== undefined) carried.push({ der: decode(v, `certs.${k}`), source: `evidence certs.${k}` });
  }
  const input = {
    ...p.input,
    certs: [...carried, ...p.input.certs],
    ...(c.certTable !== undefined ? { certTable: decode(c.certTable, 'certs.certTable') } : {}),
  };
  return { prepared: { tee: 'sev-snp', input }, format: 'json' };
}

async function verifyPrepared(p: PreparedAttest): Promise<SnpClaims | TdxClaims> {
  if (p.tee === 'sev-snp') return verifySnpInput(p.input);
  return verifyTdxQuote(p.input.evidence, {
    now: p.input.now,
    // A replay cannot know the nonce: the claims record report-data-unchecked.
    expectedReportData: ANY_REPORT_DATA,
    collateral: p.input.collateral,
    allowMissingCrls: p.input.allowMissingCrls,
  });
}

function errorOf(e: unknown): { code: string; detail: string; exitCode: 1 | 2 | 3 } {
  if (isCirError(e)) return { code: e.code, detail: e.detail ?? e.message, exitCode: exitCodeFor(e.category) as 1 | 2 | 3 };
  // SECURITY: an untyped error is a bug; its message may quote input and is not shown.
  return { code: 'ERR_INTERNAL', detail: 'unexpected internal error', exitCode: 3 };
}

/** Flags -> result. Never throws: every error becomes a result with its exit code. */
export async function runPolicyTest(f: PolicyTestFlags, env: NodeJS.ProcessEnv = process.env): Promise<PolicyTestResult> {
  const production = f.production === true || isProduction(env);
  let at = f.at ?? '';
  const notes: string[] = [NOTE_REPORT_DATA, NOTE_ATTESTATION_POLICY];
  let policy: ReleasePolicy | undefined;
  let evidence: PolicyTestResult['evidence'];
  const base = (): Omit<PolicyTestResult, 'verdict' | 'exitCode'> => ({
    at,
    production,
    ...(policy ? { policy: describePolicy(policy) } : {}),
    ...(evidence ? { evidence } : {}),
    notes,
  });
  let stage: 'input' | 'verify' = 'input';
  try {
    if (!f.policy) throw badArg('--policy FILE is required');
    if (!f.evidence) throw badArg('--evidence FILE is required');
    if (f.tee !== undefined && f.tee !== 'sev-snp' && f.tee !== 'tdx') throw badArg('--tee must be sev-snp or tdx');
    const now = parseAt(f.at);
    at = now.toISOString();
    policy = parseReleasePolicy(await readConfigFile(f.policy), { production });
    const raw = await readArgFile('--evidence', f.evidence, { max: MAX_POLICY_TEST_EVIDENCE_BYTES, regularFile: true });
    const { prepared, format } = await prepareEvidence(raw, { ...f, at }, env);
    evidence = { format, tee: prepared.tee, sha256: sha256(raw).toString('hex'), bytes: raw.length };
    stage = 'verify';
    const claims = await verifyPrepared(prepared);
    const d = evaluatePolicy(claims, policy, { production });
    return {
      verdict: d.allowed ? 'allow' : 'deny',
      exitCode: d.allowed ? 0 : 1,
      ...base(),
      explanation: d.explanation,
      failures: d.failures,
      relaxations: [...claims.relaxations, ...d.relaxations],
      claims,
    };
  } catch (e) {
    const err = errorOf(e);
    // Evidence that fails verification is a deny-class outcome (exit 1) whatever its category,
    // unless it is malformed (exit 2, like any other invalid input).
    return { verdict: 'error', ...err, ...base(), ...(stage === 'verify' ? { detail: `evidence failed verification: ${err.detail}` } : {}) };
  }
}

function describePolicy(p: ReleasePolicy): NonNullable<PolicyTestResult['policy']> {
  if (isRulesPolicy(p)) return { hash: policyHash(p), kind: 'rules', tee: p.tee ?? 'any' };
  const tee = p.tee === 'tdx' ? 'tdx' : 'sev-snp';
  return { hash: policyHash(p), kind: tee, tee };
}

/** The readable report: policy, evidence, each rule, notes, verdict. */
export function formatPolicyTest(r: PolicyTestResult): string {
  const lines: string[] = [];
  if (r.policy) lines.push(`policy    ${r.policy.kind} (tee: ${r.policy.tee}), sha256 ${r.policy.hash}${r.production ? ', evaluated as production' : ''}`);
  if (r.evidence) lines.push(`evidence  ${r.evidence.tee ?? '?'} (${r.evidence.format}, ${r.evidence.bytes} bytes, sha256 ${r.evidence.sha256}), verified as of ${r.at}`);
  for (const x of r.explanation ?? []) {
    const what = x.claim !== undefined ? `${x.claim} ${x.op}` : x.op;
    lines.push(`${x.pass ? 'PASS' : 'FAIL'}  ${x.path}: ${what}: expected ${x.expected}; observed ${x.observed}`);
  }
  if (r.relaxations && r.relaxations.length > 0) lines.push(`relaxations: ${r.relaxations.join(', ')}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  if (r.verdict === 'error') lines.push(`ERROR [${r.code}]: ${r.detail}`);
  else lines.push(r.verdict === 'allow' ? 'verdict: ALLOW' : `verdict: DENY (${(r.failures ?? []).map((f) => f.field).join(', ')})`);
  return `${lines.join('\n')}\n`;
}

/** The action `cir broker policy test` runs (cli/broker.ts registers the flags). */
export async function policyTestAction(f: PolicyTestFlags): Promise<void> {
  const r = await runPolicyTest(f);
  if (f.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else if (r.verdict === 'error' && r.exitCode !== 1) process.stderr.write(`error [${r.code}]: ${r.detail}\n`);
  else process.stdout.write(formatPolicyTest(r));
  process.exitCode = r.exitCode;
}
