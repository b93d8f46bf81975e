/**
 * Minimal client for the broker's admin API, used by `cir seal` and `cir broker keys`.
 * The admin token travels only in the Authorization header and is never printed.
 */
import { readFile } from 'node:fs/promises';
import { ROUTES, ProblemSchema } from '../kms-broker/protocol.js';
import { CirError } from '../common/errors.js';
import { ClientError } from '../client/codes.js';

export async function readAdminToken(file: string | undefined): Promise<string> {
  if (file) {
    const t = (await readFile(file, 'utf8')).trim();
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
          { category: res.status >= 500 ? 'unavailable' : res.status === 401 ? 'unauthorized' : res.status === 409 ? 'conflict' : res.status === 404 ? 'not-found' : 'bad-input', message: p.data.title },
          { ...(p.data.detail ? { detail: p.data.detail } : {}), ...(p.data.failures ? { details: { failures: p.data.failures } } : {}) },
        );
      }
      throw new ClientError('ERR_CLI_RPC_FAILED', { detail: `broker answered HTTP ${res.status}` });
    }
    return json;
  }

  createKey(keyId: string, dek: Uint8Array, policy: unknown): Promise<unknown> {
    return this.call('POST', ROUTES.adminKeys, { keyId, dek: Buffer.from(dek).toString('base64url'), policy });
  }
  listKeys(): Promise<unknown> {
    return this.call('GET', ROUTES.adminKeys);
  }
  getKey(keyId: string): Promise<unknown> {
    return this.call('GET', ROUTES.adminKey(keyId));
  }
  setPolicy(keyId: string, policy: unknown): Promise<unknown> {
    return this.call('PUT', ROUTES.adminKeyPolicy(keyId), { policy });
  }
}
