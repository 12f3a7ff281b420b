/**
 * Gather kernel: one invocation per output element reads its id and copies one table element.
 * Tables above one storage binding are gathered window by window (one dispatch each); an element
 * is written by the dispatch whose window holds its table position, and elements with an id
 * outside [0, axisSize) get all-ones bits (NaN as f32) from the first dispatch — never an
 * out-of-bounds read.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bytesPerElement } from '../../dtype';
import { bindTensors, type NamedTensor } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { bindingWindows } from '../../runtime/binding-windows';
import { extentOf, type IndexMap } from './index-map';
import { MAX_INDEX_RANK, accumulateCoords } from './index-wgsl';

const WG = 256;
const ALL_ONES = 0xffffffff;

/** Fills the dense `out` (f32 for float tables, the table's dtype for integer ones) from `table`. */
export function gatherGpu(device: WebGpuDevice, op: string, table: Tensor, index: Tensor, map: IndexMap, out: Tensor): void {
  const n = out.size;
  if (n === 0) return;
  const rank = map.shape.length;
  if (rank > MAX_INDEX_RANK) throw new Error(`${op}: index space of rank ${rank} above ${MAX_INDEX_RANK} after collapsing dimensions`);
  const ids: NamedTensor = { name: 'ids', tensor: index, window: { start: 0, length: extentOf(index) }, what: `${op} index` };
  const dst: NamedTensor = { name: 'out', tensor: out, window: { start: 0, length: n }, what: `${op} output`, writable: true };
  const float = out.dtype === 'f32';
  const read = float ? 'load_table(P.tableOff + pos - P.winStart)' : 'table[P.tableOff + pos - P.winStart]';
  const invalid = float ? 'bitcast<f32>(P.invalidBits)' : out.dtype === 'i32' ? 'bitcast<i32>(P.invalidBits)' : 'P.invalidBits';
  const windows = bindingWindows(device, extentOf(table), bytesPerElement(table.dtype));
  windows.forEach((w, k) => {
    const p = new Params()
      .u32('n', n)
      .u32('axisSize', map.axisSize)
      .u32('axisStride', map.axisStride)
      .u32('invalidBits', ALL_ONES)
      .u32('writeInvalid', k === 0 ? 1 : 0)
      .u32('winStart', w.start)
      .u32('winLen', w.length)
      .u32Array('shape', map.shape, MAX_INDEX_RANK)
      .u32Array('ist', map.indexStrides, MAX_INDEX_RANK)
      .u32Array('tst', map.tableStrides, MAX_INDEX_RANK);
    const bound = bindTensors(device, op, [{ name: 'table', tensor: table, window: w, what: `${op} table window` }, ids, dst], p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  var at = P.idsOff;
  var pos = 0u;
  ${accumulateCoords('i', 'P.shape', rank, [
    { variable: 'at', field: 'P.ist', strides: map.indexStrides },
    { variable: 'pos', field: 'P.tst', strides: map.tableStrides },
  ])}
  let id = ids[at];
  if (id < 0 || u32(id) >= P.axisSize) {
    if (P.writeInvalid == 1u) { out[P.outOff + i] = ${invalid}; }
    return;
  }
  pos += u32(id) * P.axisStride;
  if (pos < P.winStart || pos - P.winStart >= P.winLen) { return; }
  out[P.outOff + i] = ${read};
}`;
    device.run({
      name: op,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(n, WG),
      detail: `[${map.shape.join(',')}] ${table.dtype}→${out.dtype}${windows.length > 1 ? ` window ${k + 1}/${windows.length}` : ''}`,
    });
  });
}
