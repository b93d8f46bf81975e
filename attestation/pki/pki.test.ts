import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { INTEL_SGX_ROOT_CA_DER_SHA256, INTEL_SGX_ROOT_CA_SPKI_SHA256 } from '../tdx/roots.js';
import {
  checkNotRevoked,
  decodeOidContent,
  isPkiFailure,
  parseCertificate,
  parseCrl,
  pemCertificates,
  signatureAlgorithmOf,
  verifyCrl,
  verifyPath,
} from './index.js';

const V = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../test/data/vectors');
const pem = (p: string) => readFileSync(path.join(V, p), 'utf8');
const ders = (p: string) => pemCertificates(pem(p), p);
const ALGS = ['ecdsa-sha256'] as const;

const root = parseCertificate(ders('tdx/roots/intel/Intel_SGX_Root_CA.pem')[0]!, 'root');
const platformCa = parseCertificate(ders('tdx/roots/intel/Intel_SGX_PCK_Platform_CA.pem')[0]!, 'platform CA');
const tcb2018 = parseCertificate(ders('tdx/roots/intel/Intel_SGX_TCB_Signing_2018.pem')[0]!, 'TCB 2018');
const tcb2025 = parseCertificate(ders('tdx/roots/intel/Intel_SGX_TCB_Signing_2025.pem')[0]!, 'TCB 2025');
const pins = [INTEL_SGX_ROOT_CA_SPKI_SHA256];

function reason(f: () => void): string {
  try {
    f();
  } catch (e) {
    return isPkiFailure(e) ? e.reason : `untyped ${String(e)}`;
  }
  return 'ok';
}

describe('pki: certificates and paths', () => {
  it('pins the root by key; the DER fingerprint matches MANIFEST and the DER copy', () => {
    expect(root.spkiSha256).toBe(INTEL_SGX_ROOT_CA_SPKI_SHA256);
    expect(root.derSha256).toBe(INTEL_SGX_ROOT_CA_DER_SHA256);
    const der = new Uint8Array(readFileSync(path.join(V, 'tdx/roots/intel/Intel_SGX_Root_CA.der')));
    expect(parseCertificate(der, 'root der').derSha256).toBe(INTEL_SGX_ROOT_CA_DER_SHA256);
  });
  it('verifies CA <- root and signing <- root with inclusive validity', () => {
    const now = new Date('2024-01-01T00:00:00Z');
    expect(reason(() => verifyPath({ chain: [tcb2018], root, pins, now, algorithms: ALGS }))).toBe('ok');
    expect(reason(() => verifyPath({ chain: [tcb2025], root, pins, now: new Date('2026-01-01T00:00:00Z'), algorithms: ALGS }))).toBe('ok');
    // The 2018 issue expired on its notAfter; the bound itself is still valid.
    expect(reason(() => verifyPath({ chain: [tcb2018], root, pins, now: tcb2018.notAfter, algorithms: ALGS }))).toBe('ok');
    expect(reason(() => verifyPath({ chain: [tcb2018], root, pins, now: new Date(tcb2018.notAfter.getTime() + 1000), algorithms: ALGS }))).toBe('expired');
    expect(reason(() => verifyPath({ chain: [tcb2018], root, pins, now: new Date('2018-01-01T00:00:00Z'), algorithms: ALGS }))).toBe('not-yet-valid');
  });
  it('a CA certificate used as a leaf, a leaf used as a CA, or a wrong algorithm list fail', () => {
    const now = new Date('2024-01-01T00:00:00Z');
    expect(reason(() => verifyPath({ chain: [platformCa], root, pins, now, algorithms: ALGS }))).toBe('bad-leaf');
    expect(reason(() => verifyPath({ chain: [platformCa, tcb2018], root, pins, now, algorithms: ALGS }))).toBe('not-ca');
    expect(reason(() => verifyPath({ chain: [tcb2018], root, pins, now, algorithms: ['ecdsa-sha384'] }))).toBe('bad-algorithm');
  });
  it('the look-alike root (same DN, other key) is not trusted, and its signer does not chain to the real root', () => {
    const fake = ders('tdx/negative-fake-intel-root/tcbSignChain.pem').map((d, i) => parseCertificate(d, `fake ${i}`));
    const [fakeRoot, fakeSigner] = [fake[0]!, fake[1]!];
    expect(fakeRoot.subject).toBe(root.subject);
    const now = new Date('2024-01-01T00:00:00Z');
    expect(reason(() => verifyPath({ chain: [fakeSigner], root: fakeRoot, pins, now, algorithms: ALGS }))).toBe('pin-mismatch');
    expect(reason(() => verifyPath({ chain: [fakeSigner], root, pins, now, algorithms: ALGS }))).toBe('chain-invalid');
  });
  it('recognises AMD RSA-PSS SHA-384 and rejects other identifiers', () => {
    const amd = pemCertificates(pem('roots/amd/go-sev-guest/ask_ark_milan.pem'), 'amd').map((d) => parseCertificate(d, 'amd'));
    expect(amd[0]!.signatureAlgorithm).toBe('rsa-pss-sha384');
    expect(root.signatureAlgorithm).toBe('ecdsa-sha256');
    expect(signatureAlgorithmOf(Buffer.from('300a06082a8648ce3d040302', 'hex'))).toBe('ecdsa-sha256');
    expect(signatureAlgorithmOf(Buffer.from('300c06082a8648ce3d0403020500', 'hex'))).toBeUndefined(); // NULL params
    expect(reason(() => verifyPath({ chain: [amd[0]!], root: amd[1]!, pins: [amd[1]!.spkiSha256], now: new Date('2024-01-01'), algorithms: ['rsa-pss-sha384'] }))).toBe(
      'bad-leaf',
    );
  });
  it('decodes OIDs strictly', () => {
    expect(decodeOidContent(Buffer.from('2a864886f84d010d01', 'hex'))).toBe('1.2.840.113741.1.13.1');
    expect(decodeOidContent(Buffer.from('2a8680', 'hex'))).toBeUndefined();
    expect(decodeOidContent(Buffer.from('2a8086', 'hex'))).toBeUndefined();
  });
  it('property: arbitrary bytes -> certificate or PkiFailure; arbitrary text -> chain or PkiFailure', () => {
    const typed = (f: () => unknown) => {
      try {
        f();
        return true;
      } catch (e) {
        return isPkiFailure(e);
      }
    };
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 700 }), fc.string({ maxLength: 300 }), (b, s) =>
        typed(() => parseCertificate(b, 'x')) && typed(() => parseCrl(b)) && typed(() => pemCertificates(s, 'x')),
      ),
      { numRuns: 400 },
    );
    const good = ders('tdx/roots/intel/Intel_SGX_Root_CA.pem')[0]!;
    fc.assert(
      fc.property(fc.nat(), fc.integer({ min: 0, max: 255 }), (i, v) => {
        const b = new Uint8Array(good);
        b[i % b.length] = v;
        return typed(() => parseCertificate(b, 'x'));
      }),
      { numRuns: 400 },
    );
  });
});

