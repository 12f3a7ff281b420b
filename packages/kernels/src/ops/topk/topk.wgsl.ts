/**
 * Top-k selection over the last axis for small k (≤ {@link SELECT_MAX_K}): each invocation keeps a
 * sorted list of the best k of a chunk of {@link SELECT_CHUNK} entries, inserting only entries
 * that beat its current last one (one comparison for most entries). k is baked into the kernel and
 * the insertion is unrolled into branch-free selects with constant indices, so the list lives in
 * registers (a dynamically indexed private array is several times slower on llvmpipe). Lists
 * longer than {@link EXACT_MAX_K} round up to 32 or 64 slots (keeping more than k is still exact):
 * the unrolled code of a 64-slot list takes about a second to compile, so fewer variants. Rows
 * longer than a chunk produce k candidates per chunk, and the candidate rows are selected again
 * until one chunk is left — a 131072-entry vocabulary with k ≤ 64 takes at most three selection dispatches, then one
 * that unpacks the final pairs. Also the gradient scatter of the selected values.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindTensors } from '../../runtime/bindings';
import { rowBinding, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { ORDER_WGSL, SENTINEL_WGSL } from './order';
import { firstKGpu } from './topk-sort.wgsl';

const WG = 64;

/** Largest k the selection kernel handles; larger k sort whole rows (topk-sort.wgsl.ts). */
export const SELECT_MAX_K = 64;

/** Largest k whose list has exactly k slots. */
export const EXACT_MAX_K = 16;

/** Entries one invocation scans. */
export const SELECT_CHUNK = 1024;

/** (key, index) u32 pairs, or values whose index is their column. */
type Source = { kind: 'values' | 'pairs'; tensor: Tensor };

/** Values [rows, k] (f32) and indices [rows, k] (i32) of the k largest entries of each row of dense `x`. */
export function topkSelectGpu(device: WebGpuDevice, x: Tensor, rows: number, cols: number, k: number, values: Tensor, indices: Tensor): void {
  let from: Source = { kind: 'values', tensor: x };
  let length = cols;
  for (;;) {
    const chunks = Math.ceil(length / SELECT_CHUNK);
    const candidates = empty([rows, chunks * k, 2], { dtype: 'u32', device });
    selectPass(device, from, rows, length, k, candidates);
    if (from.tensor !== x) from.tensor.dispose();
    from = { kind: 'pairs', tensor: candidates };
    length = chunks * k;
    if (chunks === 1) break;
  }
  // One chunk per row left: its k candidates, sorted, are the result.
  firstKGpu(device, from.tensor, rows, k, k, values, indices);
  from.tensor.dispose();
}

/** Writes the best k (key, index) pairs of each chunk of each row, sorted, into `out` [rows, chunks, k, 2]. */
function selectPass(device: WebGpuDevice, from: Source, rows: number, length: number, k: number, out: Tensor): void {
  const chunks = Math.ceil(length / SELECT_CHUNK);
  const capacity = k <= EXACT_MAX_K ? k : 2 ** Math.ceil(Math.log2(k));
  const input: RowOperand =
    from.kind === 'values' ? { tensor: from.tensor, perRow: length, what: 'topk input' } : { tensor: from.tensor, perRow: 2 * length, what: 'topk candidates' };
  const output: RowOperand = { tensor: out, perRow: 2 * chunks * k, what: 'topk candidates' };
  const readEntry =
    from.kind === 'values'
      ? 'let key = order_key(load_x(P.xOff + row * P.len + c)); let idx = c;'
      : 'let e = P.xOff + 2u * (row * P.len + c); let key = x[e]; let idx = x[e + 1u];';
  const slots = Array.from({ length: capacity }, (_, j) => j);
  // Slots past k (a rounded-up list) are not written.
  const write = slots.map((j) => {
    const code = `cand[o + ${2 * j}u] = kv[${j}]; cand[o + ${2 * j + 1}u] = ki[${j}];`;
    return j < Math.min(k, EXACT_MAX_K) ? code : `if (${j}u < P.k) { ${code} }`;
  });
  // b_j: the new entry beats slot j. Slots are sorted, so the b_j are false then true; walking up
  // from the last slot, each slot it beats takes the one above it (or the new entry, at the top).
  const insert = [
    ...slots.map((j) => `let b${j} = beats(key, idx, kv[${j}], ki[${j}]);`),
    ...slots
      .slice(1)
      .reverse()
      .map(
        (j) =>
          `kv[${j}] = select(kv[${j}], select(key, kv[${j - 1}], b${j - 1}), b${j}); ki[${j}] = select(ki[${j}], select(idx, ki[${j - 1}], b${j - 1}), b${j});`,
      ),
    'kv[0] = select(kv[0], key, b0); ki[0] = select(ki[0], idx, b0);',
  ];
  for (const block of rowBlocks(device, rows, [input, output])) {
    const p = new Params().u32('rows', block.count).u32('len', length).u32('chunks', chunks).u32('k', k);
    const bound = bindTensors(device, 'topk', [rowBinding('x', input, block), rowBinding('cand', output, block, true)], p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ORDER_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * ${SELECT_CHUNK}u;
  let c1 = min(c0 + ${SELECT_CHUNK}u, P.len);
  // Empty slots hold the sentinel, which every real entry beats (chunks shorter than k keep some).
  var kv: array<u32, ${capacity}>;
  var ki: array<u32, ${capacity}>;
  ${slots.map((j) => `kv[${j}] = ${SENTINEL_WGSL.key}; ki[${j}] = ${SENTINEL_WGSL.index};`).join('\n  ')}
  for (var c = c0; c < c1; c++) {
    ${readEntry}
    if (!beats(key, idx, kv[${capacity - 1}], ki[${capacity - 1}])) { continue; }
    ${insert.join('\n    ')}
  }
  let o = P.candOff + 2u * t * P.k;
  ${write.join('\n  ')}
}`;
    device.run({
      name: 'topk_select',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${rows},${length}] k=${k}`,
    });
  }
}

/** dx [rows, cols] (zeroed by the caller) gets g [rows, k] at the selected `indices` [rows, k]. */
export function topkScatterGpu(device: WebGpuDevice, g: Tensor, indices: Tensor, rows: number, cols: number, k: number, dx: Tensor): void {
  const gs: RowOperand = { tensor: g, perRow: k, what: 'topk gradient' };
  const is: RowOperand = { tensor: indices, perRow: k, what: 'topk indices' };
  const ds: RowOperand = { tensor: dx, perRow: cols, what: 'topk input gradient' };
  for (const block of rowBlocks(device, rows, [gs, is, ds])) {
    const p = new Params().u32('rows', block.count).u32('cols', cols).u32('k', k);
    const list = [rowBinding('g', gs, block), rowBinding('indices', is, block), rowBinding('dx', ds, block, true)];
    const bound = bindTensors(device, 'topk backward', list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.k) { return; }
  let row = t / P.k;
  dx[P.dxOff + row * P.cols + u32(indices[P.indicesOff + t])] = load_g(P.gOff + t);
}`;
    device.run({
      name: 'topk_scatter',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * k, WG),
      detail: `[${rows},${cols}] k=${k}`,
    });
  }
}
