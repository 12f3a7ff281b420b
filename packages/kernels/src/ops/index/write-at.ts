/**
 * `copyIntoAt`: writes `src` into `dst` at a position along one axis that is read on the device
 * (an i32 tensor), so a recorded decode step (see `StepProgram`) can append to a cache or a history
 * at a position that advances between replays. Elements that would land outside `dst` are skipped.
 * Not differentiable.
 */
import { isFloat } from '../../dtype';
import { formatShape, normalizeAxis } from '../../shape';
import type { Tensor } from '../../tensor';
import { writeAtCpu } from './write-at.cpu';
import { writeAtGpu } from './write-at.wgsl';

/** A validated `copyIntoAt` call: the index space is src's shape. */
export interface WriteAtProblem {
  dst: Tensor;
  src: Tensor;
  axis: number;
  start: Tensor;
  offset: number;
}

/**
 * dst[..., start[0] + offset + i, ...] = src[..., i, ...] along `axis` for i in [0, src.shape[axis]);
 * every other dimension of src equals dst's. `dst` is f32 or i32 (any strides); `src` matches it
 * (f32 or bf16 for an f32 dst); `start` is i32 with one element.
 */
export function copyIntoAt(dst: Tensor, src: Tensor, axis: number, start: Tensor, offset = 0): void {
  const op = 'copyIntoAt';
  dst.assertAlive(`${op}: dst`);
  src.assertAlive(`${op}: src`);
  start.assertAlive(`${op}: start`);
  if (src.device !== dst.device || start.device !== dst.device) throw new Error(`${op}: dst, src and start must be on one device`);
  const a = normalizeAxis(axis, dst.rank, op);
  const shapes = `dst ${formatShape(dst.shape)}, src ${formatShape(src.shape)}, axis ${axis}`;
  if (src.rank !== dst.rank || src.shape.some((d, i) => i !== a && d !== dst.shape[i]))
    throw new Error(`${op}: src must match dst except along the axis: ${shapes}`);
  if (src.shape[a]! > dst.shape[a]!) throw new Error(`${op}: src is longer than dst along the axis: ${shapes}`);
  if (dst.dtype !== 'f32' && dst.dtype !== 'i32') throw new Error(`${op}: dst must be f32 or i32, got ${dst.dtype}`);
  if (dst.dtype === 'f32' ? !isFloat(src.dtype) : src.dtype !== 'i32') throw new Error(`${op}: src (${src.dtype}) does not match dst (${dst.dtype})`);
  if (start.dtype !== 'i32' || start.size !== 1) throw new Error(`${op}: start must be i32 with one element, got ${start.dtype} ${formatShape(start.shape)}`);
  if (!Number.isInteger(offset)) throw new Error(`${op}: offset must be an integer, got ${offset}`);
  if (src.size === 0) return;
  dst.storage.invalidateDerived();
  const problem = { dst, src, axis: a, start, offset };
  if (dst.device.kind === 'cpu') writeAtCpu(problem);
  else writeAtGpu(dst.device, problem);
}
