/**
 * MoE routing (Nemotron-H / DeepSeek-V3 style, spec §2.6): sigmoid scores, a correction bias used
 * for selection only, optional group-limited selection, top-k, weights from the unbiased scores.
 */
import { noGrad, record } from '../../autograd/graph';
import { empty } from '../../creation';
import { isFloat } from '../../dtype';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { contiguous } from '../layout/layout';
import { moeRouteBackwardCpu } from './moe-route-backward.cpu';
import { moeRouteBackwardGpu } from './moe-route-backward.wgsl';
import { moeRouteCpu } from './moe-route.cpu';
import { moeRouteBackwardNative, moeRouteNative } from './moe-route.native';
import { moeRouteGpu } from './moe-route.wgsl';

/** Most experts a router may have: the kernel keeps one score per expert in private memory. */
export const MOE_MAX_EXPERTS = 1024;

export interface MoeRouteOptions {
  /** Experts per token (k). */
  topK: number;
  /** Groups of E / nGroup contiguous experts (1: no group limit). */
  nGroup: number;
  /** Groups kept per token when nGroup > 1. */
  topkGroup: number;
  /** Divide the k weights by (their sum + 1e-20), as HF does for any k. */
  normTopkProb: boolean;
  /** Multiplies every weight (2.5 for Nano-3). */
  routedScalingFactor: number;
}

export interface MoeRouting {
  /** [T, k] f32 expert weights. */
  weights: Tensor;
  /** [T, k] i32 expert indices. */
  indices: Tensor;
}

/**
 * Routes each token to `topK` experts.
 *
 * s = sigmoid(logits); s_sel = s + correctionBias (selection only). With nGroup > 1, groups are
 * contiguous blocks of E/nGroup experts scored by the sum of their two best s_sel; experts outside
 * the best `topkGroup` groups are excluded (HF's -inf fill). The k experts with the highest s_sel
 * are chosen; weights = s at those experts, divided by (sum + 1e-20) when `normTopkProb`, times
 * `routedScalingFactor`. Slots are ordered by descending s_sel; ties go to the lower expert index
 * (groups likewise); a NaN score ranks highest (as in torch.topk), so it shows in the weights.
 *
 * @param routerLogits [T, E] = x·W_gateᵀ, computed by the caller in f32.
 * @param correctionBias [E] (e_score_correction_bias) or null. It gets no gradient: it only
 *   affects which experts are chosen.
 *
 * The weights are differentiable with respect to the logits of the chosen experts (the others get
 * zero gradient; the choice itself is discrete). The indices carry no gradient.
 */
export function moeRoute(routerLogits: Tensor, correctionBias: Tensor | null, options: MoeRouteOptions): MoeRouting {
  const o = { ...options };
  routerLogits.assertAlive('moeRoute router logits');
  if (routerLogits.rank !== 2 || !isFloat(routerLogits.dtype)) {
    throw new Error(`moeRoute: router logits must be a [tokens, experts] float tensor, got ${formatShape(routerLogits.shape)} ${routerLogits.dtype}`);
  }
  const [tokens, experts] = routerLogits.shape as [number, number];
  const device = routerLogits.device;
  if (experts < 1 || experts > MOE_MAX_EXPERTS) throw new Error(`moeRoute: ${experts} experts; 1 to ${MOE_MAX_EXPERTS} are supported`);
  if (correctionBias) {
    correctionBias.assertAlive('moeRoute correction bias');
    if (correctionBias.rank !== 1 || correctionBias.shape[0] !== experts || !isFloat(correctionBias.dtype)) {
      throw new Error(`moeRoute: correction bias must be a float [${experts}] tensor, got ${formatShape(correctionBias.shape)} ${correctionBias.dtype}`);
    }
    if (correctionBias.device !== device) throw new Error('moeRoute: correction bias is on another device than the logits');
  }
  validateRouteOptions(o, experts);

  const weights = empty([tokens, o.topK], { device });
  const indices = empty([tokens, o.topK], { dtype: 'i32', device });
  const logits = noGrad(() => contiguous(routerLogits));
  const bias = correctionBias ? noGrad(() => contiguous(correctionBias)) : null;
  try {
    if (tokens > 0) {
      if (device.kind === 'cpu') {
        if (!device.native || !moeRouteNative(device.native, logits, bias, o, weights, indices)) moeRouteCpu(logits, bias, o, weights, indices);
      } else moeRouteGpu(device, logits, bias, o, weights, indices);
    }
    // Saves nothing unless the logits require grad (and recording is on).
    record('moeRoute', weights, [routerLogits], (g, saved) => [moeRouteBackward(saved[0]!, saved[1]!, g, o)], [logits, indices]);
  } finally {
    logits.dispose();
    bias?.dispose();
  }
  return { weights, indices };
}

/** Gradient of the router logits [T, E] from the weights' gradient [T, k]. */
function moeRouteBackward(logits: Tensor, indices: Tensor, gradWeights: Tensor, o: MoeRouteOptions): Tensor {
  const [tokens, experts] = logits.shape as [number, number];
  const device = logits.device;
  const out = empty([tokens, experts], { device });
  if (tokens === 0) return out;
  const g = contiguous(gradWeights);
  try {
    if (device.kind === 'cpu') {
      if (!device.native || !moeRouteBackwardNative(device.native, logits, indices, g, o, out)) moeRouteBackwardCpu(logits, indices, g, o, out);
    } else moeRouteBackwardGpu(device, logits, indices, g, o, out);
  } finally {
    g.dispose();
  }
  return out;
}

function validateRouteOptions(o: MoeRouteOptions, experts: number): void {
  const positiveInt = (name: keyof MoeRouteOptions) => {
    const v = o[name];
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new Error(`moeRoute: ${name} must be a positive integer, got ${String(v)}`);
  };
  positiveInt('topK');
  positiveInt('nGroup');
  positiveInt('topkGroup');
  if (!Number.isFinite(o.routedScalingFactor)) throw new Error(`moeRoute: routedScalingFactor must be finite, got ${o.routedScalingFactor}`);
  if (typeof o.normTopkProb !== 'boolean') throw new Error(`moeRoute: normTopkProb must be a boolean, got ${String(o.normTopkProb)}`);
  if (experts % o.nGroup !== 0) throw new Error(`moeRoute: ${experts} experts do not split into nGroup=${o.nGroup} equal groups`);
  if (o.topkGroup > o.nGroup) throw new Error(`moeRoute: topkGroup=${o.topkGroup} exceeds nGroup=${o.nGroup}`);
  const groupSize = experts / o.nGroup;
  if (o.nGroup > 1 && groupSize < 2) {
    throw new Error(`moeRoute: groups of ${groupSize} expert cannot be scored by their top-2 (E=${experts}, nGroup=${o.nGroup})`);
  }
  const available = o.nGroup > 1 ? o.topkGroup * groupSize : experts;
  if (o.topK > available) {
    throw new Error(
      `moeRoute: topK=${o.topK} exceeds the ${available} experts available in the kept groups (E=${experts}, nGroup=${o.nGroup}, topkGroup=${o.topkGroup})`,
    );
  }
}
