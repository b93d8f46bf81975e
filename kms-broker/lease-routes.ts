/**
 * HTTP routes of key leases and kill switches, as one encapsulated fastify plugin:
 *
 *   POST   ROUTES.leaseRenew            Bearer <fresh attestation token>; body {lease, publicKey};
 *                                       a certificate-bound token or lease only over its certificate
 *   POST   ROUTES.adminRevocations      role operator; body RevocationCreateRequestSchema
 *   GET    ROUTES.adminRevocations      role auditor
 *   DELETE ROUTES.adminRevocation(id)   role operator (lift)
 *
 * Admin authorization is injected (`authorize`): it authenticates the request and checks
 * the role, or throws a typed 401/403; it returns the identity, whose tenant scopes every
 * admin action here (an identity sees, creates and lifts revocations of its own tenant only).
 * Every decision is logged with the lease id prefix, key id and tenant; never a token.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditSink } from './audit-sink.js';
import { fromBase64Url } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { KmsError } from './codes.js';
import { renewLease, type CheckedKey, type LeaseService, type VerifiedAttestation } from './leases.js';
import type { BrokerClaims, PolicyDecision } from './policy.js';
import { bearerToken, denial, parseBody } from './problem.js';
import {
  LEASE_ID_RE,
  LeaseRenewRequestSchema,
  RevocationCreateRequestSchema,
  ROUTES,
  type LeaseRenewResponse,
  type Revocation,
} from './protocol.js';
import type { RevocationStore } from './revocations.js';
import { WorkloadCert, type WorkloadClientCertMode } from './workload-mtls.js';

export type LeaseAdminRole = 'operator' | 'auditor';

export interface AdminIdentity {
  readonly id: string;
  readonly tenant: string;
}

export interface LeaseRoutesOptions {
  readonly leases: LeaseService;
  readonly revocations: RevocationStore;
  /** Verifies an attestation-result token as the release route does; throws `ERR_KMS_TOKEN_INVALID`. */
  verifyToken(token: string, now: Date): Promise<VerifiedAttestation>;
  /** See `RenewDeps.checkKey`. */
  checkKey(tenant: string, keyId: string, version: number): Promise<CheckedKey>;
  /** See `RenewDeps.evaluate`. */
  evaluate(claims: BrokerClaims, tenant: string, keyId: string, key: CheckedKey): PolicyDecision;
  /** Authenticates an admin request and checks `role`; throws a typed 401/403/404 otherwise. */
  authorize(request: FastifyRequest, role: LeaseAdminRole): AdminIdentity | Promise<AdminIdentity>;
  readonly now: () => Date;
  /** The audit trail: renewals (allowed or denied) and revocation changes are appended. */
  readonly audit?: AuditSink;
  /** Config `tls.workloadClientCerts` (workload-mtls.ts); default `off`. Bound tokens and leases are enforced in every mode. */
  readonly workloadClientCerts?: WorkloadClientCertMode;
}

