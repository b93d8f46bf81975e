import { createPublicKey, generateKeyPairSync } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { sha256 } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { certSpkiSha256, createSelfSignedTls, tlsFromPem } from './tls.js';
import { x509 } from '../common/x509.js';

describe('tls', () => {
  it('creates a P-256 self-signed certificate with SANs, short validity, and the key SPKI hash', async () => {
    const now = new Date('2025-01-01T00:00:00Z');
    const t = await createSelfSignedTls({ now: () => now });
    const cert = new x509.X509Certificate(t.certPem);
    expect(cert.subject).toBe(cert.issuer);
    expect(await cert.verify({ signatureOnly: true })).toBe(true);
    expect(cert.notAfter.getTime() - now.getTime()).toBe(30 * 86_400_000);
    expect(cert.notBefore.getTime()).toBeLessThan(now.getTime());
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.toJSON()).toEqual([
      { type: 'dns', value: 'localhost' },
      { type: 'ip', value: '127.0.0.1' },
      { type: 'ip', value: '::1' },
    ]);
    expect(cert.getExtension(x509.KeyUsagesExtension)).toBeNull();
    const keySpki = createPublicKey(t.keyPem).export({ type: 'spki', format: 'der' });
    expect(t.spkiSha256.equals(sha256(keySpki))).toBe(true);
    expect(certSpkiSha256(t.certPem).equals(t.spkiSha256)).toBe(true);
    expect(t.spkiSha256).toHaveLength(32);
  });

  it('tlsFromPem accepts a matching pair and rejects a mismatched key or junk', async () => {
    const t = await createSelfSignedTls();
    expect(tlsFromPem(t.certPem, t.keyPem).spkiSha256.equals(t.spkiSha256)).toBe(true);
    const other = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' });
    for (const [c, k] of [
      [t.certPem, other as string],
      ['junk', t.keyPem],
      [t.certPem, 'junk'],
    ] as const) {
      try {
        tlsFromPem(c, k);
        throw new Error('accepted');
      } catch (e) {
        expect(isCirError(e) && e.code).toBe('ERR_SRV_TLS');
        expect(String(e)).not.toContain('PRIVATE KEY');
      }
    }
  });
});
