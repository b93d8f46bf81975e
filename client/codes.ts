import { errorFactory, type CodeTable } from '../common/errors.js';

export type ClientErrorCode =
  | 'ERR_CLI_BAD_TARGET'
  | 'ERR_CLI_TLS_FETCH_FAILED'
  | 'ERR_CLI_RPC_FAILED'
  | 'ERR_CLI_TLS_BINDING_MISMATCH'
  | 'ERR_CLI_NOT_VERIFIED'
  | 'ERR_CLI_BAD_INPUT_FILE'
  | 'ERR_CLI_BAD_ARGUMENT'
  | 'ERR_CLI_SERVER_REJECTED_INPUT'
  | 'ERR_CLI_SERVER_MODEL_NOT_FOUND'
  | 'ERR_CLI_SERVER_OVERLOADED'
  | 'ERR_CLI_FILE_UNREADABLE'
  | 'ERR_CLI_BAD_CERT_FILE'
  | 'ERR_CLI_UNKNOWN_EVIDENCE'
  | 'ERR_CLI_BENCH_SERVER_FAILED'
  | 'ERR_CLI_BENCH_PREFLIGHT';

export const CLIENT_CODES: CodeTable<ClientErrorCode> = {
  ERR_CLI_BAD_TARGET: { category: 'bad-input', message: 'server address must be HOST:PORT' },
  ERR_CLI_TLS_FETCH_FAILED: { category: 'unavailable', message: 'could not complete a TLS handshake with the server' },
  ERR_CLI_RPC_FAILED: { category: 'unavailable', message: 'gRPC call to the server failed' },
  ERR_CLI_TLS_BINDING_MISMATCH: {
    category: 'verification',
    message: 'the TLS key the server presented is not the key its evidence binds',
  },
  ERR_CLI_NOT_VERIFIED: {
    category: 'verification',
    message: 'server attestation did not verify; refusing to send anything to it',
  },
  ERR_CLI_BAD_INPUT_FILE: { category: 'bad-input', message: 'invalid inference input file' },
  ERR_CLI_BAD_ARGUMENT: { category: 'bad-input', message: 'invalid argument' },
  ERR_CLI_SERVER_REJECTED_INPUT: { category: 'bad-input', message: 'the server rejected the request as invalid' },
  ERR_CLI_SERVER_MODEL_NOT_FOUND: { category: 'not-found', message: 'the server has no such model' },
  ERR_CLI_SERVER_OVERLOADED: { category: 'overload', message: 'the server refused the request: a limit was reached' },
  ERR_CLI_FILE_UNREADABLE: { category: 'bad-input', message: 'a file named on the command line cannot be read' },
  ERR_CLI_BAD_CERT_FILE: {
    category: 'bad-input',
    message: 'a --cert file does not hold usable PEM or DER certificates',
  },
  ERR_CLI_UNKNOWN_EVIDENCE: {
    category: 'bad-input',
    message: 'evidence is not in a recognised format (a raw 1184-byte SEV-SNP report or an Intel TDX quote v4/v5)',
  },
  ERR_CLI_BENCH_SERVER_FAILED: { category: 'unavailable', message: 'a benchmark server process failed to start or to answer' },
  ERR_CLI_BENCH_PREFLIGHT: {
    category: 'bad-input',
    message: 'the trial request before the benchmark failed: the model rejects these inputs or cannot run',
  },
};

export const ClientError = errorFactory(CLIENT_CODES, 'ClientError');
export type ClientError = InstanceType<typeof ClientError>;
