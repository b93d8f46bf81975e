import { errorFactory, type CodeTable } from './errors.js';

export type SealErrorCode =
  | 'ERR_SEAL_BAD_MAGIC'
  | 'ERR_SEAL_UNSUPPORTED_VERSION'
  | 'ERR_SEAL_MALFORMED_HEADER'
  | 'ERR_SEAL_LENGTH_MISMATCH'
  | 'ERR_SEAL_AUTH_FAILED'
  | 'ERR_SEAL_DIGEST_MISMATCH'
  | 'ERR_SEAL_BAD_KEY'
  | 'ERR_SEAL_TOO_LARGE';

export const SEAL_CODES: CodeTable<SealErrorCode> = {
  ERR_SEAL_BAD_MAGIC: { category: 'bad-input', message: 'not a cir sealed model (bad magic)' },
  ERR_SEAL_UNSUPPORTED_VERSION: { category: 'bad-input', message: 'unsupported sealed model format version' },
  ERR_SEAL_MALFORMED_HEADER: { category: 'bad-input', message: 'malformed sealed model header' },
  ERR_SEAL_LENGTH_MISMATCH: {
    category: 'verification',
    message: 'sealed model length does not match its header (truncated or extended)',
  },
  ERR_SEAL_AUTH_FAILED: {
    category: 'verification',
    message: 'sealed model failed authentication (tampered, reordered, swapped or wrong key)',
  },
  ERR_SEAL_DIGEST_MISMATCH: { category: 'verification', message: 'decrypted model does not match the sealed SHA-256' },
  ERR_SEAL_BAD_KEY: { category: 'bad-input', message: 'data-encryption key must be 32 bytes' },
  ERR_SEAL_TOO_LARGE: { category: 'bad-input', message: 'model exceeds the sealed format size limit' },
};

export const SealError = errorFactory(SEAL_CODES, 'SealError');
export type SealError = InstanceType<typeof SealError>;
