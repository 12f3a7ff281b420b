/**
 * A pipeline stage: the part of `NemotronHForCausalLM` one worker holds, under the full model's
 * tensor names (`model.layers.7.mixer.in_proj.weight` stays that), so checkpoints, gradients and
 * optimizer states line up with the unsplit model. Modules a stage does not own are absent
 * (NeMo's splitter sets them to None): a middle stage has no embeddings, norm_f or lm_head.
 */
import { concat, embedding, narrow, tidy, zeros, type DType, type FloatDType, type Tensor } from '@nemotron-ts/kernels';
import {
  decodeBlocks,
  decodeHeadLogits,
  Embedding,
  initializeWeights,
  Linear,
  Module,
  MultiTokenPrediction,
  NemotronHBlock,
  RMSNorm,
  NemotronHConfig,
  type NemotronHForCausalLM,
  type NemotronHybridCache,
  type Placement,
  type SequenceInfo,
} from '@nemotron-ts/core';
import { reportProgress } from './progress';
import { planStages, type SplitOptions, type StagePlan } from './stage-plan';

/** Shape and dtype of one tensor passed between stages (NeMo's meta tensors). */
export interface TensorMeta {
  readonly name: string;
  readonly shape: readonly number[];
  readonly dtype: DType;
}

export interface StageMetas {
  readonly inputs: readonly TensorMeta[];
  readonly outputs: readonly TensorMeta[];
}

/** The layers of a stage, registered under their backbone indices ("3", "4", …). */
export class StageLayers extends Module {
  constructor(readonly blocks: ReadonlyMap<number, NemotronHBlock>) {
    super();
    for (const [i, block] of blocks) this.registerModule(String(i), block);
  }
}

/** The backbone part of a stage (`model.*`). */
export class StageBackbone extends Module {
  readonly embeddings: Embedding | null;
  readonly layers: StageLayers;
  readonly normF: RMSNorm | null;

  constructor(parts: { embeddings: Embedding | null; layers: StageLayers; normF: RMSNorm | null }) {
    super();
    this.embeddings = parts.embeddings ? this.registerModule('embeddings', parts.embeddings) : null;
    this.layers = this.registerModule('layers', parts.layers);
    this.normF = parts.normF ? this.registerModule('norm_f', parts.normF) : null;
  }
}

export class PipelineStage extends Module {
  readonly model: StageBackbone;
  readonly lmHead: Linear | null;
  readonly mtp: MultiTokenPrediction | null;

  private constructor(
    readonly config: NemotronHConfig,
    readonly plan: StagePlan,
    parts: {
      embeddings: Embedding | null;
      blocks: Map<number, NemotronHBlock>;
      normF: RMSNorm | null;
      lmHead: Linear | null;
      mtp: MultiTokenPrediction | null;
    },
  ) {
    super();
    this.model = this.registerModule('model', new StageBackbone({ embeddings: parts.embeddings, layers: new StageLayers(parts.blocks), normF: parts.normF }));
    this.lmHead = parts.lmHead ? this.registerModule('lm_head', parts.lmHead) : null;
    this.mtp = parts.mtp ? this.registerModule('mtp', parts.mtp) : null;
  }

  /** A stage sharing `model`'s modules (and tensors: disposing the model frees them). */
  static fromModel(model: NemotronHForCausalLM, plan: StagePlan): PipelineStage {
    const blocks = new Map(plan.layers.map((i) => [i, model.model.layers.at(i)]));
    return new PipelineStage(model.config, plan, {
      embeddings: plan.isFirst ? model.model.embeddings : null,
      blocks,
      normF: plan.isLast ? model.model.normF : null,
      lmHead: plan.isLast ? model.lmHead : null,
      mtp: plan.isLast ? model.mtp : null,
    });
  }

  /**
   * A stage with freshly allocated (uninitialised) tensors; load or {@link initializeWeights} them.
   * With `shardedExperts` the backbone's MoE layers get placeholder routed experts (one
   * intermediate row each): their experts live in the stage's expert group, and allocating them
   * here would defeat expert parallelism's memory split.
   */
  static create(config: NemotronHConfig, plan: StagePlan, placement: Placement = {}, options: { shardedExperts?: boolean } = {}): PipelineStage {
    const H = config.hiddenSize;
    const blockConfig = options.shardedExperts ? NemotronHConfig.fromJSON({ ...config.toJSON(), moe_intermediate_size: 1 }) : config;
    return new PipelineStage(config, plan, {
      embeddings: plan.isFirst ? new Embedding(config.vocabSize, H, placement) : null,
      blocks: new Map(plan.layers.map((i) => [i, new NemotronHBlock(blockConfig, config.layerKinds[i]!, placement)])),
      normF: plan.isLast ? new RMSNorm(H, config.layerNormEpsilon, placement) : null,
      lmHead: plan.isLast ? new Linear(H, config.vocabSize, placement) : null,
      mtp: plan.isLast && config.mtpEnabled ? new MultiTokenPrediction(config, placement) : null,
    });
  }

  /** NeMo's `initialize_weights` on a trimmed stage: each tensor gets the value it has in the full model. */
  initializeWeights(seed = 0): void {
    initializeWeights(this, { seed });
  }

  /** MTP depths whose embeddings travel between stages (0 without an MTP head). */
  get mtpDepths(): number {
    return this.config.mtpEnabled ? this.config.numNextnPredictLayers : 0;
  }

