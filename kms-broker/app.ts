import { randomBytes } from 'node:crypto';
import type { TLSSocket } from 'node:tls';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyRequest } from 'fastify';
import { kmsReportData } from '../attestation/binding.js';
import { constantTimeEqual, fromBase64Url, fromHex, sha256 } from '../common/bytes.js';
import { isCirError } from '../common/errors.js';
import { deepFreeze } from '../common/config.js';
import { HPKE_SUITE_ID, hpkeSeal } from '../common/hpke.js';
import type { HpkeSealFn } from '../common/hpke-sealer.js';
import type { Logger } from '../common/logger.js';
import { adminRoutes, authenticateAdmin } from './admin.js';
import { MemoryAuditSink, type AuditEventInput, type AuditSink } from './audit-sink.js';
import { hasPermission, type FileIdentityStore } from './identities.js';
import { ChallengeStore, challengeClientKey } from './challenges.js';
import { appraisalPolicyId, appraiseCpu, attestationPolicyId } from './ear.js';
import { isKmsError, KmsError } from './codes.js';
import { assertAdminTransport, isProduction, type BrokerConfig } from './config.js';
import { assertKeyId, assertTenant, type KeyStore } from './keystore.js';
import {
  allowsSimulated,
  BROKER_TEES,
  evaluatePolicy,
  measurementOf,
  parseReleasePolicy,
  policyTee,
  type BrokerClaims,
  type PolicyDecision,
  type ReleasePolicy,
} from './policy.js';
import { bearerToken, denial, notFoundHandler, parseBody, problemErrorHandler } from './problem.js';
import {
  AttestRequestSchema,
  KEY_ID_RE,
  RELEASE_HPKE_INFO,
  ReleaseRequestSchema,
  ROUTES,
  releaseAad,
  TENANT_ID_RE,
  type AttestResponse,
  type ChallengeResponse,
  type ReleaseResponse,
} from './protocol.js';
import type { TokenService } from './tokens.js';
import { brokerLimits, enforceIdentityLimit } from './limits.js';
import { brokerMetricsPlugin, type BrokerMetrics } from './metrics.js';
import { leaseRoutes, type LeaseRoutesOptions } from './lease-routes.js';
import { DEFAULT_TENANT, LeaseService, type VerifiedAttestation } from './leases.js';
import { RevocationStore } from './revocations.js';
import { WorkloadCert } from './workload-mtls.js';

/**
 * Turns TEE evidence (SEV-SNP or Intel TDX) into verified claims. Must check the evidence's
 * signature chain to a trusted root, and that its report_data equals `expectedReportData`;
 * throws a `CirError` of category 'verification' or 'bad-input' otherwise (or
 * `ERR_KMS_TEE_NOT_CONFIGURED` for a TEE it was not set up for). When the evidence names
 * its TEE (`tee`), the claims must be of that TEE.
 */
export interface EvidenceVerifier {
  verify(evidence: unknown, opts: { now: Date; expectedReportData: Uint8Array }): Promise<BrokerClaims>;
}

export interface BrokerDeps {
  /** The one root logger. */
  readonly logger: Logger;
  readonly verifier: EvidenceVerifier;
  readonly keyStore: KeyStore;
  readonly tokens: TokenService;
  /** Admin bearer token; undefined disables the admin API. See `loadAdminToken`. */
  readonly adminToken: string | undefined;
  /** Clock; defaults to the system clock. */
  readonly now?: () => Date;
  /** Environment for NODE_ENV; defaults to `process.env`. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** TLS certificate and key (PEM), already read by main.ts; plain HTTP without. */
  readonly https?: { readonly cert: Buffer; readonly key: Buffer; readonly clientCa?: Buffer };
  /** Scoped admin identities (identities.ts); without them only the bootstrap token (if any) reaches the admin API. */
  readonly identities?: FileIdentityStore;
  /** The audit trail; every challenge, attestation, release, denial and admin action goes to it. */
  readonly audit?: AuditSink;
  /** Prometheus metrics (metrics.ts); none recorded without. */
  readonly metrics?: BrokerMetrics;
  /** Kill switches (revocations.ts); main.ts passes the persistent store. Absent: in memory only (logged). */
  readonly revocations?: RevocationStore;
  /** Authorization of the revocation admin routes; defaults to the legacy admin token (`legacyAdminAuthorize`). */
  readonly authorizeLeaseAdmin?: LeaseRoutesOptions['authorize'];
  /** HPKE sealing of released keys; main.ts passes a worker-thread sealer (common/hpke-sealer.ts). Default: `hpkeSeal` inline. */
  readonly hpkeSeal?: HpkeSealFn;
}

