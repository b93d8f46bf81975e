/**
 * TypeScript shapes of the messages in proto/inference.proto and proto/attestation.proto
 * as @grpc/proto-loader presents them with server/proto.ts's PROTO_LOADER_OPTIONS
 * (keepCase, longs as decimal strings, defaults, oneofs, bytes as Buffer).
 *
 * `*In` types are what a peer may send (anything protobufjs can encode: 64-bit values as
 * number or decimal string, optional fields); the plain types are what a receiver gets.
 * These are hand-written and must follow the .proto files; the round-trip tests in
 * server/*.test.ts go through real protobuf encoding and catch drift.
 */

export type Int64In = number | string;

// ---- inference.InferParameter ------------------------------------------------------

export interface InferParameter {
  bool_param?: boolean;
  int64_param?: string;
  string_param?: string;
  double_param?: number;
  uint64_param?: string;
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param';
}

export interface InferParameterIn {
  bool_param?: boolean;
  int64_param?: Int64In;
  string_param?: string;
  double_param?: number;
  uint64_param?: Int64In;
}

// ---- inference.InferTensorContents -------------------------------------------------

export interface InferTensorContents {
  bool_contents: boolean[];
  int_contents: number[];
  int64_contents: string[];
  uint_contents: number[];
  uint64_contents: string[];
  fp32_contents: number[];
  fp64_contents: number[];
  bytes_contents: Buffer[];
}

export interface InferTensorContentsIn {
  bool_contents?: boolean[];
  int_contents?: number[];
  int64_contents?: Int64In[];
  uint_contents?: number[];
  uint64_contents?: Int64In[];
  fp32_contents?: number[];
  fp64_contents?: number[];
  bytes_contents?: Uint8Array[];
}

// ---- health and metadata -----------------------------------------------------------

export type ServerLiveRequest = Record<string, never>;
export interface ServerLiveResponse {
  live: boolean;
}
export type ServerReadyRequest = Record<string, never>;
export interface ServerReadyResponse {
  ready: boolean;
}
export interface ModelReadyRequest {
  name: string;
  version: string;
}
export interface ModelReadyResponse {
  ready: boolean;
}
export type ServerMetadataRequest = Record<string, never>;
export interface ServerMetadataResponse {
  name: string;
  version: string;
  extensions: string[];
}
export interface ModelMetadataRequest {
  name: string;
  version: string;
}
export interface TensorMetadata {
  name: string;
  datatype: string;
  /** int64; -1 marks a variable-size dimension. Received as strings. */
  shape: Int64In[];
}
export interface ModelMetadataResponse {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

// ---- inference.ModelInferRequest ---------------------------------------------------

export interface InferInputTensor {
  name: string;
  datatype: string;
  shape: string[];
  parameters: Record<string, InferParameter>;
  contents: InferTensorContents | null;
}

export interface InferRequestedOutputTensor {
  name: string;
  parameters: Record<string, InferParameter>;
}

export interface ModelInferRequest {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, InferParameter>;
  inputs: InferInputTensor[];
  outputs: InferRequestedOutputTensor[];
  raw_input_contents: Buffer[];
}

export interface InferInputTensorIn {
  name: string;
  datatype: string;
  shape: Int64In[];
  parameters?: Record<string, InferParameterIn>;
  contents?: InferTensorContentsIn | null;
}

export interface ModelInferRequestIn {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Record<string, InferParameterIn>;
  inputs: InferInputTensorIn[];
  outputs?: { name: string; parameters?: Record<string, InferParameterIn> }[];
  raw_input_contents?: Uint8Array[];
}

// ---- inference.ModelInferResponse --------------------------------------------------

export interface InferOutputTensor {
  name: string;
  datatype: string;
  shape: Int64In[];
  parameters: Record<string, InferParameterIn>;
  contents: InferTensorContentsIn | null;
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Record<string, InferParameterIn>;
  outputs: InferOutputTensor[];
  raw_output_contents: Uint8Array[];
}

// ---- cir.attestation.v1 ------------------------------------------------------------

export interface GetEvidenceRequest {
  client_nonce: Buffer;
}

export interface GetEvidenceResponse {
  tee: string;
  evidence: Uint8Array;
  tls_spki_sha256: Uint8Array;
  hpke_public_key: Uint8Array;
  hpke_suite: string;
  /** "tee" or "imported". */
  tls_key_origin: string;
}
