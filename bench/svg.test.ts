import { describe, expect, it } from 'vitest';
import { escapeXml, latencyThroughputSvg } from './svg.js';

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
});
