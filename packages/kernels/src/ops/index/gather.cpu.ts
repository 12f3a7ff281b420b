/** CPU reference for gathers: walks the index space and copies table elements (NaN / all-ones bits for bad ids). */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { TypedArray } from '../../dtype';
import type { IndexMap } from './index-map';

/** Fills the dense `out` (f32, or the table's integer dtype) from `table` through `map`. */
export function gatherCpu(table: Tensor, index: Tensor, map: IndexMap, out: Tensor): void {
  const ids = cpuView(index) as Int32Array;
  const dst = cpuView(out);
  const read = storageReader(table);
  // All-ones bits: NaN as f32, -1 as i32, 0xffffffff as u32 (what the kernel writes too).
  const invalid = out.dtype === 'f32' ? NaN : out.dtype === 'i32' ? -1 : 0xffffffff;
  const { shape, indexStrides, tableStrides, denseStrides } = map;
  const rank = shape.length;
  if (rank > 0 && table.dtype === out.dtype && isRowCopy(map)) return copyRows(ids, cpuView(table), dst, index.offset, table.offset, out.offset, map, invalid);
  const coord = new Array<number>(rank).fill(0);
  const n = out.size;
  for (let i = 0; i < n; i++) {
    let at = index.offset;
    let from = table.offset;
    let to = out.offset;
    for (let d = 0; d < rank; d++) {
      at += coord[d]! * indexStrides[d]!;
      from += coord[d]! * tableStrides[d]!;
      to += coord[d]! * denseStrides[d]!;
    }
    const id = ids[at]!;
    dst[to] = id >= 0 && id < map.axisSize ? read(from + id * map.axisStride) : invalid;
    for (let d = rank - 1; d >= 0; d--) {
      if (++coord[d]! < shape[d]!) break;
      coord[d] = 0;
    }
  }
}

/** The innermost dimension copies a contiguous run of the table per id (an embedding row): one `set` per run. */
function isRowCopy(map: IndexMap): boolean {
  const last = map.shape.length - 1;
  return map.indexStrides[last] === 0 && map.tableStrides[last] === 1 && map.denseStrides[last] === 1;
}

/** The gather of {@link gatherCpu} when {@link isRowCopy}: the element loop's result, a row at a time (the embedding's forward). */
function copyRows(ids: Int32Array, src: TypedArray, dst: TypedArray, at0: number, from0: number, to0: number, map: IndexMap, invalid: number): void {
  const { shape, indexStrides, tableStrides, denseStrides } = map;
  const outer = shape.length - 1;
  const run = shape[outer]!;
  const coord = new Array<number>(outer).fill(0);
  const rows = shape.slice(0, outer).reduce((a, b) => a * b, 1);
  for (let r = 0; r < rows; r++) {
    let at = at0;
    let from = from0;
    let to = to0;
    for (let d = 0; d < outer; d++) {
      at += coord[d]! * indexStrides[d]!;
      from += coord[d]! * tableStrides[d]!;
      to += coord[d]! * denseStrides[d]!;
    }
    const id = ids[at]!;
    if (id >= 0 && id < map.axisSize) {
      const start = from + id * map.axisStride;
      dst.set(src.subarray(start, start + run), to);
    } else dst.fill(invalid, to, to + run);
    for (let d = outer - 1; d >= 0; d--) {
      if (++coord[d]! < shape[d]!) break;
      coord[d] = 0;
    }
  }
}
