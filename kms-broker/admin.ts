import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fromBase64Url, sha256 } from '../common/bytes.js';
import { KmsError } from './codes.js';
import type { BrokerConfig } from './config.js';
import { assertKeyId, DEK_LENGTH, type KeyMetadata, type KeyStore } from './keystore.js';
import { parseReleasePolicy, type PolicyOptions } from './policy.js';
import { parseBody } from './problem.js';
import { AdminCreateKeyRequestSchema, AdminSetPolicyRequestSchema, ROUTES } from './protocol.js';
import { readSecretFile } from './secret-file.js';

/** Shortest admin token accepted from configuration. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;

// ---------------------------------------------------------------------------------------
// Store-level key management: what the admin HTTP API and the offline CLI both call.
// Each validates its input (key id, DEK length, policy incl. the production rule) before
// touching the store, and returns metadata only, never key material.
// ---------------------------------------------------------------------------------------

export interface CreateKeyInput {
  readonly keyId: string;
  /** 32-byte DEK. Not retained; the caller may zero it afterwards. */
  readonly dek: Uint8Array;
  /** Release policy, unparsed (an SEV-SNP policy object). */
  readonly policy: unknown;
}

/** A fresh random 32-byte DEK, for callers that want the broker side to pick one. */
export function generateDek(): Buffer {
  return randomBytes(DEK_LENGTH);
}

/**
 * Creates a key. Throws `ERR_KMS_BAD_KEY_ID`, `ERR_KMS_DEK_INVALID`, `ERR_KMS_POLICY_INVALID`,
 * `ERR_KMS_POLICY_SIMULATED_IN_PRODUCTION` or `ERR_KMS_KEY_EXISTS`.
 */
export async function createKey(store: KeyStore, input: CreateKeyInput, opts: PolicyOptions): Promise<KeyMetadata> {
  assertKeyId(input.keyId);
  if (input.dek.length !== DEK_LENGTH) throw new KmsError('ERR_KMS_DEK_INVALID', { detail: `got ${input.dek.length} bytes` });
  const policy = parseReleasePolicy(input.policy, opts);
  return store.create(input.keyId, input.dek, policy);
}

export async function listKeys(store: KeyStore): Promise<KeyMetadata[]> {
  return store.list();
}

/** Throws `ERR_KMS_BAD_KEY_ID` or `ERR_KMS_KEY_NOT_FOUND`. */
export async function showKey(store: KeyStore, keyId: string): Promise<KeyMetadata> {
  assertKeyId(keyId);
  return store.get(keyId);
}

/** Replaces a key's release policy. Same policy errors as `createKey`, plus `ERR_KMS_KEY_NOT_FOUND`. */
export async function setKeyPolicy(store: KeyStore, keyId: string, policy: unknown, opts: PolicyOptions): Promise<KeyMetadata> {
  assertKeyId(keyId);
  return store.setPolicy(keyId, parseReleasePolicy(policy, opts));
}

// ---------------------------------------------------------------------------------------
// Admin token
// ---------------------------------------------------------------------------------------

/**
 * The admin bearer token: env `config.adminTokenEnv` when set, else `config.adminTokenFile`
 * (must be 0600 or tighter; trailing newline stripped). Undefined when neither is
 * configured, which disables the admin API. Throws `ERR_KMS_CONFIG_INVALID` for an
 * unreadable file or a token shorter than 16 characters; the detail never quotes it.
 */
export async function loadAdminToken(
  config: BrokerConfig,
  env: Readonly<Record<string, string | undefined>> = process.env,
): Promise<string | undefined> {
  let token: string | undefined;
  let where = `env ${config.adminTokenEnv}`;
  const fromEnv = env[config.adminTokenEnv];
  if (fromEnv !== undefined && fromEnv !== '') {
    token = fromEnv;
  } else if (config.adminTokenFile !== undefined) {
    where = config.adminTokenFile;
    const read = await readSecretFile(config.adminTokenFile);
    if (read.kind === 'bad') throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `adminTokenFile: ${read.reason}` });
    if (read.kind === 'missing') throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'adminTokenFile: does not exist' });
    token = read.data.toString('utf8').replace(/\r?\n$/, '');
  }
  if (token === undefined) return undefined;
  if (token.length < MIN_ADMIN_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', {
      detail: `${where}: admin token must be at least ${MIN_ADMIN_TOKEN_LENGTH} printable ASCII characters without spaces`,
    });
  }
  return token;
}

