/**
 * Scatter-adds: `indexAdd` (slices along an axis) and `scatterAdd` (PyTorch's element-wise
 * scatter_add). Both are out of place and return f32: target + the source entries added at their
 * indices, duplicates accumulating. Deterministic: each output element is written by one
 * invocation, summing its contributions in source order (no float atomics), so repeated runs are
 * bitwise identical. Ids outside the valid range are an error when the ids are host data (CPU);
 * on the GPU their entries are skipped (never written out of bounds).
 */
import { noGrad, record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import type { Device } from '../../device/device';
import { tidy } from '../../runtime/scope';
import { contiguousStrides, formatShape, normalizeAxis, shapesEqual } from '../../shape';
import type { Tensor } from '../../tensor';
import { copyInto, narrow, reshape } from '../layout/layout';
import { bindingWindows } from '../../runtime/binding-windows';
import { checkElementIndex, checkFloat, checkIndex, checkSameDevice } from './checks';
import { gatherRaw } from './gather-raw';
import { elementMap, takeMap, type IndexMap } from './index-map';
import { scatterAddCpu } from './scatter.cpu';
import { scatterAddGpu } from './scatter.wgsl';

/** Adds `source` into the dense f32 `out` through `map` (not recorded). */
export function scatterAddRaw(op: string, out: Tensor, index: Tensor, source: Tensor, map: IndexMap): void {
  const device = out.device;
  if (device.kind === 'cpu') scatterAddCpu(out, index, source, map);
  else scatterAddGpu(device, op, out, index, source, map);
}

/** A new f32 [shape] of zeros with `source` scattered in: the gradient of a gather. */
export function scatterIntoZeros(op: string, shape: readonly number[], index: Tensor, source: Tensor, map: IndexMap): Tensor {
  const out = zeros(shape, { device: source.device });
  scatterAddRaw(op, out, index, source, map);
  return out;
}

/**
 * `target` (any strides, f32 or bf16) copied into a new dense f32 tensor. A dense target is copied
 * in binding-sized pieces, so targets above one storage binding work.
 */
function denseF32Copy(target: Tensor): Tensor {
  const device: Device = target.device;
  const out = empty(target.shape, { dtype: 'f32', device });
  if (out.size === 0) return out;
  if (device.kind === 'cpu' || !target.isContiguous) {
    copyInto(out, target);
    return out;
  }
  noGrad(() =>
    tidy(() => {
      const flatOut = reshape(out, [out.size]);
      const flatTarget = reshape(target, [out.size]);
      for (const w of bindingWindows(device, out.size, 4)) copyInto(narrow(flatOut, 0, w.start, w.length), narrow(flatTarget, 0, w.start, w.length));
    }),
  );
  return out;
}

/**
 * target + source added at `index` along `axis`: out[.., index[j], ..] += source[.., j, ..].
 * `index` is i32 [n]; `source` has target's shape with `axis` resized to n.
 */
export function indexAdd(target: Tensor, axis: number, index: Tensor, source: Tensor): Tensor {
  const op = 'indexAdd';
  checkFloat(op, target, 'target');
  checkFloat(op, source, 'source');
  checkSameDevice(op, target, source, 'source');
  const a = normalizeAxis(axis, target.rank, op);
  if (index.rank !== 1) throw new Error(`${op}: index must be 1-D, got ${formatShape(index.shape)}`);
  const expected = target.shape.map((d, i) => (i === a ? index.shape[0]! : d));
  if (!shapesEqual(source.shape, expected)) {
    throw new Error(
      `${op}: source ${formatShape(source.shape)} must be ${formatShape(expected)} (target ${formatShape(target.shape)} with axis ${axis} of index length)`,
    );
  }
  checkIndex(op, index, target, target.shape[a]!);
  const out = denseF32Copy(target);
  scatterAddRaw(op, out, index, source, takeMap(out, a, index, source.strides));
  const sourceShape = [...source.shape];
  record(op, out, [target, source], (g, [idx]) => [g, gatherRaw('indexAdd_grad', g, idx!, takeMap(g, a, idx!), sourceShape)], [index]);
  return out;
}

/**
 * PyTorch's scatter_add, out of place: out[c with c[axis] replaced by index[c]] += source[c].
 * `index` (i32) has the shape of `source` and the rank of `target`, and no dimension larger than
 * the target's outside `axis`.
 */
export function scatterAdd(target: Tensor, axis: number, index: Tensor, source: Tensor): Tensor {
  const op = 'scatterAdd';
  checkFloat(op, target, 'target');
  checkFloat(op, source, 'source');
  checkSameDevice(op, target, source, 'source');
  const a = normalizeAxis(axis, target.rank, op);
  if (!shapesEqual(index.shape, source.shape))
    throw new Error(`${op}: index ${formatShape(index.shape)} must have the shape of source ${formatShape(source.shape)}`);
  checkElementIndex(op, target.shape, a, index);
  checkIndex(op, index, target, target.shape[a]!);
  const out = denseF32Copy(target);
  scatterAddRaw(op, out, index, source, elementMap({ shape: out.shape, strides: contiguousStrides(out.shape) }, a, index, source.strides));
  const sourceShape = [...source.shape];
  record(op, out, [target, source], (g, [idx]) => [g, gatherRaw('scatterAdd_grad', g, idx!, elementMap(g, a, idx!), sourceShape)], [index]);
  return out;
}
