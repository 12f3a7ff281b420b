/**
 * Fused cross-entropy over rows of logits [rows, V]: the forward keeps only each row's
 * log-sum-exp (never a [rows, V] softmax); the backward recomputes softmax − onehot from the
 * logits and that log-sum-exp, chunk by chunk. Long rows (a 131072-entry vocabulary) share the
 * softmax family's per-chunk (max, Σ exp) partials; logits larger than one storage binding are
 * processed in blocks of rows.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { rowBinding, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, MATH_F32, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { MAX_SUM_WGSL, SOFTMAX_CHUNK, chunksOf, maxSumPartialsGpu, mergeMaxSum, scanMaxSum } from '../softmax/softmax.wgsl';

const WG = 64;

/** A quiet NaN from a variable (a NaN constant does not compile): the loss of a row with an invalid label. */
const NAN_WGSL = 'fn nan_f32() -> f32 { var bits = 0x7fc00000u; return bitcast<f32>(bits); }';

export interface CrossEntropyRows {
  rows: number;
  classes: number;
  ignoreIndex: number;
}

/**
 * Per-row log-sum-exp `lse` [rows] and loss `loss` [rows] = lse − logit[label] (0 for
 * ignoreIndex, NaN for a label outside [0, classes)).
 */
export function crossEntropyGpu(device: WebGpuDevice, logits: Tensor, labels: Tensor, r: CrossEntropyRows, lse: Tensor, loss: Tensor): void {
  const V = r.classes;
  const chunks = chunksOf(V);
  let part: Tensor | null = null;
  if (chunks > 1) {
    part = empty([r.rows, chunks, 2], { device });
    maxSumPartialsGpu(device, logits, r.rows, V, part, 'crossEntropy logits');
  }
  const xs: RowOperand = { tensor: logits, perRow: V, what: 'crossEntropy logits' };
  const ls: RowOperand = { tensor: labels, perRow: 1, what: 'crossEntropy labels' };
  const ss: RowOperand = { tensor: lse, perRow: 1, what: 'crossEntropy log-sum-exp' };
  const os: RowOperand = { tensor: loss, perRow: 1, what: 'crossEntropy loss' };
  const ps: RowOperand | null = part ? { tensor: part, perRow: 2 * chunks, what: 'crossEntropy partials' } : null;
  for (const block of rowBlocks(device, r.rows, ps ? [xs, ls, ss, os, ps] : [xs, ls, ss, os])) {
    const p = new Params().u32('rows', block.count).u32('cols', V).u32('chunks', chunks).i32('ignore', r.ignoreIndex);
    const list: NamedBinding[] = [
      rowBinding('x', xs, block),
      rowBinding('labels', ls, block),
      rowBinding('lse', ss, block, true),
      rowBinding('loss', os, block, true),
    ];
    if (ps) list.push(rowBinding('part', ps, block));
    const bound = bindTensors(device, 'crossEntropy', list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${MAX_SUM_WGSL}
${MATH_F32}
${NAN_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let row = ${flatIndex(WG)};
  if (row >= P.rows) { return; }
  let xb = P.xOff + row * P.cols;
  ${ps ? mergeMaxSum('P.partOff + 2u * row * P.chunks', 'P.chunks') : scanMaxSum('load_x', 'xb', '0u', 'P.cols')}
  let log_s = log_f32(st.s);
  lse[P.lseOff + row] = st.m + log_s;
  let label = labels[P.labelsOff + row];
  var l = 0.0;
  if (label != P.ignore) {
    if (label < 0 || u32(label) >= P.cols) {
      l = nan_f32();
    } else {
      l = (st.m - load_x(xb + u32(label))) + log_s;
    }
  }
  loss[P.lossOff + row] = l;
}`;
    device.run({
      name: 'cross_entropy',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count, WG),
      detail: `[${r.rows},${V}] ${logits.dtype}`,
    });
  }
  part?.dispose();
}

/**
 * dlogits [rows, V] (f32) = (softmax − onehot(label)) · scale per row, where softmax is recomputed
 * as exp(logit − lse); rows with ignoreIndex get 0, rows with an invalid label NaN. `scale` holds
 * one value for every row (`perRowScale` false) or one per row.
 */
export function crossEntropyGradGpu(
  device: WebGpuDevice,
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  scale: Tensor,
  perRowScale: boolean,
  r: CrossEntropyRows,
  dx: Tensor,
): void {
  const V = r.classes;
  const chunks = chunksOf(V);
  const xs: RowOperand = { tensor: logits, perRow: V, what: 'crossEntropy logits' };
  const ls: RowOperand = { tensor: labels, perRow: 1, what: 'crossEntropy labels' };
  const ss: RowOperand = { tensor: lse, perRow: 1, what: 'crossEntropy log-sum-exp' };
  const ds: RowOperand = { tensor: dx, perRow: V, what: 'crossEntropy logits gradient' };
  const gs: RowOperand = { tensor: scale, perRow: 1, what: 'crossEntropy gradient scale' };
  for (const block of rowBlocks(device, r.rows, perRowScale ? [xs, ls, ss, ds, gs] : [xs, ls, ss, ds])) {
    const p = new Params().u32('rows', block.count).u32('cols', V).u32('chunks', chunks).i32('ignore', r.ignoreIndex);
    const bound = bindTensors(
      device,
      'crossEntropy backward',
      [
        rowBinding('x', xs, block),
        rowBinding('labels', ls, block),
        rowBinding('lse', ss, block),
        rowBinding('dx', ds, block, true),
        // One value for every row, or the rows of the block.
        perRowScale ? rowBinding('scale', gs, block) : { name: 'scale', tensor: scale, window: { start: 0, length: 1 }, what: gs.what },
      ],
      p,
    );
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${NAN_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * ${SOFTMAX_CHUNK}u;
  let c1 = min(c0 + ${SOFTMAX_CHUNK}u, P.cols);
  let xb = P.xOff + row * P.cols;
  let db = P.dxOff + row * P.cols;
  let label = labels[P.labelsOff + row];
  if (label == P.ignore) {
    for (var c = c0; c < c1; c++) { dx[db + c] = 0.0; }
    return;
  }
  if (label < 0 || u32(label) >= P.cols) {
    for (var c = c0; c < c1; c++) { dx[db + c] = nan_f32(); }
    return;
  }
  let m = lse[P.lseOff + row];
  let g = load_scale(P.scaleOff${perRowScale ? ' + row' : ''});
  for (var c = c0; c < c1; c++) {
    let onehot = select(0.0, 1.0, c == u32(label));
    dx[db + c] = (exp(load_x(xb + c) - m) - onehot) * g;
  }
}`;
    device.run({
      name: 'cross_entropy_grad',
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${r.rows},${V}] ${logits.dtype}`,
    });
  }
}
