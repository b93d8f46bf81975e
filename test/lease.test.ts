/**
 * Key leases and kill switches, end to end over real loopback HTTP and gRPC/TLS: the real
 * broker (short lease TTL) and the real server with a sealed real model. An operator
 * revokes the key (then the measurement); the server stops serving the model at its next
 * renewal; lifting the revocation brings the model back through a fresh key release.
 * Waits on events, never on wall-clock durations.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import { inferVerified } from '../client/infer.js';
import { ROUTES } from '../kms-broker/protocol.js';
import type { CirServer } from '../server/app.js';
import type { LeaseEvent } from '../server/lease.js';
import { loadServiceClients } from '../server/proto.js';
import { createStack, vadInput, GOOD_MEASUREMENT, type Stack } from './helpers/stack.js';

const KEY_ID = 'lease-e2e';
const WAIT = { timeout: 60_000, interval: 50 };

let stack: Stack;
let server: CirServer;
let port: number;
let client: grpc.Client;
const events: LeaseEvent[] = [];

beforeAll(async () => {
  // Leases of 4 s renewed after 2 s: several renewals happen within the test.
  stack = await createStack({ leases: { ttlSeconds: 4, renewFraction: 0.5 } });
  const sealed = await stack.sealedModel(KEY_ID, { allowSimulated: true, measurements: [GOOD_MEASUREMENT] });
  server = stack.server(sealed, GOOD_MEASUREMENT, {}, { retry: { initialMs: 50, maxMs: 250 } });
  server.events.on('lease', (e) => events.push(e));
  ({ port } = await server.start());
  await server.whenReady();
  const { GRPCInferenceService } = loadServiceClients();
  client = new GRPCInferenceService(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(server.certPem!)), {
    'grpc.ssl_target_name_override': 'localhost',
  });
}, 120_000);

afterAll(async () => {
  client?.close();
  await stack?.close();
});

function rpc<T>(method: string, req: unknown): Promise<{ res?: T; err?: grpc.ServiceError }> {
  return new Promise((resolve) => {
    const md = new grpc.Metadata();
    if (stack.apiKey !== undefined) md.set('authorization', `Bearer ${stack.apiKey}`);
    (client as unknown as Record<string, Function>)[method]!.call(client, req, md, (err: grpc.ServiceError | null, res: T) =>
      resolve(err ? { err } : { res }),
    );
  });
}

async function modelReady(): Promise<boolean> {
  const r = await rpc<{ ready: boolean }>('ModelReady', { name: 'vad' });
  if (r.err) throw r.err;
  return r.res!.ready;
}

async function infer(): Promise<number> {
  const result = await inferVerified({
    server: `127.0.0.1:${port}`,
    model: 'vad',
    input: vadInput(3),
    expectMeasurements: [GOOD_MEASUREMENT],
    allowSimulated: true,
    simulatedRootPem: stack.sim.arkPem,
    ...(stack.apiKey !== undefined ? { apiKey: stack.apiKey } : {}),
  });
  return result.outputs.length;
}

async function admin(method: 'POST' | 'DELETE', route: string, body?: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(new URL(route, stack.broker.url), {
    method,
    headers: { authorization: `Bearer ${stack.adminToken}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

const count = (type: LeaseEvent['type'], from = 0) => events.slice(from).filter((e) => e.type === type).length;

/**
 * Revokes with `body`, waits for the withdrawal and checks it happened at the first renewal
 * after the revocation (an in-flight renewal may still have succeeded), then checks the
 * model is refused, lifts the revocation and waits for the model to come back.
 */
async function revokeThenLift(body: Record<string, unknown>, brokerCode: string): Promise<void> {
  await expect.poll(() => count('renewed'), WAIT).toBeGreaterThanOrEqual(1);
  const mark = events.length;
  const created = await admin('POST', ROUTES.adminRevocations, body);
  expect(created.status).toBe(201);

  await expect.poll(() => count('withdrawn', mark), WAIT).toBe(1);
  const since = events.slice(mark);
  const withdrawal = since.find((e) => e.type === 'withdrawn')!;
  expect(withdrawal).toMatchObject({ keyId: KEY_ID, version: 1, models: ['vad'], reason: 'refused' });
  expect(withdrawal.type === 'withdrawn' && withdrawal.code).toContain('ERR_KMS_LEASE_REVOKED');
  // Within one renewal interval: the first failed renewal after the revocation was the
  // definitive refusal, and at most one renewal already in flight succeeded.
  const failures = since.filter((e) => e.type === 'renew-failed');
  expect(failures[0]).toMatchObject({ definitive: true });
  expect(since.slice(0, since.indexOf(withdrawal)).filter((e) => e.type === 'renewed').length).toBeLessThanOrEqual(1);

  // The model is no longer served; the others (none here) would be.
  expect(await modelReady()).toBe(false);
  const refused = await rpc('ModelInfer', { model_name: 'vad', inputs: [] });
  expect(refused.err?.code).toBe(grpc.status.UNAVAILABLE);
  expect(refused.err?.metadata.get('cir-error-code')).toEqual(['ERR_SRV_MODEL_WITHDRAWN']);
  // The background re-release is refused by the same kill switch.
  await expect.poll(() => events.slice(mark).some((e) => e.type === 'rerelease-failed' && e.code.includes(brokerCode)), WAIT).toBe(true);
  expect(count('republished', mark)).toBe(0);

  const lifted = await admin('DELETE', ROUTES.adminRevocation(String(created.json.id)));
  expect(lifted.status).toBe(200);
  await expect.poll(() => count('republished', mark), WAIT).toBe(1);
  expect(await modelReady()).toBe(true);
  expect(await infer()).toBeGreaterThan(0);
}

describe('key leases and revocation, end to end', () => {
  it('serves, renews the lease in the background, and keeps serving', async () => {
    expect(await modelReady()).toBe(true);
    expect(await infer()).toBeGreaterThan(0);
    await expect.poll(() => count('renewed'), WAIT).toBeGreaterThanOrEqual(2);
    expect(count('withdrawn')).toBe(0);
    expect(await infer()).toBeGreaterThan(0);
  });

  it('a key revocation withdraws the model at the next renewal; lifting it brings the model back', async () => {
    await revokeThenLift({ scope: 'key', keyId: KEY_ID, reason: 'e2e: key suspected leaked' }, 'ERR_KMS_RELEASE_REVOKED');
  });

  it('a measurement revocation does the same', async () => {
    await revokeThenLift({ scope: 'measurement', measurement: GOOD_MEASUREMENT, reason: 'e2e: image withdrawn' }, 'ERR_KMS_RELEASE_REVOKED');
    // After the lift the lease is renewed again.
    const mark = events.length;
    await expect.poll(() => count('renewed', mark), WAIT).toBeGreaterThanOrEqual(1);
  });

  it('never logs a lease, token or key', () => {
    const all = stack.logs.lines.join('');
    // Compact JWS (lease, release signature, attestation token) all start with a base64url '{"'.
    expect(all).not.toMatch(/eyJ[A-Za-z0-9_-]{20,}\.[A-Za-z0-9_-]{20,}\./);
    expect(all).not.toContain(stack.adminToken);
    expect(all).toMatch(/key lease renewed/);
    expect(all).toMatch(/lease renewal denied/);
  });
});
