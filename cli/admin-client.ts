/**
 * Minimal client for the broker's admin API, used by `cir seal` and `cir broker keys`.
 * The admin token travels only in the Authorization header and is never printed.
 */
import { MAX_SMALL_FILE_BYTES, readArgText } from '../client/arg-file.js';
import { ADMIN_ROUTES, adminKeyRoute, ProblemSchema } from '../kms-broker/protocol.js';
import { CirError } from '../common/errors.js';
import { ClientError } from '../client/codes.js';

export async function readAdminToken(file: string | undefined): Promise<string> {
  if (file) {
    const t = (await readArgText('--admin-token-file', file, { max: MAX_SMALL_FILE_BYTES })).trim();
    if (t) return t;
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `admin token file ${file} is empty` });
  }
  const env = process.env.CIR_KMS_ADMIN_TOKEN?.trim();
  if (env) return env;
  throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: 'admin token needed: --admin-token-file FILE or CIR_KMS_ADMIN_TOKEN' });
}

export class AdminClient {
  constructor(
    private readonly baseUrl: string,
    private readonly token: string,
    private readonly timeoutMs = 10_000,
  ) {}

  private async call(method: string, route: string, body?: unknown): Promise<unknown> {
    let res: Response;
    try {
      res = await fetch(new URL(route, this.baseUrl), {
        method,
        headers: { authorization: `Bearer ${this.token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}) },
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (cause) {
      throw new ClientError('ERR_CLI_RPC_FAILED', { detail: `broker ${this.baseUrl} unreachable`, cause });
    }
    const text = await res.text();
    let json: unknown;
    try {
      json = text ? JSON.parse(text) : {};
    } catch {
      json = undefined;
    }
    if (!res.ok) {
      const p = ProblemSchema.safeParse(json);
      if (p.success) {
        throw new CirError(
          p.data.code,
          { category: res.status >= 500 ? 'unavailable' : res.status === 401 ? 'unauthorized' : res.status === 403 ? 'forbidden' : res.status === 409 ? 'conflict' : res.status === 404 ? 'not-found' : 'bad-input', message: p.data.title },
          { ...(p.data.detail ? { detail: p.data.detail } : {}), ...(p.data.failures ? { details: { failures: p.data.failures } } : {}) },
        );
      }
      throw new ClientError('ERR_CLI_RPC_FAILED', { detail: `broker answered HTTP ${res.status}` });
    }
    return json;
  }

  createKey(keyId: string, dek: Uint8Array, policy?: unknown): Promise<unknown> {
    return this.call('POST', ADMIN_ROUTES.keys, { keyId, dek: Buffer.from(dek).toString('base64url'), ...(policy !== undefined ? { policy } : {}) });
  }
  listKeys(): Promise<unknown> {
    return this.call('GET', ADMIN_ROUTES.keys);
  }
  getKey(keyId: string): Promise<unknown> {
    return this.call('GET', adminKeyRoute(ADMIN_ROUTES.key, keyId));
  }
  policyHistory(keyId: string): Promise<unknown> {
    return this.call('GET', adminKeyRoute(ADMIN_ROUTES.keyPolicies, keyId));
  }
  setPolicy(keyId: string, policy: unknown): Promise<unknown> {
    return this.call('PUT', adminKeyRoute(ADMIN_ROUTES.keyPolicy, keyId), { policy });
  }
  approvePolicy(keyId: string, version: number): Promise<unknown> {
    return this.call('POST', adminKeyRoute(ADMIN_ROUTES.keyPolicyApprove, keyId), { version });
  }
  setDryRun(keyId: string, policy: unknown | null): Promise<unknown> {
    return policy === null
      ? this.call('DELETE', adminKeyRoute(ADMIN_ROUTES.keyPolicyDryRun, keyId))
      : this.call('PUT', adminKeyRoute(ADMIN_ROUTES.keyPolicyDryRun, keyId), { policy });
  }
  rotate(keyId: string, dek: Uint8Array): Promise<unknown> {
    return this.call('POST', adminKeyRoute(ADMIN_ROUTES.keyRotate, keyId), { dek: Buffer.from(dek).toString('base64url') });
  }
  setState(keyId: string, state: 'enabled' | 'disabled', version?: number): Promise<unknown> {
    const route = state === 'enabled' ? ADMIN_ROUTES.keyEnable : ADMIN_ROUTES.keyDisable;
    return this.call('POST', adminKeyRoute(route, keyId), version !== undefined ? { version } : {});
  }
  destroy(keyId: string, version?: number): Promise<unknown> {
    return this.call('POST', adminKeyRoute(ADMIN_ROUTES.keyDestroy, keyId), { confirm: keyId, ...(version !== undefined ? { version } : {}) });
  }
}
