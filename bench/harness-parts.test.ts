/**
 * The harness's decisions, apart from any run: the trial requests before a sweep, the base
 * of the `auto` open-loop rates, which pairs run interleaved, and SLO sizing.
 */
import { describe, expect, it } from 'vitest';
import { isCirError } from '../common/errors.js';
import { interleavedPairs, preflight, sizingRows, slowestPeak } from './harness.js';
import type { ResultEntry } from './report.js';
import { CallError, type Mode, type Target } from './targets.js';
import { mlpWorkload } from './workloads.js';

function result(mode: Mode, model: string, loop: 'closed' | 'open', level: number, throughput: number, p99Ms: number, errors = 0): ResultEntry {
  return {
    mode,
    model,
    loop,
    concurrency: loop === 'closed' ? level : null,
    rate: loop === 'open' ? level : null,
    throughput,
    p99Ms,
    errors,
  } as unknown as ResultEntry;
}

function target(mode: Mode, call: () => Promise<void>): Target & { calls: string[] } {
  const calls: string[] = [];
  return {
    mode,
    calls,
    invoker: (w) => () => {
      calls.push(w.name);
      return call();
    },
    close: async () => undefined,
  };
}

describe('preflight', () => {
  const a = mlpWorkload({ layers: 1, dim: 4, batch: 1 }, 'a');
  const b = mlpWorkload({ layers: 1, dim: 4, batch: 1 }, 'b');

  it('sends one request per mode and model, in order', async () => {
    const inproc = target('inproc', async () => undefined);
    const grpc = target('grpc', async () => undefined);
    await preflight(['inproc', 'grpc'], [a, b], new Map<Mode, Target>([['inproc', inproc], ['grpc', grpc]]));
    expect(inproc.calls).toEqual(['a', 'b']);
    expect(grpc.calls).toEqual(['a', 'b']);
  });

  it('stops at the first failure with a typed error naming the mode, the model and the status', async () => {
    const grpc = target('grpc', async () => {
      throw new CallError('INVALID_ARGUMENT', 'unknown input "y"');
    });
    const later = target('grpc-tls', async () => undefined);
    const e = await preflight(['grpc', 'grpc-tls'], [a, b], new Map<Mode, Target>([['grpc', grpc], ['grpc-tls', later]])).catch((x: unknown) => x);
    expect(isCirError(e)).toBe(true);
    expect(e).toMatchObject({ code: 'ERR_CLI_BENCH_PREFLIGHT', category: 'bad-input' });
    expect((e as Error).message).toContain('grpc, model a: INVALID_ARGUMENT: unknown input "y"');
    expect(grpc.calls).toEqual(['a']);
    expect(later.calls).toEqual([]);
  });

  it('blames the server, not the inputs, for a timeout or an unavailable server', async () => {
    for (const status of ['DEADLINE_EXCEEDED', 'UNAVAILABLE', 'INTERNAL']) {
      const grpc = target('grpc', async () => {
        throw new CallError(status, 'no');
      });
      const e = await preflight(['grpc'], [a], new Map<Mode, Target>([['grpc', grpc]])).catch((x: unknown) => x);
      expect(e, status).toMatchObject({ code: 'ERR_CLI_BENCH_SERVER_FAILED', category: 'unavailable' });
      expect((e as Error).message).toContain(`grpc, model a: ${status}: no`);
    }
  });

  it('keeps only the first line of an untyped failure', async () => {
    const inproc = target('inproc', async () => {
      throw new Error('first line\n    at stack frame');
    });
    const e = (await preflight(['inproc'], [a], new Map<Mode, Target>([['inproc', inproc]])).catch((x: unknown) => x)) as Error;
    expect(e.message).toMatch(/inproc, model a: first line$/);
  });
});

