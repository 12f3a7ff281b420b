/**
 * `NemotronHForCausalLM` (spec §2.0, §2.7): the backbone, an untied `lm_head` [V, H] without bias, and
 * the MTP head when the config enables it. Module names match HF's in-memory (v5) layout:
 * `model.embeddings`, `model.layers.{i}`, `model.norm_f`, `lm_head`, plus `mtp.layers.{j}`.
 */
import { crossEntropy, narrow, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import { initializeWeights } from './init';
import { IGNORE_INDEX, prepareInputs, prepareLabels, type ModelInputs, type Rows } from './inputs';
import { NemotronV3Model } from './model';
import { MultiTokenPrediction } from './mtp';

export interface FromConfigOptions extends Placement {
  /** Seed of the weight initialisation (default 0). */
  seed?: number;
}

export interface CausalLMInputs extends ModelInputs {
  /**
   * [B, L] i32 (or rows): HF's unshifted labels — usually the input ids, -100 where a position is
   * not a target. The loss shifts them: logits at t are scored against labels[t + 1].
   */
  labels?: Tensor | Rows;
  /** n > 0: logits only for the last n positions (the loss then needs all, so no labels). 0 = all (default). */
  logitsToKeep?: number;
}

export interface CausalLMOutput {
  /** f32 [B, L, V] (or [B, n, V] with logitsToKeep = n). */
  readonly logits: Tensor;
  /** f32 scalar: the mean cross-entropy over the targets that are not -100; null without labels. */
  readonly loss: Tensor | null;
  /** With outputHiddenStates: the embeddings, blocks 0 … L−2, and the final state after norm_f (HF order). */
  readonly hiddenStates: Tensor[] | null;
}

export class NemotronHForCausalLM extends Module {
  readonly model: NemotronV3Model;
  readonly lmHead: Linear;
  /** The MTP head, or null when the config has none. */
  readonly mtp: MultiTokenPrediction | null;

  /** Allocates every tensor uninitialised; use {@link fromConfig} or a checkpoint loader to fill them. */
  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    this.model = this.registerModule('model', new NemotronV3Model(config, placement));
    this.lmHead = this.registerModule('lm_head', new Linear(config.hiddenSize, config.vocabSize, placement));
    this.mtp = config.mtpEnabled ? this.registerModule('mtp', new MultiTokenPrediction(config, placement)) : null;
  }

  /**
   * The forward pass (spec §2): backbone, untied lm_head, and with labels HF's causal-LM loss.
   * Nothing stays allocated but the returned tensors (the caller disposes them); nothing is read
   * back. Run under `noGrad()` for inference: the Mamba and attention kernels have no backward yet.
   */
  forward(inputs: CausalLMInputs): CausalLMOutput {
    return tidy(() => {
      const device = this.lmHead.weight.device;
      const prepared = prepareInputs(this.config, device, inputs);
      const { batch, length } = prepared;
      const keep = inputs.logitsToKeep ?? 0;
      if (!Number.isInteger(keep) || keep < 0 || keep > length) throw new Error(`forward: logitsToKeep must be an integer in [0, ${length}] (0 = all), got ${keep}`);
      if (keep > 0 && keep < length && inputs.labels !== undefined) throw new Error(`forward: labels need the logits of every position; drop logitsToKeep (${keep}) or the labels`);
      const labels = inputs.labels === undefined ? null : prepareLabels(inputs.labels, this.config, batch, length, device);
      const { lastHiddenState, hiddenStates } = this.model.forwardPrepared(prepared, inputs.outputHiddenStates ?? false);
      const logits = this.lmHead.forward(keep > 0 ? narrow(lastHiddenState, 1, length - keep, keep) : lastHiddenState);
      return { logits, loss: labels ? causalLmLoss(logits, labels) : null, hiddenStates };
    });
  }

  /**
   * A freshly initialised model (NeMo's initialisation, spec §7), deterministic for a seed. Called
   * on a subclass, it builds that subclass.
   */
  static fromConfig<M extends NemotronHForCausalLM>(
    this: new (config: NemotronHConfig, placement?: Placement) => M,
    config: NemotronHConfig,
    options: FromConfigOptions = {},
  ): M {
    const { seed = 0, ...placement } = options;
    const model = new this(config, placement);
    try {
      initializeWeights(model, { seed });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }
}

/**
 * HF's `ForCausalLMLoss`: logits[:, :-1] against labels[:, 1:], f32, -100 ignored, mean over the
 * remaining targets (0 when there are none).
 */
function causalLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const length = logits.shape[1]!;
  return crossEntropy(narrow(logits, 1, 0, length - 1), narrow(labels, 1, 1, length - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'mean' });
}
