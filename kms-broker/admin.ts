import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { fromBase64Url, sha256 } from '../common/bytes.js';
import type { AuditEventInput, AuditSink } from './audit-sink.js';
import { isKmsError, KmsError } from './codes.js';
import type { BrokerConfig } from './config.js';
import {
  BOOTSTRAP_PRINCIPAL,
  hasPermission,
  requirePermission,
  type FileIdentityStore,
  type Principal,
} from './identities.js';
import { assertKeyId, DEK_LENGTH, type KeyMetadata, type KeyRef, type KeyStore, type PolicyVersion } from './keystore.js';
import { parseReleasePolicy, policyHash, type PolicyOptions, type ReleasePolicy } from './policy.js';
import { parseBody } from './problem.js';
import { ADMIN_ROUTES, AdminCreateKeyRequestSchema, AdminSetPolicyRequestSchema } from './protocol.js';
import { readSecretFile } from './secret-file.js';
import { clientCertOf } from './workload-mtls.js';

/** Shortest admin token accepted from configuration. */
export const MIN_ADMIN_TOKEN_LENGTH = 16;

declare module 'fastify' {
  interface FastifyRequest {
    /** The authenticated admin identity, set by the admin API's auth hook. */
    adminPrincipal?: Principal;
  }
}

// ---------------------------------------------------------------------------------------
// Key and policy operations: what the admin HTTP API and the offline CLI both call.
//
// Each takes the acting principal and works inside the principal's tenant only: a key of
// another tenant is ERR_KMS_KEY_NOT_FOUND, exactly like a key that does not exist.
// Permissions are checked before anything is looked up (so a refusal reveals nothing), then
// inputs are validated, then the store is changed, then the change is audited. Results are
// metadata only, never key material.
//
// Separation of duties: creating a key with a policy needs both `key-admin` and
// `policy-admin`; changing a policy needs `policy-admin`, and the identity that created the
// key may change its policy only if it holds both roles. With the tenant's two-person rule
// on, a new policy is pending until a different identity, of a different subject, approves it.
// ---------------------------------------------------------------------------------------

export interface AdminContext {
  readonly store: KeyStore;
  readonly policy: PolicyOptions;
  readonly audit: AuditSink;
}

/** A fresh random 32-byte DEK, for callers that want the broker side to pick one. */
export function generateDek(): Buffer {
  return randomBytes(DEK_LENGTH);
}

/** How a principal is named in key records and policy history: `<id>:<subject>`. */
export function actorOf(p: Principal): string {
  return `${p.id}:${p.subject}`;
}

function refOf(p: Principal, keyId: string): KeyRef {
  assertKeyId(keyId);
  return { tenant: p.tenant, keyId };
}

function auditActor(p: Principal, ip?: string): AuditEventInput['actor'] {
  const via = p.via === 'mtls' ? 'mtls' : p.via === 'cli' ? 'cli' : 'bearer';
  return { type: p.via === 'cli' ? 'cli' : 'admin', id: p.id, tenant: p.tenant, via, ...(ip ? { ip } : {}) };
}

interface OpMeta {
  readonly ip?: string;
}

async function audited(
  ctx: AdminContext,
  p: Principal,
  action: string,
  meta: OpMeta,
  keyId: string | undefined,
  run: () => Promise<{ result: KeyMetadata; extra?: Partial<AuditEventInput> }>,
): Promise<KeyMetadata> {
  const { result, extra } = await run();
  const { target, ...rest } = extra ?? {};
  await ctx.audit.append({
    actor: auditActor(p, meta.ip),
    action,
    tenant: p.tenant,
    ...(keyId || target ? { target: { ...(keyId ? { keyId } : {}), ...(target ?? {}) } } : {}),
    decision: 'allow',
    ...(result.policyHash ? { policyHash: result.policyHash } : {}),
    ...(result.policyVersion !== null ? { policyVersion: result.policyVersion } : {}),
    ...rest,
  });
  return result;
}

export interface CreateKeyInput {
  readonly keyId: string;
  /** 32-byte DEK. Not retained; the caller may zero it afterwards. */
  readonly dek: Uint8Array;
  /** Initial release policy, unparsed; optional (a key without one is never released). */
  readonly policy?: unknown;
}

