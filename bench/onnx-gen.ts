/**
 * Generated ONNX models for the benchmark, built in code with onnx-proto (protobufjs 6
 * bindings of onnx.proto, ONNX v1.10): so the harness can produce a model of any size or
 * compute cost without shipping files.
 *
 * - `mlpModel`: L layers of MatMul + Add + Relu on [N, D] activations. Weights are
 *   L·(D² + D)·4 bytes, so `mlpForSize(mb)` picks L for a model of about `mb` MiB.
 *   Compute per request is 2·N·L·D² flops; at batch 1 it is memory-bound (each request
 *   reads every weight once), at larger N it becomes compute-bound.
 * - `convNetModel`: a CNN on [N, 3, 32, 32] (3x3 convolutions, global average pool, a
 *   dense layer to 10 classes). `CONVNET_SMALL` has three convolutions (~0.05 ms);
 *   `convStages(9, 9, 8)` has 26 at 64/128/256 channels (~11-12.5 ms, compute-bound).
 *
 * Weights come from a seeded PRNG (He-style scaling so activations neither vanish nor blow
 * up), so a given shape always yields the same bytes. What this does not produce: anything
 * meaningful to infer with; these models exist to cost time and memory.
 */
import onnxPkg from 'onnx-proto';
import type { onnx as O } from 'onnx-proto';
import { seededRandom } from './load.js';

// onnx-proto is CommonJS; its namespace object is the default export under nodenext.
const { onnx } = onnxPkg;

/** ONNX IR version 8 and default-domain opset 13: loaded by every onnxruntime since 1.10. */
export const IR_VERSION = 8;
export const OPSET = 13;
const FLOAT = onnx.TensorProto.DataType.FLOAT;

function floatTensor(name: string, dims: readonly number[], random: () => number, scale: number): O.ITensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = (random() * 2 - 1) * scale;
  return { name, dims: [...dims], dataType: FLOAT, rawData: new Uint8Array(data.buffer) };
}

type Dim = number | string;

function valueInfo(name: string, dims: readonly Dim[]): O.IValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType: FLOAT,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  };
}

function intsAttr(name: string, ints: readonly number[]): O.IAttributeProto {
  return { name, type: onnx.AttributeProto.AttributeType.INTS, ints: [...ints] };
}

function encodeModel(graph: O.IGraphProto, name: string): Uint8Array {
  const model = onnx.ModelProto.create({
    irVersion: IR_VERSION,
    opsetImport: [{ domain: '', version: OPSET }],
    producerName: 'cir-bench',
    producerVersion: '1',
    graph: { ...graph, name },
  });
  return onnx.ModelProto.encode(model).finish();
}

export interface MlpShape {
  /** Number of MatMul+Add+Relu layers. */
  readonly layers: number;
  /** Width D of every layer (input and output are [N, D]). */
  readonly dim: number;
  readonly seed?: number;
}

/** Bytes of weights and biases of an MLP: L·(D² + D)·4. */
export function mlpWeightBytes(s: MlpShape): number {
  return s.layers * (s.dim * s.dim + s.dim) * 4;
}

/** The MLP shape of about `mb` MiB of weights at width `dim` (at least one layer). */
export function mlpForSize(mb: number, dim = 1024): MlpShape {
  const layers = Math.max(1, Math.round((mb * 1024 * 1024) / (4 * dim * dim)));
  return { layers, dim };
}

/** Input `x` f32[N, D] (N symbolic), output `y` f32[N, D]. */
export function mlpModel(s: MlpShape): Uint8Array {
  if (!Number.isInteger(s.layers) || s.layers < 1 || !Number.isInteger(s.dim) || s.dim < 1) {
    throw new RangeError('layers and dim must be positive integers');
  }
  const random = seededRandom(s.seed ?? 1);
  const scale = Math.sqrt(6 / s.dim); // He-uniform: keeps Relu activations of order 1
  const initializer: O.ITensorProto[] = [];
  const node: O.INodeProto[] = [];
  let prev = 'x';
  for (let i = 0; i < s.layers; i++) {
    const out = i === s.layers - 1 ? 'y' : `h${i}`;
    initializer.push(floatTensor(`w${i}`, [s.dim, s.dim], random, scale), floatTensor(`b${i}`, [s.dim], random, 0.01));
    node.push(
      { opType: 'MatMul', input: [prev, `w${i}`], output: [`m${i}`], name: `matmul${i}` },
      { opType: 'Add', input: [`m${i}`, `b${i}`], output: [`a${i}`], name: `add${i}` },
      { opType: 'Relu', input: [`a${i}`], output: [out], name: `relu${i}` },
    );
    prev = out;
  }
  return encodeModel(
    { node, initializer, input: [valueInfo('x', ['N', s.dim])], output: [valueInfo('y', ['N', s.dim])] },
    `mlp_${s.layers}x${s.dim}`,
  );
}

