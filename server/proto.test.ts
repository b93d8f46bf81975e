import { describe, expect, it } from 'vitest';
import { loadPackageDefinition, loadServiceDefinitions } from './proto.js';

/**
 * Wire-compatibility lock: field names, numbers and types of the Open Inference Protocol
 * v2 (KServe / Triton grpc_service.proto) and of cir's attestation service. A change here
 * breaks every deployed client.
 */
const EXPECTED: Record<string, [string, number, string, 'o' | 'r'][]> = {
  'inference.ServerLiveResponse': [['live', 1, 'BOOL', 'o']],
  'inference.ServerReadyResponse': [['ready', 1, 'BOOL', 'o']],
  'inference.ModelReadyRequest': [['name', 1, 'STRING', 'o'], ['version', 2, 'STRING', 'o']],
  'inference.ModelReadyResponse': [['ready', 1, 'BOOL', 'o']],
  'inference.ServerMetadataResponse': [['name', 1, 'STRING', 'o'], ['version', 2, 'STRING', 'o'], ['extensions', 3, 'STRING', 'r']],
  'inference.ModelMetadataRequest': [['name', 1, 'STRING', 'o'], ['version', 2, 'STRING', 'o']],
  'inference.ModelMetadataResponse': [
    ['name', 1, 'STRING', 'o'],
    ['versions', 2, 'STRING', 'r'],
    ['platform', 3, 'STRING', 'o'],
    ['inputs', 4, 'MESSAGE', 'r'],
    ['outputs', 5, 'MESSAGE', 'r'],
  ],
  'inference.ModelMetadataResponse.TensorMetadata': [['name', 1, 'STRING', 'o'], ['datatype', 2, 'STRING', 'o'], ['shape', 3, 'INT64', 'r']],
  'inference.InferParameter': [
    ['bool_param', 1, 'BOOL', 'o'],
    ['int64_param', 2, 'INT64', 'o'],
    ['string_param', 3, 'STRING', 'o'],
    ['double_param', 4, 'DOUBLE', 'o'],
    ['uint64_param', 5, 'UINT64', 'o'],
  ],
  'inference.InferTensorContents': [
    ['bool_contents', 1, 'BOOL', 'r'],
    ['int_contents', 2, 'INT32', 'r'],
    ['int64_contents', 3, 'INT64', 'r'],
    ['uint_contents', 4, 'UINT32', 'r'],
    ['uint64_contents', 5, 'UINT64', 'r'],
    ['fp32_contents', 6, 'FLOAT', 'r'],
    ['fp64_contents', 7, 'DOUBLE', 'r'],
    ['bytes_contents', 8, 'BYTES', 'r'],
  ],
  'inference.ModelInferRequest': [
    ['model_name', 1, 'STRING', 'o'],
    ['model_version', 2, 'STRING', 'o'],
    ['id', 3, 'STRING', 'o'],
    ['parameters', 4, 'MESSAGE', 'r'],
    ['inputs', 5, 'MESSAGE', 'r'],
    ['outputs', 6, 'MESSAGE', 'r'],
    ['raw_input_contents', 7, 'BYTES', 'r'],
  ],
  'inference.ModelInferRequest.InferInputTensor': [
    ['name', 1, 'STRING', 'o'],
    ['datatype', 2, 'STRING', 'o'],
    ['shape', 3, 'INT64', 'r'],
    ['parameters', 4, 'MESSAGE', 'r'],
    ['contents', 5, 'MESSAGE', 'o'],
  ],
  'inference.ModelInferRequest.InferRequestedOutputTensor': [['name', 1, 'STRING', 'o'], ['parameters', 2, 'MESSAGE', 'r']],
  'inference.ModelInferResponse': [
    ['model_name', 1, 'STRING', 'o'],
    ['model_version', 2, 'STRING', 'o'],
    ['id', 3, 'STRING', 'o'],
    ['parameters', 4, 'MESSAGE', 'r'],
    ['outputs', 5, 'MESSAGE', 'r'],
    ['raw_output_contents', 6, 'BYTES', 'r'],
  ],
  'inference.ModelInferResponse.InferOutputTensor': [
    ['name', 1, 'STRING', 'o'],
    ['datatype', 2, 'STRING', 'o'],
    ['shape', 3, 'INT64', 'r'],
    ['parameters', 4, 'MESSAGE', 'r'],
    ['contents', 5, 'MESSAGE', 'o'],
  ],
  'cir.attestation.v1.GetEvidenceRequest': [['client_nonce', 1, 'BYTES', 'o']],
  'cir.attestation.v1.GetEvidenceResponse': [
    ['tee', 1, 'STRING', 'o'],
    ['evidence', 2, 'BYTES', 'o'],
    ['tls_spki_sha256', 3, 'BYTES', 'o'],
    ['hpke_public_key', 4, 'BYTES', 'o'],
    ['hpke_suite', 5, 'STRING', 'o'],
    ['tls_key_origin', 6, 'STRING', 'o'],
  ],
};

interface FieldDesc {
  name: string;
  number: number;
  type: string;
  label: string;
}
interface MessageDesc {
  name: string;
  field: FieldDesc[];
  nestedType: MessageDesc[];
}

/** Top-level messages are package entries; nested ones hang off their parent's descriptor. */
function descriptor(pkg: ReturnType<typeof loadPackageDefinition>, full: string): MessageDesc | undefined {
  const parts = full.split('.');
  for (let i = parts.length; i > 0; i--) {
    const top = pkg[parts.slice(0, i).join('.')] as unknown as { type?: MessageDesc } | undefined;
    if (!top?.type) continue;
    let d: MessageDesc | undefined = top.type;
    for (const n of parts.slice(i)) d = d?.nestedType.find((x) => x.name === n);
    return d;
  }
  return undefined;
}

describe('protos', () => {
  const pkg = loadPackageDefinition();
  for (const [msg, fields] of Object.entries(EXPECTED)) {
    it(`${msg} field numbers and types`, () => {
      const def = descriptor(pkg, msg);
      expect(def, msg).toBeDefined();
      const got = def!.field.map((f) => [f.name, f.number, f.type.replace('TYPE_', ''), f.label === 'LABEL_REPEATED' ? 'r' : 'o']);
      expect(got).toEqual(fields);
    });
  }

  it('services have the expected method paths', () => {
    const d = loadServiceDefinitions();
    expect(Object.values(d.inference).map((m) => m.path)).toEqual([
      '/inference.GRPCInferenceService/ServerLive',
      '/inference.GRPCInferenceService/ServerReady',
      '/inference.GRPCInferenceService/ModelReady',
      '/inference.GRPCInferenceService/ServerMetadata',
      '/inference.GRPCInferenceService/ModelMetadata',
      '/inference.GRPCInferenceService/ModelInfer',
    ]);
    expect(Object.values(d.attestation).map((m) => m.path)).toEqual(['/cir.attestation.v1.AttestationService/GetEvidence']);
  });
});
