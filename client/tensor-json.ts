/**
 * The `cir infer --input FILE.json` format, modelled on the KServe v2 REST body:
 *
 *   { "inputs": [ { "name": "input", "datatype": "FP32", "shape": [1, 4], "data": [0.1, 0.2, 0.3, 0.4] } ],
 *     "outputs": ["output"] }            // optional: which outputs to return
 *
 * `data` is flat, row-major. INT64/UINT64 values may be JSON numbers or decimal strings.
 */
import { z } from 'zod';
import { ClientError } from './codes.js';

export const DATATYPES = ['BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP32', 'FP64'] as const;
export type Datatype = (typeof DATATYPES)[number];

const MAX_ELEMENTS = 64 * 1024 * 1024;

export const InferInputFileSchema = z.strictObject({
  inputs: z
    .array(
      z.strictObject({
        name: z.string().min(1),
        datatype: z.enum(DATATYPES),
        shape: z.array(z.number().int().nonnegative()).max(16),
        data: z.array(z.union([z.number(), z.boolean(), z.string().regex(/^-?\d+$/)])),
      }),
    )
    .min(1),
  outputs: z.array(z.string().min(1)).optional(),
});
export type InferInputFile = z.infer<typeof InferInputFileSchema>;

function contentsField(dt: Datatype): string {
  switch (dt) {
    case 'BOOL':
      return 'bool_contents';
    case 'INT8':
    case 'INT16':
    case 'INT32':
      return 'int_contents';
    case 'INT64':
      return 'int64_contents';
    case 'UINT8':
    case 'UINT16':
    case 'UINT32':
      return 'uint_contents';
    case 'UINT64':
      return 'uint64_contents';
    case 'FP32':
      return 'fp32_contents';
    case 'FP64':
      return 'fp64_contents';
  }
}

/** Builds a gRPC ModelInferRequest with typed `contents` from the JSON input file. */
export function toModelInferRequest(model: string, file: unknown, id = ''): Record<string, unknown> {
  const r = InferInputFileSchema.safeParse(file);
  if (!r.success) {
    const first = r.error.issues[0];
    throw new ClientError('ERR_CLI_BAD_INPUT_FILE', { detail: `${first?.path.join('.') || '(root)'}: ${first?.message}` });
  }
  const inputs = r.data.inputs.map((t) => {
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (count > MAX_ELEMENTS || count !== t.data.length) {
      throw new ClientError('ERR_CLI_BAD_INPUT_FILE', {
        detail: `input "${t.name}": shape [${t.shape.join(',')}] needs ${count} values, got ${t.data.length}`,
      });
    }
    const field = contentsField(t.datatype);
    const values = t.data.map((v) => {
      if (t.datatype === 'BOOL') return Boolean(v);
      if (t.datatype === 'INT64' || t.datatype === 'UINT64') return String(v);
      if (typeof v !== 'number') {
        throw new ClientError('ERR_CLI_BAD_INPUT_FILE', { detail: `input "${t.name}": ${t.datatype} values must be numbers` });
      }
      return v;
    });
    return { name: t.name, datatype: t.datatype, shape: t.shape, contents: { [field]: values } };
  });
  return {
    model_name: model,
    id,
    inputs,
    outputs: (r.data.outputs ?? []).map((name) => ({ name })),
  };
}

const RAW_READERS: Record<Datatype, { size: number; read: (b: Buffer, o: number) => number | boolean | string }> = {
  BOOL: { size: 1, read: (b, o) => b[o] !== 0 },
  UINT8: { size: 1, read: (b, o) => b.readUInt8(o) },
  UINT16: { size: 2, read: (b, o) => b.readUInt16LE(o) },
  UINT32: { size: 4, read: (b, o) => b.readUInt32LE(o) },
  UINT64: { size: 8, read: (b, o) => b.readBigUInt64LE(o).toString() },
  INT8: { size: 1, read: (b, o) => b.readInt8(o) },
  INT16: { size: 2, read: (b, o) => b.readInt16LE(o) },
  INT32: { size: 4, read: (b, o) => b.readInt32LE(o) },
  INT64: { size: 8, read: (b, o) => b.readBigInt64LE(o).toString() },
  FP32: { size: 4, read: (b, o) => b.readFloatLE(o) },
  FP64: { size: 8, read: (b, o) => b.readDoubleLE(o) },
};

export interface OutputTensorJson {
  name: string;
  datatype: string;
  shape: number[];
  data: (number | boolean | string)[];
}

interface ResponseLike {
  model_name: string;
  outputs: { name: string; datatype: string; shape: (string | number)[]; contents?: Record<string, unknown[]> | null }[];
  raw_output_contents: Buffer[];
}

/** Decodes a ModelInferResponse (raw or typed outputs) into the JSON output format. */
export function fromModelInferResponse(res: ResponseLike): { model: string; outputs: OutputTensorJson[] } {
  const outputs = res.outputs.map((o, i) => {
    const shape = o.shape.map(Number);
    const dt = o.datatype as Datatype;
    const raw = res.raw_output_contents[i];
    let data: (number | boolean | string)[] = [];
    if (raw && raw.length > 0 && RAW_READERS[dt]) {
      const { size, read } = RAW_READERS[dt];
      for (let off = 0; off + size <= raw.length; off += size) data.push(read(raw, off));
    } else if (o.contents && RAW_READERS[dt]) {
      data = ((o.contents[contentsField(dt)] ?? []) as (number | boolean | string)[]).map((v) => v);
    }
    return { name: o.name, datatype: o.datatype, shape, data };
  });
  return { model: res.model_name, outputs };
}