/** Creates a key. Errors: bad id/DEK/policy, ERR_KMS_ADMIN_FORBIDDEN, ERR_KMS_KEY_EXISTS. */
export async function createKey(ctx: AdminContext, p: Principal, input: CreateKeyInput, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'key.create');
  // SECURITY: separation of duties; whoever creates a key sets its policy only with both roles.
  if (input.policy !== undefined) requirePermission(p, 'policy.propose');
  const ref = refOf(p, input.keyId);
  if (input.dek.length !== DEK_LENGTH) throw new KmsError('ERR_KMS_DEK_INVALID', { detail: `got ${input.dek.length} bytes` });
  const policy = input.policy === undefined ? undefined : parseReleasePolicy(input.policy, ctx.policy);
  const arrival = policy ? await arrivalFor(ctx, p) : 'active';
  return audited(ctx, p, 'key.create', meta, input.keyId, async () => {
    const result = await ctx.store.create(ref, input.dek, actorOf(p), policy ? { policy, arrival } : undefined);
    return {
      result,
      extra: {
        target: { version: 1 },
        ...(policy ? { policy: policyRecord(result, 1, policy), detail: { policyStatus: arrival } } : {}),
      },
    };
  });
}

export async function listKeys(ctx: AdminContext, p: Principal): Promise<KeyMetadata[]> {
  requirePermission(p, 'key.read');
  return ctx.store.list(p.tenant);
}

export async function showKey(ctx: AdminContext, p: Principal, keyId: string): Promise<KeyMetadata> {
  requirePermission(p, 'key.read');
  return ctx.store.get(refOf(p, keyId));
}

export async function policyHistory(ctx: AdminContext, p: Principal, keyId: string): Promise<PolicyVersion[]> {
  requirePermission(p, 'policy.read');
  return ctx.store.policyHistory(refOf(p, keyId));
}

export async function rotateKey(ctx: AdminContext, p: Principal, keyId: string, dek: Uint8Array, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'key.rotate');
  const ref = refOf(p, keyId);
  return audited(ctx, p, 'key.rotate', meta, keyId, async () => {
    const result = await ctx.store.rotate(ref, dek, actorOf(p));
    return { result, extra: { target: { version: result.currentVersion } } };
  });
}

export async function setKeyState(
  ctx: AdminContext,
  p: Principal,
  keyId: string,
  state: 'enabled' | 'disabled',
  version: number | undefined,
  meta: OpMeta = {},
): Promise<KeyMetadata> {
  requirePermission(p, 'key.state');
  const ref = refOf(p, keyId);
  return audited(ctx, p, state === 'enabled' ? 'key.enable' : 'key.disable', meta, keyId, async () => ({
    result: await ctx.store.setState(ref, state, actorOf(p), version),
    ...(version !== undefined ? { extra: { target: { version } } } : {}),
  }));
}

export async function destroyKey(ctx: AdminContext, p: Principal, keyId: string, version: number | undefined, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'key.destroy');
  const ref = refOf(p, keyId);
  return audited(ctx, p, 'key.destroy', meta, keyId, async () => ({
    result: await ctx.store.destroy(ref, actorOf(p), version),
    ...(version !== undefined ? { extra: { target: { version } } } : {}),
  }));
}

/**
 * Proposes a new release policy: active at once, or pending when the tenant has the
 * two-person rule. Errors: ERR_KMS_ADMIN_FORBIDDEN, policy errors, ERR_KMS_KEY_NOT_FOUND.
 */
export async function setKeyPolicy(ctx: AdminContext, p: Principal, keyId: string, input: unknown, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'policy.propose');
  const ref = refOf(p, keyId);
  const policy = parseReleasePolicy(input, ctx.policy);
  const current = await ctx.store.get(ref);
  // SECURITY: separation of duties, checked on the record and not only by role, so that a
  // later role change cannot let a key's creator quietly rewrite its policy.
  if (current.createdBy.startsWith(`${p.id}:`) && !(hasPermission(p, 'key.create') && hasPermission(p, 'policy.propose'))) {
    throw new KmsError('ERR_KMS_ADMIN_FORBIDDEN', { detail: "the key's creator needs both key-admin and policy-admin to change its policy" });
  }
  const arrival = await arrivalFor(ctx, p);
  return audited(ctx, p, arrival === 'active' ? 'policy.set' : 'policy.propose', meta, keyId, async () => {
    const result = await ctx.store.proposePolicy(ref, policy, actorOf(p), arrival);
    const version = arrival === 'active' ? result.policyVersion : result.pendingPolicy?.version;
    return { result, extra: { policy: policyRecord(result, version ?? 0, policy), detail: { policyStatus: arrival } } };
  });
}

