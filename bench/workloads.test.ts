import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ClientError } from '../client/codes.js';
import { sealModel } from '../common/seal.js';
import { SealError } from '../common/seal-codes.js';
import { mlpForSize, mlpModel, mlpWeightBytes } from './onnx-gen.js';
import { makeTensor, MAX_MLP_MB, MAX_REQUEST_BYTES, mlpSizeWorkload, parseInputSpec, parseInputSpecs, readDekFile, userWorkload, type Datatype } from './workloads.js';

/** The error a call throws or rejects with (fails the test if it returns). */
async function caught(f: () => unknown): Promise<unknown> {
  try {
    await f();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw');
}

/** Asserts a ClientError of `code` whose message contains every one of `parts`. */
async function expectClientError(f: () => unknown, code: string, ...parts: string[]): Promise<ClientError> {
  const e = await caught(f);
  expect(e).toBeInstanceOf(ClientError);
  const ce = e as ClientError;
  expect(ce.code).toBe(code);
  for (const p of parts) expect(ce.message).toContain(p);
  return ce;
}

const ALIASES: Readonly<Record<string, Datatype>> = {
  bool: 'BOOL', uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64',
  int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  fp32: 'FP32', float32: 'FP32', float: 'FP32', fp64: 'FP64', float64: 'FP64', double: 'FP64',
};

describe('parseInputSpec', () => {
  it.each([
    ['x:fp32:1x3', 'x', 'FP32', [1, 3]],
    ['serving_default_x:0:fp32:1x4', 'serving_default_x:0', 'FP32', [1, 4]],
    ['serving_default_x:0:fp32:1x4:0.5', 'serving_default_x:0', 'FP32', [1, 4]],
    ['a:b:c:int8:2,3:7', 'a:b:c', 'INT8', [2, 3]],
    // A name whose last segment spells a datatype: the datatype nearest the right wins.
    ['x:fp32:int8:3', 'x:fp32', 'INT8', [3]],
    ['x:fp32:int8:3:1', 'x:fp32', 'INT8', [3]],
    ['fp32:fp32:-', 'fp32', 'FP32', []],
    ['::fp64::2', ':', 'FP64', []],
  ])('%s is %s, %s %j', (spec, name, datatype, shape) => {
    const t = parseInputSpec(spec);
    expect(t.name).toBe(name);
    expect(t.datatype).toBe(datatype);
    expect(t.shape).toEqual(shape);
  });

  it('fills the constant after the dims, also when the name has colons', () => {
    expect([...parseInputSpec('serving_default_x:0:fp64:2:0.5').data]).toEqual([0.5, 0.5]);
    expect([...parseInputSpec('a:1:int64:-:16000').data]).toEqual([16000n]);
  });

  it.each(['1x', 'x3', '1xx3', '1,,3', ',', 'x', '1x-2', '-1', '1.5', '1e3', ' 1', '0x1f', '1 x2', '--'])('rejects dims %j', async (dims) => {
    await expectClientError(() => parseInputSpec(`x:fp32:${dims}`), 'ERR_CLI_BAD_ARGUMENT', `--input "x:fp32:${dims}"`, `dims ${JSON.stringify(dims)}`);
  });

  it.each(['', ' ', 'abc', 'Infinity', 'NaN', '1e999'])('rejects the value %j', async (value) => {
    await expectClientError(() => parseInputSpec(`x:fp32:2:${value}`), 'ERR_CLI_BAD_ARGUMENT', `value ${JSON.stringify(value)} is not a finite number`);
  });

  it.each(['x', 'x:fp32', 'x:fp16:1', 'x:1:2:3:4', 'x:constructor:1', 'x:__proto__:1', 'x:toString:1:2', 'x:fp32:1:2:3'])(
    'rejects %j and states the rule',
    async (spec) => {
      await expectClientError(
        () => parseInputSpec(spec),
        'ERR_CLI_BAD_ARGUMENT',
        `--input ${JSON.stringify(spec)}: expected name:dtype:dims[:value], read from the right so that the name may contain ':'`,
        'fp32/float32/float',
      );
    },
  );

  it('rejects an empty name', async () => {
    await expectClientError(() => parseInputSpec(':fp32:1'), 'ERR_CLI_BAD_ARGUMENT', 'the name is empty');
  });

  it('rejects shapes over 1 GiB or with a dimension over 2^31 - 1, before allocating', async () => {
    await expectClientError(() => parseInputSpec('x:fp32:65536x4097'), 'ERR_CLI_BAD_ARGUMENT', 'shape [65536, 4097] is 268500992 FP32 elements, 1074003968 bytes', 'at most 1 GiB');
    await expectClientError(() => parseInputSpec('x:fp64:134217729'), 'ERR_CLI_BAD_ARGUMENT', 'at most 1 GiB');
    await expectClientError(() => parseInputSpec('x:uint8:1073741825'), 'ERR_CLI_BAD_ARGUMENT', 'at most 1 GiB');
    await expectClientError(() => parseInputSpec('x:bool:0x2147483648'), 'ERR_CLI_BAD_ARGUMENT', 'each dimension must be at most 2147483647');
    await expectClientError(() => parseInputSpec(`x:int8:0x${'9'.repeat(400)}`), 'ERR_CLI_BAD_ARGUMENT', 'each dimension must be at most 2147483647');
    expect(parseInputSpec('x:bool:0x2147483647').data.length).toBe(0);
    expect(parseInputSpec('x:uint8:1024x1024').data.length).toBe(2 ** 20);
  });

  it('parseInputSpecs: the tensors parseInputSpec makes, seeded in turn, refused together past one request', async () => {
    const specs = ['a:fp32:2x3', 'b:int64:4', 'c:uint8:-:7'];
    const many = parseInputSpecs(specs, 5);
    expect(many).toEqual(specs.map((s, i) => parseInputSpec(s, 5 + i)));
    // Each is under the 1 GiB an input may hold; together they exceed the bench's 256 MiB message limit.
    const big = ['a:uint8:200000000', 'b:uint8:200000000'];
    await expectClientError(() => parseInputSpecs(big), 'ERR_CLI_BAD_ARGUMENT', 'the --input tensors total 400000000 bytes', `at most ${MAX_REQUEST_BYTES - 2 ** 20}`);
    expect(parseInputSpecs([]).length).toBe(0);
  });

  it('returns a tensor or throws a ClientError for any string', () => {
    const token = fc.constantFrom(':', 'x', ',', '-', '0', '1', '3', '12', 'fp32', 'INT64', 'bool', 'constructor', 'a', ' ', '.', 'e');
    const spec = fc.oneof(fc.string({ maxLength: 30 }), fc.array(token, { maxLength: 14 }).map((a) => a.join('')));
    fc.assert(
      fc.property(spec, (s) => {
        try {
          const t = parseInputSpec(s);
          expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
        } catch (e) {
          if (!(e instanceof ClientError) || e.code !== 'ERR_CLI_BAD_ARGUMENT') throw e;
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('round-trips name, datatype and shape of any valid spec', () => {
    const segment = fc.oneof(fc.string({ maxLength: 8 }).filter((s) => !s.includes(':')), fc.constantFrom('0', 'fp32', 'int8', '1x2', '-', ''));
    const name = fc.array(segment, { minLength: 1, maxLength: 4 }).map((a) => a.join(':')).filter((n) => n !== '');
    const alias = fc.constantFrom(...Object.keys(ALIASES)).chain((a) => fc.constantFrom(a, a.toUpperCase()));
    const shape = fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 4 });
    fc.assert(
      // 0 and 1 fit every datatype, bool included.
      fc.property(name, alias, shape, fc.constantFrom('x', ','), fc.constantFrom('', '-'), fc.option(fc.integer({ min: 0, max: 1 })), (n, a, dims, sep, scalar, value) => {
        const spec = `${n}:${a}:${dims.length ? dims.join(sep) : scalar}${value === null ? '' : `:${value}`}`;
        const t = parseInputSpec(spec);
        expect(t.name).toBe(n);
        expect(t.datatype).toBe(ALIASES[a.toLowerCase()]);
        expect(t.shape).toEqual(dims);
        if (value !== null) expect([...t.data].every((v) => Number(v) === value)).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });

  it.each([
    ['x:uint8:1:300', 'UINT8: an integer from 0 to 255'],
    ['x:uint8:1:-1', 'UINT8: an integer from 0 to 255'],
    ['x:int8:1:-129', 'INT8: an integer from -128 to 127'],
    ['x:int32:1:1.5', 'INT32: an integer from'],
    ['x:bool:1:2', 'BOOL: an integer from 0 to 1'],
    ['x:int64:1:9007199254740993', 'INT64: an integer from -9007199254740991 to 9007199254740991'],
    ['x:fp32:1:1e39', 'FP32: a number from'],
  ])('refuses a value that does not fit its datatype: %s', (spec, why) => {
    expect(() => parseInputSpec(spec)).toThrow(`--input "${spec}": value`);
    expect(() => parseInputSpec(spec)).toThrow(why);
  });

  it.each([
    ['x:uint8:1:255', 255],
    ['x:int8:2:-128', -128],
    ['x:bool:1:1', 1],
    ['x:int64:1:9007199254740991', 9007199254740991],
    ['x:fp32:1:-2.5', -2.5],
    ['x:uint32:1:4294967295', 4294967295],
  ])('accepts the edge value %s', (spec, v) => {
    expect([...parseInputSpec(spec).data].every((x) => Number(x) === v)).toBe(true);
  });
});

describe('mlpSizeWorkload', () => {
  it.each([0, -1, 1.5, Number.NaN, MAX_MLP_MB + 1, 1e20])('rejects %s MiB', async (mb) => {
    await expectClientError(() => mlpSizeWorkload(mb), 'ERR_CLI_BAD_ARGUMENT', `generated MLP size ${mb} MiB`, `from 1 to ${MAX_MLP_MB}`);
  });

  it('states the actual size: mlp-1mb has one 4 MiB layer', () => {
    const w = mlpSizeWorkload(1);
    expect(w.name).toBe('mlp-1mb');
    expect(w.generated?.['weightBytes']).toBe(4 * 2 ** 20 + 4096);
    expect(w.description).toContain('4.0 MiB weights');
    expect(w.description).toContain('asked for 1 MiB');
    expect(mlpSizeWorkload(4).description).not.toContain('asked for');
  });

  it('its largest size stays below the 2 GiB protobuf limit', () => {
    expect(mlpWeightBytes(mlpForSize(MAX_MLP_MB)) + 64 * 1024).toBeLessThan(2 ** 31);
  });
});

describe('user models and key files', () => {
  let dir: string;
  const dek = randomBytes(32);
  const onnx = mlpModel({ layers: 1, dim: 8 });
  const inputs = [makeTensor('x', 'FP32', [1, 8])];
  const f = (name: string): string => path.join(dir, name);
  /** No message may carry the key, in any encoding the key file could hold. */
  const keyFree = (e: ClientError | unknown): void => {
    const m = String((e as Error).message);
    for (const enc of ['hex', 'base64', 'base64url', 'latin1'] as const) expect(m).not.toContain(dek.toString(enc));
  };

  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'cir-workloads-'));
    await mkdir(f('dir.onnx'));
    await writeFile(f('plain.onnx'), onnx);
    await writeFile(f('m.sealed'), sealModel(onnx, dek, { keyId: 'bench-key', keyVersion: 1 }, { chunkSize: 4096 }));
    await writeFile(f('v2.sealed'), sealModel(onnx, dek, { keyId: 'bench-key', keyVersion: 2 }));
    await writeFile(f('key.raw'), dek);
    await writeFile(f('key.hex'), `${dek.toString('hex')}\n`);
    await writeFile(f('key.b64'), dek.toString('base64'));
    await writeFile(f('key.b64u'), ` ${dek.toString('base64url')} `);
    await writeFile(f('wrong.key'), randomBytes(32));
    await writeFile(f('short.raw'), dek.subarray(0, 31));
    await writeFile(f('long.raw'), Buffer.concat([dek, Buffer.from('\n')]));
    await writeFile(f('short.hex'), dek.subarray(0, 31).toString('hex'));
    await writeFile(f('text.key'), `secret-${dek.toString('hex').slice(0, 20)}`);
    // Node's base64 decoder would skip the stray characters and read 32 bytes anyway.
    const b64 = dek.toString('base64');
    await writeFile(f('stray.b64'), `${b64.slice(0, 10)}!*${b64.slice(10)}`);
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads a key as raw bytes, hex, base64 or base64url', async () => {
    for (const k of ['key.raw', 'key.hex', 'key.b64', 'key.b64u']) expect((await readDekFile(f(k))).equals(dek)).toBe(true);
  });

  it.each(['short.raw', 'long.raw', 'short.hex', 'text.key', 'stray.b64'])('a key file that is not 32 bytes (%s) is ERR_CLI_BAD_ARGUMENT, without its content', async (k) => {
    const e = await expectClientError(() => readDekFile(f(k)), 'ERR_CLI_BAD_ARGUMENT', `--dek-file ${f(k)}: `, 'not a 32-byte key');
    keyFree(e);
    expect(e.message).not.toContain('secret');
    expect(e.message).not.toContain(dek.subarray(0, 31).toString('hex'));
  });

  it('an unreadable key or model file is ERR_CLI_FILE_UNREADABLE with its path', async () => {
    await expectClientError(() => readDekFile(f('missing.key')), 'ERR_CLI_FILE_UNREADABLE', `--dek-file ${f('missing.key')}: no such file`);
    await expectClientError(() => readDekFile(dir), 'ERR_CLI_FILE_UNREADABLE', `--dek-file ${dir}: is a directory`);
    await expectClientError(() => userWorkload(f('missing.onnx'), inputs), 'ERR_CLI_FILE_UNREADABLE', `--model ${f('missing.onnx')}: no such file`);
    await expectClientError(() => userWorkload(f('dir.onnx'), inputs), 'ERR_CLI_FILE_UNREADABLE', `--model ${f('dir.onnx')}: is a directory`);
    await expectClientError(() => userWorkload(f('m.sealed'), inputs, f('missing.key')), 'ERR_CLI_FILE_UNREADABLE', 'no such file');
  });

  it('a file without read permission is ERR_CLI_FILE_UNREADABLE', async () => {
    await writeFile(f('locked.key'), dek, { mode: 0o000 });
    if (process.getuid?.() !== 0) {
      await expectClientError(() => readDekFile(f('locked.key')), 'ERR_CLI_FILE_UNREADABLE', 'permission denied');
      return;
    }
    // Root reads anything: a child process that drops to nobody (after loading the code, which
    // may sit where nobody cannot read) meets the error a user would.
    const entry = pathToFileURL(path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'dist', 'bench', 'workloads.js')).href;
    const script = `const { readDekFile } = await import(${JSON.stringify(entry)});
process.setgid(65534); process.setuid(65534);
try { await readDekFile(${JSON.stringify(f('locked.key'))}); process.stdout.write('read'); }
catch (e) { process.stdout.write(JSON.stringify({ code: e.code, message: e.message })); }`;
    const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', script]);
    const e = JSON.parse(stdout) as { code: string; message: string };
    expect(e.code).toBe('ERR_CLI_FILE_UNREADABLE');
    expect(e.message).toContain('permission denied');
  });

  it('refuses a --dek-file that is not a regular file (a pipe would be empty when the server reads it)', async () => {
    await promisify(execFile)('mkfifo', [f('key.fifo')]);
    await expectClientError(() => userWorkload(f('m.sealed'), inputs, f('key.fifo')), 'ERR_CLI_BAD_ARGUMENT', `--dek-file ${f('key.fifo')}: must be a regular file`);
  });

  it('needs at least one input', async () => {
    await expectClientError(() => userWorkload(f('plain.onnx'), []), 'ERR_CLI_BAD_ARGUMENT', '--model needs at least one --input');
  });

  it('serves a plain model as is, and refuses --dek-file for it', async () => {
    const w = await userWorkload(f('plain.onnx'), inputs);
    expect(Buffer.from(w.onnx).equals(Buffer.from(onnx))).toBe(true);
    expect(w.sealedFile).toBeUndefined();
    await expectClientError(() => userWorkload(f('plain.onnx'), inputs, f('key.raw')), 'ERR_CLI_BAD_ARGUMENT', `--model ${f('plain.onnx')} is not sealed`);
  });

  it('opens a sealed model with its key', async () => {
    for (const k of ['key.raw', 'key.hex', 'key.b64u']) {
      const w = await userWorkload(f('m.sealed'), inputs, f(k));
      expect(Buffer.from(w.onnx).equals(Buffer.from(onnx))).toBe(true);
      expect(w.sealedFile).toEqual({ file: f('m.sealed'), dekFile: f(k) });
      expect(w.name).toBe('m');
      expect(w.description).toContain('sealed, key bench-key');
    }
  });

  it('a sealed model needs --dek-file and key version 1', async () => {
    await expectClientError(() => userWorkload(f('m.sealed'), inputs), 'ERR_CLI_BAD_ARGUMENT', `--model ${f('m.sealed')} is sealed: pass --dek-file`);
    keyFree(await expectClientError(() => userWorkload(f('v2.sealed'), inputs, f('key.raw')), 'ERR_CLI_BAD_ARGUMENT', 'key version 2', 're-seal with key version 1'));
  });

  it('a bad key file for a sealed model is ERR_CLI_BAD_ARGUMENT', async () => {
    keyFree(await expectClientError(() => userWorkload(f('m.sealed'), inputs, f('short.raw')), 'ERR_CLI_BAD_ARGUMENT', 'not a 32-byte key'));
  });

  it('a wrong key or a damaged sealed file stays a SealError and carries no key', async () => {
    const check = async (file: string, key: string, code: string): Promise<void> => {
      const e = await caught(() => userWorkload(f(file), inputs, f(key)));
      expect(e).toBeInstanceOf(SealError);
      expect((e as SealError).code).toBe(code);
      keyFree(e);
    };
    await check('m.sealed', 'wrong.key', 'ERR_SEAL_AUTH_FAILED');
    const sealed = sealModel(onnx, dek, { keyId: 'bench-key', keyVersion: 1 }, { chunkSize: 4096 });
    await writeFile(f('truncated.sealed'), sealed.subarray(0, sealed.length - 1));
    await check('truncated.sealed', 'key.raw', 'ERR_SEAL_LENGTH_MISMATCH');
    await writeFile(f('header.sealed'), sealed.subarray(0, 40));
    await check('header.sealed', 'key.raw', 'ERR_SEAL_MALFORMED_HEADER');
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 20]! ^= 1;
    await writeFile(f('flipped.sealed'), flipped);
    await check('flipped.sealed', 'key.raw', 'ERR_SEAL_AUTH_FAILED');
  });
});