describe('slowestPeak (base of --rates auto)', () => {
  const results = [
    result('inproc', 'm', 'closed', 1, 9000, 1),
    result('inproc', 'm', 'closed', 4, 17000, 1),
    result('grpc', 'm', 'closed', 1, 1200, 1),
    result('grpc', 'm', 'closed', 4, 1600, 2),
    result('grpc-tls', 'm', 'closed', 4, 1500, 2),
    result('grpc-tls', 'm', 'open', 3000, 2900, 9),
    result('grpc-tls', 'other', 'closed', 4, 100, 2),
  ];

  it('is the lowest of the modes’ closed-loop peaks for that model', () => {
    expect(slowestPeak(results, 'm', ['inproc', 'grpc', 'grpc-tls'])).toBe(1500);
    expect(slowestPeak(results, 'm', ['inproc', 'grpc'])).toBe(1600);
    expect(slowestPeak(results, 'm', ['inproc'])).toBe(17000);
  });

  it('is 0 (no auto rates) when a mode has no closed-loop figure', () => {
    expect(slowestPeak(results, 'm', ['inproc', 'grpc-attested'])).toBe(0);
    expect(slowestPeak(results, 'm', [])).toBe(0);
  });
});

describe('interleavedPairs', () => {
  it('keeps the pairs whose modes both run', () => {
    expect(interleavedPairs(['inproc', 'grpc', 'grpc-tls', 'grpc-attested'], false)).toEqual([['grpc-tls', 'grpc-attested']]);
    expect(interleavedPairs(['grpc-plain', 'grpc', 'grpc-controls'], false)).toEqual([
      ['grpc-plain', 'grpc'],
      ['grpc', 'grpc-controls'],
    ]);
    expect(interleavedPairs(['inproc', 'grpc'], false)).toEqual([]);
  });

  it('drops both pairs with grpc under --controls (every cir mode runs the controls), keeps tls vs attested', () => {
    expect(interleavedPairs(['grpc-plain', 'grpc', 'grpc-controls', 'grpc-tls', 'grpc-attested'], true)).toEqual([['grpc-tls', 'grpc-attested']]);
  });
});

describe('sizingRows', () => {
  it('takes open-loop points when there are any and marks a limit above the highest rate offered', () => {
    const results = [
      result('inproc', 'm', 'closed', 4, 17000, 0.5),
      result('inproc', 'm', 'open', 500, 500, 0.4),
      result('inproc', 'm', 'open', 1000, 1000, 0.6),
      result('grpc', 'm', 'closed', 4, 1600, 3),
      result('grpc', 'm', 'open', 500, 499, 2),
      result('grpc', 'm', 'open', 1000, 990, 40),
    ];
    const rows = sizingRows(results, ['m'], ['inproc', 'grpc'], 10, 5000);
    expect(rows).toEqual([
      { model: 'm', mode: 'inproc', source: 'open', maxThroughput: 1000, lowerBound: true, serversNeeded: 5 },
      { model: 'm', mode: 'grpc', source: 'open', maxThroughput: 499, lowerBound: false, serversNeeded: 11 },
    ]);
  });

  it('falls back to closed-loop points, never a lower bound there; errors or an unmet SLO disqualify a point', () => {
    const results = [
      result('grpc', 'm', 'closed', 1, 800, 2),
      result('grpc', 'm', 'closed', 4, 1600, 8),
      result('grpc', 'm', 'closed', 8, 1700, 30),
      result('grpc-tls', 'm', 'closed', 1, 700, 2, 1),
    ];
    expect(sizingRows(results, ['m'], ['grpc', 'grpc-tls'], 10)).toEqual([
      { model: 'm', mode: 'grpc', source: 'closed', maxThroughput: 1600, lowerBound: false, serversNeeded: null },
      { model: 'm', mode: 'grpc-tls', source: 'closed', maxThroughput: null, lowerBound: false, serversNeeded: null },
    ]);
  });

  it('is no lower bound when the highest rate was not sustained', () => {
    const results = [result('grpc', 'm', 'open', 100, 100, 1), result('grpc', 'm', 'open', 2000, 1500, 5)];
    expect(sizingRows(results, ['m'], ['grpc'], 10)[0]).toMatchObject({ maxThroughput: 100, lowerBound: false });
  });
});
