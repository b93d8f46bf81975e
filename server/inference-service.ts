/**
 * GRPCInferenceService (Open Inference Protocol v2) over a ModelRegistry.
 *
 * ServerLive is always true while the process serves RPCs. ServerReady and ModelReady are
 * true only once boot has published every model. ModelMetadata and ModelInfer answer
 * UNAVAILABLE until then: nothing is served before attested key release has completed.
 * Request tensors are validated by tensors.ts before onnxruntime sees them.
 *
 * Hot path (ModelInfer), in order: acquire the model from the registry (typed errors for
 * not ready / withdrawn / unknown) -> concurrency bound (ERR_SRV_OVERLOADED) -> ADMISSION
 * (the one place for per-request checks such as API keys and quotas, before any tensor
 * work) -> decode (raw inputs zero-copy when aligned) -> run -> POST-PROCESSING (the one
 * place to inspect or change outputs before encoding) -> encode (outputs as views of
 * onnxruntime's buffers). This handler's success path does no logging, no JSON and mints
 * no ids; failures are logged by the gRPC edge (grpc-errors.ts). The access-log line per
 * call and the request id belong to the tenancy wrapper around it (server/tenancy).
 *
 * What it does NOT do: queue requests (over the bound a call is refused at once, which is
 * what a load balancer wants) or batch requests across calls (bench/README.md explains
 * why not on 2 cores).
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

function quoteName(name: string): string {
  return JSON.stringify(name.length > 128 ? `${name.slice(0, 128)}...` : name);
}

function checkVersion(model: LoadedModel, name: string, version: string): void {
  if (version !== '' && version !== model.version) {
    throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoteName(name)} has no such version` });
  }
}

/** A served model for metadata: NOT_READY before boot, MODEL_WITHDRAWN, UNKNOWN_MODEL. */
function lookup(registry: ModelRegistry, name: string, version: string): LoadedModel {
  if (!registry.published) throw new ServerError('ERR_SRV_NOT_READY');
  if (registry.state(name) === 'withdrawn') throw new ServerError('ERR_SRV_MODEL_WITHDRAWN');
  const model = registry.get(name);
  if (!model) throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoteName(name)}` });
  checkVersion(model, name, version);
  return model;
}

function tensorMetadata(s: TensorSpec): ModelMetadataResponse['inputs'][number] {
  return { name: s.name, datatype: s.datatype, shape: metadataShape(s) };
}

export function createInferenceHandlers(opts: InferenceServiceOptions): InferenceHandlers {
  const { registry } = opts;
  const limits = Object.freeze({ maxTensorElements: opts.maxTensorElements });
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
      const name = str(r['model_name']);
      // Throws NOT_READY / MODEL_WITHDRAWN; a held model stays usable if withdrawn meanwhile.
      const model = registry.acquire(name);
      if (!model) throw new ServerError('ERR_SRV_UNKNOWN_MODEL', { detail: `model ${quoteName(name)}` });
      try {
        checkVersion(model, name, str(r['model_version']));
        if (inflight >= opts.maxConcurrentInfers) throw new ServerError('ERR_SRV_OVERLOADED');
        inflight++;
        try {
          // ---- ADMISSION: per-request checks (API key, quota) go here, before any tensor work.
          const decoded = decodeInferRequest(req, model.signature, limits);
          const results = await model.session.run(decoded.feeds, decoded.outputs as string[]);
          // ---- POST-PROCESSING: inspect or change `results` here, before they are encoded.
          const encoded = encodeOutputs(results, decoded);
          return {
            model_name: model.name,
            model_version: model.version,
            id: str(r['id']),
            parameters: {},
            outputs: encoded.outputs,
            raw_output_contents: encoded.raw_output_contents,
          };
        } finally {
          inflight--;
        }
      } finally {
        registry.release(model);
      }
    },
  };
}
