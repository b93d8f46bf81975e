import { describe, it, expect } from 'vitest';
import { randomBytes, webcrypto } from 'node:crypto';
import fc from 'fast-check';
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { generateHpkeKeyPair, hpkeSeal, hpkeOpen } from './hpke.js';

const info = Buffer.from('test-info');
const aad = Buffer.from('test-aad');

describe('HPKE (X25519 / HKDF-SHA256 / AES-256-GCM)', () => {
  it('seals to a public key and opens with the private key', async () => {
    const kp = await generateHpkeKeyPair();
    expect(kp.publicKey.length).toBe(32);
    const dek = randomBytes(32);
    const sealed = await hpkeSeal(kp.publicKey, dek, info, aad);
    expect(sealed.enc.length).toBe(32);
    expect(Buffer.from(sealed.ciphertext).includes(dek)).toBe(false);
    expect(Buffer.from(await hpkeOpen(kp, sealed, info, aad)).equals(dek)).toBe(true);
  });

  it('fails to open with another key, another info, another aad, or a modified ciphertext', async () => {
    const kp = await generateHpkeKeyPair();
    const other = await generateHpkeKeyPair();
    const sealed = await hpkeSeal(kp.publicKey, randomBytes(32), info, aad);
    await expect(hpkeOpen(other, sealed, info, aad)).rejects.toThrow();
    await expect(hpkeOpen(kp, sealed, Buffer.from('other-info'), aad)).rejects.toThrow();
    await expect(hpkeOpen(kp, sealed, info, Buffer.from('other-aad'))).rejects.toThrow();
    const ct = Buffer.from(sealed.ciphertext);
    ct[0] = ct[0]! ^ 1;
    await expect(hpkeOpen(kp, { enc: sealed.enc, ciphertext: ct }, info, aad)).rejects.toThrow();
    const enc = Buffer.from(sealed.enc);
    enc[5] = enc[5]! ^ 1;
    await expect(hpkeOpen(kp, { enc, ciphertext: sealed.ciphertext }, info, aad)).rejects.toThrow();
  });

  it('refuses a public key of the wrong length', async () => {
    await expect(hpkeSeal(randomBytes(31), randomBytes(32), info, aad)).rejects.toThrow(RangeError);
  });

  it('keeps the private key non-extractable', async () => {
    const kp = await generateHpkeKeyPair();
    expect(kp.privateKey.extractable).toBe(false);
  });

  // hpkeSeal is node:crypto; hpkeOpen is @hpke/core: every round trip above is already a
  // cross-implementation check. These add breadth and the RFC 9180 edge cases.
  it('property: any plaintext, info and aad sealed here opens with @hpke/core, and only with the same info and aad', async () => {
    const kp = await generateHpkeKeyPair();
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 256 }), fc.uint8Array({ maxLength: 2048 }), fc.uint8Array({ maxLength: 300 }), async (pt, inf, ad) => {
        const sealed = await hpkeSeal(kp.publicKey, pt, inf, ad);
        expect(sealed.ciphertext.length).toBe(pt.length + 16);
        expect(Buffer.from(await hpkeOpen(kp, sealed, inf, ad)).equals(Buffer.from(pt))).toBe(true);
        await expect(hpkeOpen(kp, sealed, Buffer.concat([inf, Buffer.from([0])]), ad)).rejects.toThrow();
        await expect(hpkeOpen(kp, sealed, inf, Buffer.concat([ad, Buffer.from([0])]))).rejects.toThrow();
      }),
      { numRuns: 40 },
    );
  });

  it('opens with a recipient context built by @hpke/core from an extractable key pair, and uses a fresh ephemeral key per seal', async () => {
    const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });
    const kp = (await webcrypto.subtle.generateKey({ name: 'X25519' }, true, ['deriveBits'])) as webcrypto.CryptoKeyPair;
    const pub = new Uint8Array(await webcrypto.subtle.exportKey('raw', kp.publicKey));
    const a = await hpkeSeal(pub, Buffer.from('same'), info, aad);
    const b = await hpkeSeal(pub, Buffer.from('same'), info, aad);
    expect(Buffer.from(a.enc).equals(Buffer.from(b.enc))).toBe(false);
    expect(Buffer.from(a.ciphertext).equals(Buffer.from(b.ciphertext))).toBe(false);
    for (const s of [a, b]) {
      const ctx = await suite.createRecipientContext({ recipientKey: kp, enc: s.enc.slice().buffer, info: info.buffer.slice(info.byteOffset, info.byteOffset + info.length) });
      const pt = await ctx.open(s.ciphertext.slice().buffer, aad.buffer.slice(aad.byteOffset, aad.byteOffset + aad.length));
      expect(Buffer.from(pt).toString()).toBe('same');
    }
  });

  it('refuses a low-order recipient key (all-zero X25519 shared secret, RFC 9180 section 7.1.4)', async () => {
    await expect(hpkeSeal(new Uint8Array(32), randomBytes(32), info, aad)).rejects.toThrow();
    const one = new Uint8Array(32);
    one[0] = 1;
    await expect(hpkeSeal(one, randomBytes(32), info, aad)).rejects.toThrow();
  });
});
