import { randomBytes, webcrypto } from 'node:crypto';
import { x509 } from '../../common/x509.js';
import { encodeIa5String, encodeUint } from '../der.js';
import {
  OID_BL_SPL,
  OID_HWID,
  OID_PRODUCT_NAME,
  OID_SNP_SPL,
  OID_STRUCT_VERSION,
  OID_TEE_SPL,
  OID_UCODE_SPL,
  OID_FMC_SPL,
} from '../snp/certs.js';
import type { SnpTcb } from '../types.js';

/**
 * Certificate minting for the simulated TEE and tests: an AMD-shaped chain (RSA-4096
 * ARK and ASK, RSASSA-PSS SHA-384 salt 48; ECDSA P-384 VCEK with AMD's extensions), made
 * with @peculiar/x509 and WebCrypto. Nothing here is trusted by default: the verifier
 * only accepts such a chain when its ARK is configured as `trust.simulatedRoot`.
 */

const subtle = webcrypto.subtle;

export const SIM_NAMES = Object.freeze({
  ark: 'CN=ARK-Simulated,OU=SIMULATED - NOT AMD,O=cir simulated TEE',
  ask: 'CN=ASK-Simulated,OU=SIMULATED - NOT AMD,O=cir simulated TEE',
  vcek: 'CN=VCEK-Simulated,OU=SIMULATED - NOT AMD,O=cir simulated TEE',
});

/** The exact RSASSA-PSS parameters AMD uses for every certificate in its chains. */
export const RSA_PSS_SHA384 = { name: 'RSA-PSS', hash: 'SHA-384', saltLength: 48 } as const;

export const RSA_CA_BITS = 4096;

export interface CaKeyPair {
  readonly cert: x509.X509Certificate;
  readonly keys: webcrypto.CryptoKeyPair;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // positive
  if (b[0] === 0) b[0] = 1;
  return b.toString('hex');
}

async function rsaKeys(): Promise<webcrypto.CryptoKeyPair> {
  return subtle.generateKey(
    { name: 'RSA-PSS', modulusLength: RSA_CA_BITS, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-384' },
    true,
    ['sign', 'verify'],
  );
}

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** Self-signed RSA-4096 CA (an ARK look-alike). `name` is any DN string. */
export async function mintRootCa(name: string | x509.Name, validity: Validity): Promise<CaKeyPair> {
  const keys = await rsaKeys();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    keys,
    signingAlgorithm: RSA_PSS_SHA384,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { cert, keys };
}

/** RSA-4096 intermediate CA (an ASK look-alike) signed by `issuer`. */
export async function mintIntermediateCa(name: string | x509.Name, issuer: CaKeyPair, validity: Validity): Promise<CaKeyPair> {
  const keys = await rsaKeys();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: name,
    issuer: issuer.cert.subjectName,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    publicKey: keys.publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: RSA_PSS_SHA384,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
    ],
  });
  return { cert, keys };
}

export interface VcekProfile {
  readonly productName: string;
  readonly structVersion: number;
  readonly tcb: SnpTcb;
  /** Stored raw (no OCTET STRING), like real KDS certificates. Omit for a VLEK-like cert. */
  readonly hwId?: Uint8Array;
}

export async function generateVcekKeys(): Promise<webcrypto.CryptoKeyPair> {
  return subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-384' }, true, ['sign', 'verify']);
}

/** AMD VCEK extensions (KDS spec table "VCEK Certificate Extensions"). */
export function vcekExtensions(p: VcekProfile): x509.Extension[] {
  const ext = (oid: string, value: Uint8Array) => new x509.Extension(oid, false, value);
  const out = [
    ext(OID_STRUCT_VERSION, encodeUint(p.structVersion)),
    ext(OID_PRODUCT_NAME, encodeIa5String(p.productName)),
    ext(OID_BL_SPL, encodeUint(p.tcb.bootloader)),
    ext(OID_TEE_SPL, encodeUint(p.tcb.tee)),
    ext(OID_SNP_SPL, encodeUint(p.tcb.snp)),
    // spl_4..spl_7 are reserved and zero on real VCEKs.
    ...['4', '5', '6', '7'].map((n) => ext(`1.3.6.1.4.1.3704.1.3.${n}`, encodeUint(0))),
    ext(OID_UCODE_SPL, encodeUint(p.tcb.microcode)),
  ];
  if (p.tcb.fmc !== undefined) out.push(ext(OID_FMC_SPL, encodeUint(p.tcb.fmc)));
  if (p.hwId) out.push(ext(OID_HWID, p.hwId));
  return out;
}

/** ECDSA P-384 leaf (a VCEK look-alike) signed by `issuer` with RSA-PSS. */
export async function mintVcek(
  name: string | x509.Name,
  issuer: CaKeyPair,
  publicKey: webcrypto.CryptoKey,
  profile: VcekProfile,
  validity: Validity,
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: name,
    issuer: issuer.cert.subjectName,
    notBefore: validity.notBefore,
    notAfter: validity.notAfter,
    publicKey: publicKey,
    signingKey: issuer.keys.privateKey,
    signingAlgorithm: RSA_PSS_SHA384,
    extensions: vcekExtensions(profile),
  });
}