  /**
   * NeMo's `get_pipeline_stage_metas`: what the stage receives and sends for a microbatch of
   * `microbatch` rows of `seqLen` tokens. The first stage takes token ids; the others take the
   * hidden state [B, S, H] plus, with MTP, the D embeddings built on the first stage. The last
   * stage returns logits [B, S, V]; the others the hidden state (and the MTP embeddings).
   */
  getPipelineStageMetas(isFirst: boolean, microbatch: number, seqLen: number, dtype: FloatDType = 'f32'): StageMetas {
    const H = this.config.hiddenSize;
    const hidden = (name: string): TensorMeta => ({ name, shape: [microbatch, seqLen, H], dtype });
    const mtp = Array.from({ length: this.mtpDepths }, (_, k) => hidden(`mtp_embeds.${k}`));
    const inputs = isFirst ? [{ name: 'input_ids', shape: [microbatch, seqLen], dtype: 'i32' as const }] : [hidden('hidden_states'), ...mtp];
    const outputs = this.plan.isLast
      ? [{ name: 'logits', shape: [microbatch, seqLen, this.config.vocabSize], dtype: 'f32' as const }]
      : [hidden('hidden_states'), ...mtp];
    return { inputs, outputs };
  }

  /** First stage: the token embeddings [B, L, H]. */
  embed(ids: Tensor): Tensor {
    const e = this.model.embeddings;
    if (!e) throw new Error(`stage ${this.plan.index} has no embeddings (only the first stage does)`);
    return e.forward(ids);
  }

  /**
   * NeMo's `build_mtp_embed_inputs_for_pp`, on the first stage: for each MTP depth k the
   * embeddings of the ids rolled left k + 1 places (zero-filled), which the last stage — without
   * an embedding table — fuses into depth k.
   */
  buildMtpEmbedInputsForPp(ids: Tensor): Tensor[] {
    const e = this.model.embeddings;
    if (!e) throw new Error(`stage ${this.plan.index} has no embeddings: MTP inputs are built on the first stage`);
    return Array.from({ length: this.mtpDepths }, (_, k) => tidy(() => embedding(e.weight, rollLeft(ids, k + 1))));
  }

  /** The stage's blocks, h [B, L, H] → [B, L, H]; with a cache, a prefill of the new positions. */
  forwardLayers(h: Tensor, sequences: SequenceInfo, cache?: NemotronHybridCache): Tensor {
    return tidy(() => {
      // `h` itself, not a shared handle: a shared handle would cut the graph to a leaf input.
      let x = h;
      for (const [i, block] of this.model.layers.blocks) {
        const entry = cache?.layer(i) ?? null;
        const next = block.forward(x, sequences, entry ? { entry, past: cache!.length, keyMask: cache!.keyMask } : undefined);
        reportProgress();
        if (x !== h) x.dispose();
        x = next;
      }
      return x;
    });
  }

  /** One decode step through the stage's blocks (run inside `decodePosition`, which moves the cache's counters). */
  decodeLayers(h: Tensor, cache: NemotronHybridCache): Tensor {
    return decodeBlocks(this.model.layers.blocks, h, cache, { afterBlock: reportProgress });
  }

  /** Last stage: norm_f, h → the final hidden state. */
  finalNorm(h: Tensor): Tensor {
    return this.requireHead().normF.forward(h);
  }

  /** Last stage: lm_head on a final hidden state. */
  logits(final: Tensor): Tensor {
    return this.requireHead().lmHead.forward(final);
  }

  /** Last stage, decode: norm_f and lm_head fused, h [B, 1, H] → f32 [B, V] (the unsplit model's decode head). */
  decodeLogits(h: Tensor): Tensor {
    const { normF, lmHead } = this.requireHead();
    return decodeHeadLogits(normF, lmHead, h);
  }

  /** Last stage with MTP: every depth's output from the final hidden state and the first stage's embeddings. */
  mtpHidden(final: Tensor, ids: Tensor, embeds: readonly Tensor[], sequences: SequenceInfo): Tensor[] {
    const mtp = this.mtp;
    if (!mtp) throw new Error(`stage ${this.plan.index} has no MTP head`);
    if (embeds.length !== mtp.numDepths) throw new Error(`stage ${this.plan.index}: ${embeds.length} MTP embeddings for ${mtp.numDepths} depths`);
    let depth = 0;
    // The embeddings themselves (a shared handle would cut their gradient off).
    return mtp.forward(final, ids, () => embeds[depth++]!, sequences);
  }

  private requireHead(): { normF: RMSNorm; lmHead: Linear } {
    const normF = this.model.normF;
    const lmHead = this.lmHead;
    if (!normF || !lmHead) throw new Error(`stage ${this.plan.index} has no norm_f / lm_head (only the last stage does)`);
    return { normF, lmHead };
  }
}

/** NeMo's splitter on a loaded model: stages that share the model's modules. */
export function splitIntoStages(model: NemotronHForCausalLM, options: SplitOptions): PipelineStage[] {
  return planStages(model.config.numHiddenLayers, options, model.mtp !== null).map((plan) => PipelineStage.fromModel(model, plan));
}

/** NeMo's `is_pipeline_parallel_stage`: a module that holds only part of the model. */
export function isPipelineParallelStage(module: Module): module is PipelineStage {
  return module instanceof PipelineStage && module.plan.count > 1;
}

/** ids [B, L] shifted left by `n`, the last n filled with token 0 (the MTP head's own roll). */
function rollLeft(ids: Tensor, n: number): Tensor {
  const [batch, length] = ids.shape as [number, number];
  const fill = zeros([batch, Math.min(n, length)], { dtype: 'i32', device: ids.device });
  return n >= length ? fill : concat([narrow(ids, 1, n, length - n), fill], 1);
}