/** Approves a pending policy (two-person rule). The approver must differ in identity and subject. */
export async function approveKeyPolicy(ctx: AdminContext, p: Principal, keyId: string, version: number, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'policy.approve');
  const ref = refOf(p, keyId);
  const current = await ctx.store.get(ref);
  const pending = current.pendingPolicy;
  if (!pending || pending.version !== version) throw new KmsError('ERR_KMS_POLICY_NOT_PENDING', { detail: `${keyId} policy version ${version}` });
  const [authorId, ...rest] = pending.createdBy.split(':');
  // SECURITY: the two-person rule. A second token of the same person is not a second person.
  if (authorId === p.id || rest.join(':') === p.subject) throw new KmsError('ERR_KMS_SAME_APPROVER');
  return audited(ctx, p, 'policy.approve', meta, keyId, async () => ({
    result: await ctx.store.approvePolicy(ref, version, actorOf(p)),
    extra: { detail: { approvedVersion: version, proposedBy: authorId ?? '' } },
  }));
}

/** Sets (or, with null, clears) the dry-run candidate policy: evaluated and logged on releases, never enforced. */
export async function setDryRunPolicy(ctx: AdminContext, p: Principal, keyId: string, input: unknown | null, meta: OpMeta = {}): Promise<KeyMetadata> {
  requirePermission(p, 'policy.dry-run');
  const ref = refOf(p, keyId);
  const policy = input === null ? null : parseReleasePolicy(input, ctx.policy);
  return audited(ctx, p, policy ? 'policy.dry-run.set' : 'policy.dry-run.clear', meta, keyId, async () => {
    const result = await ctx.store.setDryRunPolicy(ref, policy, actorOf(p));
    return { result, ...(policy && result.dryRunPolicy ? { extra: { policy: { id: `${p.tenant}/${keyId}#dry-run`, version: 0, hash: result.dryRunPolicy.hash, document: policy } } } : {}) };
  });
}

async function arrivalFor(ctx: AdminContext, p: Principal): Promise<'active' | 'pending'> {
  // The offline CLI is the break-glass path: it has the master key anyway. It is audited as such.
  if (p.via === 'cli') return 'active';
  return (await ctx.store.tenantSettings(p.tenant)).twoPersonRule ? 'pending' : 'active';
}

function policyRecord(meta: KeyMetadata, version: number, document: ReleasePolicy): NonNullable<AuditEventInput['policy']> {
  return { id: `${meta.tenant}/${meta.keyId}`, version, hash: policyHash(document), document };
}

// ---------------------------------------------------------------------------------------
// Bootstrap admin token (single-tenant setups and development)
// ---------------------------------------------------------------------------------------

/**
 * The legacy bootstrap admin bearer token: env `config.adminTokenEnv` when set, else
 * `config.adminTokenFile` (must be 0600 or tighter; trailing newline stripped). It acts as
 * an identity of tenant `default` with every role (`BOOTSTRAP_PRINCIPAL`), so it defeats
 * separation of duties: refused when NODE_ENV=production (use `cir broker identities`).
 * Undefined when neither is configured. Throws `ERR_KMS_CONFIG_INVALID` for an unreadable
 * file or a token shorter than 16 characters; the detail never quotes it.
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
  if (env.NODE_ENV === 'production') {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', {
      detail: `${where}: the bootstrap admin token holds every role and is refused when NODE_ENV=production; create scoped identities with cir broker identities create`,
    });
  }
  return token;
}

/**
 * Whether `authorization` is `Bearer <token>` for the expected token, given as its SHA-256.
 * SECURITY: both sides are hashed to 32 bytes and compared with `timingSafeEqual`, so the
 * time taken reveals neither the token's length nor a matching prefix.
 */
export function adminTokenMatches(authorization: string | undefined, expectedSha256: Buffer): boolean {
  const token = bearerOf(authorization);
  const ok = timingSafeEqual(sha256(Buffer.from(token ?? '', 'utf8')), expectedSha256);
  return token !== undefined && ok;
}

function bearerOf(authorization: string | undefined): string | undefined {
  const m = /^Bearer +([\x21-\x7e]{1,512}) *$/i.exec(authorization ?? '');
  return m?.[1];
}

