/**
 * Runtime loading of cir's .proto files (proto/ at the repository root) with
 * @grpc/proto-loader. Servers and clients both load through here so that they agree on
 * the loader options, which change the JavaScript shape of messages:
 *
 * - `keepCase: true`: fields keep their proto names (`model_name`, `raw_input_contents`).
 * - `longs: String`: int64/uint64 fields (shapes, `int64_contents`, `uint64_contents`,
 *   `int64_param`) arrive as decimal strings, so no 64-bit value ever loses precision.
 *   Senders may pass numbers, strings or bigints' decimal strings.
 * - `defaults: true`: absent scalars/repeated fields read as their zero values; absent
 *   sub-messages read as `null`.
 * - `oneofs: true`: `InferParameter.parameter_choice` names the field that is set.
 * - `bytes` fields are Buffers.
 *
 * A client builds stubs with:
 *   const { GRPCInferenceService, AttestationService } = loadServiceClients();
 *   const stub = new GRPCInferenceService('127.0.0.1:8443', credentials);
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_LOADER_OPTIONS: protoLoader.Options = Object.freeze({
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});

export const INFERENCE_SERVICE_NAME = 'inference.GRPCInferenceService';
export const ATTESTATION_SERVICE_NAME = 'cir.attestation.v1.AttestationService';

function findProtoDir(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // server/proto.ts -> ../proto ; dist/server/proto.js -> ../../proto
  const candidates = [path.resolve(here, '..', 'proto'), path.resolve(here, '..', '..', 'proto')];
  for (const dir of candidates) {
    if (existsSync(path.join(dir, 'inference.proto'))) return dir;
  }
  throw new Error(`cir proto directory not found (looked in ${candidates.join(', ')})`);
}

let protoDir: string | undefined;

/** Absolute path of the repository's proto/ directory. */
export function getProtoDir(): string {
  protoDir ??= findProtoDir();
  return protoDir;
}

export interface CirProtoDefinitions {
  readonly inference: grpc.ServiceDefinition;
  readonly attestation: grpc.ServiceDefinition;
}

let cachedPackage: protoLoader.PackageDefinition | undefined;

/** The proto-loader package definition of both protos (cached). */
export function loadPackageDefinition(): protoLoader.PackageDefinition {
  if (!cachedPackage) {
    const dir = getProtoDir();
    cachedPackage = protoLoader.loadSync(['inference.proto', 'attestation.proto'], {
      ...PROTO_LOADER_OPTIONS,
      includeDirs: [dir],
    });
  }
  return cachedPackage;
}

function serviceDefinition(name: string): grpc.ServiceDefinition {
  const def = loadPackageDefinition()[name];
  if (!def || !('ModelInfer' in def || 'GetEvidence' in def)) throw new Error(`service ${name} missing from protos`);
  return def as unknown as grpc.ServiceDefinition;
}

/** Service definitions for `grpc.Server.addService`. */
export function loadServiceDefinitions(): CirProtoDefinitions {
  return {
    inference: serviceDefinition(INFERENCE_SERVICE_NAME),
    attestation: serviceDefinition(ATTESTATION_SERVICE_NAME),
  };
}

export interface CirServiceClients {
  readonly GRPCInferenceService: grpc.ServiceClientConstructor;
  readonly AttestationService: grpc.ServiceClientConstructor;
}

/** Client constructors (`new GRPCInferenceService(address, credentials, options)`). */
export function loadServiceClients(): CirServiceClients {
  const root = grpc.loadPackageDefinition(loadPackageDefinition()) as unknown as {
    inference: { GRPCInferenceService: grpc.ServiceClientConstructor };
    cir: { attestation: { v1: { AttestationService: grpc.ServiceClientConstructor } } };
  };
  return {
    GRPCInferenceService: root.inference.GRPCInferenceService,
    AttestationService: root.cir.attestation.v1.AttestationService,
  };
}
