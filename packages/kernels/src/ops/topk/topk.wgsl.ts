/**
 * Top-k selection over the last axis for small k (≤ {@link SELECT_MAX_K}): each invocation keeps a
 * sorted list of the best k of a chunk of {@link SELECT_CHUNK} entries, inserting only entries
 * that beat its current last one (one comparison for most entries). Rows longer than a chunk
 * produce k candidates per chunk, and the candidate rows are selected again until one chunk is
 * left — a 131072-entry vocabulary with k ≤ 64 takes at most three dispatches. Also the gradient
 * scatter of the selected values.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindRows, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, declareStorage, flatIndex, loaderF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { ORDER_WGSL, SENTINEL_WGSL } from './order';

const WG = 64;

/** Largest k the selection kernel handles; larger k sort whole rows (topk-sort.wgsl.ts). */
export const SELECT_MAX_K = 64;

/** Entries one invocation scans. */
export const SELECT_CHUNK = 1024;

/** Where the entries of a selection pass come from. */
type Source =
  | { kind: 'values'; tensor: Tensor }
  /** (key, index) u32 pairs written by an earlier pass. */
  | { kind: 'pairs'; tensor: Tensor };

/** Where a pass writes: k candidate pairs per chunk, or (with one chunk per row) the result. */
type Sink = { kind: 'pairs'; tensor: Tensor } | { kind: 'result'; values: Tensor; indices: Tensor };

/** Values [rows, k] (f32) and indices [rows, k] (i32) of the k largest entries of each row of dense `x`. */
export function topkSelectGpu(device: WebGpuDevice, x: Tensor, rows: number, cols: number, k: number, values: Tensor, indices: Tensor): void {
  let from: Source = { kind: 'values', tensor: x };
  let length = cols;
  for (;;) {
    const chunks = Math.ceil(length / SELECT_CHUNK);
    if (chunks === 1) {
      selectPass(device, from, rows, length, k, { kind: 'result', values, indices });
      break;
    }
    const candidates = empty([rows, chunks * k, 2], { dtype: 'u32', device });
    selectPass(device, from, rows, length, k, { kind: 'pairs', tensor: candidates });
    if (from.tensor !== x) from.tensor.dispose();
    from = { kind: 'pairs', tensor: candidates };
    length = chunks * k;
  }
  if (from.tensor !== x) from.tensor.dispose();
}

function selectPass(device: WebGpuDevice, from: Source, rows: number, length: number, k: number, to: Sink): void {
  const chunks = Math.ceil(length / SELECT_CHUNK);
  // Private arrays need a constant size: a power of two ≥ k keeps the number of distinct kernels small.
  const capacity = Math.max(1, 2 ** Math.ceil(Math.log2(k)));
  const input: RowOperand =
    from.kind === 'values'
      ? { tensor: from.tensor, perRow: length, what: 'topk input' }
      : { tensor: from.tensor, perRow: 2 * length, what: 'topk candidates' };
  const outputs: RowOperand[] =
    to.kind === 'pairs'
      ? [{ tensor: to.tensor, perRow: 2 * chunks * k, what: 'topk candidates' }]
      : [
          { tensor: to.values, perRow: k, what: 'topk values' },
          { tensor: to.indices, perRow: k, what: 'topk indices' },
        ];
  const inputDecl =
    from.kind === 'values'
      ? `${declareStorage(1, 'x', from.tensor.dtype, 'read')}\n${loaderF32('x', from.tensor.dtype)}`
      : declareStorage(1, 'x', 'u32', 'read');
  const readEntry =
    from.kind === 'values'
      ? 'let key = order_key(load_x(P.xOff + row * P.len + c)); let idx = c;'
      : 'let e = P.xOff + 2u * (row * P.len + c); let key = x[e]; let idx = x[e + 1u];';
  const outputDecl =
    to.kind === 'pairs'
      ? declareStorage(2, 'cand', 'u32', 'read_write')
      : `${declareStorage(2, 'values', 'f32', 'read_write')}\n${declareStorage(3, 'indices', 'i32', 'read_write')}`;
  const write =
    to.kind === 'pairs'
      ? `let o = P.o0 + 2u * t * P.k;
  for (var j = 0u; j < P.k; j++) {
    cand[o + 2u * j] = select(${SENTINEL_WGSL.key}, kv[j], j < n);
    cand[o + 2u * j + 1u] = select(${SENTINEL_WGSL.index}, ki[j], j < n);
  }`
      : `for (var j = 0u; j < P.k; j++) {
    values[P.o0 + row * P.k + j] = key_value(kv[j]);
    indices[P.o1 + row * P.k + j] = i32(ki[j]);
  }`;
  for (const block of rowBlocks(device, rows, [input, ...outputs])) {
    const bin = bindRows(device, input, block);
    const bout = outputs.map((o) => bindRows(device, o, block));
    const p = new Params().u32('rows', block.count).u32('len', length).u32('chunks', chunks).u32('k', k).u32('xOff', bin.elementOffset);
    bout.forEach((b, i) => p.u32(`o${i}`, b.elementOffset));
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${inputDecl}
${outputDecl}
${ORDER_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * ${SELECT_CHUNK}u;
  let c1 = min(c0 + ${SELECT_CHUNK}u, P.len);
  var kv: array<u32, ${capacity}>;
  var ki: array<u32, ${capacity}>;
  var n = 0u;
  for (var c = c0; c < c1; c++) {
    ${readEntry}
    if (n == P.k) {
      if (!beats(key, idx, kv[n - 1u], ki[n - 1u])) { continue; }
    } else {
      n++;
    }
    // Insertion: shift the entries this one beats down by one (the last one drops out when full).
    var j = n - 1u;
    loop {
      if (j == 0u) { break; }
      if (!beats(key, idx, kv[j - 1u], ki[j - 1u])) { break; }
      kv[j] = kv[j - 1u];
      ki[j] = ki[j - 1u];
      j--;
    }
    kv[j] = key;
    ki[j] = idx;
  }
  ${write}
}`;
    device.run({
      name: to.kind === 'pairs' ? 'topk_candidates' : 'topk_select',
      source,
      params: p,
      bindings: [bin.range, ...bout.map((b) => b.range)],
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${length}] k=${k}`,
    });
  }
}

/** dx [rows, cols] (zeroed by the caller) gets g [rows, k] at the selected `indices` [rows, k]. */
export function topkScatterGpu(device: WebGpuDevice, g: Tensor, indices: Tensor, rows: number, cols: number, k: number, dx: Tensor): void {
  const operands: RowOperand[] = [
    { tensor: g, perRow: k, what: 'topk gradient' },
    { tensor: indices, perRow: k, what: 'topk indices' },
    { tensor: dx, perRow: cols, what: 'topk input gradient' },
  ];
  for (const block of rowBlocks(device, rows, operands)) {
    const [bg, bi, bd] = operands.map((o) => bindRows(device, o, block));
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('k', k).u32('gOff', bg!.elementOffset).u32('iOff', bi!.elementOffset).u32('dOff', bd!.elementOffset);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'g', g.dtype, 'read')}
${loaderF32('g', g.dtype)}
${declareStorage(2, 'indices', 'i32', 'read')}
${declareStorage(3, 'dx', 'f32', 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.k) { return; }
  let row = t / P.k;
  dx[P.dOff + row * P.cols + u32(indices[P.iOff + t])] = load_g(P.gOff + t);
}`;
    device.run({ name: 'topk_scatter', source, params: p, bindings: [bg!.range, bi!.range, bd!.range], workgroups: device.grid(block.count * k, WG), detail: `[${rows},${cols}] k=${k}` });
  }
}