/**
 * Builds the broker's fastify app. Never listens: `main.ts` does that, tests use `inject()`.
 *
 * Routes: see `ROUTES` in protocol.ts. Every error is an RFC 7807 problem document.
 * On ready, refuses (ERR_KMS_CONFIG_INVALID) to serve in production when the attestation
 * policy or any stored key policy admits the simulated TEE.
 */
export function buildApp(config: BrokerConfig, deps: BrokerDeps): FastifyInstance {
  const now = deps.now ?? (() => new Date());
  // HPKE sealing: inline while this is the only release in flight (a worker round trip would
  // only add latency), on the worker (deps.hpkeSeal) once releases overlap, so that the
  // ~0.9 ms of WebCrypto JavaScript per seal leaves the event loop (common/hpke-sealer.ts).
  let releasesInFlight = 0;
  const offloadSeal = deps.hpkeSeal;
  const seal: HpkeSealFn = (...args) => (offloadSeal && releasesInFlight > 1 ? offloadSeal(...args) : hpkeSeal(...args));
  const production = isProduction(deps.env ?? process.env);
  const policyOpts = { production };
  const attestationPolicies = resolveAttestationPolicies(config, production);
  // SECURITY: checked again here (startBroker checks first) so an embedder cannot skip it.
  const adminEnabled = deps.adminToken !== undefined || deps.identities !== undefined;
  assertAdminTransport(config, { adminEnabled, tls: deps.https !== undefined, logger: deps.logger });
  // Workload client certificates (workload-mtls.ts). SECURITY: bind or require without a
  // listener that asks for certificates would silently bind nothing (or refuse everyone).
  const workloadCerts = config.tls?.workloadClientCerts ?? 'off';
  if (workloadCerts !== 'off' && deps.https?.clientCa === undefined) {
    throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: 'tls.workloadClientCerts: bind and require need TLS with clientCaFile' });
  }
  const audit: AuditSink = deps.audit ?? new MemoryAuditSink();
  const challenges = new ChallengeStore({
    ttlMs: config.challengeTtlSeconds * 1000,
    max: config.maxOutstandingChallenges,
    maxPerClient: config.maxOutstandingChallengesPerClient,
    now,
  });

  // leases: every release carries a lease; revocations deny releases and renewals.
  const leases = new LeaseService(deps.tokens, { ...config.leases, issuer: config.issuer });
  const revocations = deps.revocations ?? RevocationStore.memory({ now });
  if (!deps.revocations) deps.logger.warn('revocations are kept in memory only (no persistent store passed to buildApp)');

  const app = Fastify({
    loggerInstance: deps.logger,
    bodyLimit: config.bodyLimit,
    // SECURITY: ids come from us, never from a client header that could forge log lines.
    requestIdHeader: false,
    // Every route logs its own decision line (who, what, allow/deny, rules); fastify's
    // "incoming request" / "request completed" pair per request would triple the log volume
    // on the release path and add nothing an auditor needs. Errors are still logged.
    logController: new LogController({ disableRequestLogging: true }),
    return503OnClosing: true,
    ...(deps.https
      ? {
          https: {
            cert: deps.https.cert,
            key: deps.https.key,
            // mTLS for admin identities and workloads: request (never require) a client
            // certificate; the chain is checked against clientCa, and only a verified one
            // counts (admin.ts, workload-mtls.ts).
            ...(deps.https.clientCa ? { ca: deps.https.clientCa, requestCert: true, rejectUnauthorized: false } : {}),
          },
        }
      : {}),
  }) as unknown as FastifyInstance;
  // SECURITY: no TLS renegotiation. Node re-runs client-certificate verification on every
  // completed handshake but only ever sets `authorized = true`: a TLS 1.2 client that
  // renegotiated with a certificate that fails verification would keep `authorized` (only
  // `authorizationError` is set). Nothing the broker serves needs renegotiation, so it is
  // refused on every TLS connection (the socket is destroyed); TLS 1.3 has none.
  // workload-mtls.ts `clientCertOf` also treats `authorizationError` as untrusted.
  if (deps.https) app.server.on('secureConnection', (socket: TLSSocket) => socket.disableRenegotiation());

  // JSON only: fastify also parses text/plain by default.
  app.removeContentTypeParser('text/plain');
  app.setErrorHandler(problemErrorHandler);
  app.setNotFoundHandler(notFoundHandler);
  // Abuse limits and metrics (limits.ts, metrics.ts): not encapsulated, registered before
  // every route plugin so their hooks cover all routes.
  app.register(brokerLimits, { limits: config.limits, ...(deps.metrics ? { observer: deps.metrics } : {}) });
  if (deps.metrics) app.register(brokerMetricsPlugin, { metrics: deps.metrics });

  app.addHook('onReady', async () => {
    if (!production) return;
    const bad: string[] = [];
    for (const tenant of await deps.keyStore.listTenants()) {
      for (const k of await deps.keyStore.list(tenant)) {
        const policies = [k.policy, k.dryRunPolicy?.policy].filter((x) => x != null);
        if (policies.some((x) => allowsSimulated(x))) bad.push(`${tenant}/${k.keyId}`);
      }
    }
    if (bad.length > 0) {
      throw new KmsError('ERR_KMS_CONFIG_INVALID', {
        detail: `keys ${bad.join(', ')} have policies that allow the simulated TEE; refused when NODE_ENV=production`,
      });
    }
  });

  app.get(ROUTES.health, async () => ({ status: 'ok' }));

  app.get(ROUTES.jwks, async (_request, reply) => {
    reply.header('cache-control', 'public, max-age=300');
    return deps.tokens.jwks();
  });

  app.post(ROUTES.challenge, async (request): Promise<ChallengeResponse> => {
    // SECURITY: the route is unauthenticated; a per-client quota keeps one client from
    // filling the store and locking every other attester out.
    let c;
    try {
      WorkloadCert.of(request, workloadCerts);
      c = challenges.issue(challengeClientKey(request.ip));
    } catch (e) {
      await auditDenial(audit, request, 'challenge', e, {});
      throw e;
    }
    // The challenge entry is deferred: it starts no commit of its own and rides with the
    // next durable one (at the latest DEFER_MAX_MS later). A nonce grants nothing by itself,
    // and the release it may lead to waits for its own entry, which is committed after this
    // one, to be durable (fail closed there).
    void audit
      .append(
        {
          actor: { type: 'anonymous', ip: request.ip },
          action: 'challenge',
          decision: 'allow',
          detail: { nonceSha256: sha256(c.nonce).toString('hex').slice(0, 16) },
        },
        { defer: true },
      )
      .catch((err: unknown) => request.log.error({ err }, 'audit append failed for a challenge'));
    request.log.debug({ event: 'challenge', ip: request.ip, outstanding: challenges.size }, 'challenge issued');
    return { nonce: c.nonce.toString('base64url'), expiresAt: c.expiresAt.toISOString() };
  });

  app.post(ROUTES.attest, async (request): Promise<AttestResponse> => {
    const body = parseBody(AttestRequestSchema, request.body);
    const nonce = decodeFixed(body.nonce, 'nonce');
    const publicKey = decodeFixed(body.publicKey, 'publicKey');
    const tenant = body.tenant ?? DEFAULT_TENANT;
    const keyHash = sha256(publicKey).toString('base64url');
    // Who and what decided, filled in as the request progresses; logged once at the end.
    const who: Record<string, unknown> = {
      ip: request.ip,
      keyHash: keyHash.slice(0, 12),
    };
    const alog = request.log.child({ event: 'attest' });
    try {
      const cert = WorkloadCert.of(request, workloadCerts);
      if (cert.sha256Hex !== undefined) who.clientCertSha256 = cert.sha256Hex;
      // SECURITY: evidence is logged as digest and size, never the blob. JSON.stringify
      // recurses, so a body of 200k nested arrays (well inside bodyLimit) would throw a
      // RangeError here, or in a verifier; bound the depth first, without recursion.
      assertEvidenceDepth(body.evidence);
      const evidenceJson = Buffer.from(JSON.stringify(body.evidence), 'utf8');
      who.evidenceSha256 = sha256(evidenceJson).toString('hex');
      who.evidenceSize = evidenceJson.length;
      // Consumed first, whatever follows: a nonce buys exactly one attempt.
      challenges.consume(nonce);
      const at = now();
      const expected = kmsReportData(nonce, publicKey);
      const claims = await verifyEvidence(deps.verifier, body.evidence, at, expected, alog);
      who.tee = claims.tee;
      who.measurement = measurementOf(claims);
      who.simulated = claims.simulated;
      // SECURITY: re-check the binding on the claims, so a verifier that forgot
      // `expectedReportData` still cannot mint a token for someone else's nonce or key.
      const observed = typeof claims.reportData === 'string' ? fromHex(claims.reportData) : undefined;
      if (!observed || !constantTimeEqual(observed, expected)) {
        throw new KmsError('ERR_KMS_BINDING_MISMATCH', { detail: 'report_data' });
      }
      const decision = evaluateAttestation(claims, attestationPolicies, config, policyOpts);
      who.policyHash = decision.policyHash;
      if (!decision.allowed) throw policyDenied('ERR_KMS_ATTESTATION_DENIED', decision);
      const relaxations = [...new Set([...(claims.relaxations ?? []), ...decision.relaxations])];
      const issued = await deps.tokens.issue(
        {
          nonce: body.nonce,
          keyHash,
          tee: claims.tee,
          claims: claims as unknown as Record<string, unknown>,
          relaxations,
          policyId: attestationPolicyId(claims.tee),
          policyHash: decision.policyHash,
          tenant,
          // RFC 8705: bound to the connection's client certificate (tls.workloadClientCerts).
          ...(cert.bindTo ? { cnf: cert.bindTo } : {}),
          submods: {
            cpu: appraiseCpu({
              claims,
              relaxations,
              allowed: decision.allowed,
              policyId: appraisalPolicyId(attestationPolicyId(claims.tee), decision.policyHash),
            }),
          },
        },
        at,
      );
      // The token's audit entry is deferred to the next durable commit rather than
      // waiting for its own: a token releases nothing by itself, and the release it
      // authorizes is audited durably (with this token's jti, after this entry in the
      // chain) before any key leaves (fail closed there).
      void audit
        .append(
          {
            actor: { type: 'server', id: keyHash.slice(0, 16), tenant, ip: request.ip },
            action: 'attest',
            tenant,
            decision: 'allow',
            policyHash: decision.policyHash,
            evidenceSha256: who.evidenceSha256 as string,
            tee: claims.tee,
            measurement: measurementOf(claims),
            ...(cert.sha256Hex !== undefined ? { clientCertSha256: cert.sha256Hex } : {}),
            detail: { jti: issued.jti, relaxations: relaxations.join(','), simulated: claims.simulated === true },
          },
          { defer: true },
        )
        .catch((err: unknown) => request.log.error({ err }, 'audit append failed for an attestation'));
      request.decision = { action: 'attest', outcome: 'allow', tee: claims.tee };
      alog.info({ ...who, tenant, decision: 'allow', rule: 'attestation-policy', jti: issued.jti, relaxations, explanation: decision.explanation }, 'attestation token issued');
      return { token: issued.token, expiresAt: issued.expiresAt.toISOString(), claims: claims as unknown as Record<string, unknown> };
    } catch (e) {
      alog.warn({ ...who, ...denial(e) }, 'attestation denied');
      if (typeof who.tee === 'string') request.decision = { action: 'attest', outcome: 'deny', tee: who.tee };
      await auditDenial(audit, request, 'attest', e, {
        tenant,
        policyHash: typeof who.policyHash === 'string' ? who.policyHash : undefined,
        evidenceSha256: typeof who.evidenceSha256 === 'string' ? who.evidenceSha256 : undefined,
        tee: typeof who.tee === 'string' ? who.tee : undefined,
        measurement: typeof who.measurement === 'string' ? who.measurement : undefined,
        clientCertSha256: typeof who.clientCertSha256 === 'string' ? who.clientCertSha256 : undefined,
      });
      throw e;
    }
  });

  const releaseHandler = async (request: FastifyRequest<{ Params: { keyId: string; tenant?: string } }>): Promise<ReleaseResponse> => {
    releasesInFlight++;
    try {
      return await release(request);
    } finally {
      releasesInFlight--;
    }
  };
  const release = async (request: FastifyRequest<{ Params: { keyId: string; tenant?: string } }>): Promise<ReleaseResponse> => {
    const keyId = request.params.keyId;
    const tenant = request.params.tenant ?? DEFAULT_TENANT;
    const rlog = request.log.child({ event: 'release' });
    const who: Record<string, unknown> = { ip: request.ip, tenant: pathSafe(tenant), keyId: pathSafe(keyId) };
    let leaseId: string | undefined;
    try {
      const cert = WorkloadCert.of(request, workloadCerts);
      if (cert.sha256Hex !== undefined) who.clientCertSha256 = cert.sha256Hex;
      const bearer = bearerToken(request);
      assertTenant(tenant);
      assertKeyId(keyId);
      const body = parseBody(ReleaseRequestSchema, request.body);
      const publicKey = decodeFixed(body.publicKey, 'publicKey');
      const at = now();
      const token = await deps.tokens.verify(bearer, at);
      // The token is ours (signature checked), and its schema ties `claims.tee` to `tee`.
      const claims = token.claims as unknown as BrokerClaims;
      who.jti = token.jti;
      who.keyHash = token.keyHash.slice(0, 12);
      who.tee = claims.tee;
      who.measurement = measurementOf(claims);
      who.simulated = claims.simulated;
      // SECURITY: RFC 8705 section 3: a certificate-bound token only over its certificate.
      cert.check(token.cnf, 'token');
      // In mode off the thumbprint is recorded only now, once a binding was checked.
      if (cert.sha256Hex !== undefined) who.clientCertSha256 = cert.sha256Hex;
      (request as { principal?: string }).principal = `token:${token.keyHash.slice(0, 16)}`;
      // The per-identity rate limit of the release group, now that the caller is known.
      await enforceIdentityLimit(request);
      // SECURITY: the DEK goes only to the key the evidence bound; compare digests in constant time.
      const keyDigest = sha256(publicKey);
      const boundHash = fromBase64Url(token.keyHash);
      if (!boundHash || !constantTimeEqual(keyDigest, boundHash)) {
        throw new KmsError('ERR_KMS_KEY_BINDING_MISMATCH', { detail: 'publicKey' });
      }
      const keyHash = keyDigest.toString('base64url');
      // SECURITY: tenant isolation. A token attested for tenant A sees tenant B's keys as
      // absent: same code, same detail, as a key that does not exist.
      if (token.tenant !== tenant) throw new KmsError('ERR_KMS_KEY_NOT_FOUND', { detail: keyId });
      const key = await deps.keyStore.unwrap({ tenant, keyId }, body.version);
      try {
        who.version = key.version;
        const active = key.metadata.policy;
        if (active === null) throw new KmsError('ERR_KMS_NO_ACTIVE_POLICY', { detail: keyId });
        const decision = evaluatePolicy(claims, active, policyOpts);
        who.policyHash = decision.policyHash;
        const dryRun = key.metadata.dryRunPolicy;
        if (dryRun) {
          // Dry run: the candidate is evaluated and its verdict recorded, never enforced.
          const would = evaluatePolicy(claims, dryRun.policy, policyOpts);
          rlog.info(
            { ...who, dryRun: true, candidateHash: dryRun.hash, wouldAllow: would.allowed, failures: would.failures, enforced: decision.allowed },
            'dry-run policy evaluated',
          );
          await audit.append({
            actor: { type: 'server', id: token.keyHash.slice(0, 16), tenant, ip: request.ip },
            action: 'release.dry-run',
            tenant,
            target: { keyId, version: key.version },
            decision: would.allowed ? 'allow' : 'deny',
            policyHash: dryRun.hash,
            tee: claims.tee,
            measurement: measurementOf(claims),
            detail: { enforcedDecision: decision.allowed ? 'allow' : 'deny', failures: would.failures.length },
          });
        }
        if (!decision.allowed) throw policyDenied('ERR_KMS_POLICY_DENIED', decision);
        // leases: a kill switch on the key, its tenant or the attested measurement denies the release.
        const revoked = revocations.matches({ tenant, keyId, version: key.version, measurement: measurementOf(claims) });
        if (revoked) throw new KmsError('ERR_KMS_RELEASE_REVOKED', { detail: `revocation ${revoked.id} (${revoked.scope})` });
        // SECURITY: fail closed on the audit trail: no durable record, no key. The entry is
        // written while the DEK is sealed and signed (the fsyncs overlap the crypto), and the
        // response waits for both; a failure after the entry was written is audited as a
        // denial of the same lease id.
        leaseId = randomBytes(16).toString('base64url');
        who.lease = leaseId.slice(0, 8);
        const audited = auditOrRefuse(audit, {
          actor: { type: 'server', id: token.keyHash.slice(0, 16), tenant, ip: request.ip },
          action: 'release',
          tenant,
          target: { keyId, version: key.version, leaseId },
          decision: 'allow',
          policyHash: decision.policyHash,
          ...(key.metadata.policyVersion !== null ? { policyVersion: key.metadata.policyVersion } : {}),
          tee: claims.tee,
          measurement: measurementOf(claims),
          ...(cert.sha256Hex !== undefined ? { clientCertSha256: cert.sha256Hex } : {}),
          detail: { jti: token.jti, relaxations: decision.relaxations.join(',') },
        });
        audited.catch(() => undefined); // awaited below; never an unhandled rejection meanwhile
        // The lease is signed while the DEK is sealed. It is bound as the token is (checked
        // above: this connection's certificate), else to this connection's certificate when
        // the mode binds.
        const leaseCnf = token.cnf ?? cert.bindTo;
        const leased = leases.issue(
          {
            tenant,
            keyId,
            version: key.version,
            measurement: measurementOf(claims),
            keyHash,
            nonce: token.eat_nonce,
            ...(leaseCnf ? { cnf: leaseCnf } : {}),
          },
          at,
          leaseId,
        );
        leased.catch(() => undefined); // awaited below, as `audited` is
        const sealed = await seal(publicKey, key.dek, RELEASE_HPKE_INFO, releaseAad(keyId, key.version));
        const enc = Buffer.from(sealed.enc).toString('base64url');
        // SECURITY: HPKE base mode does not authenticate the sender; the signature does, so a
        // server that pins our JWKS cannot be handed a DEK (and a model) of someone else's choosing.
        const signature = await deps.tokens.signRelease(
          {
            keyId,
            version: key.version,
            suite: HPKE_SUITE_ID,
            enc,
            ciphertextSha256: sha256(sealed.ciphertext).toString('base64url'),
            keyHash,
          },
          at,
        );
        const [lease] = await Promise.all([leased, audited]);
        rlog.info({ ...who, decision: 'allow', rule: 'release-policy', relaxations: decision.relaxations, explanation: decision.explanation }, 'key released');
        request.decision = { action: 'release', outcome: 'allow', tee: claims.tee };
        return {
          keyId,
          version: key.version,
          suite: HPKE_SUITE_ID,
          enc,
          ciphertext: Buffer.from(sealed.ciphertext).toString('base64url'),
          signature,
          lease,
        };
      } finally {
        key.dek.fill(0);
      }
    } catch (e) {
      rlog.warn({ ...who, ...denial(e) }, 'release denied');
      if (typeof who.tee === 'string') request.decision = { action: 'release', outcome: 'deny', tee: who.tee };
      await auditDenial(audit, request, 'release', e, {
        tenant: typeof who.tenant === 'string' && TENANT_ID_RE.test(who.tenant) ? who.tenant : undefined,
        keyId: KEY_ID_RE.test(keyId) ? keyId : undefined,
        version: typeof who.version === 'number' ? who.version : undefined,
        leaseId,
        policyHash: typeof who.policyHash === 'string' ? who.policyHash : undefined,
        tee: typeof who.tee === 'string' ? who.tee : undefined,
        measurement: typeof who.measurement === 'string' ? who.measurement : undefined,
        clientCertSha256: typeof who.clientCertSha256 === 'string' ? who.clientCertSha256 : undefined,
      });
      throw e;
    }
  };
  app.post<{ Params: { keyId: string } }>('/v1/keys/:keyId/release', releaseHandler);
  app.post<{ Params: { tenant: string; keyId: string } }>('/v1/tenants/:tenant/keys/:keyId/release', releaseHandler);

  app.register(adminRoutes, { store: deps.keyStore, identities: deps.identities, adminToken: deps.adminToken, policy: policyOpts, audit });

  // leases: renew route and revocation admin routes (lease-routes.ts).
  app.register(leaseRoutes, {
    leases,
    revocations,
    now,
    verifyToken: async (bearer, at): Promise<VerifiedAttestation> => {
      const t = await deps.tokens.verify(bearer, at);
      return {
        claims: t['cir.claims'] as unknown as BrokerClaims,
        keyHash: t['cir.key-hash'],
        nonce: t.eat_nonce,
        tenant: t['cir.tenant'],
        jti: t.jti,
        ...(t.cnf ? { cnf: t.cnf } : {}),
      };
    },
    checkKey: async (tenant, keyId, version) => {
      const meta = await deps.keyStore.get({ tenant, keyId });
      const v = meta.versions.find((x) => x.version === version);
      if (!v) throw new KmsError('ERR_KMS_KEY_VERSION_NOT_FOUND', { detail: `${keyId} version ${version}` });
      if (meta.state !== 'enabled' || v.state !== 'enabled') throw new KmsError('ERR_KMS_KEY_DISABLED', { detail: `${keyId} version ${version}` });
      if (meta.policy === null) throw new KmsError('ERR_KMS_NO_ACTIVE_POLICY', { detail: keyId });
      return { policy: meta.policy };
    },
    evaluate: (claims, _tenant, _keyId, key) => evaluatePolicy(claims, key.policy as ReleasePolicy, policyOpts),
    authorize: deps.authorizeLeaseAdmin ?? identityAuthorize(deps.identities, deps.adminToken),
    audit,
    workloadClientCerts: workloadCerts,
  });

  return app;
}

