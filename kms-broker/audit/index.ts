/**
 * The key broker's tamper-evident audit log (see kms-broker/README.md, "Audit log").
 * Internals (the line reader, tail recovery) are not exported.
 */
export {
  AUDIT_ACTOR_TYPES,
  AUDIT_DECISIONS,
  AUDIT_FORMAT_VERSION,
  GENESIS_HASH,
  HEAD_PURPOSE,
  MAX_LINE_BYTES,
  MAX_EVENT_BYTES,
  MAX_POLICY_DOCUMENT_BYTES,
  AuditEventSchema,
  AuditEntrySchema,
  AuditHeadSchema,
  checkLine,
  entryHash,
  headPayload,
  isPolicyChangeAction,
  parseAuditEvent,
  type AuditEvent,
  type AuditEntry,
  type AuditHead,
  type LineCheck,
  type LineFault,
} from './entry.js';
export {
  AuditLog,
  AUDIT_LOG_FILE,
  AUDIT_HEAD_FILE,
  MAX_BATCH,
  type AuditHeadSigner,
  type AuditLogOptions,
  type AppendResult,
  type AuditRecovery,
} from './log.js';
export {
  verifyAuditLog,
  resolveAuditDirs,
  readJwksFile,
  defaultJwksFile,
  JWKS_ARCHIVE_FILE,
  JWKS_FILE,
  type AuditFault,
  type AuditVerifyOk,
  type AuditVerifyFailure,
  type AuditVerifyResult,
  type VerifyAuditOptions,
} from './verify.js';
export {
  exportAudit,
  verifyAuditExport,
  EXPORT_FORMAT,
  EXPORT_GENERATOR,
  EXPORT_FILES,
  type ExportAuditOptions,
  type ExportManifest,
  type ExportFault,
  type ExportVerifyResult,
  type PolicyRecord,
} from './export.js';