/** One 3x3 convolution (padding 1) followed by Relu: `channels` out, stride 1 or 2. */
export interface ConvLayer {
  readonly channels: number;
  readonly stride: 1 | 2;
}

/** The small CIFAR-sized net: three convolutions, about 100 kB of weights, ~0.05 ms in a tight loop. */
export const CONVNET_SMALL: readonly ConvLayer[] = Object.freeze([
  { channels: 16, stride: 1 },
  { channels: 32, stride: 2 },
  { channels: 64, stride: 2 },
]);

/**
 * A VGG/ResNet-shaped stack without skip connections: stage k has `perStage[k]` (>= 1)
 * convolutions at 64·2^k channels, its first one halving the resolution from the second
 * stage on. `convStages(9, 9, 8)` is the bench's `cnn` (26 convolutions at 64, 128 and 256
 * channels, 23 MiB of weights).
 */
export function convStages(...perStage: readonly number[]): ConvLayer[] {
  if (perStage.length === 0 || perStage.length > 5 || perStage.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new RangeError('convStages takes 1 to 5 stages, each of at least one layer');
  }
  const layers: ConvLayer[] = [];
  perStage.forEach((n, stage) => {
    for (let i = 0; i < n; i++) layers.push({ channels: 64 << stage, stride: stage > 0 && i === 0 ? 2 : 1 });
  });
  return layers;
}

/** Bytes of a conv net's weights (kernels, biases and the dense layer), float32. */
export function convNetWeightBytes(layers: readonly ConvLayer[]): number {
  let cin = 3;
  let n = 0;
  for (const l of layers) {
    n += l.channels * cin * 9 + l.channels;
    cin = l.channels;
  }
  return (n + cin * 10 + 10) * 4;
}

/**
 * Input `x` f32[N, 3, 32, 32], output `y` f32[N, 10]: the given 3x3 convolutions (each
 * with Relu), global average pool, a dense layer to 10 classes. Compute-bound: every
 * kernel weight is used at each output position, unlike the batch-1 MLP.
 */
export function convNetModel(seed = 1, layers: readonly ConvLayer[] = CONVNET_SMALL): Uint8Array {
  if (layers.length === 0 || layers.some((l) => !Number.isInteger(l.channels) || l.channels < 1 || (l.stride !== 1 && l.stride !== 2))) {
    throw new RangeError('a conv net needs at least one layer, each with a positive integer channel count and stride 1 or 2');
  }
  const random = seededRandom(seed);
  const initializer: O.ITensorProto[] = [];
  const node: O.INodeProto[] = [];
  let prev = 'x';
  let cin = 3;
  layers.forEach((l, i) => {
    initializer.push(
      floatTensor(`k${i}`, [l.channels, cin, 3, 3], random, Math.sqrt(6 / (cin * 9))),
      floatTensor(`kb${i}`, [l.channels], random, 0.01),
    );
    node.push(
      {
        opType: 'Conv',
        input: [prev, `k${i}`, `kb${i}`],
        output: [`c${i}`],
        name: `conv${i}`,
        attribute: [intsAttr('kernel_shape', [3, 3]), intsAttr('pads', [1, 1, 1, 1]), intsAttr('strides', [l.stride, l.stride])],
      },
      { opType: 'Relu', input: [`c${i}`], output: [`r${i}`], name: `relu${i}` },
    );
    prev = `r${i}`;
    cin = l.channels;
  });
  initializer.push(floatTensor('fc_w', [cin, 10], random, Math.sqrt(6 / cin)), floatTensor('fc_b', [10], random, 0.01));
  node.push(
    { opType: 'GlobalAveragePool', input: [prev], output: ['gap'], name: 'gap' },
    { opType: 'Flatten', input: ['gap'], output: ['flat'], name: 'flatten', attribute: [{ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: 1 }] },
    { opType: 'MatMul', input: ['flat', 'fc_w'], output: ['fc'], name: 'fc' },
    { opType: 'Add', input: ['fc', 'fc_b'], output: ['y'], name: 'fc_bias' },
  );
  return encodeModel(
    { node, initializer, input: [valueInfo('x', ['N', 3, 32, 32])], output: [valueInfo('y', ['N', 10])] },
    layers === CONVNET_SMALL ? 'convnet_cifar' : `convnet_${layers.map((l) => `${l.channels}s${l.stride}`).join('_')}`,
  );
}

/**
 * Input `x` f32[1, L] (L symbolic), output `y` f32[1, 1], the mean of `x`: about as little
 * compute as a model can have per input byte, so that a request of any size costs its
 * transport and little else (the `input-<size>` workloads).
 */
export function reduceMeanModel(): Uint8Array {
  return encodeModel(
    {
      node: [{ opType: 'ReduceMean', input: ['x'], output: ['y'], name: 'mean', attribute: [intsAttr('axes', [1]), { name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 1 }] }],
      initializer: [],
      input: [valueInfo('x', [1, 'L'])],
      output: [valueInfo('y', [1, 1])],
    },
    'reduce_mean',
  );
}
