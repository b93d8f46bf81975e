/**
 * cir.attestation.v1.AttestationService: evidence that binds a client's fresh nonce, the
 * server's TLS key and its HPKE key.
 *
 * report_data = serverReportData(client_nonce, SHA-256(TLS SPKI DER), hpkePublicKey)
 * (attestation/binding.ts). A client that verifies the evidence, checks the nonce it
 * sent, and compares tls_spki_sha256 with the certificate of the connection it is on,
 * knows its TLS session ends inside the attested TEE.
 *
 * Served before models are ready (a client may want to attest early), and without an API
 * key (clients verify before they have one). Rate limits (per peer address and global
 * token buckets, or the key's limits when a key is sent) are applied before this handler
 * by server/tenancy (`tenancy.wrap('GetEvidence', ...)`); this handler only bounds
 * concurrent collections. It does not verify its own evidence.
 */
import { serverReportData, NONCE_LENGTH, type TlsKeyOrigin } from '../attestation/binding.js';
import type { EvidenceProvider } from '../attestation/types.js';
import { HPKE_SUITE_ID } from '../common/hpke.js';
import { ServerError } from './codes.js';
import type { GetEvidenceResponse } from './proto-types.js';

export interface AttestationServiceOptions {
  readonly provider: EvidenceProvider;
  /** SHA-256 of the TLS certificate's SubjectPublicKeyInfo DER (32 bytes). */
  readonly tlsSpkiSha256: Uint8Array;
  /** Raw 32-byte X25519 public key. */
  readonly hpkePublicKey: Uint8Array;
  readonly maxConcurrentEvidence: number;
  /** 'imported' when the TLS key came from operator-supplied files. */
  readonly tlsKeyOrigin: TlsKeyOrigin;
}

export interface AttestationHandlers {
  GetEvidence(req: unknown): Promise<GetEvidenceResponse>;
}

export function createAttestationHandlers(opts: AttestationServiceOptions): AttestationHandlers {
  let inflight = 0;
  return {
    async GetEvidence(req) {
      const nonce = typeof req === 'object' && req !== null ? (req as Record<string, unknown>)['client_nonce'] : undefined;
      // SECURITY: exact length; a short or empty nonce would make evidence replayable.
      if (!(nonce instanceof Uint8Array) || nonce.length !== NONCE_LENGTH) {
        throw new ServerError('ERR_SRV_BAD_NONCE', {
          detail: `got ${nonce instanceof Uint8Array ? nonce.length : 0} bytes`,
        });
      }
      if (inflight >= opts.maxConcurrentEvidence) throw new ServerError('ERR_SRV_OVERLOADED');
      inflight++;
      try {
        const reportData = serverReportData(nonce, opts.tlsSpkiSha256, opts.hpkePublicKey, opts.tlsKeyOrigin);
        let evidence;
        try {
          evidence = await opts.provider.collect(reportData);
        } catch (cause) {
          throw new ServerError('ERR_SRV_EVIDENCE', { cause });
        }
        return {
          tee: evidence.tee,
          evidence: Buffer.from(JSON.stringify(evidence), 'utf8'),
          tls_spki_sha256: Buffer.from(opts.tlsSpkiSha256),
          hpke_public_key: Buffer.from(opts.hpkePublicKey),
          hpke_suite: HPKE_SUITE_ID,
          tls_key_origin: opts.tlsKeyOrigin,
        };
      } finally {
        inflight--;
      }
    },
  };
}
