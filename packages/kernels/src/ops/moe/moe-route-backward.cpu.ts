/** CPU reference for the routing weights' backward: f64 math over the saved logits and choices. */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { MoeRouteOptions } from './moe-route';

/**
 * `logits` [T, E], `indices` [T, k] and `gradWeights` [T, k] are contiguous; writes the gradient of
 * the router logits into `out` [T, E] f32 (zero for the experts a token did not choose).
 */
export function moeRouteBackwardCpu(logits: Tensor, indices: Tensor, gradWeights: Tensor, o: MoeRouteOptions, out: Tensor): void {
  const [tokens, experts] = logits.shape as [number, number];
  const k = o.topK;
  const logit = storageReader(logits);
  const idx = cpuView(indices) as Int32Array;
  const g = cpuView(gradWeights) as Float32Array;
  const dst = cpuView(out) as Float32Array;
  const score = new Float64Array(k);
  for (let t = 0; t < tokens; t++) {
    dst.fill(0, out.offset + t * experts, out.offset + (t + 1) * experts);
    let total = 0;
    let weighted = 0;
    for (let j = 0; j < k; j++) {
      const e = idx[indices.offset + t * k + j]!;
      score[j] = 1 / (1 + Math.exp(-logit(logits.offset + t * experts + e)));
      total += score[j]!;
      weighted += g[gradWeights.offset + t * k + j]! * score[j]!;
    }
    const denom = total + 1e-20;
    for (let j = 0; j < k; j++) {
      const e = idx[indices.offset + t * k + j]!;
      const gj = g[gradWeights.offset + t * k + j]!;
      // w_j = c·s_j/(Σs + ε): ∂L/∂s_j = c·(g_j − Σ_i g_i·s_i/(Σs + ε))/(Σs + ε).
      const gScore = o.normTopkProb ? (o.routedScalingFactor * (gj - weighted / denom)) / denom : o.routedScalingFactor * gj;
      const s = score[j]!;
      dst[out.offset + t * experts + e] = gScore * s * (1 - s);
    }
  }
}
