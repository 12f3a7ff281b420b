/**
 * MoE parameters (spec §2.6): a sigmoid top-k router with a selection-only correction bias, routed
 * ReLU² experts stacked per layer, one shared expert, and optional latent projections.
 *
 * Routed experts are stored stacked like HF's in-memory layout: `experts.up_proj` [E, I, Hx] and
 * `experts.down_proj` [E, Hx, I] (Hx = moe_latent_size or hidden_size); expert e computes
 * `down[e] @ relu(up[e] @ x)²`. They never have biases (HF; only NeMo honours `mlp_bias` there).
 * The correction bias is an f32 buffer (NeMo and HF both keep it f32: small bf16 errors flip routing).
 */
import type { Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import { MLP } from './mlp';

/** Router: `weight` [E, H] and the `e_score_correction_bias` [E] buffer (always f32). */
export class TopkRouter extends Module {
  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    this.createParameter('weight', [config.nRoutedExperts, config.hiddenSize], placement);
    this.createBuffer('e_score_correction_bias', [config.nRoutedExperts], placement, { keepF32: true });
  }

  /** [E, H] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** [E] f32, added to the sigmoid scores for top-k selection only. */
  get eScoreCorrectionBias(): Tensor {
    return this.slotTensor('e_score_correction_bias');
  }
}

/** The routed experts of one layer, stacked. */
export class RoutedExperts extends Module {
  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    const { nRoutedExperts: E, moeIntermediateSize: I, expertHiddenSize: Hx } = config;
    this.createParameter('up_proj', [E, I, Hx], placement);
    this.createParameter('down_proj', [E, Hx, I], placement);
  }

  /** [E, I, Hx] */
  get upProj(): Tensor {
    return this.slotTensor('up_proj');
  }

  /** [E, Hx, I] */
  get downProj(): Tensor {
    return this.slotTensor('down_proj');
  }
}

export class MoE extends Module {
  readonly kind = 'moe' as const;
  readonly gate: TopkRouter;
  readonly experts: RoutedExperts;
  readonly sharedExperts: MLP;
  /** hidden → latent before the routed experts (only with `moe_latent_size`). */
  readonly fc1LatentProj: Linear | null;
  /** latent → hidden after the routed experts (only with `moe_latent_size`). */
  readonly fc2LatentProj: Linear | null;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    this.gate = this.registerModule('gate', new TopkRouter(config, placement));
    this.experts = this.registerModule('experts', new RoutedExperts(config, placement));
    this.sharedExperts = this.registerModule('shared_experts', new MLP(config, config.moeSharedExpertIntermediateSize, placement));
    const latent = config.moeLatentSize;
    const bias = config.mlpBias;
    this.fc1LatentProj = latent === null ? null : this.registerModule('fc1_latent_proj', new Linear(config.hiddenSize, latent, { ...placement, bias }));
    this.fc2LatentProj = latent === null ? null : this.registerModule('fc2_latent_proj', new Linear(latent, config.hiddenSize, { ...placement, bias }));
  }
}
