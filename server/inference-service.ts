/**
 * GRPCInferenceService (Open Inference Protocol v2) over a ModelRegistry.
 *
 * ServerLive is always true while the process serves RPCs. ServerReady and ModelReady are
 * true only once boot has published every model. ModelMetadata and ModelInfer answer
 * UNAVAILABLE until then: nothing is served before attested key release has completed.
 * Request tensors are validated by tensors.ts before onnxruntime sees them.
 */
import type { Logger } from 'pino';
import { ServerError } from './codes.js';
import type {
  ModelInferResponse,
  ModelMetadataRequest,
  ModelMetadataResponse,
  ModelReadyRequest,
  ModelReadyResponse,
  ServerLiveResponse,
  ServerMetadataResponse,
  ServerReadyResponse,
} from './proto-types.js';
import type { LoadedModel, ModelRegistry } from './registry.js';
import { decodeInferRequest, encodeOutputs, metadataShape, type TensorSpec } from './tensors.js';

/** Triton's platform string for ONNX models. */
export const ONNX_PLATFORM = 'onnxruntime_onnx';

export interface InferenceServiceOptions {
  readonly registry: ModelRegistry;
  readonly serverName: string;
  readonly serverVersion: string;
  readonly maxTensorElements: number;
  readonly maxConcurrentInfers: number;
  readonly logger: Logger;
}

export interface InferenceHandlers {
  ServerLive(req: unknown): Promise<ServerLiveResponse>;
  ServerReady(req: unknown): Promise<ServerReadyResponse>;
  ModelReady(req: ModelReadyRequest): Promise<ModelReadyResponse>;
  ServerMetadata(req: unknown): Promise<ServerMetadataResponse>;
  ModelMetadata(req: ModelMetadataRequest): Promise<ModelMetadataResponse>;
  ModelInfer(req: unknown): Promise<ModelInferResponse>;
}

function str(x: unknown): string {
  return typeof x === 'string' ? x : '';
}

function lookup(registry: ModelRegistry, name: string, version: string): LoadedModel {
  if (!registry.ready) throw new ServerError('ERR_SRV_NOT_READY');
  const model = registry.get(name);
  const quoted = JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}...` : name);
  if (!model) throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoted}` });
  if (version !== '' && version !== model.version) {
    throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoted} has no such version` });
  }
  return model;
}

function tensorMetadata(s: TensorSpec): ModelMetadataResponse['inputs'][number] {
  return { name: s.name, datatype: s.datatype, shape: metadataShape(s) };
}

export function createInferenceHandlers(opts: InferenceServiceOptions): InferenceHandlers {
  const { registry } = opts;
  let inflight = 0;
  return {
    async ServerLive() {
      return { live: true };
    },
    async ServerReady() {
      return { ready: registry.ready };
    },
    async ModelReady(req) {
      const name = str(req?.name);
      const version = str(req?.version);
      if (!registry.isConfigured(name)) {
        throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${JSON.stringify(name.slice(0, 128))}` });
      }
      const model = registry.get(name);
      return { ready: model !== undefined && (version === '' || version === model.version) };
    },
    async ServerMetadata() {
      return { name: opts.serverName, version: opts.serverVersion, extensions: [] };
    },
    async ModelMetadata(req) {
      const model = lookup(registry, str(req?.name), str(req?.version));
      return {
        name: model.name,
        versions: [model.version],
        platform: ONNX_PLATFORM,
        inputs: model.signature.inputs.map(tensorMetadata),
        outputs: model.signature.outputs.map(tensorMetadata),
      };
    },
    async ModelInfer(req) {
      const r = (typeof req === 'object' && req !== null ? req : {}) as Record<string, unknown>;
      const model = lookup(registry, str(r['model_name']), str(r['model_version']));
      if (inflight >= opts.maxConcurrentInfers) throw new ServerError('ERR_SRV_OVERLOADED');
      inflight++;
      try {
        const decoded = decodeInferRequest(req, model.signature, { maxTensorElements: opts.maxTensorElements });
        const results = await model.session.run(decoded.feeds, [...decoded.outputs]);
        return {
          model_name: model.name,
          model_version: model.version,
          id: str(r['id']),
          parameters: {},
          ...encodeOutputs(results, decoded),
        };
      } finally {
        inflight--;
      }
    },
  };
}
