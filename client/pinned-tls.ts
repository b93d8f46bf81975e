/**
 * TLS pinning for the verifying client.
 *
 * The server's TLS certificate is self-signed and born inside the TEE, so no CA can vouch
 * for it; the attestation evidence does. The client therefore (1) fetches the certificate
 * the server presents, (2) opens a gRPC channel that trusts exactly that certificate and
 * additionally checks, on every handshake, that the peer's SubjectPublicKeyInfo hashes to
 * the pinned value, and (3) accepts the pin only once evidence fetched over that same
 * channel binds the hash. Nothing but GetEvidence is sent before step (3) succeeds.
 */
import tls from 'node:tls';
import { isIP } from 'node:net';
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { constantTimeEqual, sha256 } from '../common/bytes.js';
import { ClientError } from './codes.js';

export interface Target {
  readonly host: string;
  readonly port: number;
}

export function parseTarget(target: string): Target {
  const m = /^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(target);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new ClientError('ERR_CLI_BAD_TARGET', { detail: JSON.stringify(target) });
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export interface PresentedCertificate {
  /** PEM of every certificate the server presented, leaf first. */
  readonly chainPem: readonly string[];
  /** SHA-256 of the leaf's SubjectPublicKeyInfo DER. */
  readonly spkiSha256: Buffer;
}

export function spkiSha256OfPem(pem: string): Buffer {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return sha256(spki);
}

/** Performs one TLS handshake (no chain check) only to learn the certificate presented. */
export function fetchPresentedCertificate(t: Target, timeoutMs = 5000): Promise<PresentedCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({
      host: t.host,
      port: t.port,
      ALPNProtocols: ['h2'],
      // SECURITY: nothing is trusted from this handshake except as a candidate pin; it is
      // confirmed only by evidence that binds its public key.
      rejectUnauthorized: false,
      ...(isIP(t.host) ? {} : { servername: t.host }),
    });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new ClientError('ERR_CLI_TLS_FETCH_FAILED', { detail: 'timeout' }));
    }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      const chainPem: string[] = [];
      let c: tls.DetailedPeerCertificate | undefined = socket.getPeerCertificate(true);
      const seen = new Set<string>();
      while (c && c.raw && !seen.has(c.fingerprint256)) {
        seen.add(c.fingerprint256);
        chainPem.push(new X509Certificate(c.raw).toString());
        c = c.issuerCertificate;
      }
      socket.end();
      if (chainPem.length === 0) {
        reject(new ClientError('ERR_CLI_TLS_FETCH_FAILED', { detail: 'server presented no certificate' }));
        return;
      }
      resolve({ chainPem, spkiSha256: spkiSha256OfPem(chainPem[0]!) });
    });
    socket.once('error', (e) => {
      clearTimeout(timer);
      reject(new ClientError('ERR_CLI_TLS_FETCH_FAILED', { detail: (e as NodeJS.ErrnoException).code ?? e.message, cause: e }));
    });
  });
}

/**
 * gRPC channel credentials that trust only the pinned certificate chain and, on every
 * handshake, require the leaf's SPKI hash to equal `spkiSha256`. Host names are not
 * checked: the identity is the attested key, not a DNS name.
 */
export function pinnedCredentials(presented: PresentedCertificate, spkiSha256: Uint8Array): grpc.ChannelCredentials {
  const roots = Buffer.from(presented.chainPem.join('\n'));
  return grpc.credentials.createSsl(roots, null, null, {
    checkServerIdentity: (_host, cert) => {
      const got = cert.raw ? spkiSha256OfPem(new X509Certificate(cert.raw).toString()) : Buffer.alloc(0);
      if (!constantTimeEqual(got, spkiSha256)) {
        return new ClientError('ERR_CLI_TLS_BINDING_MISMATCH', { detail: 'peer key differs from the pinned key' });
      }
      return undefined;
    },
  });
}

/**
 * Channel options for pinned channels. The TLS server name is a fixed placeholder: the
 * identity check is the SPKI pin in `pinnedCredentials`, never a host name, and an IP
 * address is not a valid SNI value (RFC 6066).
 */
export const PINNED_CHANNEL_OPTIONS: Readonly<Record<string, string | number>> = Object.freeze({
  'grpc.ssl_target_name_override': 'cir-attested-server',
  'grpc.default_authority': 'cir-attested-server',
});

/**
 * Channel options for inference channels: the HTTP/2 receive window (per stream and per
 * connection) opened to 1 MiB. At the 64 KiB HTTP/2 default, a response larger than the
 * window stalls until a WINDOW_UPDATE has made a round trip to the server; measured on a
 * 128 KiB response over loopback: p50 1.17–1.25 ms at 64 KiB, 0.93–1.01 ms at 1 MiB (grpc-js
 * on both ends). It bounds what the server may send ahead of the reader, nothing else.
 */
export const INFER_CHANNEL_OPTIONS: Readonly<Record<string, number>> = Object.freeze({
  'grpc-node.flow_control_window': 1 << 20,
});