/**
 * Default broker attestation policy of each TEE, used when `attestation.policy` is absent.
 * It checks only what every release needs anyway (the schemas' fail-closed defaults: no
 * debug, SEV-SNP VMPL 0 and committed firmware, TDX TCB status UpToDate) and leaves
 * measurements to the per-key release policies. SEV-SNP keeps its historical form (no
 * `tee`), so its hash, which tokens carry, does not change.
 */
export function defaultAttestationPolicy(tee: (typeof BROKER_TEES)[number], config: BrokerConfig): unknown {
  return tee === 'tdx' ? { tee: 'tdx', anyMrtd: true } : { anyMeasurement: true, allowSimulated: config.attestation.allowSimulated };
}

/** The attestation policy of each TEE; see `attestation.policy` in config.ts. */
type AttestationPolicies = readonly ReleasePolicy[];

function resolveAttestationPolicies(config: BrokerConfig, production: boolean): AttestationPolicies {
  const configured = config.attestation.policy;
  const inputs: readonly unknown[] =
    configured === undefined ? BROKER_TEES.map((tee) => defaultAttestationPolicy(tee, config)) : [configured].flat();
  return Object.freeze(
    inputs.map((input) => {
      try {
        return deepFreeze(parseReleasePolicy(input, { production }));
      } catch (cause) {
        throw new KmsError('ERR_KMS_CONFIG_INVALID', { detail: `attestation.policy: ${(cause as KmsError).detail ?? 'invalid'}`, cause });
      }
    }),
  );
}

