/**
 * In-place bitonic sort of (key, value) u32 pairs, ascending by key then value: one dispatch per
 * stage, each invocation compare-exchanging one pair of slots. The order of the result depends only
 * on the data, so every consumer of it is deterministic. O(n log² n) work, log₂n·(log₂n+1)/2
 * dispatches for n slots (a power of two).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

const WG = 256;

/** Sorts `slots` pairs stored as a u32 tensor [2·slots] (`slots` a power of two). */
export function sortPairsGpu(device: WebGpuDevice, pairs: Tensor, slots: number): void {
  if (slots & (slots - 1)) throw new Error(`sortPairsGpu: ${slots} slots is not a power of two`);
  if (pairs.dtype !== 'u32' || pairs.size !== 2 * slots) throw new Error(`sortPairsGpu: expected u32 [${2 * slots}], got ${pairs}`);
  for (let k = 2; k <= slots; k *= 2) {
    for (let j = k / 2; j >= 1; j /= 2) {
      const p = new Params()
        .u32('half', slots / 2)
        .u32('k', k)
        .u32('j', j);
      // (key, value) pairs: the binder checks they start on a vec2 of the binding.
      const bound = bindTensors(device, 'sortPairsGpu', [{ name: 'pairs', tensor: pairs, what: 'sorted pairs', writable: true, vec2: true }], p);
      device.run({
        name: 'bitonic_stage',
        source: SOURCE(p, bound.decls),
        params: p,
        bindings: bound.ranges,
        workgroups: device.grid(slots / 2, WG),
        detail: `${slots} slots k=${k} j=${j}`,
      });
    }
  }
}

const SOURCE = (p: Params, decls: string) => `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
fn greater(a: vec2<u32>, b: vec2<u32>) -> bool { return a.x > b.x || (a.x == b.x && a.y > b.y); }
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.half) { return; }
  // The t-th slot whose bit j is clear, and its partner across that bit.
  let i = (t / P.j) * 2u * P.j + t % P.j;
  let l = i + P.j;
  let a = pairs[P.pairsOff + i];
  let b = pairs[P.pairsOff + l];
  let ascending = (i & P.k) == 0u;
  if ((ascending && greater(a, b)) || (!ascending && greater(b, a))) {
    pairs[P.pairsOff + i] = b;
    pairs[P.pairsOff + l] = a;
  }
}`;
