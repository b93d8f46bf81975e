/**
 * Tensor codec between the Open Inference Protocol v2 (KServe "predict v2", gRPC) and
 * onnxruntime tensors.
 *
 * Inputs may be carried in one of two ways (v2 spec, "Tensor Data" / `raw_input_contents`):
 * - `raw_input_contents`: one little-endian byte string per input, in `inputs` order. When
 *   used it must cover every input, and no input may also carry `contents`.
 * - typed `contents`: the repeated field that matches the datatype (`fp32_contents` for
 *   FP32, `int_contents` for INT8/INT16/INT32, `uint_contents` for UINT8/UINT16/UINT32, ...).
 *
 * What the decoder checks, against the model's signature: every input is known, present
 * once and only once; datatype equals the model's; rank equals the model's, fixed
 * dimensions match and each symbolic dimension has one value across all inputs; every
 * dimension is a non-negative integer; the element count per tensor and over the whole
 * request is within `maxTensorElements`; the data length equals elements x element size;
 * typed values fit the datatype (e.g. INT8 in [-128, 127], BOOL bytes are 0 or 1).
 * What it does not check: values' meaning (NaN and infinities pass), and BYTES / FP16 /
 * BF16 tensors, which are rejected as unsupported.
 *
 * Outputs are returned in `raw_output_contents` by default, as Triton does over gRPC. A
 * request gets typed `contents` instead when it sets the parameter `binary_data_output`
 * to false (on the request or on every requested output; mixing raw and typed outputs in
 * one response is not allowed by the spec, so a request that asks for both is rejected).
 *
 * Copies on the hot path (raw tensors): an input whose bytes are aligned for its datatype
 * in the request buffer becomes an onnxruntime tensor over that same memory; an unaligned
 * one is copied once. Outputs go into the response as views of onnxruntime's result
 * buffers; protobufjs copies them once into the serialised message. Endianness: the wire
 * is little-endian and the host must be too (checked when this module loads), so neither
 * path swaps bytes.
 *
 * SECURITY: error messages name tensors, datatypes, ranks, dimensions and byte counts;
 * they never contain tensor values. Caller-supplied names are quoted and truncated.
 */
import { endianness } from 'node:os';
import * as ort from '../common/ort.js';
import type { InferenceSession, Tensor } from 'onnxruntime-node';
import { ServerError, type ServerErrorCode } from './codes.js';
import type {
  InferOutputTensor,
  InferTensorContents,
  InferTensorContentsIn,
  ModelInferResponse,
} from './proto-types.js';

// The wire format is little-endian; typed arrays use host order. Every supported
// deployment target (x86-64, arm64) is little-endian; refuse to run rather than
// silently byte-swap tensors on anything else.
if (endianness() !== 'LE') throw new Error('cir server requires a little-endian host');

type ContentsField = Exclude<keyof InferTensorContents, 'bytes_contents'>;

interface DatatypeInfo {
  readonly ort: Tensor.Type;
  readonly bytes: number;
  readonly field: ContentsField;
  /** Inclusive integer range for integer types. */
  readonly min?: bigint;
  readonly max?: bigint;
}

/** Supported v2 datatypes, their onnxruntime type, element size and typed contents field. */
export const DATATYPES = {
  BOOL: { ort: 'bool', bytes: 1, field: 'bool_contents' },
  UINT8: { ort: 'uint8', bytes: 1, field: 'uint_contents', min: 0n, max: 0xffn },
  UINT16: { ort: 'uint16', bytes: 2, field: 'uint_contents', min: 0n, max: 0xffffn },
  UINT32: { ort: 'uint32', bytes: 4, field: 'uint_contents', min: 0n, max: 0xffffffffn },
  UINT64: { ort: 'uint64', bytes: 8, field: 'uint64_contents', min: 0n, max: 2n ** 64n - 1n },
  INT8: { ort: 'int8', bytes: 1, field: 'int_contents', min: -128n, max: 127n },
  INT16: { ort: 'int16', bytes: 2, field: 'int_contents', min: -32768n, max: 32767n },
  INT32: { ort: 'int32', bytes: 4, field: 'int_contents', min: -(2n ** 31n), max: 2n ** 31n - 1n },
  INT64: { ort: 'int64', bytes: 8, field: 'int64_contents', min: -(2n ** 63n), max: 2n ** 63n - 1n },
  FP32: { ort: 'float32', bytes: 4, field: 'fp32_contents' },
  FP64: { ort: 'float64', bytes: 8, field: 'fp64_contents' },
} as const satisfies Record<string, DatatypeInfo>;

