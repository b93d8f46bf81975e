import { describe, expect, it } from 'vitest';
import { escapeXml, latencyThroughputSvg, type ChartPanel } from './svg.js';
import type { Mode } from './targets.js';

/**
 * A minimal XML well-formedness check (no parser in the dependency tree): one prolog, tags
 * nest and close in order, attributes are quoted and unique, `&` only starts an entity,
 * no raw `<` in text.
 */
function checkWellFormed(xml: string): { root: string; elements: { name: string; attrs: Record<string, string> }[] } {
  const body = xml.replace(/^<\?xml [^?]*\?>\s*/, '');
  const stack: string[] = [];
  const elements: { name: string; attrs: Record<string, string> }[] = [];
  let root = '';
  let i = 0;
  const text = (s: string): void => {
    if (/&(?!(lt|gt|amp|quot|apos|#\d+|#x[0-9a-fA-F]+);)/.test(s)) throw new Error(`bad entity in ${JSON.stringify(s.slice(0, 40))}`);
  };
  while (i < body.length) {
    const lt = body.indexOf('<', i);
    if (lt < 0) {
      text(body.slice(i));
      if (body.slice(i).trim() !== '') throw new Error('text after the root element');
      break;
    }
    text(body.slice(i, lt));
    if (stack.length === 0 && root !== '') throw new Error('content after the root element');
    const gt = body.indexOf('>', lt);
    if (gt < 0) throw new Error('unterminated tag');
    const tag = body.slice(lt + 1, gt);
    if (tag.includes('<')) throw new Error(`"<" inside tag ${tag.slice(0, 40)}`);
    if (tag.startsWith('/')) {
      const name = tag.slice(1).trim();
      if (stack.pop() !== name) throw new Error(`mismatched </${name}>`);
    } else {
      const selfClosing = tag.endsWith('/');
      const m = /^([A-Za-z_][\w.-]*)([\s\S]*?)\/?$/.exec(tag);
      if (!m) throw new Error(`bad tag <${tag.slice(0, 40)}>`);
      const name = m[1]!;
      const attrs: Record<string, string> = {};
      const rest = m[2]!.replace(/\s+([A-Za-z_:][\w:.-]*)="([^"<]*)"/g, (_all, k: string, v: string) => {
        if (k in attrs) throw new Error(`duplicate attribute ${k}`);
        text(v);
        attrs[k] = v;
        return '';
      });
      if (rest.trim() !== '') throw new Error(`unquoted or malformed attributes in <${name}${rest.slice(0, 40)}>`);
      elements.push({ name, attrs });
      if (root === '') root = name;
      if (!selfClosing) stack.push(name);
    }
    i = gt + 1;
  }
  if (stack.length) throw new Error(`unclosed <${stack.join('>, <')}>`);
  return { root, elements };
}

const MODES = ['inproc', 'grpc', 'grpc-tls', 'grpc-attested'];
/**
 * Every mode of targets.ts MODES, checked against the `Mode` type so that a new mode fails
 * the type check here, without loading targets.ts (grpc-js, onnxruntime) into this test.
 */
const ALL_MODES = Object.keys({
  inproc: 0,
  grpc: 0,
  'grpc-tls': 0,
  'grpc-attested': 0,
  'grpc-controls': 0,
  'grpc-plain': 0,
} satisfies Record<Mode, 0>);

const chartPanels = (count: number, modes: readonly string[]): ChartPanel[] =>
  Array.from({ length: count }, (_, i) => ({
    title: `model ${i}`,
    series: modes.map((name, k) => ({ name, points: [1, 2, 4].map((c) => ({ x: 100 * c / (k + 1), y: 0.5 * c * (k + 1), label: `c=${c}` })) })),
  }));

interface LegendEntry {
  readonly label: string;
  readonly left: number;
  readonly right: number;
  readonly top: number;
  readonly bottom: number;
}

/**
 * The legend's entries (swatch `<rect>` + label `<text>`) with their extent, the label's
 * width estimated at 0.6 em a character: more than the mode names take in common
 * sans-serif fonts, so an entry that fits by this estimate fits on screen.
 */
function legendEntries(svg: string): LegendEntry[] {
  const legend = /<g class="legend">([\s\S]*?)<\/g>/.exec(svg)?.[1] ?? '';
  const entry = /<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)"[^>]*\/><text x="([\d.]+)" y="([\d.]+)" font-size="([\d.]+)">([^<]*)<\/text>/g;
  return [...legend.matchAll(entry)].map((m) => {
    const [rx, ry, rw, rh, tx, ty, size] = m.slice(1, 8).map(Number) as [number, number, number, number, number, number, number];
    const label = m[8]!;
    return { label, left: rx, right: Math.max(rx + rw, tx + label.length * size * 0.6), top: Math.min(ry, ty - size), bottom: Math.max(ry + rh, ty) };
  });
}