/**
 * Whether `authorization` is `Bearer <token>` for the expected token, given as its SHA-256.
 * SECURITY: both sides are hashed to 32 bytes and compared with `timingSafeEqual`, so the
 * time taken reveals neither the token's length nor a matching prefix; a missing or
 * malformed header runs the same comparison.
 */
export function adminTokenMatches(authorization: string | undefined, expectedSha256: Buffer): boolean {
  const m = /^Bearer +([\x21-\x7e]+) *$/i.exec(authorization ?? '');
  const ok = timingSafeEqual(sha256(Buffer.from(m?.[1] ?? '', 'utf8')), expectedSha256);
  return m !== null && ok;
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

export interface AdminRoutesOptions {
  readonly store: KeyStore;
  /** Undefined disables the admin API: every admin route answers 404 ERR_KMS_ADMIN_DISABLED. */
  readonly adminToken: string | undefined;
  readonly policy: PolicyOptions;
}

/**
 * Admin routes (`ROUTES.adminKeys`, `adminKey`, `adminKeyPolicy`), registered as an
 * encapsulated plugin so its auth hook covers only them.
 */
export async function adminRoutes(app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const expected = opts.adminToken === undefined ? undefined : sha256(Buffer.from(opts.adminToken, 'utf8'));

  app.addHook('onRequest', async (request) => {
    // SECURITY: no token configured means closed, never open.
    if (expected === undefined) throw new KmsError('ERR_KMS_ADMIN_DISABLED');
    if (!adminTokenMatches(request.headers.authorization, expected)) {
      request.log.warn({ component: 'admin', event: 'admin.auth', decision: 'deny', ip: request.ip, method: request.method, url: request.url }, 'admin auth failed');
      throw new KmsError('ERR_KMS_ADMIN_UNAUTHORIZED');
    }
  });

  const audit = (request: FastifyRequest, action: string, meta: KeyMetadata | undefined, extra: object = {}) =>
    request.log.info(
      { component: 'admin', event: `admin.${action}`, decision: 'allow', ip: request.ip, keyId: meta?.keyId, policyHash: meta?.policyHash, ...extra },
      `admin ${action}`,
    );

  app.post(ROUTES.adminKeys, async (request, reply) => {
    const body = parseBody(AdminCreateKeyRequestSchema, request.body);
    const dek = fromBase64Url(body.dek);
    if (!dek) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'dek: must be base64url' });
    try {
      const meta = await createKey(opts.store, { keyId: body.keyId, dek, policy: body.policy }, opts.policy);
      audit(request, 'create', meta, { version: meta.currentVersion });
      return reply.code(201).send(meta);
    } finally {
      dek.fill(0);
    }
  });

  app.get(ROUTES.adminKeys, async (request) => {
    const keys = await listKeys(opts.store);
    audit(request, 'list', undefined, { count: keys.length });
    return { keys };
  });

  app.get<{ Params: { keyId: string } }>('/v1/admin/keys/:keyId', async (request) => {
    const meta = await showKey(opts.store, request.params.keyId);
    audit(request, 'show', meta);
    return meta;
  });

  app.put<{ Params: { keyId: string } }>('/v1/admin/keys/:keyId/policy', async (request) => {
    const body = parseBody(AdminSetPolicyRequestSchema, request.body);
    const meta = await setKeyPolicy(opts.store, request.params.keyId, body.policy, opts.policy);
    audit(request, 'set-policy', meta);
    return meta;
  });
}
