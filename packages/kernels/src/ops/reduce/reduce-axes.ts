/**
 * The raw reductions under the reduction ops and `sumTo`: reduce the last axis of a dense view (other
 * axes are permuted to the end first). Not recorded by autograd; the ops add their backward rules.
 */
import { noGrad } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { formatShape, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { contiguous, permute, reshape } from '../layout/layout';
import { reduceRowsCpu, type ReduceOp } from './reduce.cpu';
import { reduceRowsGpu } from './reduce.wgsl';

/**
 * Columns per partial result on the GPU; longer rows take more passes. Short chunks make the sum a
 * shallow tree (pairwise-like accuracy); compensated summation is not an option because shader
 * compilers may reassociate it away.
 */
const CHUNK = 256;

/** Reduces each row of a dense [rows, cols] tensor: returns [rows] (f32). No autograd. */
export function reduceRows(op: ReduceOp, x: Tensor, rows: number, cols: number): Tensor {
  const device = x.device;
  if (device.kind === 'cpu') {
    const out = empty([rows], { device });
    reduceRowsCpu(op, x, rows, cols, out);
    return out;
  }
  let cur = x;
  let curCols = cols;
  for (;;) {
    const chunk = curCols <= CHUNK ? curCols : CHUNK;
    const chunks = Math.ceil(curCols / chunk);
    // The kernel writes rows × chunks values; the last pass's [rows, 1] is allocated as [rows].
    const out = empty(chunks === 1 ? [rows] : [rows, chunks], { device });
    reduceRowsGpu(device, op, cur, rows, curCols, chunk, out);
    if (cur !== x) cur.dispose();
    if (chunks === 1) return out;
    cur = out;
    curCols = chunks;
  }
}

/** Reduces `axes` of x, returning the reduced shape with or without kept dims (not recorded). */
export function reduceAxes(op: ReduceOp, x: Tensor, axes: number[], keepdim: boolean): Tensor {
  return noGrad(() => reduceAxesRaw(op, x, axes, keepdim));
}

function reduceAxesRaw(op: ReduceOp, x: Tensor, axes: number[], keepdim: boolean): Tensor {
  x.assertAlive(op);
  if (x.rank === 0) return reshape(x, []);
  const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const order = [...kept, ...axes];
  const permuted = order.every((a, i) => a === i) ? x : permute(x, order);
  const dense = contiguous(permuted);
  if (permuted !== x) permuted.dispose();
  const rows = sizeOf(kept.map((i) => x.shape[i]!));
  const cols = sizeOf(axes.map((i) => x.shape[i]!));
  let flat: Tensor;
  if (cols === 0) {
    if (op !== 'sum') throw new Error(`${op}: cannot reduce an empty dimension of ${formatShape(x.shape)}`);
    flat = zeros([rows], { device: x.device });
  } else flat = reduceRows(op, dense, rows, cols);
  dense.dispose();
  const shape = keepdim ? x.shape.map((d, i) => (axes.includes(i) ? 1 : d)) : kept.map((i) => x.shape[i]!);
  const out = reshape(flat, shape);
  flat.dispose();
  return out;
}
