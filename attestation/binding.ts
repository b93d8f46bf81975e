import { sha512 } from '../common/bytes.js';

/**
 * report_data binding. SEV-SNP gives the guest 64 bytes of report_data; cir fills them with
 * SHA-512 over a fixed domain-separation label and fixed-length fields, so a report made
 * for one purpose can never be replayed for another (the labels differ) and no two field
 * tuples hash the same input (every field has a fixed length, checked here).
 */

export const REPORT_DATA_LENGTH = 64;
export const NONCE_LENGTH = 32;
export const HPKE_PUBLIC_KEY_LENGTH = 32;
export const SPKI_SHA256_LENGTH = 32;

/** Key release: `report_data = SHA-512(KMS_LABEL ‖ broker_nonce[32] ‖ hpke_public_key[32])`. */
export const KMS_BINDING_LABEL = Buffer.from('cir/kms-broker/attest/v1\0', 'utf8');

/**
 * Client verification of a server: `report_data = SHA-512(SERVER_LABEL ‖ client_nonce[32] ‖
 * SHA-256(server TLS SubjectPublicKeyInfo DER)[32] ‖ hpke_public_key[32])`.
 */
export const SERVER_BINDING_LABEL = Buffer.from('cir/server/evidence/v1\0', 'utf8');

/**
 * Same fields, for a server whose TLS key was imported from outside the TEE (operator-
 * supplied cert/key files). Such a key may exist elsewhere too, so a client must not treat
 * it as TEE-born: a distinct label makes the two cases impossible to confuse, and clients
 * refuse it unless told otherwise.
 */
export const SERVER_IMPORTED_TLS_BINDING_LABEL = Buffer.from('cir/server/evidence/imported-tls/v1\0', 'utf8');

/** Where the server's TLS private key came from. */
export type TlsKeyOrigin = 'tee' | 'imported';

function checkLen(name: string, b: Uint8Array, n: number): void {
  if (b.length !== n) throw new RangeError(`${name} must be ${n} bytes, got ${b.length}`);
}

export function kmsReportData(nonce: Uint8Array, hpkePublicKey: Uint8Array): Buffer {
  checkLen('nonce', nonce, NONCE_LENGTH);
  checkLen('hpkePublicKey', hpkePublicKey, HPKE_PUBLIC_KEY_LENGTH);
  return sha512(KMS_BINDING_LABEL, nonce, hpkePublicKey);
}

export function serverReportData(
  clientNonce: Uint8Array,
  tlsSpkiSha256: Uint8Array,
  hpkePublicKey: Uint8Array,
  tlsKeyOrigin: TlsKeyOrigin = 'tee',
): Buffer {
  checkLen('clientNonce', clientNonce, NONCE_LENGTH);
  checkLen('tlsSpkiSha256', tlsSpkiSha256, SPKI_SHA256_LENGTH);
  checkLen('hpkePublicKey', hpkePublicKey, HPKE_PUBLIC_KEY_LENGTH);
  const label = tlsKeyOrigin === 'imported' ? SERVER_IMPORTED_TLS_BINDING_LABEL : SERVER_BINDING_LABEL;
  return sha512(label, clientNonce, tlsSpkiSha256, hpkePublicKey);
}