export type Datatype = keyof typeof DATATYPES;

const ORT_TO_DATATYPE: Readonly<Record<string, Datatype>> = Object.freeze(
  Object.fromEntries(Object.entries(DATATYPES).map(([k, v]) => [v.ort, k as Datatype])),
);

export function isDatatype(s: unknown): s is Datatype {
  return typeof s === 'string' && Object.hasOwn(DATATYPES, s);
}

/** Datatype for an onnxruntime tensor type, or undefined when unsupported. */
export function datatypeForOrtType(t: string): Datatype | undefined {
  return Object.hasOwn(ORT_TO_DATATYPE, t) ? ORT_TO_DATATYPE[t] : undefined;
}

/** A dimension: a fixed size, a named symbolic dimension, or an anonymous variable one. */
export type Dim = number | string | null;

export interface TensorSpec {
  readonly name: string;
  readonly datatype: Datatype;
  readonly dims: readonly Dim[];
}

export interface ModelSignature {
  readonly inputs: readonly TensorSpec[];
  readonly outputs: readonly TensorSpec[];
}

/** v2 metadata shape: fixed sizes as is, every variable dimension as -1. */
export function metadataShape(spec: TensorSpec): number[] {
  return spec.dims.map((d) => (typeof d === 'number' ? d : -1));
}

/**
 * Builds a model signature from an onnxruntime session's metadata. Throws
 * ERR_SRV_MODEL_UNSUPPORTED when an input or output is not a tensor of a supported type.
 */
export function signatureFromSession(
  session: Pick<InferenceSession, 'inputMetadata' | 'outputMetadata'>,
): ModelSignature {
  const convert = (m: InferenceSession.ValueMetadata, kind: string): TensorSpec => {
    if (!m.isTensor) {
      throw new ServerError('ERR_SRV_MODEL_UNSUPPORTED', { detail: `${kind} ${quote(m.name)} is not a tensor` });
    }
    const datatype = datatypeForOrtType(m.type);
    if (!datatype) {
      throw new ServerError('ERR_SRV_MODEL_UNSUPPORTED', {
        detail: `${kind} ${quote(m.name)} has unsupported type ${m.type}`,
      });
    }
    const dims = m.shape.map((d): Dim => {
      if (typeof d === 'number') return Number.isInteger(d) && d >= 0 ? d : null;
      return d === '' ? null : d;
    });
    return Object.freeze({ name: m.name, datatype, dims: Object.freeze(dims) });
  };
  return Object.freeze({
    inputs: Object.freeze(session.inputMetadata.map((m) => convert(m, 'input'))),
    outputs: Object.freeze(session.outputMetadata.map((m) => convert(m, 'output'))),
  });
}

export interface DecodeLimits {
  /** Upper bound on elements of any one tensor and of all inputs of a request together. */
  readonly maxTensorElements: number;
}

export interface DecodedRequest {
  /**
   * Null-prototype map from input name to an onnxruntime tensor. Raw inputs may alias the
   * request's bytes (zero-copy, see fromRaw); typed contents always get their own buffer.
   */
  readonly feeds: Record<string, Tensor>;
  /** Output names to fetch, in response order. */
  readonly outputs: readonly string[];
  /** True: `raw_output_contents`; false: typed `contents`. */
  readonly rawOutputs: boolean;
}

/** Quotes a caller-supplied name for an error message: JSON-escaped, at most 64 chars. */
function quote(name: unknown): string {
  const s = typeof name === 'string' ? name : String(typeof name);
  return JSON.stringify(s.length > 64 ? `${s.slice(0, 64)}...` : s);
}

