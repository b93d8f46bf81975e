/**
 * The server's TLS identity. Either a fresh ECDSA P-256 key and self-signed certificate
 * made in memory at boot (the default: the key is born inside the TEE and never leaves
 * it), or operator-supplied PEM files.
 *
 * Clients do not trust this certificate through any CA: they pin it. The attestation
 * evidence binds SHA-256(SubjectPublicKeyInfo DER) of the TLS key (attestation/binding.ts
 * `serverReportData`), so a client that checked the evidence knows the TLS key is the
 * TEE's. The certificate is therefore also its own trust anchor: a client passes it as
 * the root certificate (`grpc.credentials.createSsl(certPem, null, null, ...)`).
 *
 * What this does not do: rotate the certificate before it expires (restart the server),
 * or check an operator-supplied certificate's chain (that is the operator's choice).
 */
import { createPrivateKey, createPublicKey, randomBytes, webcrypto } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { sha256 } from '../common/bytes.js';
import { ServerError } from './codes.js';
import { x509 } from '../common/x509.js';

export interface TlsMaterial {
  /** PEM certificate (self-signed, or the operator's chain as given). */
  readonly certPem: string;
  /** PEM PKCS#8 private key. SECURITY: kept in memory only; never logged or written. */
  readonly keyPem: string;
  /** SHA-256 of the leaf certificate's DER SubjectPublicKeyInfo (32 bytes). */
  readonly spkiSha256: Buffer;
  readonly notAfter: Date;
  readonly selfSigned: boolean;
}

export interface SelfSignedOptions {
  /** Certificate lifetime in days (default 30). */
  readonly validityDays?: number;
  readonly commonName?: string;
  /** Extra DNS names / IP addresses for the SAN (localhost, 127.0.0.1 and ::1 are always there). */
  readonly dnsNames?: readonly string[];
  readonly ipAddresses?: readonly string[];
  readonly now?: () => Date;
}

const DEFAULT_VALIDITY_DAYS = 30;
/** Tolerate this much clock skew between server and clients at start. */
const BACKDATE_MS = 5 * 60 * 1000;

function pem(label: string, der: ArrayBuffer): string {
  const b64 = Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n');
  return `-----BEGIN ${label}-----\n${b64.replace(/\n$/, '')}\n-----END ${label}-----\n`;
}

/** Creates an ECDSA P-256 key and a self-signed certificate for it, in memory. */
export async function createSelfSignedTls(opts: SelfSignedOptions = {}): Promise<TlsMaterial> {
  const now = opts.now?.() ?? new Date();
  const days = opts.validityDays ?? DEFAULT_VALIDITY_DAYS;
  if (!Number.isInteger(days) || days < 1 || days > 397) throw new RangeError('validityDays must be in [1, 397]');
  const algorithm = { name: 'ECDSA', namedCurve: 'P-256' } as const;
  // The key must be extractable once so grpc-js (OpenSSL) can use it; it stays in memory.
  const keys = (await webcrypto.subtle.generateKey(algorithm, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const serial = randomBytes(16);
  serial[0] = serial[0]! & 0x7f; // positive INTEGER (RFC 5280 4.1.2.2)
  const names: x509.JsonGeneralName[] = [
    { type: 'dns', value: 'localhost' },
    ...(opts.dnsNames ?? []).map((value) => ({ type: 'dns' as const, value })),
    { type: 'ip', value: '127.0.0.1' },
    { type: 'ip', value: '::1' },
    ...(opts.ipAddresses ?? []).map((value) => ({ type: 'ip' as const, value })),
  ];
  const notAfter = new Date(now.getTime() + days * 86_400_000);
  // SECURITY: no keyUsage / basicConstraints: the certificate must be usable as its own
  // trust anchor by clients that pin it. Trust comes from the attestation binding, not
  // from the certificate's extensions.
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name: `CN=${opts.commonName ?? 'cir-server'}`,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    keys: keys as unknown as x509.X509CertificateCreateSelfSignedParams['keys'],
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' } as x509.X509CertificateCreateSelfSignedParams['signingAlgorithm'],
    extensions: [new x509.SubjectAlternativeNameExtension(names)],
  });
  const pkcs8 = await webcrypto.subtle.exportKey('pkcs8', keys.privateKey);
  return Object.freeze({
    certPem: cert.toString('pem') + '\n',
    keyPem: pem('PRIVATE KEY', pkcs8),
    spkiSha256: sha256(new Uint8Array(cert.publicKey.rawData)),
    notAfter,
    selfSigned: true,
  });
}

/**
 * Builds TLS material from operator PEM (certificate chain, leaf first, and private key).
 * Checks that the key is the leaf certificate's key, so the SPKI hash bound into
 * attestation evidence is the key that TLS actually uses. Throws ERR_SRV_TLS.
 */
export function tlsFromPem(certPem: string, keyPem: string): TlsMaterial {
  let leaf: x509.X509Certificate;
  let keySpki: Buffer;
  try {
    leaf = new x509.X509Certificate(certPem);
    keySpki = createPublicKey(createPrivateKey(keyPem)).export({ type: 'spki', format: 'der' });
  } catch (cause) {
    throw new ServerError('ERR_SRV_TLS', { detail: 'certificate or key PEM could not be parsed', cause });
  }
  const certSpki = Buffer.from(leaf.publicKey.rawData);
  // SECURITY: bind the key that TLS uses, not whatever the certificate says.
  if (!certSpki.equals(keySpki)) {
    throw new ServerError('ERR_SRV_TLS', { detail: 'private key does not match the certificate' });
  }
  return Object.freeze({
    certPem,
    keyPem,
    spkiSha256: sha256(keySpki),
    notAfter: leaf.notAfter,
    selfSigned: false,
  });
}

/** Reads operator PEM files. Throws ERR_SRV_TLS naming the file that could not be read. */
export async function loadTlsFiles(certFile: string, keyFile: string): Promise<TlsMaterial> {
  const read = async (file: string, what: string): Promise<string> => {
    try {
      return await readFile(file, 'utf8');
    } catch (cause) {
      throw new ServerError('ERR_SRV_TLS', { detail: `${what} file ${file} could not be read`, cause });
    }
  };
  return tlsFromPem(await read(certFile, 'certificate'), await read(keyFile, 'key'));
}

/** SHA-256 of a PEM certificate's DER SubjectPublicKeyInfo: what a client compares to evidence. */
export function certSpkiSha256(certPem: string): Buffer {
  return sha256(new Uint8Array(new x509.X509Certificate(certPem).publicKey.rawData));
}