// ---------------------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------------------

export interface AdminRoutesOptions {
  readonly store: KeyStore;
  readonly identities: FileIdentityStore | undefined;
  /** Bootstrap token; undefined disables it. Without it and without identities the admin API is off. */
  readonly adminToken: string | undefined;
  readonly policy: PolicyOptions;
  readonly audit: AuditSink;
}

/**
 * Authenticates an admin request: a TLS-verified client certificate registered to an
 * identity, else a bearer token (identity token, or the bootstrap token). Undefined when
 * none matches.
 */
export async function authenticateAdmin(
  request: FastifyRequest,
  identities: FileIdentityStore | undefined,
  bootstrapSha256: Buffer | undefined,
): Promise<Principal | undefined> {
  // SECURITY: the one rule for a verified client certificate (workload-mtls.ts
  // `clientCertOf`): `authorized` and no `authorizationError` (a failed re-verification).
  if (identities) {
    const cert = clientCertOf(request);
    if (cert.kind === 'verified') {
      const principal = await identities.authenticateCertificate(cert.sha256.toString('hex'));
      if (principal) return principal;
    }
  }
  const token = bearerOf(request.headers.authorization);
  if (token === undefined) return undefined;
  if (identities && token.startsWith('cira_')) return identities.authenticateBearer(token);
  if (bootstrapSha256 && adminTokenMatches(request.headers.authorization, bootstrapSha256)) return BOOTSTRAP_PRINCIPAL;
  return undefined;
}

const VersionBody = z.strictObject({ version: z.number().int().positive().optional() });
const DestroyBody = z.strictObject({
  version: z.number().int().positive().optional(),
  /** Must repeat the key id: destruction is irreversible. */
  confirm: z.string(),
});
const RotateBody = z.strictObject({ dek: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'base64url of 32 bytes').optional() });
const ApproveBody = z.strictObject({ version: z.number().int().positive() });

/**
 * Admin routes (`ADMIN_ROUTES`), registered as an encapsulated plugin so its auth hook
 * covers only them. Every route acts inside the caller's tenant. Each action, allowed or
 * denied, is audited; a denial is audited with its error code.
 */
