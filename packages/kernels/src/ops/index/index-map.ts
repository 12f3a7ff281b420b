/**
 * The element correspondence every op of the index family is built on. Iterating an index space
 * `shape`, element c pairs
 *   - an id read from `index` at  Σ c_d·indexStrides_d,
 *   - a "table" element at         id·axisStride + Σ c_d·tableStrides_d  (ids valid in [0, axisSize)),
 *   - a "dense" element at         Σ c_d·denseStrides_d.
 * Gathers read the table and write the dense side; scatters read the dense side and add into the
 * table. All offsets are relative to each tensor's own `offset`.
 */
import { collapseDims, contiguousStrides, formatShape, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';

export interface IndexMap {
  shape: number[];
  indexStrides: number[];
  tableStrides: number[];
  denseStrides: number[];
  axisStride: number;
  axisSize: number;
}

/** Strides and shape of the table side, which may be a tensor or a dense tensor still to be made. */
export interface TableLayout {
  shape: readonly number[];
  strides: readonly number[];
}

/**
 * `take` pattern (embedding, indexSelect, indexAdd): the index's dimensions replace the table's
 * `axis`, so the index space is [...table[:axis], ...index.shape, ...table[axis+1:]].
 */
export function takeMap(table: TableLayout, axis: number, index: Tensor, denseStrides?: readonly number[]): IndexMap {
  const before = table.shape.slice(0, axis);
  const after = table.shape.slice(axis + 1);
  const shape = [...before, ...index.shape, ...after];
  const zeros = (n: number) => new Array<number>(n).fill(0);
  return collapse({
    shape,
    indexStrides: [...zeros(before.length), ...index.strides, ...zeros(after.length)],
    tableStrides: [...table.strides.slice(0, axis), ...zeros(index.rank), ...table.strides.slice(axis + 1)],
    denseStrides: denseStrides ? [...denseStrides] : contiguousStrides(shape),
    axisStride: table.strides[axis]!,
    axisSize: table.shape[axis]!,
  });
}

/**
 * Element pattern (gather, scatterAdd): the index space is the index's shape; element c of the
 * table is c with its `axis` coordinate replaced by the id.
 */
export function elementMap(table: TableLayout, axis: number, index: Tensor, denseStrides?: readonly number[]): IndexMap {
  const shape = [...index.shape];
  return collapse({
    shape,
    indexStrides: [...index.strides],
    tableStrides: table.strides.map((s, d) => (d === axis ? 0 : s)),
    denseStrides: denseStrides ? [...denseStrides] : contiguousStrides(shape),
    axisStride: table.strides[axis]!,
    axisSize: table.shape[axis]!,
  });
}

/** Merges dimensions that are contiguous for index, table and dense side alike (fewer kernel loops). */
function collapse(m: IndexMap): IndexMap {
  if (sizeOf(m.shape) === 0) return m;
  const c = collapseDims(m.shape, [m.indexStrides, m.tableStrides, m.denseStrides]);
  return { ...m, shape: c.shape, indexStrides: c.strides[0]!, tableStrides: c.strides[1]!, denseStrides: c.strides[2]! };
}

/** Elements a strided view spans from its offset to its last element (1 for an empty view). */
export function extentOf(t: { shape: readonly number[]; strides: readonly number[] }): number {
  if (sizeOf(t.shape) === 0) return 1;
  let last = 0;
  t.shape.forEach((d, i) => (last += (d - 1) * t.strides[i]!));
  return last + 1;
}

/**
 * The dimensions of the index space split for scatters. `keyed` dimensions get one sort entry per
 * element: those along which the id can change (index stride ≠ 0) and those that do not move in the
 * table (table stride 0, so their elements meet on the same targets). `free` dimensions move the
 * table position with a fixed id; one invocation per free element walks a run of equal keys, so no
 * two invocations ever add into the same element.
 */
export interface ScatterSplit {
  keyed: { shape: number[]; indexStrides: number[]; tableStrides: number[]; denseStrides: number[] };
  free: { shape: number[]; tableStrides: number[]; denseStrides: number[] };
}

export function splitForScatter(m: IndexMap): ScatterSplit {
  const keyed: ScatterSplit['keyed'] = { shape: [], indexStrides: [], tableStrides: [], denseStrides: [] };
  const free: ScatterSplit['free'] = { shape: [], tableStrides: [], denseStrides: [] };
  m.shape.forEach((d, i) => {
    if (m.indexStrides[i] !== 0 || m.tableStrides[i] === 0) {
      keyed.shape.push(d);
      keyed.indexStrides.push(m.indexStrides[i]!);
      keyed.tableStrides.push(m.tableStrides[i]!);
      keyed.denseStrides.push(m.denseStrides[i]!);
    } else {
      free.shape.push(d);
      free.tableStrides.push(m.tableStrides[i]!);
      free.denseStrides.push(m.denseStrides[i]!);
    }
  });
  return { keyed, free };
}

/**
 * Host-side id validation, only for ids that already live on the host (CPU tensors): GPU ids are
 * never read back. Throws naming the op, the first bad id and where it is.
 */
export function validateHostIds(op: string, index: Tensor, axisSize: number, data: Int32Array): void {
  const n = index.size;
  const coord = new Array<number>(index.rank).fill(0);
  for (let i = 0; i < n; i++) {
    let at = index.offset;
    for (let d = 0; d < index.rank; d++) at += coord[d]! * index.strides[d]!;
    const id = data[at]!;
    if (id < 0 || id >= axisSize) {
      throw new Error(`${op}: index ${id} at [${coord.join(', ')}] of ${formatShape(index.shape)} is outside [0, ${axisSize})`);
    }
    for (let d = index.rank - 1; d >= 0; d--) {
      if (++coord[d]! < index.shape[d]!) break;
      coord[d] = 0;
    }
  }
}
