/**
 * Reductions: sum, mean, max, min over one or more axes (default: the last), with `keepdim`, and
 * their backward rules. The raw reduction (no autograd) is in reduce-axes.ts; `sumTo`, the
 * broadcast-undo every backward rule needs, is in layout/broadcast.ts beside `expand`.
 */
import { record } from '../../autograd/graph';
import { normalizeAxis, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { div, eq, mul } from '../elementwise/elementwise';
import { expand } from '../layout/broadcast';
import { contiguous, reshape } from '../layout/layout';
import { reduceAxes } from './reduce-axes';

export interface ReduceOptions {
  /** Keep reduced dimensions as size 1. */
  keepdim?: boolean;
}

function axesOf(x: Tensor, axis: number | readonly number[] | undefined, op: string): number[] {
  if (axis === undefined) return [x.rank - 1];
  const list = typeof axis === 'number' ? [axis] : [...axis];
  const axes = [...new Set(list.map((a) => normalizeAxis(a, x.rank, op)))].sort((a, b) => a - b);
  return axes;
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
