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
import { bindRows, rowBlocks, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, MATH_F32, declareStorage, flatIndex, loaderF32 } from '../../runtime/wgsl';
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
  const operands: RowOperand[] = [
    { tensor: logits, perRow: V, what: 'crossEntropy logits' },
    { tensor: labels, perRow: 1, what: 'crossEntropy labels' },
    { tensor: lse, perRow: 1, what: 'crossEntropy log-sum-exp' },
    { tensor: loss, perRow: 1, what: 'crossEntropy loss' },
  ];
  if (part) operands.push({ tensor: part, perRow: 2 * chunks, what: 'crossEntropy partials' });
  for (const block of rowBlocks(device, r.rows, operands)) {
    const [bx, bl, bs, bo, bp] = operands.map((o) => bindRows(device, o, block));
    const p = new Params().u32('rows', block.count).u32('cols', V).u32('chunks', chunks).i32('ignore', r.ignoreIndex);
    p.u32('xOff', bx!.elementOffset).u32('lOff', bl!.elementOffset).u32('sOff', bs!.elementOffset).u32('oOff', bo!.elementOffset);
    if (bp) p.u32('partOff', bp.elementOffset);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'x', logits.dtype, 'read')}
${loaderF32('x', logits.dtype)}
${declareStorage(2, 'labels', 'i32', 'read')}
${declareStorage(3, 'lse', 'f32', 'read_write')}
${declareStorage(4, 'loss', 'f32', 'read_write')}
${bp ? declareStorage(5, 'part', 'f32', 'read') : ''}
${MAX_SUM_WGSL}
${MATH_F32}
${NAN_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let row = ${flatIndex(WG)};
  if (row >= P.rows) { return; }
  let xb = P.xOff + row * P.cols;
  ${bp ? mergeMaxSum('P.partOff + 2u * row * P.chunks', 'P.chunks') : scanMaxSum('load_x', 'xb', '0u', 'P.cols')}
  let log_s = log_f32(st.s);
  lse[P.sOff + row] = st.m + log_s;
  let label = labels[P.lOff + row];
  var l = 0.0;
  if (label != P.ignore) {
    if (label < 0 || u32(label) >= P.cols) {
      l = nan_f32();
    } else {
      l = (st.m - load_x(xb + u32(label))) + log_s;
    }
  }
  loss[P.oOff + row] = l;
}`;
    const bindings = [bx!.range, bl!.range, bs!.range, bo!.range, ...(bp ? [bp.range] : [])];
    device.run({ name: 'cross_entropy', source, params: p, bindings, workgroups: device.grid(block.count, WG), detail: `[${r.rows},${V}] ${logits.dtype}` });
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
  const operands: RowOperand[] = [
    { tensor: logits, perRow: V, what: 'crossEntropy logits' },
    { tensor: labels, perRow: 1, what: 'crossEntropy labels' },
    { tensor: lse, perRow: 1, what: 'crossEntropy log-sum-exp' },
    { tensor: dx, perRow: V, what: 'crossEntropy logits gradient' },
  ];
  const scaleOperand: RowOperand = { tensor: scale, perRow: 1, what: 'crossEntropy gradient scale' };
  if (perRowScale) operands.push(scaleOperand);
  const sharedScale = perRowScale ? null : device.bind(scale.storage, scale.offset, 1, scaleOperand.what);
  for (const block of rowBlocks(device, r.rows, operands)) {
    const [bx, bl, bs, bd, bg] = operands.map((o) => bindRows(device, o, block));
    const bScale = bg ?? sharedScale!;
    const p = new Params().u32('rows', block.count).u32('cols', V).u32('chunks', chunks).i32('ignore', r.ignoreIndex);
    p.u32('xOff', bx!.elementOffset)
      .u32('lOff', bl!.elementOffset)
      .u32('sOff', bs!.elementOffset)
      .u32('dOff', bd!.elementOffset)
      .u32('gOff', bScale.elementOffset);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'x', logits.dtype, 'read')}
${loaderF32('x', logits.dtype)}
${declareStorage(2, 'labels', 'i32', 'read')}
${declareStorage(3, 'lse', 'f32', 'read')}
${declareStorage(4, 'dx', 'f32', 'read_write')}
${declareStorage(5, 'scale', scale.dtype, 'read')}
${loaderF32('scale', scale.dtype)}
${NAN_WGSL}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.chunks) { return; }
  let row = t / P.chunks;
  let c0 = (t % P.chunks) * ${SOFTMAX_CHUNK}u;
  let c1 = min(c0 + ${SOFTMAX_CHUNK}u, P.cols);
  let xb = P.xOff + row * P.cols;
  let db = P.dOff + row * P.cols;
  let label = labels[P.lOff + row];
  if (label == P.ignore) {
    for (var c = c0; c < c1; c++) { dx[db + c] = 0.0; }
    return;
  }
  if (label < 0 || u32(label) >= P.cols) {
    for (var c = c0; c < c1; c++) { dx[db + c] = nan_f32(); }
    return;
  }
  let m = lse[P.sOff + row];
  let g = load_scale(P.gOff${perRowScale ? ' + row' : ''});
  for (var c = c0; c < c1; c++) {
    let onehot = select(0.0, 1.0, c == u32(label));
    dx[db + c] = (exp(load_x(xb + c) - m) - onehot) * g;
  }
}`;
    device.run({
      name: 'cross_entropy_grad',
      source,
      params: p,
      bindings: [bx!.range, bl!.range, bs!.range, bd!.range, bScale.range],
      workgroups: device.grid(block.count * chunks, WG),
      detail: `[${r.rows},${V}] ${logits.dtype}`,
    });
  }
}
