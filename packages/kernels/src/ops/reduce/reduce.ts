/**
 * Reductions: sum, mean, max, min over one or more axes (default: the last), with `keepdim`, and
 * `sumTo` (the broadcast-undo every backward rule needs). The kernels reduce the last axis of a
 * dense view; other axes are permuted to the end first.
 */
import { noGrad, record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { formatShape, normalizeAxis, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { div, eq, mul } from '../elementwise/elementwise';
import { contiguous, expand, permute, reshape } from '../layout/layout';
import { reduceRowsCpu, type ReduceOp } from './reduce.cpu';
import { reduceRowsGpu } from './reduce.wgsl';

/**
 * Columns per partial result on the GPU; longer rows take more passes. Short chunks make the sum a
 * shallow tree (pairwise-like accuracy); compensated summation is not an option because shader
 * compilers may reassociate it away.
 */
const CHUNK = 256;

export interface ReduceOptions {
  /** Keep reduced dimensions as size 1. */
  keepdim?: boolean;
}

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
    const out = empty([rows, chunks], { device });
    reduceRowsGpu(device, op, cur, rows, curCols, chunk, out);
    if (cur !== x) cur.dispose();
    if (chunks === 1) {
      const flat = reshape(out, [rows]);
      out.dispose();
      return flat;
    }
    cur = out;
    curCols = chunks;
  }
}

function axesOf(x: Tensor, axis: number | readonly number[] | undefined, op: string): number[] {
  if (axis === undefined) return [x.rank - 1];
  const list = typeof axis === 'number' ? [axis] : [...axis];
  const axes = [...new Set(list.map((a) => normalizeAxis(a, x.rank, op)))].sort((a, b) => a - b);
  return axes;
}

/** Core: reduce `axes` of x, returning the reduced shape with or without kept dims (not recorded). */
function reduceAxes(op: ReduceOp, x: Tensor, axes: number[], keepdim: boolean): Tensor {
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

export function sum(x: Tensor, axis?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const axes = axesOf(x, axis, 'sum');
  const out = reduceAxes('sum', x, axes, options.keepdim ?? false);
  const inShape = [...x.shape];
  const keptShape = inShape.map((d, i) => (axes.includes(i) ? 1 : d));
  record('sum', out, [x], (g) => [contiguousExpand(g, keptShape, inShape)]);
  return out;
}

/** Sum of every element (a 0-d tensor). */
export function sumAll(x: Tensor): Tensor {
  return sum(
    x,
    x.shape.map((_, i) => i),
  );
}

export function mean(x: Tensor, axis?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  const axes = axesOf(x, axis, 'mean');
  const count = sizeOf(axes.map((i) => x.shape[i]!));
  const s = sum(x, axes, options);
  const out = div(s, count);
  s.dispose();
  return out;
}

export function max(x: Tensor, axis?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  return extremum('max', x, axis, options);
}

export function min(x: Tensor, axis?: number | readonly number[], options: ReduceOptions = {}): Tensor {
  return extremum('min', x, axis, options);
}

function extremum(op: 'max' | 'min', x: Tensor, axis: number | readonly number[] | undefined, options: ReduceOptions): Tensor {
  const axes = axesOf(x, axis, op);
  const out = reduceAxes(op, x, axes, options.keepdim ?? false);
  const inShape = [...x.shape];
  const keptShape = inShape.map((d, i) => (axes.includes(i) ? 1 : d));
  // Gradient is shared equally between tied extrema (like torch.amax).
  record(
    op,
    out,
    [x],
    (g, [sx, so]) => {
      const o = reshape(so!, keptShape);
      const mask = eq(sx!, o);
      const ties = reduceAxes('sum', mask, axes, true);
      const gk = reshape(g, keptShape);
      return [mul(mask, div(gk, ties))];
    },
    [x, out],
  );
  return out;
}

/** `g` (with `keptShape`, reduced dims of size 1) broadcast back to `shape` as a dense tensor. */
function contiguousExpand(g: Tensor, keptShape: number[], shape: number[]): Tensor {
  const r = reshape(g, keptShape);
  const e = expand(r, shape);
  const out = contiguous(e);
  r.dispose();
  e.dispose();
  return out;
}

/** Sums `x` down to `shape` (undoes NumPy broadcasting): the gradient of a broadcast operand. */
export function sumTo(x: Tensor, shape: readonly number[]): Tensor {
  if (x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i])) return contiguous(x);
  const lead = x.rank - shape.length;
  if (lead < 0) throw new Error(`sumTo: ${formatShape(x.shape)} has lower rank than ${formatShape(shape)}`);
  const axes: number[] = [];
  for (let i = 0; i < x.rank; i++) {
    const target = i < lead ? 1 : shape[i - lead]!;
    if (i < lead || (target === 1 && x.shape[i] !== 1)) axes.push(i);
    else if (target !== x.shape[i]) throw new Error(`sumTo: ${formatShape(x.shape)} cannot be summed to ${formatShape(shape)}`);
  }
  const s = sum(x, axes, { keepdim: true });
  const out = reshape(s, shape);
  s.dispose();
  return out;
}
