/**
 * Public surface of the key broker. Internals (secret-file helpers, route handlers) are not
 * exported.
 */
export { buildApp, defaultAttestationPolicy, MAX_EVIDENCE_DEPTH, type BrokerDeps, type EvidenceVerifier } from './app.js';
export { startBroker, type RunningBroker, type StartBrokerOptions } from './main.js';
export {
  BrokerConfigSchema,
  loadBrokerConfig,
  isProduction,
  masterKeyPath,
  keysDir,
  signingKeyPath,
  jwksPath,
  isLoopbackHost,
  assertAdminTransport,
  type BrokerConfig,
  type BrokerConfigInput,
  type LoadConfigOptions,
} from './config.js';
export { KMS_CODES, KmsError, isKmsError, type KmsCode } from './codes.js';
export { ChallengeStore, challengeClientKey, type Challenge, type ChallengeStoreOptions } from './challenges.js';
export {
  FileKeyStore,
  openKeyStore,
  loadMasterKey,
  assertKeyId,
  DEK_LENGTH,
  type KeyStore,
  type KeyMetadata,
  type KeyVersionInfo,
  type KeyVersionState,
  type UnwrappedKey,
  type FileKeyStoreOptions,
  type OpenKeyStoreOptions,
  type MasterKeySource,
} from './keystore.js';
export {
  createKey,
  listKeys,
  showKey,
  setKeyPolicy,
  generateDek,
  loadAdminToken,
  type CreateKeyInput,
} from './admin.js';
export {
  parseReleasePolicy,
  safeParseReleasePolicy,
  ReleasePolicySchema,
  evaluatePolicy,
  policyHash,
  policyTee,
  policyRelaxations,
  canonicalJson,
  BROKER_TEES,
  type ReleasePolicy,
  type SnpReleasePolicy,
  type TdxReleasePolicy,
  type BrokerClaims,
  type PolicyDecision,
  type PolicyOptions,
} from './policy.js';
export { TokenService, type TokenServiceOptions, type IssuedToken, type ReleaseSignedBody } from './tokens.js';
export { createDefaultVerifier, TdxEvidenceSchema, MAX_TDX_QUOTE_BYTES, type TdxCollateralLayout } from './verifier.js';
export {
  ROUTES,
  KEY_ID_RE,
  KeyIdSchema,
  ChallengeResponseSchema,
  AttestRequestSchema,
  AttestResponseSchema,
  ReleaseRequestSchema,
  ReleaseResponseSchema,
  RELEASE_JWS_TYPE,
  ReleaseSignedPayloadSchema,
  BROKER_JWKS_FILE,
  RELEASE_HPKE_INFO,
  releaseAad,
  TOKEN_AUDIENCE,
  ProblemSchema,
  PROBLEM_CONTENT_TYPE,
  problemType,
  ATTESTATION_TOKEN_TYPE,
  AttestationTokenPayloadSchema,
  AdminCreateKeyRequestSchema,
  AdminSetPolicyRequestSchema,
  type ChallengeResponse,
  type AttestRequest,
  type AttestResponse,
  type ReleaseRequest,
  type ReleaseResponse,
  type ReleaseSignedPayload,
  type Problem,
  type AttestationTokenPayload,
  type AdminCreateKeyRequest,
  type AdminSetPolicyRequest,
} from './protocol.js';