function fail(code: ServerErrorCode, detail: string): never {
  throw new ServerError(code, { detail });
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function field(obj: Record<string, unknown>, key: string): unknown {
  return Object.hasOwn(obj, key) ? obj[key] : undefined;
}

/** Optional repeated field: absent/null reads as empty; anything but an array is malformed. */
function list(obj: Record<string, unknown>, key: string, what: string | (() => string)): readonly unknown[] {
  const v = field(obj, key);
  if (v === undefined || v === null) return [];
  // `what` may be a function so the success path builds no message strings.
  if (!Array.isArray(v)) fail('ERR_SRV_BAD_REQUEST', `${typeof what === 'function' ? what() : what} must be a list`);
  return v;
}

const INT_STRING_RE = /^-?\d{1,20}$/;

/** Parses a protobuf 64-bit integer as delivered (decimal string, number, bigint or Long-like). */
function toBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isSafeInteger(v) ? BigInt(v) : undefined;
  if (typeof v === 'string') return INT_STRING_RE.test(v) ? BigInt(v) : undefined;
  if (isRecord(v) && typeof v['toString'] === 'function' && typeof v['low'] === 'number') {
    // protobufjs Long when a caller uses `longs: Long`
    const s = String(v);
    return INT_STRING_RE.test(s) ? BigInt(s) : undefined;
  }
  return undefined;
}

/** Reads a bool parameter that may be absent. A present, non-bool value is malformed. */
function boolParam(params: unknown, key: string, where: string): boolean | undefined {
  if (params === undefined || params === null) return undefined;
  if (!isRecord(params)) fail('ERR_SRV_BAD_REQUEST', `${where} parameters must be a map`);
  const p = field(params, key);
  if (p === undefined || p === null) return undefined;
  if (!isRecord(p)) fail('ERR_SRV_BAD_REQUEST', `${where} parameter ${key} is malformed`);
  const choice = field(p, 'parameter_choice');
  const value = field(p, 'bool_param');
  // With `oneofs: true` the set member is named; without it, only bool_param may be set.
  if ((choice === 'bool_param' || choice === undefined) && typeof value === 'boolean') return value;
  return fail('ERR_SRV_BAD_REQUEST', `${where} parameter ${key} must be a bool`);
}

function elementCount(
  name: string,
  shape: readonly unknown[],
  spec: TensorSpec,
  bindings: Map<string, { value: number; input: string }>,
  limits: DecodeLimits,
  kind = 'input',
): { dims: number[]; count: number } {
  if (shape.length !== spec.dims.length) {
    fail('ERR_SRV_TENSOR_SHAPE', `${kind} ${quote(name)} has rank ${shape.length}, model expects ${spec.dims.length}`);
  }
  const dims: number[] = [];
  let count = 1;
  for (let i = 0; i < shape.length; i++) {
    const d = toBigInt(shape[i]);
    if (d === undefined) fail('ERR_SRV_TENSOR_SHAPE', `${kind} ${quote(name)} dimension ${i} is not an integer`);
    if (d < 0n) fail('ERR_SRV_TENSOR_SHAPE', `${kind} ${quote(name)} dimension ${i} is negative`);
    if (d > BigInt(limits.maxTensorElements)) {
      fail('ERR_SRV_TENSOR_TOO_LARGE', `${kind} ${quote(name)} dimension ${i} exceeds ${limits.maxTensorElements}`);
    }
    const n = Number(d);
    const want = spec.dims[i];
    if (typeof want === 'number' && want !== n) {
      fail('ERR_SRV_TENSOR_SHAPE', `${kind} ${quote(name)} dimension ${i} is ${n}, model expects ${want}`);
    }
    if (typeof want === 'string') {
      const bound = bindings.get(want);
      if (bound === undefined) bindings.set(want, { value: n, input: name });
      else if (bound.value !== n) {
        fail(
          'ERR_SRV_TENSOR_SHAPE',
          `${kind} ${quote(name)} dimension ${i} (${quote(want)}) is ${n}, but ${bound.value} in ${kind} ${quote(bound.input)}`,
        );
      }
    }
    dims.push(n);
    count *= n;
  }
  // Each factor is <= limit, so the running product stays exact until it passes the limit.
  if (count > limits.maxTensorElements) {
    fail('ERR_SRV_TENSOR_TOO_LARGE', `${kind} ${quote(name)} has more than ${limits.maxTensorElements} elements`);
  }
  return { dims, count };
}

