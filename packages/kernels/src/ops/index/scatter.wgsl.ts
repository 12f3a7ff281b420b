/**
 * Deterministic scatter-add without float atomics. Three steps:
 *   1. one invocation per keyed element writes (target, source offset) — the target position its
 *      free elements start from, or 0xffffffff for an id outside [0, axisSize);
 *   2. the pairs are sorted (bitonic), so equal targets form runs ordered by source position;
 *   3. one invocation per (run start, free element) sums its run in that order and adds the sum to
 *      its target element: every output element has exactly one writer, and the summation order
 *      depends only on the inputs — results are bitwise reproducible.
 * Tables above one storage binding get step 3 once per binding window.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedTensor } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import { sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { bindingWindows } from '../../runtime/binding-windows';
import { extentOf, splitForScatter, type IndexMap, type ScatterSplit } from './index-map';
import { MAX_INDEX_RANK, accumulateCoords } from './index-wgsl';
import { sortPairsGpu } from './sort.wgsl';

const WG = 256;
/** Key of an entry whose id is out of range (sorts last and is skipped). */
const INVALID = 0xffffffff;

/** Adds `source` into the dense f32 `out` (the table side of `map`). */
export function scatterAddGpu(device: WebGpuDevice, op: string, out: Tensor, index: Tensor, source: Tensor, map: IndexMap): void {
  if (sizeOf(map.shape) === 0) return;
  if (out.size >= INVALID) throw new Error(`${op}: target of ${out.size} elements is too large to index with u32 keys`);
  const { keyed, free } = splitForScatter(map);
  if (keyed.shape.length > MAX_INDEX_RANK || free.shape.length > MAX_INDEX_RANK) throw new Error(`${op}: index space of rank ${map.shape.length} is too high`);
  const entries = sizeOf(keyed.shape);
  const freeSize = sizeOf(free.shape);
  const slots = 2 ** Math.ceil(Math.log2(entries));
  const pairs = empty([2 * slots], { dtype: 'u32', device });
  try {
    // (target, source offset) pairs, allocated here: they start at element 0 of their binding.
    const sortPairs: NamedTensor = { name: 'pairs', tensor: pairs, what: `${op} sort pairs`, vec2: true };
    const kp = new Params()
      .u32('slots', slots)
      .u32('entries', entries)
      .u32('axisSize', map.axisSize)
      .u32('axisStride', map.axisStride)
      .u32Array('shape', keyed.shape, MAX_INDEX_RANK)
      .u32Array('ist', keyed.indexStrides, MAX_INDEX_RANK)
      .u32Array('tst', keyed.tableStrides, MAX_INDEX_RANK)
      .u32Array('dst', keyed.denseStrides, MAX_INDEX_RANK);
    const keys = bindTensors(
      device,
      op,
      [
        { name: 'ids', tensor: index, window: { start: 0, length: extentOf(index) }, what: `${op} index` },
        { ...sortPairs, writable: true },
      ],
      kp,
    );
    device.run({
      name: `${op}_keys`,
      source: keysSource(kp, keys.decls, keyed),
      params: kp,
      bindings: keys.ranges,
      workgroups: device.grid(slots, WG),
      detail: `${entries} entries`,
    });
    sortPairsGpu(device, pairs, slots);

    const src: NamedTensor = { name: 'src', tensor: source, window: { start: 0, length: extentOf(source) }, what: `${op} source` };
    const windows = bindingWindows(device, out.size, 4);
    windows.forEach((w, k) => {
      const sp = new Params()
        .u32('entries', entries)
        .u32('free', freeSize)
        .u32('winStart', w.start)
        .u32('winLen', w.length)
        .u32Array('shape', free.shape, MAX_INDEX_RANK)
        .u32Array('tst', free.tableStrides, MAX_INDEX_RANK)
        .u32Array('dst', free.denseStrides, MAX_INDEX_RANK);
      const dst: NamedTensor = { name: 'out', tensor: out, window: w, what: `${op} output window`, writable: true };
      const bound = bindTensors(device, op, [sortPairs, src, dst], sp);
      device.run({
        name: `${op}_sum`,
        source: sumSource(sp, bound.decls, free),
        params: sp,
        bindings: bound.ranges,
        workgroups: device.grid(entries * freeSize, WG),
        detail: `${entries}×${freeSize} ${source.dtype}${windows.length > 1 ? ` window ${k + 1}/${windows.length}` : ''}`,
      });
    });
  } finally {
    pairs.dispose();
  }
}

function keysSource(p: Params, decls: string, keyed: ScatterSplit['keyed']): string {
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let e = ${flatIndex(WG)};
  if (e >= P.slots) { return; }
  if (e >= P.entries) { pairs[e] = vec2<u32>(${INVALID}u, ${INVALID}u); return; }
  var at = P.idsOff;
  var dest = 0u;
  var origin = 0u;
  ${accumulateCoords('e', 'P.shape', keyed.shape.length, [
    { variable: 'at', field: 'P.ist', strides: keyed.indexStrides },
    { variable: 'dest', field: 'P.tst', strides: keyed.tableStrides },
    { variable: 'origin', field: 'P.dst', strides: keyed.denseStrides },
  ])}
  let id = ids[at];
  if (id < 0 || u32(id) >= P.axisSize) { pairs[e] = vec2<u32>(${INVALID}u, origin); return; }
  pairs[e] = vec2<u32>(dest + u32(id) * P.axisStride, origin);
}`;
}

function sumSource(p: Params, decls: string, free: ScatterSplit['free']): string {
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.entries * P.free) { return; }
  let e = t / P.free;
  let head = pairs[e];
  // Only the first entry of a run of equal targets works; invalid ids sort last and are skipped.
  if (head.x == ${INVALID}u || (e > 0u && pairs[e - 1u].x == head.x)) { return; }
  var dest = head.x;
  var offset = 0u;
  ${accumulateCoords('t % P.free', 'P.shape', free.shape.length, [
    { variable: 'dest', field: 'P.tst', strides: free.tableStrides },
    { variable: 'offset', field: 'P.dst', strides: free.denseStrides },
  ])}
  if (dest < P.winStart || dest - P.winStart >= P.winLen) { return; }
  var acc = 0.0;
  var q = e;
  loop {
    if (q >= P.entries) { break; }
    let entry = pairs[q];
    if (entry.x != head.x) { break; }
    acc += load_src(P.srcOff + entry.y + offset);
    q++;
  }
  let o = P.outOff + dest - P.winStart;
  out[o] = out[o] + acc;
}`;
}