function evaluateAttestation(
  claims: BrokerClaims,
  policies: AttestationPolicies,
  config: BrokerConfig,
  opts: { production: boolean },
): PolicyDecision {
  // SECURITY: no policy for this TEE -> the first configured one, which fails on `tee`:
  // configuring a policy for one TEE never leaves the other unchecked.
  const policy = policies.find((p) => policyTee(p) === claims.tee) ?? policies[0];
  if (policy === undefined) throw new KmsError('ERR_KMS_INTERNAL', { detail: 'no attestation policy' });
  const d = evaluatePolicy(claims, policy, opts);
  // SECURITY: `attestation.allowSimulated` is the trust switch; a policy alone cannot turn it on.
  if (claims.simulated && !config.attestation.allowSimulated && !d.failures.some((f) => f.field === 'simulated')) {
    return Object.freeze({
      ...d,
      allowed: false,
      failures: Object.freeze([...d.failures, { field: 'simulated', expected: 'false (attestation.allowSimulated is off)', observed: 'true' }]),
      explanation: Object.freeze([
        ...d.explanation,
        { path: 'broker.simulated', claim: 'simulated', op: 'broker', expected: 'false (attestation.allowSimulated is off)', observed: 'true', pass: false },
      ]),
    });
  }
  return d;
}

