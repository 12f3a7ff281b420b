/**
 * `copyIntoAt` kernel: one invocation per src element. Its axis coordinate plus the start read from
 * the device gives the destination position; positions outside dst are skipped. Size-1 dimensions
 * other than the axis are dropped from the index space.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import { sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { MAX_INDEX_RANK, accumulateCoords } from './index-wgsl';
import type { WriteAtProblem } from './write-at';

const WG = 64;

/** Elements spanned by a strided view, from its offset to its last element. */
function extent(t: Tensor): number {
  return t.shape.reduce((last, d, i) => last + (d - 1) * t.strides[i]!, 0) + 1;
}

export function writeAtGpu(device: WebGpuDevice, { dst, src, axis, start, offset }: WriteAtProblem): void {
  const dims = src.shape.map((_, d) => d).filter((d) => d === axis || src.shape[d] !== 1);
  if (dims.length > MAX_INDEX_RANK) throw new Error(`copyIntoAt: rank ${dims.length} above ${MAX_INDEX_RANK}`);
  const shape = dims.map((d) => src.shape[d]!);
  const srcStrides = dims.map((d) => src.strides[d]!);
  // The axis coordinate goes through `pos` (start + coordinate), not through the stride sum.
  const dstStrides = dims.map((d) => (d === axis ? 0 : dst.strides[d]!));
  const n = src.size;
  const p = new Params()
    .u32('n', n)
    .u32('inner', sizeOf(src.shape.slice(axis + 1)))
    .u32('length', src.shape[axis]!)
    .u32('axisSize', dst.shape[axis]!)
    .u32('axisStride', dst.strides[axis]!)
    .i32('offset', offset)
    .u32Array('shape', shape, MAX_INDEX_RANK)
    .u32Array('sst', srcStrides, MAX_INDEX_RANK)
    .u32Array('dst', dstStrides, MAX_INDEX_RANK);
  const bound = bindTensors(
    device,
    'copyIntoAt',
    [
      { name: 'src', tensor: src, window: { start: 0, length: extent(src) }, what: 'copyIntoAt src' },
      { name: 'out', tensor: dst, window: { start: 0, length: extent(dst) }, what: 'copyIntoAt dst', writable: true },
      { name: 'first', tensor: start, window: { start: 0, length: 1 }, what: 'copyIntoAt start' },
    ],
    p,
  );
  const float = dst.dtype === 'f32';
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let pos = i32((i / P.inner) % P.length) + first[P.firstOff] + P.offset;
  if (pos < 0 || u32(pos) >= P.axisSize) { return; }
  var at = P.srcOff;
  var to = P.outOff + u32(pos) * P.axisStride;
  ${accumulateCoords('i', 'P.shape', shape.length, [
    { variable: 'at', field: 'P.sst', strides: srcStrides },
    { variable: 'to', field: 'P.dst', strides: dstStrides },
  ])}
  out[to] = ${float ? 'load_src(at)' : 'src[at]'};
}`;
  device.run({
    name: 'copy_into_at',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(n, WG),
    detail: `[${src.shape.join(',')}] → [${dst.shape.join(',')}] axis ${axis}`,
  });
}
