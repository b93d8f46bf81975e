import { describe, it, expect } from 'vitest';
import { randomBytes } from 'node:crypto';
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
});
