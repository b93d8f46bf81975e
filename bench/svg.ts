/**
 * A dependency-free SVG chart of latency against throughput: one panel per model, one
 * series (polyline + point markers) per mode, x = throughput (req/s, linear), y = latency
 * (ms, log10). Plain SVG 1.1 with no scripts, fonts or external references, so it renders
 * the same in a browser, rsvg-convert or a Markdown viewer.
 */

export interface ChartPoint {
  readonly x: number;
  readonly y: number;
  /** Shown in the point's tooltip, e.g. "c=4". */
  readonly label?: string;
}

export interface ChartSeries {
  readonly name: string;
  readonly points: readonly ChartPoint[];
}

export interface ChartPanel {
  readonly title: string;
  readonly series: readonly ChartSeries[];
}

export interface ChartOptions {
  readonly title: string;
  readonly xLabel?: string;
  readonly yLabel?: string;
  readonly panelWidth?: number;
  readonly panelHeight?: number;
}

/** Colours per series index (Okabe-Ito, distinguishable with common colour blindness). */
const COLOURS = ['#000000', '#E69F00', '#56B4E9', '#009E73', '#D55E00', '#CC79A7', '#0072B2', '#F0E442'];

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c]!);
}

const fmt = (v: number): string => (Math.abs(v) >= 100 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(1) : v.toPrecision(2));
const px = (v: number): string => v.toFixed(1);

/** "Nice" linear ticks from 0 to at least `max`. */
function linearTicks(max: number): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / 5;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const ticks: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) ticks.push(v);
  return ticks;
}

function panelSvg(p: ChartPanel, seriesNames: readonly string[], x0: number, y0: number, w: number, h: number, o: ChartOptions): string {
  const m = { left: 60, right: 15, top: 28, bottom: 42 };
  const pw = w - m.left - m.right;
  const ph = h - m.top - m.bottom;
  const all = p.series.flatMap((s) => s.points).filter((q) => Number.isFinite(q.x) && q.y > 0);
  const xTicks = linearTicks(Math.max(1e-9, ...all.map((q) => q.x)));
  const xMax = xTicks[xTicks.length - 1]!;
  const ys = all.map((q) => q.y);
  const lo = Math.floor(Math.log10(Math.min(...(ys.length ? ys : [0.1]))));
  const hi = Math.max(lo + 1, Math.ceil(Math.log10(Math.max(...(ys.length ? ys : [1])))));
  const sx = (v: number): number => x0 + m.left + (v / xMax) * pw;
  const sy = (v: number): number => y0 + m.top + ph - ((Math.log10(v) - lo) / (hi - lo)) * ph;
  const out: string[] = [];
  out.push(`<g class="panel">`);
  out.push(`<text x="${px(x0 + m.left + pw / 2)}" y="${px(y0 + 18)}" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(p.title)}</text>`);
  out.push(`<rect x="${px(x0 + m.left)}" y="${px(y0 + m.top)}" width="${px(pw)}" height="${px(ph)}" fill="none" stroke="#888"/>`);
  for (const t of xTicks) {
    out.push(`<line x1="${px(sx(t))}" y1="${px(y0 + m.top)}" x2="${px(sx(t))}" y2="${px(y0 + m.top + ph)}" stroke="#eee"/>`);
    out.push(`<text x="${px(sx(t))}" y="${px(y0 + m.top + ph + 14)}" text-anchor="middle" font-size="10">${fmt(t)}</text>`);
  }
  for (let e = lo; e <= hi; e++) {
    const v = 10 ** e;
    out.push(`<line x1="${px(x0 + m.left)}" y1="${px(sy(v))}" x2="${px(x0 + m.left + pw)}" y2="${px(sy(v))}" stroke="#eee"/>`);
    out.push(`<text x="${px(x0 + m.left - 4)}" y="${px(sy(v) + 3)}" text-anchor="end" font-size="10">${fmt(v)}</text>`);
  }
  out.push(`<text x="${px(x0 + m.left + pw / 2)}" y="${px(y0 + h - 8)}" text-anchor="middle" font-size="11">${escapeXml(o.xLabel ?? 'throughput (req/s)')}</text>`);
  out.push(
    `<text x="${px(x0 + 14)}" y="${px(y0 + m.top + ph / 2)}" text-anchor="middle" font-size="11" transform="rotate(-90 ${px(x0 + 14)} ${px(y0 + m.top + ph / 2)})">${escapeXml(o.yLabel ?? 'latency (ms, log)')}</text>`,
  );
  for (const s of p.series) {
    const colour = COLOURS[seriesNames.indexOf(s.name) % COLOURS.length]!;
    const pts = s.points.filter((q) => Number.isFinite(q.x) && q.y > 0);
    out.push(`<g class="series" data-series="${escapeXml(s.name)}" stroke="${colour}" fill="${colour}">`);
    if (pts.length > 1) {
      out.push(`<polyline fill="none" stroke-width="1.5" points="${pts.map((q) => `${px(sx(q.x))},${px(sy(q.y))}`).join(' ')}"/>`);
    }
    for (const q of pts) {
      out.push(`<circle cx="${px(sx(q.x))}" cy="${px(sy(q.y))}" r="3"><title>${escapeXml(`${s.name} ${q.label ?? ''} ${fmt(q.x)} req/s, ${fmt(q.y)} ms`)}</title></circle>`);
    }
    out.push('</g>');
  }
  out.push('</g>');
  return out.join('\n');
}

