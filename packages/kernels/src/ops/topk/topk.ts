/**
 * `topk` (the k largest entries of each row, over the last axis) and `argmax`. Order: larger
 * values first; ties go to the lower index; NaN counts as larger than +∞ (like PyTorch); −0 ties
 * with +0 (and comes back as +0). Values are f32 and differentiable (the gradient goes to the
 * selected positions); indices are i32 and not differentiable.
 */
import { noGrad, record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { formatShape, normalizeAxis } from '../../shape';
import type { Tensor } from '../../tensor';
import { permute, reshape } from '../layout/layout';
import { assertFloatRows, dense, rowsOf } from '../rows';
import { topkCpu, topkScatterCpu } from './topk.cpu';
import { topkSortGpu } from './topk-sort.wgsl';
import { SELECT_MAX_K, topkScatterGpu, topkSelectGpu } from './topk.wgsl';

export interface TopK {
  /** [..., k] f32, descending. */
  values: Tensor;
  /** [..., k] i32 positions in the last axis. */
  indices: Tensor;
}

/** The k largest entries of each row (last axis), descending; 0 ≤ k ≤ the last dim. */
export function topk(x: Tensor, k: number): TopK {
  assertFloatRows(x, 'topk');
  const { cols } = rowsOf(x);
  if (!Number.isInteger(k) || k < 0 || k > cols) throw new Error(`topk: k = ${k} is out of range for a last dim of ${cols} in ${formatShape(x.shape)}`);
  const result = select(x, k);
  const shape = [...x.shape];
  record('topk', result.values, [x], (g, [indices]) => [scatter(g, indices!, shape)], [result.indices]);
  return result;
}

/** Index (i32) of the largest entry along `axis`, the lowest index among ties; the axis is removed. Not differentiable. */
export function argmax(x: Tensor, axis = -1): Tensor {
  assertFloatRows(x, 'argmax');
  const a = normalizeAxis(axis, x.rank, 'argmax');
  if (x.shape[a] === 0) throw new Error(`argmax: dimension ${axis} of ${formatShape(x.shape)} is empty`);
  return noGrad(() => {
    const others = x.shape.map((_, i) => i).filter((i) => i !== a);
    const moved = a === x.rank - 1 ? x : permute(x, [...others, a]);
    const { values, indices } = select(moved, 1);
    const out = reshape(
      indices,
      others.map((i) => x.shape[i]!),
    );
    for (const t of [values, indices]) t.dispose();
    if (moved !== x) moved.dispose();
    return out;
  });
}

function select(x: Tensor, k: number): TopK {
  const { rows, cols } = rowsOf(x);
  const shape = [...x.shape.slice(0, -1), k];
  const values = empty(shape, { device: x.device });
  const indices = empty(shape, { dtype: 'i32', device: x.device });
  if (values.size === 0) return { values, indices };
  const xd = dense(x);
  const device = x.device;
  if (device.kind === 'cpu') topkCpu(xd, rows, cols, k, values, indices);
  else if (k <= SELECT_MAX_K) topkSelectGpu(device, xd, rows, cols, k, values, indices);
  else topkSortGpu(device, xd, rows, cols, k, values, indices);
  xd.dispose();
  return { values, indices };
}

/** The input gradient of topk: zeros with g [..., k] placed at `indices`. */
function scatter(g: Tensor, indices: Tensor, shape: readonly number[]): Tensor {
  const dx = zeros(shape, { device: g.device });
  const { rows, cols } = rowsOf(dx);
  const k = indices.shape[indices.rank - 1]!;
  if (rows * k === 0) return dx;
  const gd = dense(g);
  if (dx.device.kind === 'cpu') topkScatterCpu(gd, indices, rows, cols, k, dx);
  else topkScatterGpu(dx.device, gd, indices, rows, cols, k, dx);
  gd.dispose();
  return dx;
}