describe('pki: CRLs', () => {
  const pckCrl = parseCrl(new Uint8Array(readFileSync(path.join(V, 'tdx/go-tdx-guest/pckcrl'))));
  const rootCrl = parseCrl(new Uint8Array(readFileSync(path.join(V, 'tdx/go-tdx-guest/rootcrl.der'))));
  const at = new Date('2023-07-01T00:00:00Z');
  it('verifies the PCK CRL with the Platform CA and the root CRL with the root', () => {
    expect(pckCrl.revokedSerials.size).toBe(44);
    expect(rootCrl.revokedSerials.size).toBe(0);
    expect(reason(() => verifyCrl(pckCrl, platformCa, at, ALGS))).toBe('ok');
    expect(reason(() => verifyCrl(rootCrl, root, at, ALGS))).toBe('ok');
    expect(reason(() => checkNotRevoked(rootCrl, platformCa))).toBe('ok');
  });
  it('wrong issuer, expiry and revocation', () => {
    expect(reason(() => verifyCrl(pckCrl, root, at, ALGS))).toBe('crl-invalid');
    expect(reason(() => verifyCrl(pckCrl, platformCa, new Date('2023-07-09T00:00:00Z'), ALGS))).toBe('crl-expired');
    expect(reason(() => verifyCrl(pckCrl, platformCa, new Date('2023-06-01T00:00:00Z'), ALGS))).toBe('crl-not-yet-valid');
    const serial = [...pckCrl.revokedSerials][0]!;
    expect(reason(() => checkNotRevoked(pckCrl, { ...platformCa, serialHex: `00${serial}` }))).toBe('revoked');
  });
});
