/**
 * CPU reference for scatter-adds, structured like the kernel: entries sorted by (target, source
 * position), each run of equal targets summed in order (in f64 here) and added to the target once.
 * Entries with ids outside [0, axisSize) are skipped.
 */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { IndexMap } from './index-map';

/** Adds `source` into the dense f32 `out` through `map` (the table side is `out`). */
export function scatterAddCpu(out: Tensor, index: Tensor, source: Tensor, map: IndexMap): void {
  const ids = cpuView(index) as Int32Array;
  const read = storageReader(source);
  const dst = cpuView(out) as Float32Array;
  const { shape, indexStrides, tableStrides, denseStrides } = map;
  const rank = shape.length;
  const n = shape.reduce((a, b) => a * b, 1);
  const entries: { target: number; from: number }[] = [];
  const coord = new Array<number>(rank).fill(0);
  for (let i = 0; i < n; i++) {
    let at = index.offset;
    let target = 0;
    let from = source.offset;
    for (let d = 0; d < rank; d++) {
      at += coord[d]! * indexStrides[d]!;
      target += coord[d]! * tableStrides[d]!;
      from += coord[d]! * denseStrides[d]!;
    }
    const id = ids[at]!;
    if (id >= 0 && id < map.axisSize) entries.push({ target: target + id * map.axisStride, from });
    for (let d = rank - 1; d >= 0; d--) {
      if (++coord[d]! < shape[d]!) break;
      coord[d] = 0;
    }
  }
  entries.sort((a, b) => a.target - b.target || a.from - b.from);
  for (let p = 0; p < entries.length; ) {
    const target = entries[p]!.target;
    let sum = 0;
    for (; p < entries.length && entries[p]!.target === target; p++) sum += read(entries[p]!.from);
    dst[out.offset + target] = dst[out.offset + target]! + sum;
  }
}
