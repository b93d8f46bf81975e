/**
 * One short smoke run of the whole harness: every mode (server processes included), a tiny
 * generated model, concurrency 1 and one open-loop rate, boot and seal figures. Asserts
 * structure and zero errors only, never timings. Needs dist/ (`npm test` builds first).
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { smallBenchOptions } from '../test/helpers/bench-options.js';
import { runBench, slope, type Progress } from './harness.js';
import { readMachineTuning, tuningLine } from './machine.js';
import { chartPanels, markdownSummary, REPORT_SCHEMA } from './report.js';
import { latencyThroughputSvg } from './svg.js';
import { MODES, serverProcessEntry } from './targets.js';
import { mlpWorkload } from './workloads.js';

describe('cir bench smoke run', () => {
  it('runs all modes side by side and reports every figure', async () => {
    expect(existsSync(serverProcessEntry()), 'run `npm run build` first').toBe(true);
    const progress: Progress[] = [];
    const report = await runBench(
      smallBenchOptions({
        onProgress: (p) => progress.push(p),
        modes: MODES,
        workloads: [mlpWorkload({ layers: 2, dim: 32, batch: 1 }, 'tiny')],
        rates: [20],
        warmupMs: 200,
        durationMs: 600,
        requestTimeoutMs: 10_000,
        maxInFlight: 64,
        sloP99Ms: 1000,
        targetRps: 1000,
        bootModelMb: 1,
        warmBoots: 1,
        sealMb: 1,
        // Every server polls when idle here; the other bench tests run them with it off.
        idlePollUs: 300,
      }),
    );
    expect(report.schema).toBe(REPORT_SCHEMA);
    expect(report.results).toHaveLength(MODES.length * 2);
    for (const mode of MODES) {
      for (const loop of ['closed', 'open'] as const) {
        const r = report.results.find((x) => x.mode === mode && x.loop === loop);
        expect(r, `${mode} ${loop}`).toBeDefined();
        expect(r!.model).toBe('tiny');
        expect(r!.errors, `${mode} ${loop}: ${JSON.stringify(r!.errorsByStatus)}`).toBe(0);
        expect(r!.count).toBeGreaterThan(0);
        expect(r!.throughput).toBeGreaterThan(0);
        expect(r!.p99Ms).toBeGreaterThanOrEqual(r!.p50Ms);
        expect(r!.perRep).toHaveLength(1);
        if (mode === 'inproc') {
          expect(r!.overhead).toBeNull();
          expect(r!.serverP50Ms).toBeNull();
        } else {
          expect(r!.overhead).not.toBeNull();
          expect(r!.serverCpuMsPerRequest).not.toBeNull();
          expect(r!.serverMaxRssMiB).toBeGreaterThan(0);
          // Timed inside the server, each call's span lies within the client's: its p50 cannot
          // pass the slowest call the client saw (0.1 % histogram resolution, 1 µs rounding).
          expect(r!.serverP50Ms, `${mode} ${loop}`).toBeGreaterThan(0);
          expect(r!.serverP99Ms).toBeGreaterThanOrEqual(r!.serverP50Ms!);
          expect(r!.serverP50Ms).toBeLessThanOrEqual(r!.maxMs * 1.001 + 0.001);
        }
      }
    }
    expect(report.results.filter((x) => x.loop === 'closed').map((x) => x.concurrency)).toEqual(MODES.map(() => 1));
    expect(report.results.filter((x) => x.loop === 'open').map((x) => x.rate)).toEqual(MODES.map(() => 20));
    expect(report.servers.map((s) => [s.mode, s.tls, s.sealedModels, s.sessionsPerModel])).toEqual([
      ['grpc', false, false, 1],
      ['grpc-tls', true, false, 1],
      ['grpc-attested', true, true, 1],
      ['grpc-controls', false, false, 1],
      ['grpc-plain', false, false, 1],
    ]);
    // grpc-plain ran the reference server (no boot steps), every other mode booted cir.
    for (const s of report.servers) expect(s.boot?.steps.length === 0, s.mode).toBe(s.mode === 'grpc-plain');
    // grpc and grpc-controls ran side by side: the controls' cost, per loop and level.
    expect(report.controlsCost?.map((c) => [c.loop, c.level, c.pairs])).toEqual([
      ['closed', 1, 1],
      ['open', 20, 1],
    ]);
    expect(report.controlsCost?.every((c) => Number.isFinite(c.p50DeltaUs) && c.serverCpuDeltaUs !== null)).toBe(true);
    // ... and the pairs alternated request by request in one window per concurrency level.
    expect(report.interleaved?.map((r) => [r.a, r.b, r.model, r.concurrency, r.sideA.errors + r.sideB.errors])).toEqual([
      ['grpc-plain', 'grpc', 'tiny', 1, 0],
      ['grpc', 'grpc-controls', 'tiny', 1, 0],
      ['grpc-tls', 'grpc-attested', 'tiny', 1, 0],
    ]);
    for (const r of report.interleaved!) {
      expect(r.sideA.count).toBeGreaterThan(0);
      expect(r.sideB.count).toBeGreaterThan(0);
      expect(r.p50DeltaUs).toBeCloseTo((r.sideB.p50Ms - r.sideA.p50Ms) * 1000, 6);
      expect(r.p50Ratio).toBeCloseTo(r.sideB.p50Ms / r.sideA.p50Ms, 9);
      expect(r.serverCpuDeltaUs).not.toBeNull();
      expect(r.sideA.serverP50Ms).toBeGreaterThan(0);
      expect(r.serverP50DeltaUs).toBeCloseTo((r.sideB.serverP50Ms! - r.sideA.serverP50Ms!) * 1000, 6);
    }
    expect(report.attestedClient?.checks.every((c) => c.ok)).toBe(true);
    expect(report.boot?.cold.steps.map((s) => s.name)).toEqual(expect.arrayContaining(['challenge', 'evidence', 'attest', 'release', 'decrypt', 'load']));
    expect(report.boot?.warm).toHaveLength(1);
    expect(report.sealThroughput?.openGBps).toBeGreaterThan(0);
    expect(report.sizing?.rows).toHaveLength(MODES.length);
    expect(report.sizing?.rows.every((r) => r.source === 'open')).toBe(true);
    expect(report.skipped).toEqual([]);
    expect(report.failures).toEqual([]);
    expect(report.settings.serverLogLevel).toBe('info');
    expect(report.settings.idlePollUs).toBe(300);
    // The progress counts the interleaved windows too (each as `reps` cells) and ends at its total.
    const total = progress[0]!.total;
    expect(total).toBe(MODES.length * 2 + 3);
    expect(progress.every((p) => p.total === total && p.done <= total && p.done + p.cellFraction <= total + 1e-9)).toBe(true);
    expect(progress.some((p) => p.label.includes('interleaved') && p.done >= MODES.length * 2)).toBe(true);
    expect(progress.at(-1)).toMatchObject({ done: total, label: 'done' });
    expect(JSON.parse(JSON.stringify(report))).toEqual(report);
    expect(report.machine.tuning).toEqual(readMachineTuning());
    const md = markdownSummary(report);
    expect(md).toContain(tuningLine(readMachineTuning()));
    for (const mode of MODES) expect(md).toContain(`| ${mode} |`);
    expect(md).toContain('## Cost of the multi-tenant controls');
    expect(md).toContain('## Paired comparisons (interleaved)');
    expect(md).toContain('| p50 | srv p50 |');
    expect(md).toContain('Δ srv p50 µs');
    const grpcSizing = report.sizing?.rows.find((r) => r.mode === 'grpc');
    expect(md).toMatch(grpcSizing?.lowerBound ? /\| tiny \| grpc \| open loop \| ≥ [\d.]+ \| ≤ \d+ \|/ : /\| tiny \| grpc \| open loop \| – \| – \|/);
    expect(md).toMatch(/\| grpc \| 1 \| [\d.]+ \| [\d.]+ \|/);
    // A report written before server-side timing existed still renders, with – in its cells.
    const older = JSON.parse(JSON.stringify(report)) as { results: Record<string, unknown>[]; interleaved: Record<string, unknown>[] };
    for (const r of older.results) {
      delete r['serverP50Ms'];
      delete r['serverP99Ms'];
    }
    for (const r of older.interleaved) delete r['serverP50DeltaUs'];
    const olderMd = markdownSummary(older as unknown as typeof report);
    expect(olderMd).toMatch(/\| grpc \| 1 \| [\d.]+ \| – \|/);
    expect(olderMd).toMatch(/\| grpc-plain \| grpc \| tiny \| 1 \| \d+ \| [\d.]+ \| [\d.]+ \| -?\d+ \| – \|/);
    const svg = latencyThroughputSvg(chartPanels(report), { title: 't' });
    expect(svg.match(/class="series"/g)).toHaveLength(MODES.length * 2);
  });
});

describe('cir bench --soak', () => {
  it('runs a closed loop per server mode, samples server memory and reports RSS start/end and errors', async () => {
    const report = await runBench(
      smallBenchOptions({
        modes: ['inproc', 'grpc'],
        workloads: [mlpWorkload({ layers: 2, dim: 32, batch: 1 }, 'tiny')],
        warmupMs: 200,
        durationMs: 0,
        requestTimeoutMs: 10_000,
        maxInFlight: 64,
        quick: false,
        soak: { durationMs: 1500, concurrency: 4, sampleMs: 300 },
      }),
    );
    expect(report.results).toEqual([]);
    expect(report.soak).toHaveLength(1);
    const s = report.soak![0]!;
    expect(s).toMatchObject({ mode: 'grpc', model: 'tiny', concurrency: 4, durationMs: 1500, errors: 0 });
    expect(s.completed).toBeGreaterThan(0);
    expect(s.samples.length).toBeGreaterThanOrEqual(3);
    expect(s.rssStartBytes).toBe(s.samples[0]!.rssBytes);
    expect(s.rssEndBytes).toBe(s.samples.at(-1)!.rssBytes);
    expect(s.rssGrowthBytes).toBe(s.rssEndBytes - s.rssStartBytes);
    expect(s.rssPeakBytes).toBeGreaterThanOrEqual(Math.max(...s.samples.map((x) => x.rssBytes)) - 4096);
    expect(s.samples.at(-1)!.completed).toBe(s.completed);
    expect(report.skipped.map((k) => k.what)).toEqual(['inproc soak']);
    expect(report.settings.soak).toEqual({ durationMs: 1500, concurrency: 4, sampleMs: 300 });
    expect(markdownSummary(report)).toContain('## Soak');
  });

  it('slope is the least-squares fit, null without two distinct points', () => {
    expect(slope([{ x: 0, y: 1 }, { x: 1, y: 3 }, { x: 2, y: 5 }])).toBeCloseTo(2);
    expect(slope([{ x: 0, y: 7 }, { x: 1, y: 7 }])).toBe(0);
    expect(slope([{ x: 1, y: 1 }])).toBeNull();
    expect(slope([{ x: 1, y: 1 }, { x: 1, y: 2 }])).toBeNull();
  });
});