type OrtData = Tensor['data'];

type TypedArrayCtor = {
  new (length: number): Exclude<OrtData, readonly string[]>;
  new (buffer: ArrayBuffer, byteOffset: number, length: number): Exclude<OrtData, readonly string[]>;
};

/** The typed array of each datatype (BOOL as bytes, as onnxruntime-node takes it). */
export const ARRAY_TYPES: Readonly<Record<Datatype, TypedArrayCtor>> = Object.freeze({
  BOOL: Uint8Array,
  UINT8: Uint8Array,
  UINT16: Uint16Array,
  UINT32: Uint32Array,
  UINT64: BigUint64Array,
  INT8: Int8Array,
  INT16: Int16Array,
  INT32: Int32Array,
  INT64: BigInt64Array,
  FP32: Float32Array,
  FP64: Float64Array,
} as Record<Datatype, TypedArrayCtor>);

function allocate(dt: Datatype, count: number): OrtData {
  return new ARRAY_TYPES[dt](count);
}

function asTypedArray(d: OrtData): Exclude<OrtData, readonly string[]> {
  if (Array.isArray(d)) throw new ServerError('ERR_SRV_INTERNAL', { detail: 'string tensor' });
  return d as Exclude<OrtData, readonly string[]>;
}

/**
 * A typed array over little-endian wire bytes (the host is little-endian: checked at
 * load). Zero-copy when `bytes` lies in a plain ArrayBuffer at an offset that is a
 * multiple of the element size: the result then ALIASES `bytes` (the caller must not
 * change or reuse them while the tensor is in use; a gRPC request's buffer belongs to
 * that one call). Otherwise the bytes are copied into a fresh, aligned array (typed
 * arrays cannot start at an unaligned offset). Checks the length and BOOL values; does
 * not check float values.
 */
function fromRaw(name: string, dt: Datatype, bytes: Uint8Array, count: number): OrtData {
  const info = DATATYPES[dt];
  const expected = count * info.bytes;
  if (bytes.byteLength !== expected) {
    fail(
      'ERR_SRV_TENSOR_SIZE',
      `input ${quote(name)} has ${bytes.byteLength} bytes, expected ${expected} (${count} ${dt} elements)`,
    );
  }
  if (dt === 'BOOL') {
    for (let i = 0; i < bytes.length; i++) {
      if (bytes[i]! > 1) fail('ERR_SRV_TENSOR_VALUE', `input ${quote(name)}: BOOL bytes must be 0 or 1`);
    }
  }
  if (isZeroCopy(bytes, info.bytes)) return new ARRAY_TYPES[dt](bytes.buffer as ArrayBuffer, bytes.byteOffset, count);
  const out = asTypedArray(allocate(dt, count));
  new Uint8Array(out.buffer, out.byteOffset, out.byteLength).set(bytes);
  return out;
}

/**
 * Whether raw bytes can back a tensor of `elementBytes`-sized elements without a copy:
 * a plain (not shared, not detached) ArrayBuffer and an aligned offset.
 */
export function isZeroCopy(bytes: Uint8Array, elementBytes: number): boolean {
  // SECURITY: a SharedArrayBuffer could change under onnxruntime while it runs: copy.
  return bytes.buffer instanceof ArrayBuffer && bytes.byteOffset % elementBytes === 0;
}

