import { describe, it, expect } from 'vitest';
import { createHash, randomBytes } from 'node:crypto';
import { kmsReportData, serverReportData, KMS_BINDING_LABEL, SERVER_BINDING_LABEL } from './binding.js';

describe('report_data binding', () => {
  it('kms binding is SHA-512(label ‖ nonce ‖ publicKey)', () => {
    const nonce = randomBytes(32);
    const pk = randomBytes(32);
    const expected = createHash('sha512').update(Buffer.concat([KMS_BINDING_LABEL, nonce, pk])).digest();
    expect(kmsReportData(nonce, pk).equals(expected)).toBe(true);
    expect(kmsReportData(nonce, pk).length).toBe(64);
  });

  it('changes with every input bit and with the purpose label', () => {
    const nonce = randomBytes(32);
    const spki = randomBytes(32);
    const pk = randomBytes(32);
    const base = serverReportData(nonce, spki, pk);
    const flipped = Buffer.from(nonce);
    flipped[0] = flipped[0]! ^ 1;
    expect(serverReportData(flipped, spki, pk).equals(base)).toBe(false);
    expect(serverReportData(nonce, pk, spki).equals(base)).toBe(false);
    expect(KMS_BINDING_LABEL.equals(SERVER_BINDING_LABEL)).toBe(false);
  });

  it('binds where the TLS key came from', () => {
    const [n, s, k] = [randomBytes(32), randomBytes(32), randomBytes(32)];
    expect(serverReportData(n, s, k).equals(serverReportData(n, s, k, 'tee'))).toBe(true);
    expect(serverReportData(n, s, k, 'imported').equals(serverReportData(n, s, k, 'tee'))).toBe(false);
  });

  it('rejects fields of the wrong length', () => {
    expect(() => kmsReportData(randomBytes(31), randomBytes(32))).toThrow(RangeError);
    expect(() => kmsReportData(randomBytes(32), randomBytes(33))).toThrow(RangeError);
    expect(() => serverReportData(randomBytes(32), randomBytes(31), randomBytes(32))).toThrow(RangeError);
  });
});
