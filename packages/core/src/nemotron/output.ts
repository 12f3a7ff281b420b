/**
 * What `NemotronHForCausalLM.forward` returns (HF's `NemotronHCausalLMOutputWithPast`, with NeMo's
 * MTP fields). The caller owns it: `dispose()` (or `using`) releases every tensor in it, the
 * autograd graph behind them that no backward has consumed (so backpropagate before disposing),
 * and the cache when `forward` created it (`useCache` without a cache of the caller's).
 */
import { releaseGraph, type Tensor } from '@nemotron-ts/kernels';
import type { GradNode } from '@nemotron-ts/kernels/internals';
import type { NemotronHybridCache } from './cache';

export interface CausalLMOutputFields {
  readonly logits: Tensor;
  readonly loss: Tensor | null;
  readonly hiddenStates: Tensor[] | null;
  readonly pastKeyValues?: NemotronHybridCache | null;
  readonly mtpPerDepthH?: Tensor[] | null;
  readonly mtpLossScalingFactor?: number | null;
}

export class NemotronHCausalLMOutputWithPast implements Disposable {
  /** f32 [B, L, V] (or [B, n, V] with logitsToKeep = n; [T, V] for THD inputs). */
  readonly logits: Tensor;
  /** f32 scalar: HF's mean cross-entropy over the targets that are not -100; null without labels. */
  readonly loss: Tensor | null;
  /** With outputHiddenStates: the embeddings, blocks 0 … L−2, and the final state after norm_f (HF order). */
  readonly hiddenStates: Tensor[] | null;
  /** The cache the forward continued (HF's `past_key_values`), or null without one. */
  readonly pastKeyValues: NemotronHybridCache | null;
  /**
   * MTP models in training mode (or with `outputMtp`): per depth k, f32 [B, L, H], the depth's
   * output after its final_layernorm (NeMo's `mtp_per_depth_h`; lm_head turns it into logits).
   */
  readonly mtpPerDepthH: Tensor[] | null;
  /** With `mtpPerDepthH`: the config's mtp_loss_scaling_factor (NeMo scales Σ depth losses by it / D). */
  readonly mtpLossScalingFactor: number | null;
  private readonly ownsCache: boolean;
  private readonly graphBoundary: ReadonlySet<GradNode>;
  private disposed = false;

  /** `ownsCache`: dispose the cache too. `inputGraph`: the caller's graph node (inputsEmbeds'), never released here. */
  constructor(fields: CausalLMOutputFields, ownsCache = false, inputGraph: GradNode | null = null) {
    this.graphBoundary = new Set(inputGraph ? [inputGraph] : []);
    this.logits = fields.logits;
    this.loss = fields.loss;
    this.hiddenStates = fields.hiddenStates;
    this.pastKeyValues = fields.pastKeyValues ?? null;
    this.mtpPerDepthH = fields.mtpPerDepthH ?? null;
    this.mtpLossScalingFactor = fields.mtpLossScalingFactor ?? null;
    this.ownsCache = ownsCache;
  }

  /** Releases every tensor (a second call does nothing), and the cache when forward created it. */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    const tensors = [this.logits, ...(this.loss ? [this.loss] : []), ...(this.hiddenStates ?? []), ...(this.mtpPerDepthH ?? [])];
    releaseGraph(tensors, this.graphBoundary);
    this.logits.dispose();
    this.loss?.dispose();
    for (const t of this.hiddenStates ?? []) t.dispose();
    for (const t of this.mtpPerDepthH ?? []) t.dispose();
    if (this.ownsCache) this.pastKeyValues?.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }
}