/** Deepest evidence nesting accepted. SEV-SNP evidence is `{report, certs: {...}}`: depth 2; TDX `{tee, quote}`: depth 1. */
export const MAX_EVIDENCE_DEPTH = 32;

/**
 * Throws `ERR_KMS_EVIDENCE_MALFORMED` when JSON `value` nests arrays/objects deeper than
 * `MAX_EVIDENCE_DEPTH`. Iterative, so hostile depth cannot overflow the stack here; stops
 * at the first level too deep, so the cost is bounded by the (already size-limited) body.
 */
function assertEvidenceDepth(value: unknown): void {
  const stack: [unknown, number][] = [[value, 1]];
  while (stack.length > 0) {
    const [v, depth] = stack.pop()!;
    if (typeof v !== 'object' || v === null) continue;
    if (depth > MAX_EVIDENCE_DEPTH) {
      throw new KmsError('ERR_KMS_EVIDENCE_MALFORMED', { detail: `evidence nests deeper than ${MAX_EVIDENCE_DEPTH}` });
    }
    for (const child of Array.isArray(v) ? v : Object.values(v)) stack.push([child, depth + 1]);
  }
}

/**
 * Runs the injected verifier, turning its errors into broker codes. A `CirError` maps by
 * category; anything else (a TypeError or RangeError on hostile input, say) is
 * `ERR_KMS_EVIDENCE_REJECTED`: the evidence was not verified, and the caller gets a typed
 * 403 rather than a 500.
 */
