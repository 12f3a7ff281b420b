/**
 * Mamba2 mixer parameters (spec §2.3). Names and shapes follow HF's `NemotronHMamba2Mixer`, except
 * that the depthwise conv weight is [conv_dim, K] (HF: [conv_dim, 1, K]).
 *
 * `A_log`, `dt_bias` and `D` are kept in f32 whatever dtype the model is cast to: NeMo / Megatron /
 * mamba_ssm semantics (spec §2.3, §10 item 4). HF rounds them to bf16 when it loads in bf16; we do not.
 */
import type { Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { DepthwiseConv1d } from '../nn/conv1d';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import { GatedRMSNorm } from './rms-norm';

export class Mamba2Mixer extends Module {
  readonly kind = 'mamba' as const;
  /** in_proj: hidden → z | x | B | C | dt (d_in_proj). */
  readonly inProj: Linear;
  /** Depthwise causal conv over x | B | C (conv_dim channels). */
  readonly conv1d: DepthwiseConv1d;
  /** Gated RMSNorm over d_inner in n_groups groups. */
  readonly norm: GatedRMSNorm;
  /** out_proj: d_inner → hidden. */
  readonly outProj: Linear;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    const { hiddenSize: H, dInner, convDim, dInProj, mambaNumHeads: nh } = config;
    this.inProj = this.registerModule('in_proj', new Linear(H, dInProj, { ...placement, bias: config.useBias }));
    this.conv1d = this.registerModule('conv1d', new DepthwiseConv1d(convDim, config.convKernel, { ...placement, bias: config.useConvBias }));
    this.createParameter('dt_bias', [nh], placement, { keepF32: true });
    this.createParameter('A_log', [nh], placement, { keepF32: true });
    this.createParameter('D', [nh], placement, { keepF32: true });
    this.norm = this.registerModule('norm', new GatedRMSNorm(dInner, config.groupSize, config.layerNormEpsilon, placement));
    this.outProj = this.registerModule('out_proj', new Linear(dInner, H, { ...placement, bias: config.useBias }));
  }

  /** [nh] f32: added to the raw time step before softplus. */
  get dtBias(): Tensor {
    return this.slotTensor('dt_bias');
  }

  /** [nh] f32: A = -exp(A_log). */
  get aLog(): Tensor {
    return this.slotTensor('A_log');
  }

  /** [nh] f32: per-head skip coefficient. */
  get d(): Tensor {
    return this.slotTensor('D');
  }
}
