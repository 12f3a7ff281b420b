/** CPU reference for gathers: walks the index space and copies table elements (NaN / all-ones bits for bad ids). */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
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
