/**
 * Broadcasting and its adjoint: `expand` (a stride-0 view) and `sumTo` (sums the broadcast dimensions
 * away). Each is the other's backward rule, so they live together, above layout's views and the raw
 * axis reduction and below the elementwise and reduction ops whose backward rules use `sumTo`.
 */
import { record } from '../../autograd/graph';
import { broadcastShapes, formatShape, shapesEqual } from '../../shape';
import type { Tensor } from '../../tensor';
import { reduceAxes } from '../reduce/reduce-axes';
import { contiguous, reshape } from './layout';
import { view } from './view';

/** Broadcasts size-1 dimensions to `shape` without copying (stride 0). */
export function expand(x: Tensor, shape: readonly number[]): Tensor {
  const target = broadcastShapes(x.shape, shape, 'expand');
  if (!shapesEqual(target, shape)) throw new Error(`expand: ${formatShape(x.shape)} cannot expand to ${formatShape(shape)}`);
  const offset = shape.length - x.rank;
  const strides = shape.map((d, i) => {
    const j = i - offset;
    if (j < 0) return 0;
    return x.shape[j] === 1 && d !== 1 ? 0 : x.strides[j]!;
  });
  const out = view(x, shape, strides, x.offset);
  const from = [...x.shape];
  record('expand', out, [x], (g) => [sumTo(g, from)]);
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
  const kept = reduceAxes('sum', x, axes, true);
  const out = reshape(kept, shape);
  kept.dispose();
  const from = [...x.shape];
  record('sumTo', out, [x], (g) => {
    const e = expand(g, from);
    const dense = contiguous(e);
    e.dispose();
    return [dense];
  });
  return out;
}