async function verifyEvidence(
  verifier: EvidenceVerifier,
  evidence: unknown,
  now: Date,
  expected: Uint8Array,
  log: Pick<FastifyBaseLogger, 'warn'>,
): Promise<BrokerClaims> {
  let claims: BrokerClaims;
  try {
    claims = await verifier.verify(evidence, { now, expectedReportData: expected });
  } catch (e) {
    // Already the broker's answer (the default verifier's envelope and TEE checks).
    if (isKmsError(e) && (e.code === 'ERR_KMS_EVIDENCE_MALFORMED' || e.code === 'ERR_KMS_TEE_NOT_CONFIGURED')) throw e;
    if (!isCirError(e)) {
      // SECURITY: fail closed. Log the error's name only: its message and stack may quote
      // the hostile evidence or internals; neither is attached as `cause`, so no later
      // error log can print them.
      log.warn({ verifierError: errorName(e) }, 'evidence verifier threw an untyped error');
      throw new KmsError('ERR_KMS_EVIDENCE_REJECTED', { detail: 'verifier error' });
    }
    const detail = e.detail ? `${e.code}: ${e.detail}` : e.code;
    switch (e.category) {
      case 'bad-input':
        throw new KmsError('ERR_KMS_EVIDENCE_MALFORMED', { detail, cause: e });
      case 'verification':
        throw new KmsError('ERR_KMS_EVIDENCE_REJECTED', { detail, cause: e });
      case 'policy':
        throw new KmsError('ERR_KMS_ATTESTATION_DENIED', { detail, cause: e, ...(e.details?.failures ? { details: { failures: e.details.failures } } : {}) });
      case 'unavailable':
        throw new KmsError('ERR_KMS_VERIFIER_UNAVAILABLE', { detail, cause: e });
      default:
        throw e;
    }
  }
  if (typeof claims !== 'object' || claims === null || !(BROKER_TEES as readonly unknown[]).includes(claims.tee)) {
    throw new KmsError('ERR_KMS_INTERNAL', { detail: 'verifier returned no SEV-SNP or TDX claims' });
  }
  // SECURITY: evidence that names its TEE must yield claims of that TEE, so a verifier
  // mix-up cannot have one TEE's evidence judged under the other's rules.
  const named = (evidence as { tee?: unknown }).tee;
  if (typeof named === 'string' && named !== claims.tee) {
    throw new KmsError('ERR_KMS_INTERNAL', { detail: 'verifier returned claims of another TEE' });
  }
  return claims;
}