export async function leaseRoutes(app: FastifyInstance, opts: LeaseRoutesOptions): Promise<void> {
  app.post(ROUTES.leaseRenew, async (request): Promise<LeaseRenewResponse> => {
    const log = request.log.child({ event: 'lease.renew' });
    const who: Record<string, unknown> = { ip: request.ip };
    let cert: WorkloadCert | undefined;
    try {
      cert = WorkloadCert.of(request, opts.workloadClientCerts ?? 'off');
      const bearer = bearerToken(request);
      const body = parseBody(LeaseRenewRequestSchema, request.body);
      const publicKey = fromBase64Url(body.publicKey);
      if (!publicKey) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: 'publicKey: must be base64url' });
      const now = opts.now();
      const attestation = await opts.verifyToken(bearer, now);
      who.keyHash = attestation.keyHash.slice(0, 12);
      who.tee = attestation.claims.tee;
      const r = await renewLease(
        { leaseJws: body.lease, publicKey, attestation, now, clientCert: cert },
        {
          leases: opts.leases,
          revocations: opts.revocations,
          checkKey: (t, k, v) => opts.checkKey(t, k, v),
          evaluate: (c, t, k, key) => opts.evaluate(c, t, k, key),
        },
      );
      // SECURITY: fail closed on the audit trail: no durable record, no renewed lease.
      await opts.audit
        ?.append({
          actor: { type: 'server', id: attestation.keyHash.slice(0, 16), tenant: r.previous.tenant, ip: request.ip },
          action: 'lease.renew',
          tenant: r.previous.tenant,
          target: { keyId: r.previous.keyId, version: r.previous.version, leaseId: r.lease.id },
          decision: 'allow',
          policyHash: r.decision.policyHash,
          tee: attestation.claims.tee,
          measurement: r.previous.measurement,
          ...(cert.sha256Hex !== undefined ? { clientCertSha256: cert.sha256Hex } : {}),
          detail: { expiresAt: r.lease.expiresAt },
        })
        .catch((cause: unknown) => {
          throw new KmsError('ERR_KMS_AUDIT_UNAVAILABLE', { cause });
        });
      log.info(
        {
          ...who,
          lease: r.lease.id.slice(0, 8),
          tenant: r.previous.tenant,
          keyId: r.previous.keyId,
          version: r.previous.version,
          decision: 'allow',
          policyHash: r.decision.policyHash,
          expiresAt: r.lease.expiresAt,
          ...(cert.sha256Hex !== undefined ? { clientCertSha256: cert.sha256Hex } : {}),
        },
        'lease renewed',
      );
      return { lease: r.lease };
    } catch (e) {
      const certHex = cert?.sha256Hex;
      log.warn({ ...who, ...(certHex !== undefined ? { clientCertSha256: certHex } : {}), ...denial(e) }, 'lease renewal denied');
      await opts.audit
        ?.append({
          actor: { type: 'server', ip: request.ip },
          action: 'lease.renew',
          decision: 'deny',
          reason: isCirError(e) ? e.code : 'ERR_KMS_INTERNAL',
          ...(typeof who.tee === 'string' ? { tee: who.tee } : {}),
          ...(certHex !== undefined ? { clientCertSha256: certHex } : {}),
        })
        .catch((err: unknown) => log.error({ err }, 'audit append failed for a renewal denial'));
      throw e;
    }
  });

  const audit = async (request: FastifyRequest, action: string, who: AdminIdentity, r: Revocation | undefined, extra: object = {}) => {
    if (action !== 'list') {
      await opts.audit?.append({
        actor: { type: 'admin', id: who.id, tenant: who.tenant, ip: request.ip },
        action: `revocation.${action}`,
        tenant: who.tenant,
        ...(r ? { target: { revocationId: r.id, ...(r.keyId ? { keyId: r.keyId } : {}), ...(r.version ? { version: r.version } : {}) } } : {}),
        decision: 'allow',
        ...(r?.measurement ? { measurement: r.measurement } : {}),
        ...(r ? { detail: { scope: r.scope } } : {}),
      });
    }
    request.log.info(
      {
        component: 'admin',
        event: `admin.revocation.${action}`,
        decision: 'allow',
        ip: request.ip,
        admin: who.id,
        tenant: who.tenant,
        ...(r ? { revocation: r.id, scope: r.scope, keyId: r.keyId, version: r.version, measurement: r.measurement } : {}),
        ...extra,
      },
      `admin revocation ${action}`,
    );
  };

  app.post(ROUTES.adminRevocations, async (request, reply) => {
    const who = await opts.authorize(request, 'operator');
    const body = parseBody(RevocationCreateRequestSchema, request.body);
    const r = await opts.revocations.add(who.tenant, body, who.id);
    await audit(request, 'create', who, r);
    return reply.code(201).send(r);
  });

  app.get(ROUTES.adminRevocations, async (request) => {
    const who = await opts.authorize(request, 'auditor');
    const revocations = opts.revocations.list(who.tenant);
    await audit(request, 'list', who, undefined, { count: revocations.length });
    return { revocations };
  });

  app.delete<{ Params: { id: string } }>('/v1/admin/revocations/:id', async (request) => {
    const who = await opts.authorize(request, 'operator');
    const id = request.params.id;
    if (!LEASE_ID_RE.test(id)) throw new KmsError('ERR_KMS_REVOCATION_NOT_FOUND');
    const r = await opts.revocations.lift(who.tenant, id);
    await audit(request, 'lift', who, r);
    return r;
  });
}


