/**
 * Layout ops. Views (reshape of dense data, permute/transpose, narrow, squeeze/unsqueeze; `expand`
 * is in broadcast.ts beside its adjoint `sumTo`)
 * share storage and cost nothing; `contiguous`, `cast`, `concat` and `copyInto` run the elementwise
 * identity kernel (so every dtype pair, strided reads and bf16 word-pair writes come for free).
 */
import { record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import type { DType } from '../../dtype';
import { contiguousStrides, formatShape, normalizeAxis, resolveReshape, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { IDENTITY } from '../elementwise/definitions';
import { elementwise } from '../elementwise/elementwise-kernel';
import { view } from './view';

/** A dense copy of `x` (a new handle to the same data when it is already dense). */
export function contiguous(x: Tensor): Tensor {
  if (x.isContiguous) return view(x, x.shape, x.strides, x.offset);
  const out = elementwise('contiguous', IDENTITY, ['x'], [x], [], { dtype: x.dtype });
  record('contiguous', out, [x], (g) => [g]);
  return out;
}

/** Converts to `dtype` (f32→bf16 rounds to nearest even). Gradients flow back as f32. */
export function cast(x: Tensor, dtype: DType): Tensor {
  if (dtype === x.dtype) return contiguous(x);
  const out = elementwise('cast', IDENTITY, ['x'], [x], [], { dtype });
  record('cast', out, [x], (g) => [g]);
  return out;
}

/** Copies `src` (broadcast to the destination's shape) into the existing view `dst`. Not differentiable. */
export function copyInto(dst: Tensor, src: Tensor): void {
  elementwise('copy', IDENTITY, ['x'], [src], [], { into: dst });
}

/** Reshape; a view when `x` is dense, otherwise a dense copy first. One dimension may be -1. */
export function reshape(x: Tensor, shape: readonly number[]): Tensor {
  const target = resolveReshape(x.shape, shape);
  const dense = x.isContiguous ? x : contiguous(x);
  const out = view(dense, target, contiguousStrides(target), dense.offset);
  if (dense !== x) dense.dispose();
  const from = [...x.shape];
  record('reshape', out, [x], (g) => [reshape(g, from)]);
  return out;
}

/** Flattens dimensions [start, end] into one. */
export function flatten(x: Tensor, start = 0, end = -1): Tensor {
  if (x.rank === 0) return reshape(x, [1]);
  const s = normalizeAxis(start, x.rank, 'flatten');
  const e = normalizeAxis(end, x.rank, 'flatten');
  const shape = [...x.shape.slice(0, s), sizeOf(x.shape.slice(s, e + 1)), ...x.shape.slice(e + 1)];
  return reshape(x, shape);
}

/** Inserts a dimension of size 1 at `axis`. */
export function unsqueeze(x: Tensor, axis: number): Tensor {
  const a = normalizeAxis(axis, x.rank + 1, 'unsqueeze');
  const shape = [...x.shape];
  shape.splice(a, 0, 1);
  return reshape(x, shape);
}

/** Removes size-1 dimensions (all, or the one at `axis`). */
export function squeeze(x: Tensor, axis?: number): Tensor {
  if (axis === undefined)
    return reshape(
      x,
      x.shape.filter((d) => d !== 1),
    );
  const a = normalizeAxis(axis, x.rank, 'squeeze');
  if (x.shape[a] !== 1) throw new Error(`squeeze: dimension ${axis} of ${formatShape(x.shape)} is not 1`);
  return reshape(
    x,
    x.shape.filter((_, i) => i !== a),
  );
}

/** Reorders dimensions (a view). */
export function permute(x: Tensor, dims: readonly number[]): Tensor {
  if (dims.length !== x.rank) throw new Error(`permute: ${dims.length} dims for a tensor of rank ${x.rank}`);
  const axes = dims.map((d) => normalizeAxis(d, x.rank, 'permute'));
  if (new Set(axes).size !== axes.length) throw new Error(`permute: repeated dims in [${dims.join(', ')}]`);
  const out = view(
    x,
    axes.map((a) => x.shape[a]!),
    axes.map((a) => x.strides[a]!),
    x.offset,
  );
  const inverse = new Array<number>(axes.length);
  axes.forEach((a, i) => (inverse[a] = i));
  record('permute', out, [x], (g) => [permute(g, inverse)]);
  return out;
}

/** Swaps two dimensions (a view). */
export function transpose(x: Tensor, dim0 = -2, dim1 = -1): Tensor {
  const a = normalizeAxis(dim0, x.rank, 'transpose');
  const b = normalizeAxis(dim1, x.rank, 'transpose');
  const dims = x.shape.map((_, i) => i);
  dims[a] = b;
  dims[b] = a;
  return permute(x, dims);
}

/** Elements [start, start+length) along `axis` (a view). */
export function narrow(x: Tensor, axis: number, start: number, length: number): Tensor {
  const a = normalizeAxis(axis, x.rank, 'narrow');
  const size = x.shape[a]!;
  if (!Number.isInteger(start) || !Number.isInteger(length) || start < 0 || length < 0 || start + length > size) {
    throw new Error(`narrow: [${start}, ${start + length}) is outside dimension ${axis} of size ${size} in ${formatShape(x.shape)}`);
  }
  const shape = [...x.shape];
  shape[a] = length;
  const out = view(x, shape, x.strides, x.offset + start * x.strides[a]!);
  const full = [...x.shape];
  record(
    'narrow',
    out,
    [x],
    (g) => {
      const z = zeros(full, { device: g.device });
      copyInto(narrowRaw(z, a, start, length), g);
      return [z];
    },
    [],
    { axis: a, start, length },
  );
  return out;
}

/** `narrow` without autograd, for writing into a slice of a fresh tensor. */
export function narrowRaw(x: Tensor, axis: number, start: number, length: number): Tensor {
  const shape = [...x.shape];
  shape[axis] = length;
  return view(x, shape, x.strides, x.offset + start * x.strides[axis]!);
}

/** `x[start:end]` along `axis`, with Python-style negative indices (a view). */
export function slice(x: Tensor, axis: number, start = 0, end?: number): Tensor {
  const a = normalizeAxis(axis, x.rank, 'slice');
  const size = x.shape[a]!;
  const norm = (i: number) => Math.min(Math.max(i < 0 ? i + size : i, 0), size);
  const s = norm(start);
  const e = Math.max(s, norm(end ?? size));
  return narrow(x, a, s, e - s);
}

/** Joins tensors along `axis` (all must share dtype, device and the other dimensions). */
export function concat(tensors: readonly Tensor[], axis = 0): Tensor {
  if (tensors.length === 0) throw new Error('concat: no tensors');
  const first = tensors[0]!;
  const a = normalizeAxis(axis, first.rank, 'concat');
  for (const t of tensors) {
    if (t.rank !== first.rank || t.shape.some((d, i) => i !== a && d !== first.shape[i])) {
      throw new Error(`concat: ${formatShape(t.shape)} does not match ${formatShape(first.shape)} outside axis ${axis}`);
    }
    if (t.dtype !== first.dtype) throw new Error(`concat: dtypes differ (${first.dtype}, ${t.dtype})`);
    if (t.device !== first.device) throw new Error('concat: tensors are on different devices');
  }
  const shape = [...first.shape];
  shape[a] = tensors.reduce((n, t) => n + t.shape[a]!, 0);
  // Parts of a bf16 result can share 32-bit words with their neighbours: assemble in f32, then round.
  const bf16Split = first.dtype === 'bf16';
  const out = empty(shape, { dtype: bf16Split ? 'f32' : first.dtype, device: first.device });
  let start = 0;
  for (const t of tensors) {
    if (t.shape[a]! > 0) copyInto(narrowRaw(out, a, start, t.shape[a]!), t);
    start += t.shape[a]!;
  }
  const result = bf16Split ? castRaw(out, 'bf16') : out;
  if (result !== out) out.dispose();
  const sizes = tensors.map((t) => t.shape[a]!);
  record('concat', result, [...tensors], (g) => {
    let offset = 0;
    return sizes.map((n) => {
      const part = narrow(g, a, offset, n);
      offset += n;
      return part;
    });
  });
  return result;
}

function castRaw(x: Tensor, dtype: DType): Tensor {
  return elementwise('cast', IDENTITY, ['x'], [x], [], { dtype });
}