function fromContents(name: string, dt: Datatype, contents: unknown, count: number): OrtData {
  if (contents !== undefined && contents !== null && !isRecord(contents)) {
    fail('ERR_SRV_BAD_REQUEST', `input ${quote(name)} contents must be a message`);
  }
  const c = (contents ?? {}) as Record<string, unknown>;
  const info: DatatypeInfo = DATATYPES[dt];
  for (const f of CONTENT_FIELDS) {
    if (f !== info.field && list(c, f, () => `input ${quote(name)} ${f}`).length > 0) {
      fail('ERR_SRV_TENSOR_CONTENTS', `input ${quote(name)}: ${dt} data must be in ${info.field}, not ${f}`);
    }
  }
  const values = list(c, info.field, () => `input ${quote(name)} ${info.field}`);
  if (values.length !== count) {
    fail('ERR_SRV_TENSOR_SIZE', `input ${quote(name)} has ${values.length} values in ${info.field}, expected ${count}`);
  }
  const out = allocate(dt, count);
  const bad = (): never => fail('ERR_SRV_TENSOR_VALUE', `input ${quote(name)}: a value does not fit ${dt}`);
  if (dt === 'BOOL') {
    const o = out as Uint8Array;
    for (let i = 0; i < count; i++) {
      const v = values[i];
      if (typeof v !== 'boolean') bad();
      o[i] = v ? 1 : 0;
    }
  } else if (dt === 'FP32' || dt === 'FP64') {
    const o = out as Float32Array | Float64Array;
    for (let i = 0; i < count; i++) {
      const v = values[i];
      if (typeof v !== 'number') bad();
      o[i] = v as number;
    }
  } else if (dt === 'INT64' || dt === 'UINT64') {
    const o = out as BigInt64Array | BigUint64Array;
    for (let i = 0; i < count; i++) {
      const v = toBigInt(values[i]);
      if (v === undefined || v < info.min! || v > info.max!) bad();
      o[i] = v!;
    }
  } else {
    const o = out as Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array;
    const min = Number(info.min!);
    const max = Number(info.max!);
    for (let i = 0; i < count; i++) {
      const v = values[i];
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) bad();
      o[i] = v as number;
    }
  }
  return out;
}

const CONTENT_FIELDS: readonly (keyof InferTensorContents)[] = [
  'bool_contents',
  'int_contents',
  'int64_contents',
  'uint_contents',
  'uint64_contents',
  'fp32_contents',
  'fp64_contents',
  'bytes_contents',
];

function hasContents(contents: unknown): boolean {
  if (!isRecord(contents)) return false;
  return CONTENT_FIELDS.some((f) => {
    const v = field(contents, f);
    return Array.isArray(v) && v.length > 0;
  });
}

/**
 * Validates a ModelInferRequest (as decoded by proto-loader, or any object) against a
 * model signature and builds onnxruntime feeds. Throws only ServerError with a bad-input
 * code (ERR_SRV_BAD_REQUEST, ERR_SRV_TENSOR_*); never anything else for any input.
 * Model name/version routing is the caller's job.
 */
