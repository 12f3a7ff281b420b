/**
 * `NemotronHForCausalLM` (spec §2.0, §2.7): the backbone, an untied `lm_head` [V, H] without bias, and
 * the MTP head when the config enables it. Module names match HF's in-memory (v5) layout:
 * `model.embeddings`, `model.layers.{i}`, `model.norm_f`, `lm_head`, plus `mtp.layers.{j}`.
 */
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import { initializeWeights } from './init';
import { NemotronV3Model } from './model';
import { MultiTokenPrediction } from './mtp';

export interface FromConfigOptions extends Placement {
  /** Seed of the weight initialisation (default 0). */
  seed?: number;
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

  /** A freshly initialised model (NeMo's initialisation, spec §7), deterministic for a seed. */
  static fromConfig(config: NemotronHConfig, options: FromConfigOptions = {}): NemotronHForCausalLM {
    const { seed = 0, ...placement } = options;
    const model = new NemotronHForCausalLM(config, placement);
    try {
      initializeWeights(model, { seed });
    } catch (e) {
      model.dispose();
      throw e;
    }
    return model;
  }
}
