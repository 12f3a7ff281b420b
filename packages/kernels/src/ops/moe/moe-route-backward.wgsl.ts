/**
 * The routing weights' backward: one invocation per token recomputes its k chosen scores from the
 * saved logits and writes the token's whole row of logit gradients (zero where not chosen), so no
 * other kernel has to clear the output.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MoeRouteOptions } from './moe-route';

const WG = 64;

export function moeRouteBackwardGpu(device: WebGpuDevice, logits: Tensor, indices: Tensor, gradWeights: Tensor, o: MoeRouteOptions, out: Tensor): void {
  const [tokens, experts] = logits.shape as [number, number];
  const k = o.topK;
  const window = (length: number) => ({ start: 0, length });
  const p = new Params()
    .u32('tokens', tokens)
    .u32('experts', experts)
    .u32('k', k)
    .f32('scale', o.routedScalingFactor)
    .u32('normalize', o.normTopkProb ? 1 : 0);
  const bound = bindTensors(
    device,
    'moeRoute backward',
    [
      { name: 'logits', tensor: logits, window: window(tokens * experts), what: 'moeRoute backward logits' },
      { name: 'indices', tensor: indices, window: window(tokens * k), what: 'moeRoute backward indices' },
      { name: 'g', tensor: gradWeights, window: window(tokens * k), what: 'moeRoute backward weight gradient' },
      { name: 'out', tensor: out, window: window(tokens * experts), what: 'moeRoute backward logit gradient', writable: true },
    ],
    p,
  );
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
fn sigmoid_f32(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.tokens) { return; }
  let row = t * P.experts;
  for (var e = 0u; e < P.experts; e++) { out[P.outOff + row + e] = 0.0; }
  var total = 0.0;
  var weighted = 0.0;
  for (var j = 0u; j < P.k; j++) {
    let s = sigmoid_f32(load_logits(P.logitsOff + row + u32(indices[P.indicesOff + t * P.k + j])));
    total += s;
    weighted += load_g(P.gOff + t * P.k + j) * s;
  }
  let denom = total + 1e-20;
  for (var j = 0u; j < P.k; j++) {
    let e = u32(indices[P.indicesOff + t * P.k + j]);
    let s = sigmoid_f32(load_logits(P.logitsOff + row + e));
    let gj = load_g(P.gOff + t * P.k + j);
    // w_j = c·s_j/(Σs + ε): ∂L/∂s_j = c·(g_j − Σ_i g_i·s_i/(Σs + ε))/(Σs + ε); otherwise c·g_j.
    let g_score = select(P.scale * gj, P.scale * (gj - weighted / denom) / denom, P.normalize != 0u);
    out[P.outOff + row + e] = g_score * s * (1.0 - s);
  }
}`;
  device.run({
    name: 'moe_route_backward',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(tokens, WG),
    detail: `[${tokens},${experts}] k=${k}`,
  });
}
