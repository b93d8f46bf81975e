import { AMD_BUNDLES } from './trust/bundles.js';
import type { SnpProduct, SnpSigningKey } from './abi.js';
import { parseCertificate, type ParsedCert } from './certs.js';
import { x509 } from '../../common/x509.js';

/**
 * Pinned AMD Root Keys (ARK), one per product.
 *
 * SECURITY: these constants are the trust anchors of SEV-SNP verification. Each is the
 * SHA-256 of the ARK certificate's SubjectPublicKeyInfo DER, computed from the bundled
 * files in ./trust (AMD KDS cert_chain bundles as shipped by google/go-sev-guest,
 * verify/trust/) with
 *   openssl x509 -noout -pubkey | openssl pkey -pubin -outform der | sha256sum
 * A key pin (rather than a certificate pin) survives a re-issued ARK certificate with the
 * same key. The certificate DER fingerprints, as listed in the vectors MANIFEST.md and
 * cross-checked against microsoft/TEE-Attestation-Verification's pinned_arks, are kept
 * below for audit; roots.test.ts checks both against the bundled files.
 */
export const AMD_ARK_SPKI_SHA256: Readonly<Record<SnpProduct, string>> = Object.freeze({
  Milan: '9f056bee44377e29308cb5ffa895bdfb62d18881fa6bed8d6f075b0204089cb9',
  Genoa: '429a69c9422aa258ee4d8db5fcda9c6470ef15f8cd5a9cebd6cbc7d90b863831',
  Turin: '4f125410563a2ab9a50356f9243f6fe0b6f73de98603f53f90339c70e9d7ad08',
});

/** SHA-256 of the ARK certificate DER (MANIFEST.md "Pinned AMD ARK SHA-256 fingerprints"). */
export const AMD_ARK_DER_SHA256: Readonly<Record<SnpProduct, string>> = Object.freeze({
  Milan: '69d063b45344d26a2e94e1f4210de49ef555308287d4c174445c95639a540bcd',
  Genoa: '4c6598d19c18719c5dfd4a7d335f674e5bfe1d8f800cea2cf270c10d103db2f1',
  Turin: '1f084161a44bb6d93778a904877d4819cafa5d05ef4193b2ded9dd9c73dd3f6a',
});

export interface AmdChain {
  /** ASK (for VCEKs) or ASVK (for VLEKs). */
  readonly intermediate: ParsedCert;
  readonly ark: ParsedCert;
}

const cache = new Map<string, AmdChain>();

/**
 * The bundled AMD intermediate and ARK for a product and signing-key kind. Parsed once
 * and cached. Does not verify anything: chain.ts checks the pin, signatures and validity
 * every time a chain is used.
 */
export function amdChain(product: SnpProduct, kind: SnpSigningKey): AmdChain {
  const key = `${product}/${kind}`;
  const hit = cache.get(key);
  if (hit) return hit;
  const src = AMD_BUNDLES[product][kind];
  const ders = x509.PemConverter.decode(src.pem);
  if (ders.length !== 2) throw new Error(`bundled AMD chain ${src.file} must hold exactly 2 certificates`);
  const chain: AmdChain = Object.freeze({
    intermediate: parseCertificate(new Uint8Array(ders[0]!), `bundled ${kind === 'vcek' ? 'ASK' : 'ASVK'}`),
    ark: parseCertificate(new Uint8Array(ders[1]!), 'bundled ARK'),
  });
  cache.set(key, chain);
  return chain;
}
