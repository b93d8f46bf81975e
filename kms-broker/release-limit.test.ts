import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { AttestResponseSchema, ProblemSchema } from './protocol.js';
import { attest, createKeyViaApi, makeHarness, MEASUREMENT_A, release, type Harness } from './testdata/harness.js';

// The release route authenticates in its handler (the bearer token), then counts the
// request against the release group's per-identity limit under that token's key hash
// (`enforceIdentityLimit`), so one attested server cannot use up a shared address's budget
// and a flood from one identity is refused even when the per-address limit is generous.

const DEK = Buffer.alloc(32, 7);
const PER_IDENTITY = 2;

describe('release: per-identity rate limit', () => {
  let h: Harness;
  beforeEach(async () => {
    h = await makeHarness({ config: { limits: { rate: { release: { perIp: 1000, perIdentity: PER_IDENTITY } } } } });
    expect((await createKeyViaApi(h.app, 'model-a', DEK, { measurements: [MEASUREMENT_A] })).statusCode).toBe(201);
  });
  afterEach(async () => h.close());

  async function attested() {
    const { res, keyPair } = await attest(h.app);
    expect(res.statusCode).toBe(200);
    return { token: AttestResponseSchema.parse(res.json()).token, keyPair };
  }

  it('counts releases per attested identity: the limit refuses one, not the others at the same address', async () => {
    const a = await attested();
    const b = await attested();
    for (let i = 0; i < PER_IDENTITY; i++) expect((await release(h.app, 'model-a', a.token, a.keyPair.publicKey)).statusCode).toBe(200);
    const refused = await release(h.app, 'model-a', a.token, a.keyPair.publicKey);
    expect(refused.statusCode).toBe(429);
    const p = ProblemSchema.parse(refused.json());
    expect(p.code).toBe('ERR_KMS_RATE_LIMITED');
    expect(p.detail).toContain('release (identity)');
    expect(refused.headers['retry-after']).toBeDefined();
    // Another identity from the same address (inject: 127.0.0.1) still gets its key.
    expect((await release(h.app, 'model-a', b.token, b.keyPair.publicKey)).statusCode).toBe(200);
    // The refusal is in the audit trail as a denial with its code.
    expect(h.audit.events.some((e) => e.action === 'release' && e.decision === 'deny' && e.reason === 'ERR_KMS_RATE_LIMITED')).toBe(true);
  });

  it('a request that never authenticates is not counted against any identity', async () => {
    const a = await attested();
    for (let i = 0; i < PER_IDENTITY + 2; i++) expect((await release(h.app, 'model-a', 'not-a-token', a.keyPair.publicKey)).statusCode).toBe(401);
    expect((await release(h.app, 'model-a', a.token, a.keyPair.publicKey)).statusCode).toBe(200);
  });
});
