/**
 * Top-k for large k (> SELECT_MAX_K): sorts whole rows by the top-k order with a merge sort, then
 * keeps the first k. Each pass merges neighbouring sorted runs of length L, one invocation per
 * entry: an entry's place in the merged run is its place in its own run plus the number of entries
 * of the sibling run that come before it (a binary search; the order is strict, so places never
 * collide). log2(cols) passes of O(log L) work per entry, no barriers, no shared memory.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindTensors } from '../../runtime/bindings';
import { rowBinding, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { ORDER_WGSL } from './order';

const WG = 64;

/** Values [rows, k] (f32) and indices [rows, k] (i32) of the k largest entries of each row of dense `x`. */
export function topkSortGpu(device: WebGpuDevice, x: Tensor, rows: number, cols: number, k: number, values: Tensor, indices: Tensor): void {
  let src = empty([rows, cols, 2], { dtype: 'u32', device });
  let dst = empty([rows, cols, 2], { dtype: 'u32', device });
  keysPass(device, x, rows, cols, src);
  for (let run = 1; run < cols; run *= 2) {
    mergePass(device, src, dst, rows, cols, run);
    [src, dst] = [dst, src];
  }
  firstKGpu(device, src, rows, cols, k, values, indices);
  src.dispose();
  dst.dispose();
}

function pairs(tensor: Tensor, cols: number, what: string): RowOperand {
  return { tensor, perRow: 2 * cols, what };
}

/** (order key, column) pairs of every entry: runs of length 1. */
function keysPass(device: WebGpuDevice, x: Tensor, rows: number, cols: number, out: Tensor): void {
  const xs: RowOperand = { tensor: x, perRow: cols, what: 'topk input' };
  const os = pairs(out, cols, 'topk sort buffer');
  for (const block of rowBlocks(device, rows, [xs, os])) {
    const p = new Params().u32('n', block.count * cols).u32('cols', cols);
    const bound = bindTensors(device, 'topk', [rowBinding('x', xs, block), rowBinding('out', os, block, true)], p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ORDER_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  out[P.outOff + 2u * i] = order_key(load_x(P.xOff + i));
  out[P.outOff + 2u * i + 1u] = i % P.cols;
}`;
    device.run({
      name: 'topk_sort_keys',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * cols, WG),
      detail: `[${rows},${cols}]`,
    });
  }
}

/** Merges the sorted runs of length `run` of each row of `src` pairwise into `dst`. */
function mergePass(device: WebGpuDevice, src: Tensor, dst: Tensor, rows: number, cols: number, run: number): void {
  const ss = pairs(src, cols, 'topk sort buffer');
  const ds = pairs(dst, cols, 'topk sort buffer');
  for (const block of rowBlocks(device, rows, [ss, ds])) {
    const p = new Params()
      .u32('n', block.count * cols)
      .u32('cols', cols)
      .u32('run', run);
    const bound = bindTensors(device, 'topk', [rowBinding('src', ss, block), rowBinding('dst', ds, block, true)], p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ORDER_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let rowStart = (i / P.cols) * P.cols;
  let p = i % P.cols;
  let key = src[P.srcOff + 2u * i];
  let idx = src[P.srcOff + 2u * i + 1u];
  let runIndex = p / P.run;
  let runStart = runIndex * P.run;
  var s0 = runStart + P.run;
  if ((runIndex & 1u) == 1u) { s0 = runStart - P.run; }
  let s1 = min(s0 + P.run, P.cols);
  // Entries of the sibling run (sorted) that come before this one form a prefix: find its length.
  var lo = min(s0, P.cols);
  var hi = s1;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    let m = P.srcOff + 2u * (rowStart + mid);
    if (beats(src[m], src[m + 1u], key, idx)) { lo = mid + 1u; } else { hi = mid; }
  }
  let before = lo - min(s0, P.cols);
  let place = min(runStart, s0) + (p - runStart) + before;
  dst[P.dstOff + 2u * (rowStart + place)] = key;
  dst[P.dstOff + 2u * (rowStart + place) + 1u] = idx;
}`;
    device.run({
      name: 'topk_sort_merge',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * cols, WG),
      detail: `[${rows},${cols}] run=${run}`,
    });
  }
}

/** The first k entries of each row of sorted (key, index) pairs [rows, cols, 2] as values and indices. */
export function firstKGpu(device: WebGpuDevice, sorted: Tensor, rows: number, cols: number, k: number, values: Tensor, indices: Tensor): void {
  const ss = pairs(sorted, cols, 'topk sort buffer');
  const vs: RowOperand = { tensor: values, perRow: k, what: 'topk values' };
  const is: RowOperand = { tensor: indices, perRow: k, what: 'topk indices' };
  for (const block of rowBlocks(device, rows, [ss, vs, is])) {
    const p = new Params()
      .u32('n', block.count * k)
      .u32('cols', cols)
      .u32('k', k);
    const list = [rowBinding('sorted', ss, block), rowBinding('values', vs, block, true), rowBinding('indices', is, block, true)];
    const bound = bindTensors(device, 'topk', list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ORDER_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let e = P.sortedOff + 2u * ((i / P.k) * P.cols + i % P.k);
  values[P.valuesOff + i] = key_value(sorted[e]);
  indices[P.indicesOff + i] = i32(sorted[e + 1u]);
}`;
    device.run({
      name: 'topk_sort_first_k',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * k, WG),
      detail: `[${rows},${cols}] k=${k}`,
    });
  }
}
