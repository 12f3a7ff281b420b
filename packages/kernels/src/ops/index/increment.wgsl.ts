/** `incrementInPlace` kernel: one invocation per element adds the constant (a uniform). */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

const WG = 64;

export function incrementGpu(device: WebGpuDevice, t: Tensor, by: number): void {
  const p = new Params().u32('n', t.size).i32('by', by);
  const bound = bindTensors(device, 'incrementInPlace', [{ name: 't', tensor: t, writable: true }], p);
  const value = t.dtype === 'i32' ? 'P.by' : 'bitcast<u32>(P.by)';
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i >= P.n) { return; }
  t[P.tOff + i] = t[P.tOff + i] + ${value};
}`;
  device.run({
    name: 'increment',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(t.size, WG),
    detail: `[${t.shape.join(',')}] ${t.dtype}`,
  });
}
