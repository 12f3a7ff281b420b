/**
 * Softmax and log-softmax over the last axis, forward and backward. Each row is cut into chunks of
 * {@link SOFTMAX_CHUNK} columns, one invocation per (row, chunk): plain loops, no barriers (llvmpipe
 * runs those fastest) while a single long row (a 131072-entry vocabulary) still spreads over many
 * invocations. Rows of more than one chunk take two dispatches: per-chunk partial statistics, then
 * one that merges a row's partials and writes its chunk. Rows of one chunk take a single dispatch.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { rowBinding, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, MATH_F32, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

const WG = 64;

/** Columns per invocation. */
export const SOFTMAX_CHUNK = 1024;

export type SoftmaxKind = 'softmax' | 'logSoftmax';

/**
 * WGSL: a running (max m, Σ exp(v − m)) pair, merged with one exp per step. Equal maxima (two −∞
 * from masked logits included) add directly so −∞ − −∞ never appears. As on the CPU, a NaN
 * poisons the sum, and so does a +∞ maximum (exp(∞ − ∞) is NaN there); both are recognised by
 * their bits, since float compares may assume no NaN.
 */
export const MAX_SUM_WGSL = `
struct MaxSum { m: f32, s: f32, }
fn max_sum_merge(a: MaxSum, m: f32, s: f32) -> MaxSum {
  var r: MaxSum;
  if (m == a.m) { r = MaxSum(a.m, a.s + s); }
  else if (m > a.m) { r = MaxSum(m, a.s * exp(a.m - m) + s); }
  else { r = MaxSum(a.m, a.s + s * exp(m - a.m)); }
  let poisoned = (bitcast<u32>(m) & 0x7fffffffu) > 0x7f800000u || (bitcast<u32>(a.m) & 0x7fffffffu) > 0x7f800000u || bitcast<u32>(r.m) == 0x7f800000u;
  var nan_bits = 0x7fc00000u;
  if (poisoned) { r.s = bitcast<f32>(nan_bits); }
  return r;
}`;

/** WGSL statements computing `st: MaxSum` over x[base + c0 .. base + c1) (c1 > c0). */
export function scanMaxSum(load: string, base: string, c0: string, c1: string): string {
  return `var st = MaxSum(${load}(${base} + ${c0}), 1.0);
  for (var c = ${c0} + 1u; c < ${c1}; c++) { st = max_sum_merge(st, ${load}(${base} + c), 1.0); }`;
}

/** WGSL statements merging a row's `chunks` partial pairs from part[first ..] into `st: MaxSum`. */
export function mergeMaxSum(first: string, chunks: string): string {
  return `var st = MaxSum(part[${first}], part[${first} + 1u]);
  for (var k = 1u; k < ${chunks}; k++) { st = max_sum_merge(st, part[${first} + 2u * k], part[${first} + 2u * k + 1u]); }`;
}

export function chunksOf(cols: number): number {
  return Math.ceil(cols / SOFTMAX_CHUNK);
}

/** The (row, chunk) bookkeeping every chunked kernel starts with. */
function chunkPrologue(): string {
  return `let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * ${SOFTMAX_CHUNK}u;
  let c1 = min(c0 + ${SOFTMAX_CHUNK}u, P.cols);`;
}

/**
 * Per-(row, chunk) (max, Σ exp) partials of a dense [rows, cols] `x` into `part` [rows, chunks, 2]
 * (f32). Shared with cross-entropy. `what` names x in errors.
 */
export function maxSumPartialsGpu(device: WebGpuDevice, x: Tensor, rows: number, cols: number, part: Tensor, what: string): void {
  const chunks = chunksOf(cols);
  const xs: RowOperand = { tensor: x, perRow: cols, what };
  const ps: RowOperand = { tensor: part, perRow: 2 * chunks, what: `${what} partials` };
  for (const block of rowBlocks(device, rows, [xs, ps])) {
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
    const bound = bindTensors(device, 'maxSumPartials', [rowBinding('x', xs, block), rowBinding('part', ps, block, true)], p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${MAX_SUM_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  ${scanMaxSum('load_x', 'P.xOff + row * P.cols', 'c0', 'c1')}
  part[P.partOff + 2u * t] = st.m;
  part[P.partOff + 2u * t + 1u] = st.s;
}`;
    device.run({
      name: 'max_sum_partials',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${cols}] ${x.dtype}`,
    });
  }
}