export async function adminRoutes(app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const bootstrap = opts.adminToken === undefined ? undefined : sha256(Buffer.from(opts.adminToken, 'utf8'));
  const ctx: AdminContext = { store: opts.store, policy: opts.policy, audit: opts.audit };

  app.addHook('onRequest', async (request) => {
    // SECURITY: nothing configured means closed, never open.
    if (bootstrap === undefined && opts.identities === undefined) throw new KmsError('ERR_KMS_ADMIN_DISABLED');
    const principal = await authenticateAdmin(request, opts.identities, bootstrap);
    if (!principal) {
      request.log.warn({ component: 'admin', event: 'admin.auth', decision: 'deny', ip: request.ip, method: request.method, url: request.routeOptions.url }, 'admin auth failed');
      await opts.audit.append({
        actor: { type: 'anonymous', ip: request.ip },
        action: 'admin.auth',
        decision: 'deny',
        reason: 'ERR_KMS_ADMIN_UNAUTHORIZED',
        detail: { method: request.method, route: request.routeOptions.url ?? 'unknown' },
      });
      throw new KmsError('ERR_KMS_ADMIN_UNAUTHORIZED');
    }
    request.adminPrincipal = principal;
    (request as { principal?: string }).principal = `admin:${principal.id}`;
  });

  // Denials (forbidden, not found, bad input, ...) are audited here, once, with their code.
  app.addHook('onError', async (request, _reply, error) => {
    const p = request.adminPrincipal;
    if (!p) return;
    const params = request.params as { keyId?: string } | undefined;
    await opts.audit
      .append({
        actor: auditActor(p, request.ip),
        action: `admin.${request.method.toLowerCase()}`,
        tenant: p.tenant,
        ...(params?.keyId && /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(params.keyId) ? { target: { keyId: params.keyId } } : {}),
        decision: 'deny',
        reason: isKmsError(error) ? error.code : 'ERR_KMS_INTERNAL',
        detail: { route: request.routeOptions.url ?? 'unknown' },
      })
      .catch((e: unknown) => request.log.error({ err: e }, 'audit append failed for an admin denial'));
  });

  const who = (request: FastifyRequest): Principal => {
    if (!request.adminPrincipal) throw new KmsError('ERR_KMS_ADMIN_UNAUTHORIZED');
    return request.adminPrincipal;
  };
  const meta = (request: FastifyRequest): OpMeta => ({ ip: request.ip });
  const log = (request: FastifyRequest, action: string, m: KeyMetadata | undefined) =>
    request.log.info(
      { component: 'admin', event: `admin.${action}`, decision: 'allow', identity: request.adminPrincipal?.id, tenant: request.adminPrincipal?.tenant, keyId: m?.keyId, policyHash: m?.policyHash },
      `admin ${action}`,
    );

  app.get(ADMIN_ROUTES.whoami, async (request) => {
    const p = who(request);
    return { id: p.id, tenant: p.tenant, subject: p.subject, roles: p.roles, via: p.via };
  });

  app.post(ADMIN_ROUTES.keys, async (request, reply) => {
    const body = parseBody(AdminCreateKeyRequestSchema, request.body);
    const dek = body.dek === undefined ? generateDek() : fromBase64Url(body.dek);
    if (!dek) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'dek: must be base64url' });
    try {
      const m = await createKey(ctx, who(request), { keyId: body.keyId, dek, ...(body.policy !== undefined ? { policy: body.policy } : {}) }, meta(request));
      log(request, 'create', m);
      return reply.code(201).send(m);
    } finally {
      dek.fill(0);
    }
  });

  app.get(ADMIN_ROUTES.keys, async (request) => ({ keys: await listKeys(ctx, who(request)) }));

  app.get<{ Params: { keyId: string } }>(ADMIN_ROUTES.key, async (request) => showKey(ctx, who(request), request.params.keyId));

  app.get<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyPolicies, async (request) => ({
    policies: await policyHistory(ctx, who(request), request.params.keyId),
  }));

  app.post<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyRotate, async (request) => {
    const body = parseBody(RotateBody, request.body ?? {});
    const dek = body.dek === undefined ? generateDek() : fromBase64Url(body.dek)!;
    try {
      const m = await rotateKey(ctx, who(request), request.params.keyId, dek, meta(request));
      log(request, 'rotate', m);
      return m;
    } finally {
      dek.fill(0);
    }
  });

  for (const [route, state] of [
    [ADMIN_ROUTES.keyEnable, 'enabled'],
    [ADMIN_ROUTES.keyDisable, 'disabled'],
  ] as const) {
    app.post<{ Params: { keyId: string } }>(route, async (request) => {
      const body = parseBody(VersionBody, request.body ?? {});
      const m = await setKeyState(ctx, who(request), request.params.keyId, state, body.version, meta(request));
      log(request, state === 'enabled' ? 'enable' : 'disable', m);
      return m;
    });
  }

  app.post<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyDestroy, async (request) => {
    const body = parseBody(DestroyBody, request.body);
    const p = who(request);
    requirePermission(p, 'key.destroy');
    if (body.confirm !== request.params.keyId) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'confirm: must repeat the key id' });
    const m = await destroyKey(ctx, p, request.params.keyId, body.version, meta(request));
    log(request, 'destroy', m);
    return m;
  });

  app.put<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyPolicy, async (request) => {
    const body = parseBody(AdminSetPolicyRequestSchema, request.body);
    const m = await setKeyPolicy(ctx, who(request), request.params.keyId, body.policy, meta(request));
    log(request, 'set-policy', m);
    return m;
  });

  app.post<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyPolicyApprove, async (request) => {
    const body = parseBody(ApproveBody, request.body);
    const m = await approveKeyPolicy(ctx, who(request), request.params.keyId, body.version, meta(request));
    log(request, 'approve-policy', m);
    return m;
  });

  app.put<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyPolicyDryRun, async (request) => {
    const body = parseBody(AdminSetPolicyRequestSchema, request.body);
    const m = await setDryRunPolicy(ctx, who(request), request.params.keyId, body.policy, meta(request));
    log(request, 'set-dry-run', m);
    return m;
  });

  app.delete<{ Params: { keyId: string } }>(ADMIN_ROUTES.keyPolicyDryRun, async (request) => {
    const m = await setDryRunPolicy(ctx, who(request), request.params.keyId, null, meta(request));
    log(request, 'clear-dry-run', m);
    return m;
  });
}