export function decodeInferRequest(req: unknown, signature: ModelSignature, limits: DecodeLimits): DecodedRequest {
  if (!isRecord(req)) fail('ERR_SRV_BAD_REQUEST', 'request must be a message');
  const inputs = list(req, 'inputs', 'inputs');
  const raw = list(req, 'raw_input_contents', 'raw_input_contents');
  const useRaw = raw.length > 0;
  if (useRaw && raw.length !== inputs.length) {
    fail('ERR_SRV_TENSOR_CONTENTS', `raw_input_contents has ${raw.length} entries for ${inputs.length} inputs`);
  }
  const specs = new Map(signature.inputs.map((s) => [s.name, s]));
  const feeds: Record<string, Tensor> = Object.create(null) as Record<string, Tensor>;
  const seen = new Set<string>();
  const bindings = new Map<string, { value: number; input: string }>();
  let total = 0;

  for (let i = 0; i < inputs.length; i++) {
    const t = inputs[i];
    if (!isRecord(t)) fail('ERR_SRV_BAD_REQUEST', `inputs[${i}] must be a message`);
    const name = field(t, 'name');
    if (typeof name !== 'string') fail('ERR_SRV_BAD_REQUEST', `inputs[${i}].name must be a string`);
    const spec = specs.get(name);
    if (!spec) fail('ERR_SRV_TENSOR_UNKNOWN_INPUT', `input ${quote(name)} is not an input of this model`);
    if (seen.has(name)) fail('ERR_SRV_TENSOR_DUPLICATE', `input ${quote(name)} appears more than once`);
    seen.add(name);
    const datatype = field(t, 'datatype');
    if (datatype !== spec.datatype) {
      fail(
        'ERR_SRV_TENSOR_DATATYPE',
        `input ${quote(name)} has datatype ${quote(datatype)}, model expects ${spec.datatype}`,
      );
    }
    const { dims, count } = elementCount(name, list(t, 'shape', () => `input ${quote(name)} shape`), spec, bindings, limits);
    total += count;
    if (total > limits.maxTensorElements) {
      fail('ERR_SRV_TENSOR_TOO_LARGE', `inputs up to ${quote(name)} exceed ${limits.maxTensorElements} elements in total`);
    }
    let data: OrtData;
    if (useRaw) {
      if (hasContents(field(t, 'contents'))) {
        fail('ERR_SRV_TENSOR_CONTENTS', `input ${quote(name)} has contents while raw_input_contents is used`);
      }
      const bytes = raw[i];
      if (!(bytes instanceof Uint8Array)) fail('ERR_SRV_BAD_REQUEST', `raw_input_contents[${i}] must be bytes`);
      data = fromRaw(name, spec.datatype, bytes, count);
    } else {
      data = fromContents(name, spec.datatype, field(t, 'contents'), count);
    }
    feeds[name] = new ort.Tensor(DATATYPES[spec.datatype].ort, data as never, dims);
  }
  for (const s of signature.inputs) {
    if (!seen.has(s.name)) fail('ERR_SRV_TENSOR_MISSING_INPUT', `input ${quote(s.name)} is required`);
  }

  const requestRaw = boolParam(field(req, 'parameters'), 'binary_data_output', 'request');
  const outSpecs = new Set(signature.outputs.map((s) => s.name));
  const requested = list(req, 'outputs', 'outputs');
  const outputs: string[] = [];
  const modes = new Set<boolean>();
  for (let i = 0; i < requested.length; i++) {
    const o = requested[i];
    if (!isRecord(o)) fail('ERR_SRV_BAD_REQUEST', `outputs[${i}] must be a message`);
    const name = field(o, 'name');
    if (typeof name !== 'string') fail('ERR_SRV_BAD_REQUEST', `outputs[${i}].name must be a string`);
    if (!outSpecs.has(name)) fail('ERR_SRV_TENSOR_UNKNOWN_OUTPUT', `output ${quote(name)} is not an output of this model`);
    if (outputs.includes(name)) fail('ERR_SRV_TENSOR_DUPLICATE', `output ${quote(name)} is requested more than once`);
    outputs.push(name);
    modes.add(boolParam(field(o, 'parameters'), 'binary_data_output', `output ${quote(name)}`) ?? requestRaw ?? true);
  }
  if (outputs.length === 0) {
    outputs.push(...signature.outputs.map((s) => s.name));
    modes.add(requestRaw ?? true);
  }
  if (modes.size > 1) {
    fail('ERR_SRV_BAD_REQUEST', 'binary_data_output must be the same for every output (raw and typed cannot mix)');
  }
  return Object.freeze({ feeds, outputs: Object.freeze(outputs), rawOutputs: modes.has(true) });
}

