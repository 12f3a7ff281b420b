/** The backbone (spec §2.0): embeddings, the pattern's blocks, and the final norm `norm_f`. */
import { isGradEnabled, tidy, type Tensor } from '@nemotron-ts/kernels';
import { checkpointed } from './checkpointed';
import type { NemotronHConfig } from '../config';
import type { NemotronHybridCache } from './cache';
import { Embedding } from '../nn/embedding';
import { allocating } from './allocation-errors';
import { Module, ModuleList, type Placement } from '../nn/module';
import { NemotronHBlock } from './block';
import { prepareInputs, type ModelInputs, type PreparedInputs } from './inputs';
import { RMSNorm } from './rms-norm';

export interface BackboneOutput {
  /** f32 [B, L, H]: the last block's output after `norm_f` (HF's last_hidden_state). */
  readonly lastHiddenState: Tensor;
  /**
   * With `outputHiddenStates`: L + 1 tensors [B, L, H], HF's order — the embeddings, the output of
   * blocks 0 … L−2, and last the final state after `norm_f` (the same values as lastHiddenState, in
   * a handle of its own). Otherwise null.
   */
  readonly hiddenStates: Tensor[] | null;
}

/** `NemotronHModel` (HF's name): the backbone under `NemotronHForCausalLM.model`. */
export class NemotronHModel extends Module {
  readonly embeddings: Embedding;
  readonly layers: ModuleList<NemotronHBlock>;
  readonly normF: RMSNorm;
  /**
   * Recompute each block's forward during backward instead of keeping its intermediates (only the
   * blocks' inputs stay alive). Applies to differentiable forwards without a cache.
   */
  gradientCheckpointing = false;

  private currentConfig: NemotronHConfig;

  constructor(config: NemotronHConfig, placement: Placement = {}) {
    super();
    this.currentConfig = config;
    const embeddings = allocating(
      `the embeddings (vocab_size ${config.vocabSize} × hidden_size ${config.hiddenSize})`,
      () => new Embedding(config.vocabSize, config.hiddenSize, placement),
    );
    this.embeddings = this.registerModule('embeddings', embeddings);
    this.layers = this.registerModule('layers', new ModuleList(config.layerKinds.map((kind) => new NemotronHBlock(config, kind, placement))));
    this.normF = this.registerModule('norm_f', new RMSNorm(config.hiddenSize, config.layerNormEpsilon, placement));
  }

  get config(): NemotronHConfig {
    return this.currentConfig;
  }

  /** After a vocabulary resize: the config the inputs are checked against. */
  setConfig(config: NemotronHConfig): void {
    this.currentConfig = config;
  }

  /** Puts `embeddings` in place of the table and returns the old one (the caller disposes it). */
  replaceEmbeddings(embeddings: Embedding): Embedding {
    const old = this.embeddings;
    this.unregisterModule('embeddings');
    // Registered first again, so checkpoints keep their tensor order.
    (this as unknown as { embeddings: Embedding }).embeddings = this.registerModuleFirst('embeddings', embeddings);
    return old;
  }

  /** Runs the backbone; the caller owns the returned tensors (nothing else is left allocated). */
  forward(inputs: ModelInputs): BackboneOutput {
    return tidy(() => this.forwardPrepared(prepareInputs(this.config, this.embeddings.weight.device, inputs), inputs.outputHiddenStates ?? false));
  }

  /**
   * The backbone on inputs already checked and converted by {@link prepareInputs}. With a cache this
   * fills the new positions' entries; run it inside `prefillPositions` (decode.ts), which moves the
   * cache's counters.
   */
  forwardPrepared(inputs: PreparedInputs, outputHiddenStates: boolean, cache?: NemotronHybridCache): BackboneOutput {
    return tidy(() => {
      // A handle of our own, so the caller's embeddings are never disposed here.
      let h = inputs.inputIds ? this.embeddings.forward(inputs.inputIds) : inputs.inputsEmbeds!.share();
      const hiddenStates = outputHiddenStates ? [h] : null;
      for (const [i, layer] of [...this.layers].entries()) {
        const entry = cache?.layer(i) ?? null;
        const next =
          this.gradientCheckpointing && !cache && isGradEnabled()
            ? checkpointed(([x], sequences) => layer.forward(x!, sequences), [h], inputs.sequences)
            : layer.forward(h, inputs.sequences, entry ? { entry, past: cache!.length, keyMask: cache!.keyMask } : undefined);
        // Free each block's input as soon as it is consumed, unless it is returned.
        if (!hiddenStates) h.dispose();
        else if (hiddenStates.length < this.layers.length) hiddenStates.push(next);
        h = next;
      }
      const lastHiddenState = this.normF.forward(h);
      if (hiddenStates) hiddenStates.push(lastHiddenState.share());
      return { lastHiddenState, hiddenStates };
    });
  }
}

/** The seed's name for {@link NemotronHModel}. */
export const NemotronV3Model = NemotronHModel;
/** The seed's name for {@link NemotronHModel}. */
export type NemotronV3Model = NemotronHModel;