function policyDenied(code: 'ERR_KMS_ATTESTATION_DENIED' | 'ERR_KMS_POLICY_DENIED', d: PolicyDecision): KmsError {
  return new KmsError(code, {
    detail: d.failures.map((f) => f.field).join(', '),
    details: { failures: d.failures, explanation: d.explanation },
  });
}

/** A constructor-style name of a thrown value, safe for a log line. */
function errorName(e: unknown): string {
  const name = e instanceof Error ? e.name : typeof e;
  return typeof name === 'string' && /^[A-Za-z][A-Za-z0-9_]{0,63}$/.test(name) ? name : 'unknown';
}

/** A key id fit for a log line even when it failed validation. */
function pathSafe(s: string): string {
  return s.length <= 128 && /^[\x21-\x7e]*$/.test(s) ? s : '(invalid)';
}

function decodeFixed(b64: string, field: string): Buffer {
  const b = fromBase64Url(b64);
  if (!b) throw new KmsError('ERR_KMS_BAD_REQUEST', { detail: `${field}: must be base64url` });
  return b;
}


/**
 * `authorize` of the revocation admin routes over the broker's admin identities (and the
 * bootstrap token): `operator` needs `revocation.write`, `auditor` needs `revocation.read`.
 * 404 when no admin authentication is configured at all, 401 when none matches, 403 for a
 * missing role.
 */
