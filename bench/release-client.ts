/**
 * The load generator of the key-release benchmark (bench/release.ts): a lean HTTP/1.1
 * client over a keep-alive agent and a simulated SEV-SNP attester that runs the whole
 * challenge -> attest -> release round trip, as a server booting in a TEE does.
 *
 * One `Attester` is one virtual client: its HPKE key pair is born once (as a TEE's is per
 * boot) and reused for every round trip; each round trip gets a fresh nonce, fresh evidence
 * binding nonce and key, a fresh attestation token and a release. Nothing is mocked: the
 * evidence is a byte-exact SEV-SNP report signed by the simulated VCEK (P-384).
 */
import { Agent, request as httpRequest } from 'node:http';
import { kmsReportData } from '../attestation/binding.js';
import type { SimulatedSnp } from '../attestation/sim/index.js';
import type { EvidenceProvider, SnpEvidence } from '../attestation/types.js';
import { generateHpkeKeyPair, hpkeOpen, type HpkeKeyPair } from '../common/hpke.js';
import { RELEASE_HPKE_INFO, ROUTES, releaseAad } from '../kms-broker/protocol.js';

export interface HttpResult {
  readonly status: number;
  readonly body: Buffer;
}

/** POSTs JSON over `agent`; resolves with the status and body, rejects only on a transport error. */
export function postJson(agent: Agent, base: URL, path: string, body: unknown, headers: Record<string, string> = {}): Promise<HttpResult> {
  const payload = Buffer.from(JSON.stringify(body));
  return new Promise((resolve, reject) => {
    const req = httpRequest(
      {
        agent,
        host: base.hostname,
        port: base.port,
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json', 'content-length': String(payload.length), ...headers },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
        res.on('error', reject);
      },
    );
    req.on('error', reject);
    req.end(payload);
  });
}

/** Outcome of one round trip: `ok`, or the step and HTTP status (0 = transport error) that failed. */
export type RoundTripOutcome = { readonly ok: true; readonly mintMs: number } | { readonly ok: false; readonly step: string; readonly status: number; readonly mintMs: number };

export interface AttesterOptions {
  readonly agent: Agent;
  readonly base: URL;
  readonly keyId: string;
  readonly provider: EvidenceProvider<SnpEvidence>;
}

export class Attester {
  readonly #o: AttesterOptions;
  readonly #keyPair: HpkeKeyPair;
  readonly #publicKey: string;

  private constructor(o: AttesterOptions, keyPair: HpkeKeyPair) {
    this.#o = o;
    this.#keyPair = keyPair;
    this.#publicKey = Buffer.from(keyPair.publicKey).toString('base64url');
  }

  static async create(o: AttesterOptions): Promise<Attester> {
    return new Attester(o, await generateHpkeKeyPair());
  }

  /** One challenge -> attest -> release; with `check`, also HPKE-opens the DEK and returns it. */
  async roundTrip(check = false): Promise<RoundTripOutcome & { dek?: Uint8Array }> {
    const { agent, base, keyId, provider } = this.#o;
    let mintMs = 0;
    const fail = (step: string, status: number) => ({ ok: false as const, step, status, mintMs });
    let r: HttpResult;
    try {
      r = await postJson(agent, base, ROUTES.challenge, {});
    } catch {
      return fail('challenge', 0);
    }
    if (r.status !== 200) return fail('challenge', r.status);
    const nonceB64 = (JSON.parse(r.body.toString('utf8')) as { nonce: string }).nonce;
    const nonce = Buffer.from(nonceB64, 'base64url');
    const t0 = performance.now();
    const evidence = await provider.collect(kmsReportData(nonce, this.#keyPair.publicKey));
    mintMs = performance.now() - t0;
    try {
      r = await postJson(agent, base, ROUTES.attest, { nonce: nonceB64, evidence, publicKey: this.#publicKey });
    } catch {
      return fail('attest', 0);
    }
    if (r.status !== 200) return fail('attest', r.status);
    const token = (JSON.parse(r.body.toString('utf8')) as { token: string }).token;
    try {
      r = await postJson(agent, base, ROUTES.release(keyId), { publicKey: this.#publicKey }, { authorization: `Bearer ${token}` });
    } catch {
      return fail('release', 0);
    }
    if (r.status !== 200) return fail('release', r.status);
    if (!check) return { ok: true, mintMs };
    const rel = JSON.parse(r.body.toString('utf8')) as { keyId: string; version: number; enc: string; ciphertext: string };
    const dek = await hpkeOpen(
      this.#keyPair,
      { enc: Buffer.from(rel.enc, 'base64url'), ciphertext: Buffer.from(rel.ciphertext, 'base64url') },
      RELEASE_HPKE_INFO,
      releaseAad(rel.keyId, rel.version),
    );
    return { ok: true, mintMs, dek };
  }
}

export interface LevelResult {
  readonly concurrency: number;
  readonly durationS: number;
  readonly releases: number;
  readonly releasesPerSecond: number;
  readonly latencyMs: { readonly p50: number; readonly p90: number; readonly p99: number; readonly max: number; readonly mean: number };
  /** Failed round trips by `step:status` (measured window and warm-up together). */
  readonly errors: Readonly<Record<string, number>>;
  /** Mean time to mint one piece of evidence in the load generator (P-384 sign of the report). */
  readonly mintMeanMs: number;
  /** CPU of the load generator and of the broker per completed release, measured window only. */
  readonly clientCpuMsPerRelease: number;
  readonly brokerCpuMsPerRelease: number | null;
}

/** Creates `sim`'s provider for `measurement`, the policy's measurement. */
export function simProvider(sim: SimulatedSnp, measurement: Buffer): EvidenceProvider<SnpEvidence> {
  return sim.provider({ measurement });
}
