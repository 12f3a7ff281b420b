/**
 * A small self-contained SVG line chart (axes, ticks, legend) for the training report: no
 * scripts, no external fonts or styles, so it renders the same inline in HTML or as a file.
 */

export interface Series {
  name: string;
  color: string;
  points: readonly (readonly [number, number])[];
}

export interface ChartOptions {
  title: string;
  xLabel?: string;
  width?: number;
  height?: number;
  /** Plot y on a log10 scale (values ≤ 0 are dropped). */
  logY?: boolean;
}

const escapeXml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);

/** Round tick values covering [lo, hi]. */
function ticks(lo: number, hi: number, count: number): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw)!;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

const format = (v: number) => (v === 0 ? '0' : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-2 ? v.toExponential(0) : String(Number(v.toPrecision(3))));

export function lineChartSvg(series: readonly Series[], options: ChartOptions): string {
  const width = options.width ?? 640;
  const height = options.height ?? 300;
  const m = { left: 56, right: 16, top: 28, bottom: 40 };
  const fy = options.logY ? (v: number) => Math.log10(v) : (v: number) => v;
  const visible = series.map((s) => ({ ...s, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!options.logY || y > 0)) }));
  const all = visible.flatMap((s) => s.points);
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${width}" height="${height}" fill="#fff"/>`,
    `<text x="${width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="bold">${escapeXml(options.title)}</text>`,
  ];
  if (all.length === 0) {
    parts.push(`<text x="${width / 2}" y="${height / 2}" text-anchor="middle" fill="#888">no data yet</text></svg>`);
    return parts.join('');
  }
  const xs = all.map(([x]) => x);
  const ys = all.map(([, y]) => fy(y));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1];
  const pad = (y1 - y0) * 0.05;
  [y0, y1] = [y0 - pad, y1 + pad];
  const px = (x: number) => m.left + ((x - x0) / (x1 - x0)) * (width - m.left - m.right);
  const py = (y: number) => height - m.bottom - ((y - y0) / (y1 - y0)) * (height - m.top - m.bottom);
  parts.push(`<g stroke="#ddd" stroke-width="1">`);
  const yTicks = options.logY ? ticks(Math.floor(y0), Math.ceil(y1), 4).filter((t) => t >= y0 && t <= y1) : ticks(y0, y1, 5);
  for (const t of yTicks) parts.push(`<line x1="${m.left}" x2="${width - m.right}" y1="${py(t).toFixed(1)}" y2="${py(t).toFixed(1)}"/>`);
  parts.push(`</g><g fill="#444">`);
  for (const t of yTicks) parts.push(`<text x="${m.left - 6}" y="${(py(t) + 4).toFixed(1)}" text-anchor="end">${format(options.logY ? 10 ** t : t)}</text>`);
  for (const t of ticks(x0, x1, 6)) parts.push(`<text x="${px(t).toFixed(1)}" y="${height - m.bottom + 16}" text-anchor="middle">${format(t)}</text>`);
  parts.push(`<text x="${(m.left + width - m.right) / 2}" y="${height - 6}" text-anchor="middle">${escapeXml(options.xLabel ?? 'step')}</text></g>`);
  parts.push(`<rect x="${m.left}" y="${m.top}" width="${width - m.left - m.right}" height="${height - m.top - m.bottom}" fill="none" stroke="#999"/>`);
  visible.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map(([x, y], j) => `${j === 0 ? 'M' : 'L'}${px(x).toFixed(1)},${py(fy(y)).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`);
    if (s.points.length <= 40)
      for (const [x, y] of s.points) parts.push(`<circle cx="${px(x).toFixed(1)}" cy="${py(fy(y)).toFixed(1)}" r="2.5" fill="${s.color}"/>`);
    if (visible.length < 2) return; // one series: the title names it
    const lx = width - m.right - 120;
    const ly = m.top + 14 + i * 15;
    parts.push(
      `<line x1="${lx}" x2="${lx + 16}" y1="${ly - 4}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"/><text x="${lx + 20}" y="${ly}">${escapeXml(s.name)}</text>`,
    );
  });
  parts.push('</svg>');
  return parts.join('');
}