function identityAuthorize(identities: FileIdentityStore | undefined, adminToken: string | undefined): LeaseRoutesOptions['authorize'] {
  const bootstrap = adminToken === undefined ? undefined : sha256(Buffer.from(adminToken, 'utf8'));
  return async (request, role) => {
    if (identities === undefined && bootstrap === undefined) throw new KmsError('ERR_KMS_ADMIN_DISABLED');
    const p = await authenticateAdmin(request, identities, bootstrap);
    if (!p) throw new KmsError('ERR_KMS_ADMIN_UNAUTHORIZED');
    (request as { principal?: string }).principal = `admin:${p.id}`;
    if (!hasPermission(p, role === 'operator' ? 'revocation.write' : 'revocation.read')) {
      throw new KmsError('ERR_KMS_ADMIN_FORBIDDEN', { detail: `needs role ${role}` });
    }
    return { id: p.id, tenant: p.tenant };
  };
}

/** Appends to the audit trail; a failure refuses the request (`ERR_KMS_AUDIT_UNAVAILABLE`). */
async function auditOrRefuse(audit: AuditSink, event: AuditEventInput): Promise<void> {
  try {
    await audit.append(event);
  } catch (cause) {
    throw new KmsError('ERR_KMS_AUDIT_UNAVAILABLE', { cause });
  }
}

/**
 * Records a denial with its error code. Never throws: the caller is already answering with
 * the denial's own error, and a failing audit append is logged instead.
 */
async function auditDenial(
  audit: AuditSink,
  request: FastifyRequest,
  action: string,
  error: unknown,
  facts: { tenant?: string | undefined; keyId?: string | undefined; version?: number | undefined; leaseId?: string | undefined; policyHash?: string | undefined; evidenceSha256?: string | undefined; tee?: string | undefined; measurement?: string | undefined; clientCertSha256?: string | undefined },
): Promise<void> {
  const target =
    facts.keyId === undefined
      ? undefined
      : { keyId: facts.keyId, ...(facts.version !== undefined ? { version: facts.version } : {}), ...(facts.leaseId !== undefined ? { leaseId: facts.leaseId } : {}) };
  const event: AuditEventInput = {
    actor: { type: action === 'challenge' ? 'anonymous' : 'server', ip: request.ip, ...(facts.tenant ? { tenant: facts.tenant } : {}) },
    action,
    ...(facts.tenant ? { tenant: facts.tenant } : {}),
    ...(target ? { target } : {}),
    decision: 'deny',
    reason: isKmsError(error) ? error.code : 'ERR_KMS_INTERNAL',
    ...(facts.policyHash ? { policyHash: facts.policyHash } : {}),
    ...(facts.evidenceSha256 ? { evidenceSha256: facts.evidenceSha256 } : {}),
    ...(facts.tee ? { tee: facts.tee } : {}),
    ...(facts.measurement ? { measurement: facts.measurement } : {}),
    ...(facts.clientCertSha256 ? { clientCertSha256: facts.clientCertSha256 } : {}),
  };
  await audit.append(event).catch((e: unknown) => request.log.error({ err: e, action }, 'audit append failed for a denial'));
}
