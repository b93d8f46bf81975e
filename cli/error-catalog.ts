/**
 * Every error code cir can produce, with its category and how it crosses each edge. The
 * README's error table is generated from this (`cir errors --markdown`) and a test keeps
 * the two in step.
 */
import { ATTESTATION_CODES } from '../attestation/codes.js';
import { KMS_CODES, HTTP_STATUS_OVERRIDES } from '../kms-broker/codes.js';
import { SERVER_CODES } from '../server/codes.js';
import { CLIENT_CODES } from '../client/codes.js';
import { CONFIG_CODES } from '../common/config.js';
import { SEAL_CODES } from '../common/seal-codes.js';
import { exitCodeFor, grpcStatusFor, httpStatusFor, GrpcStatus, type ErrorCodeInfo } from '../common/errors.js';

export interface CatalogEntry {
  readonly code: string;
  readonly area: string;
  readonly info: ErrorCodeInfo;
  readonly http: number;
  readonly grpc: string;
  readonly exit: number;
}

const GRPC_NAMES = Object.fromEntries(Object.entries(GrpcStatus).map(([k, v]) => [v, k])) as Record<number, string>;

const AREAS: readonly [string, Readonly<Record<string, ErrorCodeInfo>>][] = [
  ['attestation', ATTESTATION_CODES],
  ['kms-broker', KMS_CODES],
  ['server', SERVER_CODES],
  ['seal', SEAL_CODES],
  ['client', CLIENT_CODES],
  ['config', CONFIG_CODES],
];

export function errorCatalog(): CatalogEntry[] {
  const overrides = HTTP_STATUS_OVERRIDES as Readonly<Record<string, number>>;
  return AREAS.flatMap(([area, table]) =>
    Object.entries(table).map(([code, info]) => ({
      code,
      area,
      info,
      http: overrides[code] ?? httpStatusFor(info.category),
      grpc: GRPC_NAMES[grpcStatusFor(info.category)] ?? 'UNKNOWN',
      exit: exitCodeFor(info.category),
    })),
  );
}

export function errorTableMarkdown(): string {
  const rows = errorCatalog().map(
    (e) => `| \`${e.code}\` | ${e.info.category} | ${e.http} | ${e.grpc} | ${e.exit} | ${e.info.message.replace(/\|/g, '\\|')} |`,
  );
  return ['| code | category | HTTP | gRPC | CLI exit | meaning |', '|---|---|---|---|---|---|', ...rows].join('\n');
}