/** Softmax or log-softmax of each row of a dense [rows, cols] `x` into `out` (f32). */
export function softmaxGpu(device: WebGpuDevice, kind: SoftmaxKind, x: Tensor, rows: number, cols: number, out: Tensor): void {
  const chunks = chunksOf(cols);
  const fused = chunks === 1;
  let part: Tensor | null = null;
  if (!fused) {
    part = empty([rows, chunks, 2], { device });
    maxSumPartialsGpu(device, x, rows, cols, part, `${kind} input`);
  }
  const xs: RowOperand = { tensor: x, perRow: cols, what: `${kind} input` };
  const os: RowOperand = { tensor: out, perRow: cols, what: `${kind} output` };
  const ps: RowOperand | null = part ? { tensor: part, perRow: 2 * chunks, what: `${kind} partials` } : null;
  const write =
    kind === 'softmax'
      ? `let inv = 1.0 / st.s;
  for (var c = c0; c < c1; c++) { out[o + c] = exp(load_x(xb + c) - st.m) * inv; }`
      : `let log_s = log_f32(st.s);
  for (var c = c0; c < c1; c++) { out[o + c] = (load_x(xb + c) - st.m) - log_s; }`;
  for (const block of rowBlocks(device, rows, ps ? [xs, os, ps] : [xs, os])) {
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
    const list: NamedBinding[] = [rowBinding('x', xs, block), rowBinding('out', os, block, true)];
    if (ps) list.push(rowBinding('part', ps, block));
    const bound = bindTensors(device, kind, list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${MAX_SUM_WGSL}
${kind === 'logSoftmax' ? MATH_F32 : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  let xb = P.xOff + row * P.cols;
  let o = P.outOff + row * P.cols;
  ${ps ? mergeMaxSum('P.partOff + 2u * row * P.chunks', 'P.chunks') : scanMaxSum('load_x', 'xb', '0u', 'P.cols')}
  ${write}
}`;
    device.run({
      name: kind,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${cols}] ${x.dtype}`,
    });
  }
  part?.dispose();
}

/**
 * Backward of softmax / log-softmax from the forward output `y` and upstream `g` (dense
 * [rows, cols]) into `dx` (f32): softmax dx = y ⊙ (g − Σ g⊙y); log-softmax dx = g − exp(y) · Σ g.
 */
export function softmaxGradGpu(device: WebGpuDevice, kind: SoftmaxKind, y: Tensor, g: Tensor, rows: number, cols: number, dx: Tensor): void {
  const chunks = chunksOf(cols);
  const fused = chunks === 1;
  const term = kind === 'softmax' ? 'load_g(gb + c) * load_y(yb + c)' : 'load_g(gb + c)';
  const ys: RowOperand = { tensor: y, perRow: cols, what: `${kind} output` };
  const gs: RowOperand = { tensor: g, perRow: cols, what: `${kind} gradient` };
  let part: Tensor | null = null;
  if (!fused) {
    // Log-softmax's row sum needs only g: every declared binding must be used.
    const needsY = kind === 'softmax';
    part = empty([rows, chunks], { device });
    const ps: RowOperand = { tensor: part, perRow: chunks, what: `${kind} gradient partials` };
    const operands = needsY ? [gs, ps, ys] : [gs, ps];
    for (const block of rowBlocks(device, rows, operands)) {
      const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
      const list = [rowBinding('g', gs, block), rowBinding('part', ps, block, true)];
      if (needsY) list.push(rowBinding('y', ys, block));
      const bound = bindTensors(device, `${kind} backward`, list, p);
      const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  let gb = P.gOff + row * P.cols;
  ${needsY ? 'let yb = P.yOff + row * P.cols;' : ''}
  var acc = 0.0;
  for (var c = c0; c < c1; c++) { acc += ${term}; }
  part[P.partOff + t] = acc;
}`;
      device.run({
        name: `${kind}_grad_partials`,
        source,
        params: p,
        bindings: bound.ranges,
        workgroups: device.grid(block.count * chunks, WG),
        detail: `[${rows},${cols}]`,
      });
    }
  }
  const ds: RowOperand = { tensor: dx, perRow: cols, what: `${kind} input gradient` };
  const ps: RowOperand | null = part ? { tensor: part, perRow: chunks, what: `${kind} gradient partials` } : null;
  const write =
    kind === 'softmax'
      ? 'for (var c = c0; c < c1; c++) { let yv = load_y(yb + c); dx[o + c] = yv * (load_g(gb + c) - s); }'
      : 'for (var c = c0; c < c1; c++) { dx[o + c] = load_g(gb + c) - exp(load_y(yb + c)) * s; }';
  for (const block of rowBlocks(device, rows, ps ? [ys, gs, ds, ps] : [ys, gs, ds])) {
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('chunks', chunks);
    const list = [rowBinding('y', ys, block), rowBinding('g', gs, block), rowBinding('dx', ds, block, true)];
    if (ps) list.push(rowBinding('part', ps, block));
    const bound = bindTensors(device, `${kind} backward`, list, p);
    const total = ps
      ? `var s = 0.0;
  for (var k = 0u; k < P.chunks; k++) { s += part[P.partOff + row * P.chunks + k]; }`
      : `var s = 0.0;
  for (var c = 0u; c < P.cols; c++) { s += ${term}; }`;
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  ${chunkPrologue()}
  let yb = P.yOff + row * P.cols;
  let gb = P.gOff + row * P.cols;
  let o = P.dxOff + row * P.cols;
  ${total}
  ${write}
}`;
    device.run({
      name: `${kind}_grad`,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${cols}]`,
    });
  }
  part?.dispose();
}
