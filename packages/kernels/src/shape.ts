/** Shape arithmetic shared by every op: sizes, strides, broadcasting, axis normalisation. */

export type Shape = readonly number[];

export function sizeOf(shape: Shape): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function contiguousStrides(shape: Shape): number[] {
  const strides = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    strides[i] = s;
    s *= shape[i]!;
  }
  return strides;
}

export function shapesEqual(a: Shape, b: Shape): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

export function formatShape(shape: Shape): string {
  return `[${shape.join(', ')}]`;
}

export function assertValidShape(shape: Shape, what = 'shape'): void {
  for (const d of shape) {
    if (!Number.isInteger(d) || d < 0) throw new Error(`${what} ${formatShape(shape)} has an invalid dimension ${d}`);
  }
}

/** Normalises a possibly negative axis against `rank`. */
export function normalizeAxis(axis: number, rank: number, op = 'op'): number {
  const a = axis < 0 ? axis + rank : axis;
  if (!Number.isInteger(a) || a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} is out of range for rank ${rank}`);
  return a;
}

/** NumPy broadcasting of two shapes. */
export function broadcastShapes(a: Shape, b: Shape, op = 'op'): number[] {
  const rank = Math.max(a.length, b.length);
  const out = new Array<number>(rank);
  for (let i = 0; i < rank; i++) {
    const da = a[a.length - rank + i] ?? 1;
    const db = b[b.length - rank + i] ?? 1;
    if (da !== db && da !== 1 && db !== 1) {
      throw new Error(`${op}: shapes ${formatShape(a)} and ${formatShape(b)} cannot be broadcast together`);
    }
    out[i] = da === 1 ? db : da;
  }
  return out;
}

/**
 * Strides (in elements) that read a tensor of `shape`/`strides` as if it had `outShape`:
 * broadcast dimensions get stride 0.
 */
export function broadcastStrides(shape: Shape, strides: readonly number[], outShape: Shape): number[] {
  const out = new Array<number>(outShape.length).fill(0);
  const offset = outShape.length - shape.length;
  for (let i = 0; i < shape.length; i++) {
    out[offset + i] = shape[i] === 1 && outShape[offset + i] !== 1 ? 0 : strides[i]!;
  }
  return out;
}

/**
 * Merges adjacent dimensions that are contiguous for every operand, so kernels see the smallest rank.
 * Returns the merged shape and, per operand, the merged strides.
 */
export function collapseDims(shape: Shape, stridesList: readonly (readonly number[])[]): { shape: number[]; strides: number[][] } {
  const outShape: number[] = [];
  const outStrides: number[][] = stridesList.map(() => []);
  for (let i = 0; i < shape.length; i++) {
    const d = shape[i]!;
    if (d === 1) continue;
    const last = outShape.length - 1;
    const canMerge = last >= 0 && stridesList.every((s, k) => outStrides[k]![last] === s[i]! * d);
    if (canMerge) {
      outShape[last] = outShape[last]! * d;
      stridesList.forEach((s, k) => (outStrides[k]![last] = s[i]!));
    } else {
      outShape.push(d);
      stridesList.forEach((s, k) => outStrides[k]!.push(s[i]!));
    }
  }
  if (outShape.length === 0) {
    outShape.push(1);
    outStrides.forEach((s) => s.push(1));
  }
  return { shape: outShape, strides: outStrides };
}

/** Resolves a reshape target with at most one -1. */
export function resolveReshape(from: Shape, to: readonly number[]): number[] {
  const total = sizeOf(from);
  let unknown = -1;
  let known = 1;
  to.forEach((d, i) => {
    if (d === -1) {
      if (unknown >= 0) throw new Error(`reshape: more than one -1 in ${formatShape(to)}`);
      unknown = i;
    } else known *= d;
  });
  const out = [...to];
  if (unknown >= 0) {
    if (known === 0 || total % known !== 0) throw new Error(`reshape: cannot reshape ${formatShape(from)} to ${formatShape(to)}`);
    out[unknown] = total / known;
  }
  if (sizeOf(out) !== total) throw new Error(`reshape: cannot reshape ${formatShape(from)} (${total} elements) to ${formatShape(to)}`);
  assertValidShape(out, 'reshape target');
  return out;
}
