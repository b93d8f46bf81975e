import { parseCertificate, type Certificate } from '../pki/index.js';

/**
 * The pinned trust anchor of Intel SGX/TDX DCAP attestation: the Intel SGX Root CA
 * (ECDSA P-256, CN=Intel SGX Root CA, valid 2018-05-21..2049-12-31). It anchors the PCK
 * chain, the TCB Signing chain (TCB Info, QE Identity) and both CRLs.
 *
 * SECURITY: trust is the key, not the name: every chain must end in a certificate whose
 * SubjectPublicKeyInfo SHA-256 equals INTEL_SGX_ROOT_CA_SPKI_SHA256, and every signature
 * is checked with this embedded certificate's key. A look-alike root with the same DN
 * (Intel's own QVL sample root is one) is rejected. Computed from the PEM below with
 *   openssl x509 -noout -pubkey | openssl pkey -pubin -outform der | sha256sum
 * The PEM is google/go-tdx-guest verify/trusted_root.pem, DER-identical to
 * Phala-Network/dcap-qvl src/TrustedRootCA.der (test/data/vectors/tdx/roots/intel; a test
 * checks both the text and the pins).
 */
export const INTEL_SGX_ROOT_CA_SPKI_SHA256 = 'a0af031289f5d5d4132f9186068a7fc13628633ba235777472e29b6b6c67a49e';

/** SHA-256 of the root certificate DER (audit value; trust uses the key pin above). */
export const INTEL_SGX_ROOT_CA_DER_SHA256 = '44a0196b2b99f889b8e149e95b807a350e7424964399e885a7cbb8ccfab674d3';

export const INTEL_SGX_ROOT_CA_PEM =
  "-----BEGIN CERTIFICATE-----\n" +
  "MIICjzCCAjSgAwIBAgIUImUM1lqdNInzg7SVUr9QGzknBqwwCgYIKoZIzj0EAwIw\n" +
  "aDEaMBgGA1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENv\n" +
  "cnBvcmF0aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJ\n" +
  "BgNVBAYTAlVTMB4XDTE4MDUyMTEwNDUxMFoXDTQ5MTIzMTIzNTk1OVowaDEaMBgG\n" +
  "A1UEAwwRSW50ZWwgU0dYIFJvb3QgQ0ExGjAYBgNVBAoMEUludGVsIENvcnBvcmF0\n" +
  "aW9uMRQwEgYDVQQHDAtTYW50YSBDbGFyYTELMAkGA1UECAwCQ0ExCzAJBgNVBAYT\n" +
  "AlVTMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEC6nEwMDIYZOj/iPWsCzaEKi7\n" +
  "1OiOSLRFhWGjbnBVJfVnkY4u3IjkDYYL0MxO4mqsyYjlBalTVYxFP2sJBK5zlKOB\n" +
  "uzCBuDAfBgNVHSMEGDAWgBQiZQzWWp00ifODtJVSv1AbOScGrDBSBgNVHR8ESzBJ\n" +
  "MEegRaBDhkFodHRwczovL2NlcnRpZmljYXRlcy50cnVzdGVkc2VydmljZXMuaW50\n" +
  "ZWwuY29tL0ludGVsU0dYUm9vdENBLmRlcjAdBgNVHQ4EFgQUImUM1lqdNInzg7SV\n" +
  "Ur9QGzknBqwwDgYDVR0PAQH/BAQDAgEGMBIGA1UdEwEB/wQIMAYBAf8CAQEwCgYI\n" +
  "KoZIzj0EAwIDSQAwRgIhAOW/5QkR+S9CiSDcNoowLuPRLsWGf/Yi7GSX94BgwTwg\n" +
  "AiEA4J0lrHoMs+Xo5o/sX6O9QWxHRAvZUGOdRQ7cvqRXaqI=\n" +
  "-----END CERTIFICATE-----";

let root: Certificate | undefined;

/** The embedded root, parsed once. Checks the pin on first use (a build error otherwise). */
export function intelRootCa(): Certificate {
  if (root) return root;
  const b64 = INTEL_SGX_ROOT_CA_PEM.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
  const c = parseCertificate(new Uint8Array(Buffer.from(b64, 'base64')), 'Intel SGX Root CA');
  if (c.spkiSha256 !== INTEL_SGX_ROOT_CA_SPKI_SHA256) throw new Error('embedded Intel SGX Root CA does not match its pin');
  root = c;
  return c;
}
