/**
 * RMSNorm. Nemotron-H's norms are `w ⊙ x / sqrt(mean(x²) + eps)` with weight init 1, no
 * bias and no "+1" offset; eps is `layer_norm_epsilon` everywhere (spec §2.1, §2.3.6).
 */
import { groupedGatedRmsNorm, rmsNorm, type Tensor } from '@nemotron-ts/kernels';
import { Module, type Placement } from '../nn/module';

export class RMSNorm extends Module {
  constructor(
    readonly size: number,
    readonly eps: number,
    placement: Placement = {},
  ) {
    super();
    this.createParameter('weight', [size], placement);
  }

  /** [size] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /**
   * x [..., size] → f32. The statistic and the weight multiply are in f32 with one rounding (NeMo's
   * and the kernels' order; HF multiplies after rounding, which only differs in bf16 activations).
   */
  forward(x: Tensor): Tensor {
    return rmsNorm(x, this.weight, this.eps);
  }
}

/**
 * Mamba2's gated, grouped RMSNorm: `v = y · silu(z)` first, then each group of `groupSize`
 * contiguous channels is normalised on its own, times `weight` (norm_before_gate = False).
 */
export class GatedRMSNorm extends Module {
  constructor(
    readonly size: number,
    readonly groupSize: number,
    readonly eps: number,
    placement: Placement = {},
  ) {
    super();
    if (size % groupSize !== 0) throw new Error(`GatedRMSNorm: group size ${groupSize} does not divide ${size}`);
    this.createParameter('weight', [size], placement);
  }

  /** [size] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** y, z [..., size] → f32 `norm(y · silu(z)) · weight`, each group of `groupSize` channels on its own. */
  forward(y: Tensor, z: Tensor): Tensor {
    return groupedGatedRmsNorm(y, z, this.weight, { groups: this.size / this.groupSize, eps: this.eps });
  }
}
