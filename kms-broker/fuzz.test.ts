import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sha256 } from '../common/bytes.js';
import { adminTokenMatches } from './admin.js';
import { KmsError } from './codes.js';
import { parseBody } from './problem.js';
import {
  AdminCreateKeyRequestSchema,
  AdminSetPolicyRequestSchema,
  AttestRequestSchema,
  PROBLEM_CONTENT_TYPE,
  ProblemSchema,
  ReleaseRequestSchema,
} from './protocol.js';
import { adminHeaders, makeHarness, type Harness } from './testdata/harness.js';

const b64url32 = fc.uint8Array({ minLength: 32, maxLength: 32 }).map((b) => Buffer.from(b).toString('base64url'));
/** Mostly-valid shapes with random fields swapped in, so the schema's inner checks get exercised too. */
const attestish = fc.record(
  { nonce: fc.oneof(b64url32, fc.string()), evidence: fc.oneof(fc.dictionary(fc.string(), fc.jsonValue()), fc.jsonValue()), publicKey: fc.oneof(b64url32, fc.string()) },
  { requiredKeys: [] },
);
const anyBody = fc.oneof(fc.jsonValue(), attestish, fc.record({ publicKey: fc.oneof(b64url32, fc.string()), version: fc.oneof(fc.integer(), fc.double(), fc.string()) }, { requiredKeys: [] }));

describe('request body parsers (fast-check)', () => {
  it.each([
    ['attest', AttestRequestSchema],
    ['release', ReleaseRequestSchema],
    ['admin create', AdminCreateKeyRequestSchema],
    ['admin set-policy', AdminSetPolicyRequestSchema],
  ] as const)('%s: any JSON gives a parsed body or ERR_KMS_BAD_REQUEST', (_n, schema) => {
    fc.assert(
      fc.property(anyBody, (body) => {
        try {
          parseBody(schema, body);
        } catch (e) {
          expect(e).toBeInstanceOf(KmsError);
          expect((e as KmsError).code).toBe('ERR_KMS_BAD_REQUEST');
        }
      }),
      { numRuns: 500 },
    );
  });

  it('adminTokenMatches never throws and only accepts the exact token', () => {
    const token = 'fuzz-admin-token-0123456789';
    const expected = sha256(Buffer.from(token));
    const exact = new RegExp(`^bearer +${token} *$`, 'i');
    const header = fc.oneof(
      fc.string(),
      fc.tuple(fc.constantFrom('Bearer ', 'bearer  ', 'Basic ', ''), fc.constantFrom(token, token.slice(1), `${token}x`), fc.constantFrom('', ' ', 'x', '\n')).map((p) => p.join('')),
    );
    fc.assert(
      fc.property(header, (s) => {
        expect(adminTokenMatches(s, expected)).toBe(exact.test(s));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('HTTP edges (fast-check): never a 5xx, always a problem document', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await makeHarness();
  });
  afterAll(async () => h.close());

  const check = (res: { statusCode: number; headers: Record<string, unknown>; body: string }) => {
    expect(res.statusCode).toBeGreaterThanOrEqual(400);
    expect(res.statusCode).toBeLessThan(500);
    expect(String(res.headers['content-type'])).toContain(PROBLEM_CONTENT_TYPE);
    ProblemSchema.parse(JSON.parse(res.body));
  };

  it('arbitrary JSON to every POST route', async () => {
    await fc.assert(
      fc.asyncProperty(anyBody, fc.constantFrom('/v1/attest', '/v1/keys/k/release', '/v1/admin/keys'), async (body, url) => {
        const res = await h.app.inject({
          method: 'POST',
          url,
          headers: { 'content-type': 'application/json', ...(url.includes('admin') ? adminHeaders() : { authorization: 'Bearer a.b.c' }) },
          payload: JSON.stringify(body),
        });
        check(res);
      }),
      { numRuns: 200 },
    );
  });

  it('arbitrary bytes as a JSON body', async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ maxLength: 256 }), async (bytes) => {
        const res = await h.app.inject({ method: 'POST', url: '/v1/attest', headers: { 'content-type': 'application/json' }, payload: Buffer.from(bytes) });
        check(res);
      }),
      { numRuns: 200 },
    );
  });

  it('arbitrary Authorization headers on release', async () => {
    await fc.assert(
      fc.asyncProperty(fc.stringMatching(/^[\x20-\x7e]{0,200}$/), async (auth) => {
        const res = await h.app.inject({
          method: 'POST',
          url: '/v1/keys/k/release',
          headers: { authorization: auth },
          payload: { publicKey: Buffer.alloc(32).toString('base64url') },
        });
        check(res);
        expect([400, 401]).toContain(res.statusCode);
      }),
      { numRuns: 200 },
    );
  });
});