describe('latency/throughput SVG', () => {
  const panels = ['vad', 'mlp <10ms> & co'].map((title) => ({
    title,
    series: MODES.map((name, k) => ({ name, points: [1, 2, 4].map((c) => ({ x: 100 * c / (k + 1), y: 0.5 * c * (k + 1), label: `c=${c}` })) })),
  }));
  const svg = latencyThroughputSvg(panels, { title: 'p99 "latency" vs throughput' });

  it('is well-formed XML with an svg root', () => {
    const { root, elements } = checkWellFormed(svg);
    expect(root).toBe('svg');
    expect(elements[0]!.attrs['xmlns']).toBe('http://www.w3.org/2000/svg');
    expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>')).toBe(true);
  });

  it('draws one series per mode in every panel', () => {
    const { elements } = checkWellFormed(svg);
    const series = elements.filter((e) => e.attrs['class'] === 'series').map((e) => e.attrs['data-series']);
    expect(series).toEqual([...MODES, ...MODES]);
    expect(elements.filter((e) => e.attrs['class'] === 'panel')).toHaveLength(2);
    expect(elements.filter((e) => e.name === 'polyline')).toHaveLength(8);
    expect(elements.filter((e) => e.name === 'circle')).toHaveLength(24);
  });

  it('escapes titles and copes with empty and non-positive data', () => {
    expect(svg).toContain('mlp &lt;10ms&gt; &amp; co');
    expect(escapeXml(`<a href="x">'&'</a>`)).toBe('&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
    const empty = latencyThroughputSvg([{ title: 'none', series: [{ name: 'grpc', points: [{ x: 0, y: 0 }] }] }], { title: 't' });
    expect(checkWellFormed(empty).root).toBe('svg');
    expect(empty).not.toMatch(/NaN|Infinity/);
    expect(svg).not.toMatch(/NaN|Infinity/);
  });

  it('keeps every legend entry of 6 modes inside a single panel, without overlaps', () => {
    const one = latencyThroughputSvg(chartPanels(1, ALL_MODES), { title: 't' });
    const { elements } = checkWellFormed(one);
    const width = Number(elements[0]!.attrs['width']);
    const entries = legendEntries(one);
    expect(entries.map((e) => e.label)).toEqual(ALL_MODES);
    for (const e of entries) {
      expect(e.left, e.label).toBeGreaterThanOrEqual(0);
      expect(e.right, e.label).toBeLessThanOrEqual(width);
    }
    for (const [i, a] of entries.entries()) {
      for (const b of entries.slice(i + 1)) {
        const apart = a.right <= b.left || b.right <= a.left || a.bottom <= b.top || b.bottom <= a.top;
        expect(apart, `${a.label} overlaps ${b.label}`).toBe(true);
      }
    }
  });

  it('fits the legend and the panels below it in the canvas for 1 to 6 modes and 1 to 5 panels', () => {
    for (let modes = 1; modes <= ALL_MODES.length; modes++) {
      for (let count = 1; count <= 5; count++) {
        const chart = latencyThroughputSvg(chartPanels(count, ALL_MODES.slice(0, modes)), { title: 't' });
        const what = `${modes} modes, ${count} panels`;
        const { root, elements } = checkWellFormed(chart);
        expect(root).toBe('svg');
        const width = Number(elements[0]!.attrs['width']);
        const height = Number(elements[0]!.attrs['height']);
        const entries = legendEntries(chart);
        expect(entries, what).toHaveLength(modes);
        for (const e of entries) expect(e.right, `${what}: ${e.label}`).toBeLessThanOrEqual(width);
        const legendBottom = Math.max(...entries.map((e) => e.bottom));
        const titles = elements.filter((e) => e.name === 'text' && e.attrs['font-size'] === '13');
        expect(titles, what).toHaveLength(count);
        for (const t of titles) expect(Number(t.attrs['y']) - 13, what).toBeGreaterThanOrEqual(legendBottom);
        const frames = elements.filter((e) => e.name === 'rect' && e.attrs['stroke'] === '#888');
        expect(frames, what).toHaveLength(count);
        for (const f of frames) expect(Number(f.attrs['y']) + Number(f.attrs['height']), what).toBeLessThanOrEqual(height);
        for (const t of elements.filter((e) => e.name === 'text')) expect(Number(t.attrs['y']), what).toBeLessThanOrEqual(height);
      }
    }
  });
});
