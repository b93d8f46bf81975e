import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { AMD_BUNDLES } from './trust/bundles.js';
import { AMD_ARK_DER_SHA256, AMD_ARK_SPKI_SHA256, amdChain } from './roots.js';
import { verifyCertChain, checkSignedBy, checkValidity } from './chain.js';
import { certificateDer } from './certs.js';
import type { SnpProduct } from './abi.js';

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');
const PRODUCTS: SnpProduct[] = ['Milan', 'Genoa', 'Turin'];
const NOW = new Date('2026-06-01T00:00:00Z');

describe('bundled AMD trust', () => {
  it('bundles.ts is byte-identical to the shipped .pem files', () => {
    for (const p of PRODUCTS) {
      for (const kind of ['vcek', 'vlek'] as const) {
        const src = AMD_BUNDLES[p][kind];
        const file = readFileSync(new URL(`./trust/${src.file}`, import.meta.url), 'utf8');
        expect(src.pem).toBe(file);
      }
    }
  });

  it('the shipped .pem files equal the test vectors (go-sev-guest verify/trust)', () => {
    for (const p of PRODUCTS) {
      for (const kind of ['vcek', 'vlek'] as const) {
        const src = AMD_BUNDLES[p][kind];
        const vec = readFileSync(new URL(`../../test/data/vectors/roots/amd/go-sev-guest/${src.file}`, import.meta.url), 'utf8');
        expect(src.pem).toBe(vec);
      }
    }
  });

  it('ARK pins match the bundled ARKs, the MANIFEST DER fingerprints and Microsoft’s pinned ARKs', () => {
    for (const p of PRODUCTS) {
      for (const kind of ['vcek', 'vlek'] as const) {
        const { ark } = amdChain(p, kind);
        expect(ark.spkiSha256).toBe(AMD_ARK_SPKI_SHA256[p]);
        expect(sha256(ark.der)).toBe(AMD_ARK_DER_SHA256[p]);
      }
      const ms = certificateDer(
        readFileSync(new URL(`../../test/data/vectors/roots/amd/microsoft/${p.toLowerCase()}_ark.pem`, import.meta.url), 'utf8'),
        'ms ARK',
      );
      expect(sha256(ms)).toBe(AMD_ARK_DER_SHA256[p]);
    }
  });

  it('every bundled chain is a valid ARK -> ASK/ASVK chain at 2026-06-01', () => {
    for (const p of PRODUCTS) {
      for (const kind of ['vcek', 'vlek'] as const) {
        const { intermediate, ark } = amdChain(p, kind);
        checkSignedBy(ark, ark);
        checkSignedBy(intermediate, ark);
        checkValidity(ark, NOW);
        checkValidity(intermediate, NOW);
        expect(intermediate.subject).toMatch(kind === 'vcek' ? new RegExp(`CN=SEV-${p}`) : new RegExp(`CN=SEV-VLEK-${p}`));
      }
    }
  });

  it('an ASK is not accepted in place of its ARK (not self-signed, not pinned)', () => {
    const { intermediate, ark } = amdChain('Milan', 'vcek');
    expect(() =>
      verifyCertChain({ leaf: intermediate, intermediate, root: intermediate, rootSpkiSha256: AMD_ARK_SPKI_SHA256.Milan, now: NOW }),
    ).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_ARK_PIN_MISMATCH' }));
    expect(() => checkSignedBy(ark, intermediate)).toThrow(expect.objectContaining({ code: 'ERR_ATT_SNP_CHAIN_INVALID' }));
  });
});