/** Legend font size and the width of an entry's colour swatch plus the space after it. */
const LEGEND_FONT = 12;
const SWATCH = 16;
/**
 * An upper estimate of a legend entry's width (plain SVG cannot measure text): 0.6 em a
 * character is above the average advance of lowercase text in the common sans-serif fonts
 * (Arial, Helvetica, DejaVu Sans), so a label laid out by it stays inside its slot.
 */
const legendEntryWidth = (name: string): number => SWATCH + name.length * LEGEND_FONT * 0.6;

/**
 * Flows the legend entries left to right, starting a new row where the next entry would
 * cross the canvas's right margin, so that up to six modes fit even a single narrow panel.
 */
function legendLayout(names: readonly string[], width: number): { x: number; row: number }[] {
  const margin = 20;
  const gap = 20;
  let x = margin;
  let row = 0;
  return names.map((n) => {
    const entry = legendEntryWidth(n);
    if (x > margin && x + entry > width - margin) {
      x = margin;
      row++;
    }
    const at = { x, row };
    x += entry + gap;
    return at;
  });
}

/** Renders panels side by side (two per row) with a shared legend. */
export function latencyThroughputSvg(panels: readonly ChartPanel[], o: ChartOptions): string {
  const w = o.panelWidth ?? 420;
  const h = o.panelHeight ?? 300;
  const perRow = Math.min(2, Math.max(1, panels.length));
  const rows = Math.max(1, Math.ceil(panels.length / perRow));
  const names = [...new Set(panels.flatMap((p) => p.series.map((s) => s.name)))];
  const header = 30;
  const width = perRow * w;
  const entries = legendLayout(names, width);
  const legendRow = 18;
  const legend = 24 + legendRow * Math.max(0, ...entries.map((e) => e.row));
  const height = header + legend + rows * h;
  const out: string[] = [];
  out.push(`<?xml version="1.0" encoding="UTF-8"?>`);
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" version="1.1" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`);
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="#fff"/>`);
  out.push(`<text x="${px(width / 2)}" y="20" text-anchor="middle" font-size="15" font-weight="bold">${escapeXml(o.title)}</text>`);
  out.push('<g class="legend">');
  names.forEach((n, i) => {
    const { x, row } = entries[i]!;
    const y = header + row * legendRow;
    const colour = COLOURS[i % COLOURS.length]!;
    out.push(
      `<rect x="${px(x)}" y="${y}" width="12" height="12" fill="${colour}"/><text x="${px(x + SWATCH)}" y="${y + 11}" font-size="${LEGEND_FONT}">${escapeXml(n)}</text>`,
    );
  });
  out.push('</g>');
  panels.forEach((p, i) => {
    out.push(panelSvg(p, names, (i % perRow) * w, header + legend + Math.floor(i / perRow) * h, w, h, o));
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
