/**
 * `copyIntoAt` kernel: one invocation per src element. Its axis coordinate plus the start read from
 * the device gives the destination position; positions outside dst are skipped. Size-1 dimensions
 * other than the axis are dropped from the index space.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { GRID_ARGS, declareStorage, flatIndex, loaderF32 } from '../../runtime/wgsl';
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
  const s = device.bind(src.storage, src.offset, extent(src), 'copyIntoAt src');
  const t = device.bind(dst.storage, dst.offset, extent(dst), 'copyIntoAt dst');
  const p0 = device.bind(start.storage, start.offset, 1, 'copyIntoAt start');
  const p = new Params()
    .u32('n', n)
    .u32('inner', sizeOf(src.shape.slice(axis + 1)))
    .u32('length', src.shape[axis]!)
    .u32('axisSize', dst.shape[axis]!)
    .u32('axisStride', dst.strides[axis]!)
    .u32('srcOff', s.elementOffset)
    .u32('dstOff', t.elementOffset)
    .u32('startOff', p0.elementOffset)
    .i32('offset', offset)
    .u32Array('shape', shape, MAX_INDEX_RANK)
    .u32Array('sst', srcStrides, MAX_INDEX_RANK)
    .u32Array('dst', dstStrides, MAX_INDEX_RANK);
  const float = dst.dtype === 'f32';
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'src', src.dtype, 'read')}
${float ? loaderF32('src', src.dtype) : ''}
${declareStorage(2, 'out', dst.dtype, 'read_write')}
${declareStorage(3, 'first', 'i32', 'read')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  let pos = i32((i / P.inner) % P.length) + first[P.startOff] + P.offset;
  if (pos < 0 || u32(pos) >= P.axisSize) { return; }
  var at = P.srcOff;
  var to = P.dstOff + u32(pos) * P.axisStride;
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
    bindings: [s.range, t.range, p0.range],
    workgroups: device.grid(n, WG),
    detail: `[${src.shape.join(',')}] → [${dst.shape.join(',')}] axis ${axis}`,
  });
}
