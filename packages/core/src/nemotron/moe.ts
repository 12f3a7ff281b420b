/**
 * The MoE mixer (spec §2.6): a sigmoid top-k router with a selection-only correction bias, routed
 * ReLU² experts stacked per layer, one shared expert, and optional latent projections.
 *
 * Routed experts are stored stacked like HF's in-memory layout: `experts.up_proj` [E, I, Hx] and
 * `experts.down_proj` [E, Hx, I] (Hx = moe_latent_size or hidden_size); expert e computes
 * `down[e] @ relu(up[e] @ x)²`. They never have biases (HF; only NeMo honours `mlp_bias` there).
 * The correction bias is an f32 buffer (NeMo and HF both keep it f32: small bf16 errors flip routing).
 */
import { add, linear, moeExperts, moeRoute, reshape, tidy, type MoeRouting, type Tensor } from '@nemotron-ts/kernels';
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

  /**
   * x [T, H] → the top-k experts of each token and their weights. The router logits are computed in
   * f32 (a bf16 weight is exact in f32, so this is HF's and NeMo's f32 gate on an f32 copy).
   */
  forward(x: Tensor): MoeRouting {
    const c = this.config;
    return tidy(() =>
      moeRoute(linear(x, this.weight), this.eScoreCorrectionBias, {
        topK: c.numExpertsPerTok,
        nGroup: c.nGroup,
        topkGroup: c.topkGroup,
        normTopkProb: c.normTopkProb,
        routedScalingFactor: c.routedScalingFactor,
      }),
    );
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

  /** x [T, Hx] → f32 [T, Hx]: Σ over each token's experts of weight · down_e(relu(up_e x)²). */
  forward(x: Tensor, routing: MoeRouting): Tensor {
    return moeExperts(x, routing.indices, routing.weights, this.upProj, this.downProj);
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

  /**
   * x [..., H] → f32 [..., H]: routed experts (in the latent space when `moe_latent_size` is set:
   * on fc1_latent(x), their weighted sum through fc2_latent) plus the shared expert, always on.
   * Every token is routed, padding included (no mask reaches the MoE, as in HF and NeMo).
   */
  forward(x: Tensor): Tensor {
    return tidy(() => {
      const H = this.config.hiddenSize;
      const tokens = reshape(x, [-1, H]);
      const routing = this.gate.forward(tokens);
      const routedIn = this.fc1LatentProj ? this.fc1LatentProj.forward(tokens) : tokens;
      const routed = this.experts.forward(routedIn, routing);
      const routedOut = this.fc2LatentProj ? this.fc2LatentProj.forward(routed) : routed;
      return reshape(add(routedOut, this.sharedExperts.forward(tokens)), x.shape);
    });
  }
}
