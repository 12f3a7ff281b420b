/**
 * Dense ReLU² MLP (spec §2.5): `down(relu(up x)²)`, no gate projection, biases when
 * `mlp_bias`. Also the MoE's shared expert (with `moe_shared_expert_intermediate_size`).
 */
import { inPlaceRefusal, relu2, reshape, tidy, unaryInPlace, type Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import type { RMSNorm } from './rms-norm';

export class MLP extends Module {
  readonly kind = 'mlp' as const;
  readonly upProj: Linear;
  readonly downProj: Linear;

  constructor(
    readonly config: NemotronHConfig,
    readonly intermediateSize: number = config.intermediateSize,
    placement: Placement = {},
  ) {
    super();
    const H = config.hiddenSize;
    this.upProj = this.registerModule('up_proj', new Linear(H, intermediateSize, { ...placement, bias: config.mlpBias }));
    this.downProj = this.registerModule('down_proj', new Linear(intermediateSize, H, { ...placement, bias: config.mlpBias }));
  }

  /** x [..., H] → f32 [..., H]: `down(relu(up x)²)`. */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const up = this.upProj.forward(x);
      // Inference on the host squares in place: one [L, intermediate] buffer instead of two, the
      // widest activation of a prefill (bench-small bf16 prefill peak RSS 191 → 187 MiB).
      const activated = inPlaceRefusal(up) === null ? unaryInPlace('relu2', up) : relu2(up);
      return this.downProj.forward(activated);
    });
  }

  /**
   * A decode step with the enclosing block's norm and residual fused in (the block asks for it, see
   * `NemotronHBlock.decode`): h [..., H] → f32 `h + mlp(norm(h))`, as two fused projections.
   */
  decodeWithResidual(h: Tensor, norm: RMSNorm): Tensor {
    return tidy(() => {
      const H = this.config.hiddenSize;
      const hs = reshape(h, [-1, H]);
      const up = this.upProj.fused(hs, { norm: { weight: norm.weight, eps: norm.eps }, activation: 'relu2' });
      return reshape(this.downProj.fused(up, { residual: hs }), h.shape);
    });
  }
}
