import { describe, expect, it } from 'vitest';
import { MEASUREMENT_B, attest, createKeyViaApi, makeHarness, release } from './testdata/harness.js';

/** Every way a secret could show up in a log line. */
function encodings(b: Buffer): string[] {
  return [b.toString('hex'), b.toString('base64'), b.toString('base64url'), b.toString('latin1')];
}

describe('logging', () => {
  it('never logs the DEK, the admin token, the master key, tokens or evidence', async () => {
    const canaryDek = Buffer.from('CANARY-DEK-0123456789abcdefghijk'); // 32 bytes
    expect(canaryDek).toHaveLength(32);
    const canaryAdmin = 'CANARY-ADMIN-TOKEN-9f8e7d6c5b4a39281706';
    const masterKey = Buffer.from('CANARY-MASTER-KEY-0123456789abcd');
    const h = await makeHarness({ adminToken: canaryAdmin, env: { CIR_KMS_MASTER_KEY: masterKey.toString('base64') } });
    try {
      const headers = { authorization: `Bearer ${canaryAdmin}` };
      // create
      const created = await h.app.inject({
        method: 'POST',
        url: '/v1/admin/keys',
        headers,
        payload: { keyId: 'canary', dek: canaryDek.toString('base64url'), policy: { anyMeasurement: true } },
      });
      expect(created.statusCode).toBe(201);
      // a failed admin call carrying a near-miss of the token
      expect((await h.app.inject({ method: 'GET', url: '/v1/admin/keys', headers: { authorization: `Bearer ${canaryAdmin}X` } })).statusCode).toBe(401);
      // release (allow)
      const a = await attest(h.app);
      const token = a.res.json().token as string;
      const ok = await release(h.app, 'canary', token, a.keyPair.publicKey);
      expect(ok.statusCode).toBe(200);
      // release (deny by policy) and a denied attestation
      await h.app.inject({
        method: 'PUT',
        url: '/v1/admin/keys/canary/policy',
        headers,
        payload: { policy: { measurements: [MEASUREMENT_B] } },
      });
      expect((await release(h.app, 'canary', token, a.keyPair.publicKey)).statusCode).toBe(403);
      expect((await attest(h.app, { claims: { simulated: true } })).res.statusCode).toBe(403);
      expect((await createKeyViaApi(h.app, 'x', Buffer.alloc(32), {})).statusCode).toBe(401); // harness uses the default token

      const text = h.logs.text();
      expect(h.logs.lines.length).toBeGreaterThan(5);
      for (const secret of [...encodings(canaryDek), ...encodings(masterKey)]) expect(text).not.toContain(secret);
      expect(text).not.toContain('CANARY');
      expect(text).not.toContain(token);
      expect(text).not.toContain(token.split('.')[2]!);
      const { res } = await attest(h.app);
      expect(h.logs.text()).not.toContain(res.json().token as string);
      // evidence: digest and size only
      expect(text).not.toContain('"reportData"');

      // the decisions are there, with who / which key / which policy / which rule
      const lines = h.logs.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const allow = lines.find((l) => l.event === 'release' && l.decision === 'allow');
      expect(allow).toMatchObject({ keyId: 'canary', version: 1, rule: 'release-policy', ip: expect.any(String), jti: expect.any(String) });
      expect(allow?.policyHash).toMatch(/^[0-9a-f]{64}$/);
      expect(allow?.measurement).toMatch(/^[0-9a-f]{96}$/);
      const deny = lines.find((l) => l.event === 'release' && l.decision === 'deny');
      expect(deny).toMatchObject({ keyId: 'canary', rule: 'ERR_KMS_POLICY_DENIED' });
      expect(deny?.failures).toEqual([expect.objectContaining({ field: 'measurement', observed: expect.any(String), expected: expect.stringContaining(MEASUREMENT_B) })]);
      const attestLine = lines.find((l) => l.event === 'attest' && l.decision === 'allow');
      expect(attestLine).toMatchObject({ evidenceSha256: expect.stringMatching(/^[0-9a-f]{64}$/), evidenceSize: expect.any(Number) });
      const attestDeny = lines.find((l) => l.event === 'attest' && l.decision === 'deny');
      expect(attestDeny).toMatchObject({ rule: 'ERR_KMS_ATTESTATION_DENIED', failures: [expect.objectContaining({ field: 'simulated' })] });
      expect(lines.some((l) => l.event === 'admin.create' && l.keyId === 'canary')).toBe(true);
    } finally {
      await h.close();
    }
  });
});
