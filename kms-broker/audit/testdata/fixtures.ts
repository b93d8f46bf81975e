/** Test fixtures for kms-broker/audit: a P-256 head signer, a fixed clock, sample events. */
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CompactSign, exportJWK, generateKeyPair, type JSONWebKeySet } from 'jose';
import { sha256 } from '../../../common/bytes.js';
import { canonicalJson } from '../../policy.js';
import type { AuditEvent } from '../entry.js';
import type { AuditHeadSigner } from '../log.js';

export interface TestSigner {
  readonly signer: AuditHeadSigner & { calls: number };
  readonly jwks: JSONWebKeySet;
  readonly kid: string;
}

/** An ES256 signer backed by a fresh P-256 key, and the JWKS that verifies it. */
export async function testSigner(kid = 'audit-test-1'): Promise<TestSigner> {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' };
  const signer = {
    calls: 0,
    async sign(payload: Uint8Array): Promise<string> {
      signer.calls++;
      return new CompactSign(payload).setProtectedHeader({ alg: 'ES256', kid }).sign(privateKey);
    },
  };
  return { signer, jwks: { keys: [jwk] }, kid };
}

/** A clock that advances `stepMs` on every call, from `start`. */
export function steppingClock(start = '2025-03-01T10:00:00.000Z', stepMs = 1000): () => Date {
  let t = Date.parse(start);
  return () => {
    const d = new Date(t);
    t += stepMs;
    return d;
  };
}

export async function tempDir(prefix = 'cir-audit-'): Promise<string> {
  return mkdtemp(path.join(tmpdir(), prefix));
}

export const POLICY_DOC = { tee: 'sev-snp', measurements: ['ab'.repeat(48)], minTcb: { snp: 8 } };
export const POLICY_HASH = sha256(Buffer.from(canonicalJson(POLICY_DOC), 'utf8')).toString('hex');

/** A varied, valid event for index `i`. */
export function sampleEvent(i: number): AuditEvent {
  switch (i % 4) {
    case 0:
      return { actor: { type: 'anonymous', ip: '127.0.0.1' }, action: 'challenge', decision: 'info' };
    case 1:
      return {
        actor: { type: 'server', ip: '10.0.0.7' },
        action: 'attest',
        tenant: 'acme',
        decision: 'allow',
        evidenceSha256: sha256(Buffer.from(`evidence ${i}`)).toString('hex'),
        tee: 'sev-snp',
        measurement: 'cd'.repeat(48),
      };
    case 2:
      return {
        actor: { type: 'server', id: 'srv-1', tenant: 'acme', via: 'bearer' },
        action: 'release',
        tenant: 'acme',
        target: { keyId: 'model-a', version: 1, leaseId: `lease-${i}` },
        decision: i % 3 === 0 ? 'deny' : 'allow',
        ...(i % 3 === 0 ? { reason: 'ERR_KMS_POLICY_DENIED' } : {}),
        policyHash: POLICY_HASH,
        policyVersion: 1,
        detail: { rulesFailed: i % 3 === 0 ? 1 : 0, dryRun: false, note: null },
      };
    default:
      return {
        actor: { type: 'admin', id: 'alice', tenant: 'acme', via: 'mtls' },
        action: 'policy.set',
        tenant: 'acme',
        target: { keyId: 'model-a' },
        decision: 'allow',
        policyHash: POLICY_HASH,
        policyVersion: 1,
        policy: { id: 'acme/model-a', version: 1, hash: POLICY_HASH, document: POLICY_DOC },
      };
  }
}
