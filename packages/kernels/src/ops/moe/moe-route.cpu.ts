/**
 * CPU reference for MoE routing: f64 math, the same selection order as the kernel (descending
 * biased score, lower expert index first on ties, NaN ranked highest as in torch.topk).
 */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { MoeRouteOptions } from './moe-route';

/** True when (v1, i1) comes before (v2, i2): higher first, lower index on ties, NaN above everything. */
function ranksBefore(v1: number, i1: number, v2: number, i2: number): boolean {
  const n1 = Number.isNaN(v1);
  const n2 = Number.isNaN(v2);
  if (n1 || n2) return n1 && (!n2 || i1 < i2);
  return v1 > v2 || (v1 === v2 && i1 < i2);
}

/** `logits` [T, E] and `bias` [E] are contiguous; writes `weights` [T, k] f32 and `indices` [T, k] i32. */
export function moeRouteCpu(logits: Tensor, bias: Tensor | null, o: MoeRouteOptions, weights: Tensor, indices: Tensor): void {
  const [tokens, experts] = logits.shape as [number, number];
  const k = o.topK;
  const logit = storageReader(logits);
  const biasAt = bias ? storageReader(bias) : () => 0;
  const w = cpuView(weights) as Float32Array;
  const idx = cpuView(indices) as Int32Array;
  const groupSize = experts / o.nGroup;
  const score = new Float64Array(experts);
  const selection = new Float64Array(experts);
  const allowed = new Uint8Array(experts);
  const groupScore = new Float64Array(o.nGroup);
  for (let t = 0; t < tokens; t++) {
    for (let e = 0; e < experts; e++) {
      score[e] = 1 / (1 + Math.exp(-logit(logits.offset + t * experts + e)));
      selection[e] = score[e]! + biasAt((bias?.offset ?? 0) + e);
    }
    allowed.fill(o.nGroup > 1 ? 0 : 1);
    if (o.nGroup > 1) {
      for (let g = 0; g < o.nGroup; g++) {
        const top2 = pickInOrder(2, g * groupSize, (g + 1) * groupSize, (e) => selection[e]!);
        groupScore[g] = selection[top2[0]!]! + selection[top2[1]!]!;
      }
      for (const g of pickInOrder(o.topkGroup, 0, o.nGroup, (g) => groupScore[g]!)) allowed.fill(1, g * groupSize, (g + 1) * groupSize);
    }
    const chosen = pickInOrder(k, 0, experts, (e) => (allowed[e] ? selection[e]! : null));
    let total = 0;
    for (const e of chosen) total += score[e]!;
    chosen.forEach((e, j) => {
      const s = o.normTopkProb ? score[e]! / (total + 1e-20) : score[e]!;
      w[weights.offset + t * k + j] = s * o.routedScalingFactor;
      idx[indices.offset + t * k + j] = e;
    });
  }
}

/** The first `count` items of [start, end) in selection order; `value` returns null for excluded items. */
function pickInOrder(count: number, start: number, end: number, value: (i: number) => number | null): number[] {
  const out: number[] = [];
  for (let j = 0; j < count; j++) {
    let best = -1;
    let bestValue = 0;
    const prev = out[j - 1];
    for (let i = start; i < end; i++) {
      const v = value(i);
      if (v === null) continue;
      if (prev !== undefined && !ranksBefore(value(prev)!, prev, v, i)) continue;
      if (best < 0 || ranksBefore(v, i, bestValue, best)) {
        best = i;
        bestValue = v;
      }
    }
    if (best < 0) throw new Error(`moeRoute (CPU): fewer than ${count} candidates in [${start}, ${end})`);
    out.push(best);
  }
  return out;
}
