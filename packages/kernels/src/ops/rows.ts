/**
 * Shared plumbing of the row-wise families (softmax, norm, cumsum, topk, cross-entropy): their
 * kernels work on the last axis of a dense [rows, cols] view; other axes are swapped to the end.
 */
import { noGrad } from '../autograd/graph';
import { isFloat } from '../dtype';
import { formatShape, normalizeAxis, sizeOf } from '../shape';
import { tidy } from '../runtime/scope';
import type { Tensor } from '../tensor';
import { contiguous, transpose } from './layout/layout';

/** Rows and columns of `x` seen as [rows, last dim]. */
export function rowsOf(x: Tensor): { rows: number; cols: number } {
  const cols = x.shape[x.rank - 1]!;
  return { rows: sizeOf(x.shape.slice(0, -1)), cols };
}

/** A dense handle to `x` for a kernel (a copy only when `x` is strided), without recording autograd. */
export function dense(x: Tensor): Tensor {
  return noGrad(() => contiguous(x));
}

/**
 * Applies a last-axis op along `axis`: swaps `axis` with the last one, runs `fn`, swaps back into
 * a dense result. The swaps are recorded views, so gradients flow through them.
 */
export function alongAxis(x: Tensor, axis: number, op: string, fn: (x: Tensor) => Tensor): Tensor {
  const a = normalizeAxis(axis, x.rank, op);
  if (a === x.rank - 1) return fn(x);
  return tidy(() => contiguous(transpose(fn(transpose(x, a, -1)), a, -1)));
}

/** Throws unless `x` is a live float tensor of rank ≥ 1. */
export function assertFloatRows(x: Tensor, op: string, what = 'input'): void {
  x.assertAlive(`${op} ${what}`);
  if (!isFloat(x.dtype)) throw new Error(`${op}: ${what} ${formatShape(x.shape)} must be f32 or bf16, got ${x.dtype}`);
  if (x.rank === 0) throw new Error(`${op}: ${what} must have at least one dimension, got a scalar`);
}