/** Little-endian wire bytes of a typed array (a copy, so later changes to `data` do not leak in). */
export function toRawBytes(data: ArrayBufferView): Buffer {
  return Buffer.from(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
}

/**
 * Little-endian wire bytes of a typed array WITHOUT a copy: a Buffer over the same
 * memory. Only for data nobody changes before it is serialised: onnxruntime-node hands
 * every run's outputs over in fresh ArrayBuffers (tensors.test.ts checks that), and
 * grpc-js serialises the response synchronously when the handler returns it.
 */
export function rawView(data: ArrayBufferView): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** Typed `contents` for a typed array of datatype `dt`. 64-bit values become decimal strings. */
export function toTypedContents(dt: Datatype, data: ArrayBufferView): InferTensorContentsIn {
  const info = DATATYPES[dt];
  const arr = data as unknown as ArrayLike<number | bigint>;
  let values: unknown[];
  if (dt === 'BOOL') values = Array.from(arr, (v) => v !== 0);
  else if (dt === 'INT64' || dt === 'UINT64') values = Array.from(arr, (v) => v.toString());
  else values = Array.from(arr, (v) => Number(v));
  return { [info.field]: values } as InferTensorContentsIn;
}

/**
 * Builds the outputs of a ModelInferResponse from onnxruntime results, in `decoded.outputs`
 * order. Throws ERR_SRV_INTERNAL if the model produced a tensor type it did not declare.
 */
export function encodeOutputs(
  results: Readonly<Record<string, Tensor>>,
  decoded: Pick<DecodedRequest, 'outputs' | 'rawOutputs'>,
): Pick<ModelInferResponse, 'outputs' | 'raw_output_contents'> {
  const outputs: InferOutputTensor[] = [];
  const raw: Buffer[] = [];
  for (const name of decoded.outputs) {
    const t = Object.hasOwn(results, name) ? results[name] : undefined;
    if (!t) throw new ServerError('ERR_SRV_INTERNAL', { detail: `model did not produce output ${quote(name)}` });
    const dt = datatypeForOrtType(t.type);
    if (!dt) throw new ServerError('ERR_SRV_INTERNAL', { detail: `output ${quote(name)} has unsupported type` });
    const data = asTypedArray(t.data);
    const entry: InferOutputTensor = { name, datatype: dt, shape: t.dims.map(Number), parameters: {}, contents: null };
    // No copy: protobufjs copies the bytes into the response message once.
    if (decoded.rawOutputs) raw.push(rawView(data));
    else entry.contents = toTypedContents(dt, data);
    outputs.push(entry);
  }
  return { outputs, raw_output_contents: raw };
}

/** A tensor as a client sees it after decoding a response. */
export interface WireTensor {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: Exclude<OrtData, readonly string[]>;
}

/**
 * Client-side helper: decodes the outputs of a ModelInferResponse (raw or typed) into
 * typed arrays. Throws ServerError (bad-input codes) on a malformed response.
 */
export function decodeInferResponse(resp: unknown, limits: DecodeLimits): WireTensor[] {
  if (!isRecord(resp)) fail('ERR_SRV_BAD_REQUEST', 'response must be a message');
  const outputs = list(resp, 'outputs', 'outputs');
  const raw = list(resp, 'raw_output_contents', 'raw_output_contents');
  if (raw.length > 0 && raw.length !== outputs.length) {
    fail('ERR_SRV_TENSOR_CONTENTS', `raw_output_contents has ${raw.length} entries for ${outputs.length} outputs`);
  }
  const result: WireTensor[] = [];
  for (let i = 0; i < outputs.length; i++) {
    const t = outputs[i];
    if (!isRecord(t)) fail('ERR_SRV_BAD_REQUEST', `outputs[${i}] must be a message`);
    const name = String(field(t, 'name'));
    const datatype = field(t, 'datatype');
    if (!isDatatype(datatype)) fail('ERR_SRV_TENSOR_DATATYPE', `output ${quote(name)} has unsupported datatype`);
    const shape = list(t, 'shape', () => `output ${quote(name)} shape`);
    const spec: TensorSpec = { name, datatype, dims: shape.map(() => null) };
    const { dims, count } = elementCount(name, shape, spec, new Map(), limits, 'output');
    let data: OrtData;
    if (raw.length > 0) {
      const bytes = raw[i];
      if (!(bytes instanceof Uint8Array)) fail('ERR_SRV_BAD_REQUEST', `raw_output_contents[${i}] must be bytes`);
      data = fromRaw(name, datatype, bytes, count);
    } else {
      data = fromContents(name, datatype, field(t, 'contents'), count);
    }
    result.push(Object.freeze({ name, datatype, shape: Object.freeze(dims), data: asTypedArray(data) }));
  }
  return result;
}
