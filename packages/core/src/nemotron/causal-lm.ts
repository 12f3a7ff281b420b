/**
 * `NemotronHForCausalLM` (spec §2.0, §2.7): the backbone, an untied `lm_head` [V, H] without bias, and
 * the MTP head when the config enables it. Module names match HF's in-memory (v5) layout:
 * `model.embeddings`, `model.layers.{i}`, `model.norm_f`, `lm_head`, plus `mtp.layers.{j}`.
 */
import {
  add,
  cast,
  concat,
  crossEntropy,
  full,
  Generator,
  sum,
  isGradEnabled,
  mul,
  narrow,
  noGrad,
  reshape,
  tensor,
  tidy,
  type Device,
  type DType,
  type FloatDType,
  type Tensor,
} from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type LoadReport, type Placement } from '../nn/module';
import { NemotronHybridCache } from './cache';
import { forwardDecodeStep, prefillPositions } from './decode';
import { Embedding } from '../nn/embedding';
import { NemotronHCausalLMOutputWithPast } from './output';
import type { GenerationConfig } from '../generation/generation-config';
import { generate, generateStream, type GenerateOptions, type GenerateResult, type GenerationEvent } from '../generation/generate';
import { initializeWeights as initializeModelWeights, seedFor } from './init';
import { loraHandle } from '../lora/apply';
import { allocating } from './allocation-errors';
import {
  checkLabels,
  checkPaddingLayout,
  packedLayout,
  IGNORE_INDEX,
  prepareInputs,
  prepareLabels,
  rowsShape,
  type ModelInputs,
  type PreparedInputs,
  type Rows,
} from './inputs';
import { NemotronHModel } from './model';
import { MultiTokenPrediction } from './mtp';
import { pretrainedIO, type FromPretrainedOptions, type SavedPretrained, type SavePretrainedOptions } from './pretrained-io';

export interface FromConfigOptions extends Placement {
  /** Seed of the weight initialisation (default 0). */
  seed?: number;
}

export interface CausalLMInputs extends ModelInputs {
  /**
   * [B, L] i32 (or rows): HF's unshifted labels — usually the input ids, -100 where a position is
   * not a target. The loss shifts them: logits at t are scored against labels[t + 1].
   */
  labels?: Tensor | Rows | readonly number[];
  /** n > 0: logits only for the last n positions (the loss then needs all, so no labels). 0 = all (default). */
  logitsToKeep?: number;
  /**
   * Continue from and update this cache (NeMo's `prepare_inputs_for_generation`: the prompt goes in
   * once, possibly in pieces, then one new token per row). The inputs are the new positions only,
   * and `attentionMask` covers just those (left padding belongs in the first piece). One token per
   * row after cached positions is a decode step: conv and state updates, one query over the
   * cached keys. Not with `cuSeqlens`.
   */
  cache?: NemotronHybridCache;
  /**
   * Without `cache`: start a new cache, filled by this prefill and returned as `pastKeyValues`
   * (owned by the output: its `dispose()` frees it). Default false.
   */
  useCache?: boolean;
  /**
   * Also run the MTP head and return `mtpPerDepthH` (NeMo's `mtp_per_depth_h`). Default: when the
   * model has an MTP head, is in training mode, records gradients and runs without a cache. Needs
   * `inputIds` (each depth embeds them rolled).
   */
  outputMtp?: boolean;
}

/** `forward`'s result (HF's `NemotronHCausalLMOutputWithPast`); `CausalLMOutput` is its older name. */
export type CausalLMOutput = NemotronHCausalLMOutputWithPast;

/** Options of {@link NemotronHForCausalLM.resizeTokenEmbeddings}. */
export interface ResizeTokenEmbeddingsOptions {
  /** Round the new size up to a multiple of this (HF's `pad_to_multiple_of`). */
  padToMultipleOf?: number;
  /**
   * HF's default (true): new rows of both tables are the mean of the old rows. HF adds a sample of
   * N(0, 1e-9 · covariance), negligible, which is left out here. False: new rows are drawn from
   * N(0, initializer_range), as HF's `_init_weights` does, seeded by `seed`.
   */
  meanResizing?: boolean;
  /** Seed of the N(0, initializer_range) rows (default 0). */
  seed?: number;
}

/** Options of {@link NemotronHForCausalLM.initializeWeights}. */
export interface InitializeWeightsOptions {
  /** Seed of the initialisation (default 0). */
  seed?: number;
  /** Cast the floating weights to this dtype afterwards (keep-f32 ones stay f32). */
  dtype?: FloatDType;
}

export interface MtpInputs extends Omit<ModelInputs, 'inputsEmbeds' | 'outputHiddenStates' | 'cuSeqlens' | 'cuSeqlensPadded' | 'seqIdx'> {
  /** i32 [B, L] token ids, or rows of ids (each depth rolls them). */
  inputIds: Tensor | Rows;
  /**
   * NeMo's pre-shifted labels, rows [B][L]: labels[t] is the target of position t (-100 = none).
   * Unlike `forward`'s HF labels nothing is shifted inside; HF-style labels relate as
   * labels[t] = hfLabels[t + 1].
   */
  labels: Rows;
  /**
   * Packed-row boundaries, as arrays: one list for one row, or one list per row (as `forward`
   * takes them); the per-depth targets are built from them.
   */
  cuSeqlens?: readonly number[] | Rows;
}

export interface MtpOutput {
  /** f32 [B, L, V]: the backbone's logits. */
  readonly logits: Tensor;
  /** f32 scalar: mainLoss + mtpLoss (what NeMo trains on). */
  readonly loss: Tensor;
  /** f32 scalar: Σ CE(logits[t], labels[t]) / N. */
  readonly mainLoss: Tensor;
  /** f32 scalar: mtp_loss_scaling_factor / D · Σ_k depthLosses[k]. */
  readonly mtpLoss: Tensor;
  /** Per depth k: f32 [B, L, H], the depth's output after its final_layernorm. */
  readonly depthHiddenStates: Tensor[];
  /** Per depth k: f32 scalar Σ CE(h_k[t] · lm_headᵀ, targets[k][t]) / N. */
  readonly depthLosses: Tensor[];
  /** Per depth k: target rows, targets[k][b][t] = labels[b][t + k + 1], -100 past the row's end or in another packed document. */
  readonly depthTargets: number[][][];
  /** N: the labels that are not -100; every loss is a sum divided by it (by 1 when there are none). */
  readonly labelCount: number;
}

export class NemotronHForCausalLM extends Module {
  readonly model: NemotronHModel;
  readonly lmHead: Linear;
  /** The MTP head, or null when the config has none. */
  readonly mtp: MultiTokenPrediction | null;
  /** Decoding defaults (a checkpoint's generation_config.json); null: HF's defaults. */
  generationConfig: GenerationConfig | null = null;
  private currentConfig: NemotronHConfig;

  /** Allocates every tensor uninitialised; use {@link fromConfig} or a checkpoint loader to fill them. */
  constructor(config: NemotronHConfig, placement: Placement = {}) {
    super();
    this.currentConfig = config;
    this.model = this.registerModule('model', new NemotronHModel(config, placement));
    const lmHead = allocating(
      `lm_head (vocab_size ${config.vocabSize} × hidden_size ${config.hiddenSize})`,
      () => new Linear(config.hiddenSize, config.vocabSize, placement),
    );
    this.lmHead = this.registerModule('lm_head', lmHead);
    this.mtp = config.mtpEnabled ? this.registerModule('mtp', new MultiTokenPrediction(config, placement)) : null;
  }

  /**
   * The forward pass (spec §2): backbone, untied lm_head, and with labels HF's causal-LM loss.
   * Nothing stays allocated but the returned tensors (the caller disposes them); nothing is read
   * back. Differentiable in every parameter (the training path: no cache); run inference under
   * `noGrad()` so nothing is saved for a backward.
   */
  forward(inputs: CausalLMInputs): NemotronHCausalLMOutputWithPast {
    this.checkRecomputable();
    if (inputs.useCache && inputs.cache) throw new Error('forward: give either cache or useCache, not both');
    const mtp = this.mtp;
    const wantMtp =
      inputs.outputMtp ?? (mtp !== null && this.training && isGradEnabled() && !inputs.cache && !inputs.useCache && inputs.inputIds !== undefined);
    if (wantMtp && !mtp)
      throw new Error('forward: outputMtp needs an MTP head (the config has num_nextn_predict_layers = 0 or no mtp_hybrid_override_pattern)');
    if (wantMtp && (inputs.cache || inputs.useCache)) throw new Error('forward: outputMtp runs without a cache (NeMo runs the MTP head in training only)');
    if (wantMtp && inputs.inputIds === undefined) throw new Error('forward: outputMtp needs inputIds (each MTP depth embeds them rolled)');
    const own = inputs.useCache ? new NemotronHybridCache(this.config, { batch: batchOf(inputs), device: this.device }) : null;
    try {
      const fields = this.forwardFields(own ? { ...inputs, cache: own } : inputs, wantMtp);
      return new NemotronHCausalLMOutputWithPast(
        { ...fields, pastKeyValues: own ?? inputs.cache ?? null, mtpLossScalingFactor: wantMtp ? this.config.mtpLossScalingFactor : null },
        own !== null,
        inputs.inputsEmbeds?.gradFn ?? null,
      );
    } catch (e) {
      own?.dispose();
      throw e;
    }
  }

  private forwardFields(
    inputs: CausalLMInputs,
    wantMtp: boolean,
  ): { logits: Tensor; loss: Tensor | null; hiddenStates: Tensor[] | null; mtpPerDepthH: Tensor[] | null } {
    return tidy(() => {
      const device = this.lmHead.weight.device;
      const cache = inputs.cache;
      const prepared = prepareInputs(this.config, device, inputs);
      const { batch, length } = prepared;
      const keep = inputs.logitsToKeep ?? 0;
      if (!Number.isInteger(keep) || keep < 0 || keep > length)
        throw new Error(`forward: logitsToKeep must be an integer in [0, ${length}] (0 = all), got ${keep}`);
      if (keep > 0 && keep < length && inputs.labels !== undefined)
        throw new Error(`forward: labels need the logits of every position; drop logitsToKeep (${keep}) or the labels`);
      const labels = inputs.labels === undefined ? null : prepareLabels(inputs.labels, this.config, batch, length, device);
      const outputHidden = inputs.outputHiddenStates ?? false;
      if (cache) {
        this.checkCache(cache, prepared, inputs);
        // The next tokens follow the last position: only the first piece may be padded, on the left.
        if (Array.isArray(inputs.attentionMask)) checkPaddingLayout(inputs.attentionMask as Rows, 'forward: attentionMask', cache.length > 0 ? 'none' : 'left');
      }
      if (cache && length === 1 && cache.length > 0) {
        const step = forwardDecodeStep(this, prepared, cache, outputHidden);
        return { ...step, loss: labels ? causalLmLoss(step.logits, labels) : null, mtpPerDepthH: null };
      }
      const backbone = () => this.model.forwardPrepared(prepared, outputHidden, cache);
      const { lastHiddenState, hiddenStates } = cache ? prefillPositions(cache, length, prepared.sequences.paddingMask, backbone) : backbone();
      const logits = this.lmHead.forward(keep > 0 ? narrow(lastHiddenState, 1, length - keep, keep) : lastHiddenState);
      const mtpPerDepthH = wantMtp
        ? this.mtp!.forward(lastHiddenState, prepared.inputIds!, (ids) => this.model.embeddings.forward(ids), prepared.sequences)
        : null;
      const loss = labels ? causalLmLoss(logits, labels) : null;
      if (!prepared.thd) return { logits, loss, hiddenStates, mtpPerDepthH };
      // THD in, THD out: the packed row's batch dimension is dropped again.
      const squeeze = (t: Tensor) => reshape(t, t.shape.slice(1));
      return { logits: squeeze(logits), loss, hiddenStates: hiddenStates?.map(squeeze) ?? null, mtpPerDepthH: mtpPerDepthH?.map(squeeze) ?? null };
    });
  }

  /**
   * The training forward with multi-token prediction (spec §5, NeMo's recipe): the backbone, its
   * loss on pre-shifted labels, and every MTP depth with its loss against the labels rolled k + 1
   * further. Every loss is a cross-entropy sum divided by N, the main labels' count (NeMo's
   * MaskedCrossEntropy with num_label_tokens). Generation never runs the MTP head.
   */
  forwardMtp(inputs: MtpInputs): MtpOutput {
    const mtp = this.mtp;
    if (!mtp) throw new Error('forwardMtp: the config has no MTP head (num_nextn_predict_layers = 0 or no mtp_hybrid_override_pattern)');
    this.checkRecomputable();
    return tidy(() => {
      const device = this.lmHead.weight.device;
      const prepared = prepareInputs(this.config, device, inputs);
      const { batch, length } = prepared;
      const labels = checkLabels(inputs.labels, 'labels', this.config.vocabSize);
      const [labelRows, labelLength] = rowsShape(labels);
      if (labelRows !== batch || labelLength !== length)
        throw new Error(`forwardMtp: labels [${labelRows}, ${labelLength}] do not match inputIds [${batch}, ${length}]`);
      const documents = inputs.cuSeqlens === undefined ? null : documentsOf(inputs.cuSeqlens, batch, length);
      const labelCount = labels.reduce((n, row) => n + row.filter((v) => v !== IGNORE_INDEX).length, 0);
      const perLabel = 1 / Math.max(labelCount, 1);
      const lossOf = (logits: Tensor, targets: Rows) =>
        mul(
          crossEntropy(logits, tensor(Int32Array.from(targets.flat()), [batch, length], { device }), { ignoreIndex: IGNORE_INDEX, reduction: 'sum' }),
          perLabel,
        );

      const { lastHiddenState } = this.model.forwardPrepared(prepared, false);
      const logits = this.lmHead.forward(lastHiddenState);
      const mainLoss = lossOf(logits, labels);
      const depthHiddenStates = mtp.forward(lastHiddenState, prepared.inputIds!, (ids) => this.model.embeddings.forward(ids), prepared.sequences);
      const depthTargets = depthHiddenStates.map((_, k) => mtpTargets(labels, k + 1, documents));
      const depthLosses = depthHiddenStates.map((h, k) => tidy(() => lossOf(this.lmHead.forward(h), depthTargets[k]!)));
      const mtpLoss = mul(
        depthLosses.slice(1).reduce((sum, l) => add(sum, l), depthLosses[0]!),
        this.config.mtpLossScalingFactor / mtp.numDepths,
      );
      return { logits, loss: add(mainLoss, mtpLoss), mainLoss, mtpLoss, depthHiddenStates, depthLosses, depthTargets, labelCount };
    });
  }

  private checkCache(cache: NemotronHybridCache, prepared: PreparedInputs, inputs: CausalLMInputs): void {
    if (cache.isDisposed) throw new Error('forward: the cache was disposed');
    const c = cache.config;
    if (
      c !== this.config &&
      (c.pattern !== this.config.pattern || c.hiddenSize !== this.config.hiddenSize || c.convDim !== this.config.convDim || c.headDim !== this.config.headDim)
    ) {
      throw new Error(`forward: the cache was made for another model (pattern ${c.pattern}, this model ${this.config.pattern})`);
    }
    if (cache.device !== this.lmHead.weight.device)
      throw new Error(`forward: the cache is on ${cache.device.kind}, the model on ${this.lmHead.weight.device.kind}`);
    if (cache.batch !== prepared.batch) throw new Error(`forward: the cache holds ${cache.batch} rows, the inputs ${prepared.batch}`);
    if (inputs.cuSeqlens !== undefined || inputs.seqIdx !== undefined) throw new Error('forward: packed rows (cuSeqlens, seqIdx) cannot use a cache');
    if (prepared.length === 1 && cache.length > 0 && prepared.sequences.paddingMask) {
      throw new Error('forward: a decode step (one token per row after cached positions) takes no attention mask: its tokens are never padding');
    }
  }

  /** The model's configuration (a new object after {@link resizeTokenEmbeddings}). */
  get config(): NemotronHConfig {
    return this.currentConfig;
  }

  /** The device every weight lives on. */
  get device(): Device {
    return this.lmHead.weight.device;
  }

  /** The dtype of the weights (keep-f32 ones, such as A_log, excepted). */
  get dtype(): DType {
    return this.lmHead.weight.dtype;
  }

  /**
   * HF's `gradient_checkpointing_enable`: every backbone block and MTP sublayer recomputes its
   * forward during backward instead of keeping its intermediates. Same losses and gradients, less
   * memory, about one more forward of compute. Idempotent.
   */
  gradientCheckpointingEnable(): void {
    this.model.gradientCheckpointing = true;
    if (this.mtp) this.mtp.gradientCheckpointing = true;
  }

  /** Checkpointed blocks run twice: LoRA dropout would draw other masks the second time. */
  private checkRecomputable(): void {
    if (!this.isGradientCheckpointing || !this.training || !isGradEnabled()) return;
    const lora = loraHandle(this);
    if (lora && lora.config.dropout > 0)
      throw new Error(
        `forward: gradient checkpointing recomputes each block, and LoRA dropout (${lora.config.dropout}) would draw other masks the second time; use dropout 0 or gradientCheckpointingDisable()`,
      );
  }

  /** Turns {@link gradientCheckpointingEnable} off (idempotent). */
  gradientCheckpointingDisable(): void {
    this.model.gradientCheckpointing = false;
    if (this.mtp) this.mtp.gradientCheckpointing = false;
  }

  /** True after {@link gradientCheckpointingEnable}. */
  get isGradientCheckpointing(): boolean {
    return this.model.gradientCheckpointing;
  }

  /** The token embedding table (`model.embeddings`). */
  getInputEmbeddings(): Embedding {
    return this.model.embeddings;
  }

  /** Replaces the embedding table (the model takes ownership; the old one is disposed). Its width must be hidden_size. */
  setInputEmbeddings(embeddings: Embedding): void {
    if (embeddings.embeddingDim !== this.config.hiddenSize)
      throw new Error(
        `setInputEmbeddings: the table is ${embeddings.numEmbeddings} × ${embeddings.embeddingDim}, the model's hidden_size is ${this.config.hiddenSize}`,
      );
    if (embeddings.weight.device !== this.device)
      throw new Error(`setInputEmbeddings: the table is on ${embeddings.weight.device.kind}, the model on ${this.device.kind}`);
    this.model.replaceEmbeddings(embeddings).dispose();
  }

  /** The output projection (`lm_head`, [V, H]). */
  getOutputEmbeddings(): Linear {
    return this.lmHead;
  }

  /** Replaces lm_head (the model takes ownership; the old one is disposed). It must map hidden_size to some vocabulary. */
  setOutputEmbeddings(head: Linear): void {
    if (head.inFeatures !== this.config.hiddenSize)
      throw new Error(`setOutputEmbeddings: the projection is ${head.inFeatures} → ${head.outFeatures}, the model's hidden_size is ${this.config.hiddenSize}`);
    if (head.weight.device !== this.device)
      throw new Error(`setOutputEmbeddings: the projection is on ${head.weight.device.kind}, the model on ${this.device.kind}`);
    const old = this.lmHead;
    this.unregisterModule('lm_head');
    (this as unknown as { lmHead: Linear }).lmHead = this.registerModule('lm_head', head);
    old.dispose();
  }

  /**
   * HF's `resize_token_embeddings`: both the embedding table and lm_head get `newNumTokens` rows
   * (rounded up to `padToMultipleOf`), the first min(old, new) rows kept, new rows initialised as
   * HF does (see {@link ResizeTokenEmbeddingsOptions}); `config.vocabSize` follows. Returns the new
   * embedding table.
   */
  resizeTokenEmbeddings(newNumTokens: number, options: ResizeTokenEmbeddingsOptions = {}): Embedding {
    const multiple = options.padToMultipleOf ?? 1;
    if (!Number.isInteger(multiple) || multiple < 1) throw new Error(`resizeTokenEmbeddings: padToMultipleOf must be a positive integer, got ${multiple}`);
    if (!Number.isInteger(newNumTokens) || newNumTokens < 1) throw new Error(`resizeTokenEmbeddings: the size must be a positive integer, got ${newNumTokens}`);
    const size = Math.ceil(newNumTokens / multiple) * multiple;
    const old = this.config.vocabSize;
    if (size === old) return this.model.embeddings;
    const { meanResizing = true, seed = 0 } = options;
    const placement = { device: this.device };
    const resized = (name: string, weight: Tensor): Tensor =>
      noGrad(() =>
        tidy(() => {
          const hidden = weight.shape[1]!;
          const kept = narrow(weight, 0, 0, Math.min(old, size));
          if (size < old) return cast(kept, weight.dtype);
          const added = size - old;
          let rows: Tensor;
          if (meanResizing) {
            const mean = mul(sumRows(cast(weight, 'f32')), 1 / old);
            rows = mul(full([added, 1], 1, placement), mean);
          } else {
            const g = new Generator(seedFor(seed, `${name}:resize`));
            const values = new Float32Array(added * hidden);
            for (let i = 0; i < values.length; i++) values[i] = g.normal() * this.config.initializerRange;
            rows = tensor(values, [added, hidden], placement);
          }
          return concat([cast(kept, weight.dtype), cast(rows, weight.dtype)], 0);
        }),
      );
    const dtype = this.model.embeddings.weight.dtype as FloatDType;
    const embeddings = new Embedding(size, this.config.hiddenSize, { ...placement, dtype });
    const head = new Linear(this.config.hiddenSize, size, { ...placement, dtype: this.lmHead.weight.dtype as FloatDType });
    for (const [module, name, weight] of [
      [embeddings, 'model.embeddings.weight', this.model.embeddings.weight],
      [head, 'lm_head.weight', this.lmHead.weight],
    ] as const) {
      const t = resized(name, weight);
      module.setTensor('weight', t);
      t.dispose();
    }
    const requiresGrad = this.lmHead.weight.requiresGrad;
    embeddings.weight.requiresGrad = this.model.embeddings.weight.requiresGrad;
    head.weight.requiresGrad = requiresGrad;
    this.model.replaceEmbeddings(embeddings).dispose();
    this.setOutputEmbeddings(head);
    this.currentConfig = this.config.withVocabSize(size);
    this.model.setConfig(this.currentConfig);
    return embeddings;
  }

  /**
   * Re-initialises every weight (NeMo's initialisation, spec §7, as {@link fromConfig}) and, with
   * `dtype`, casts the floating weights to it (HF's `initialize_weights` after `to(dtype)`).
   */
  initializeWeights(options: InitializeWeightsOptions = {}): void {
    initializeModelWeights(this, { seed: options.seed ?? 0 });
    if (options.dtype) this.castFloating(options.dtype);
  }

  /**
   * Generates up to `maxNewTokens` tokens per prompt row, greedy or sampled on the device (see
   * `generation/generate.ts`). Run with weights that do not require gradients (`requiresGrad_(false)`)
   * or not: generation records no autograd.
   */
  generate(options: GenerateOptions): Promise<GenerateResult> {
    return generate(this, options);
  }

  /** {@link generate} as an async iterator of per-step events; its return value is the result. */
  generateStream(options: GenerateOptions): AsyncGenerator<GenerationEvent, GenerateResult> {
    return generateStream(this, options);
  }

  /**
   * A freshly initialised model (NeMo's initialisation, spec §7), deterministic for a seed. Called
   * on a subclass, it builds that subclass.
   */
  static fromConfig<M extends NemotronHForCausalLM>(
    this: new (
      config: NemotronHConfig,
      placement?: Placement,
    ) => M,
    config: NemotronHConfig,
    options: FromConfigOptions = {},
  ): M {
    const { seed = 0, ...placement } = options;
    const start = performance.now();
    const model = new this(config, placement);
    try {
      initializeModelWeights(model, { seed });
    } catch (e) {
      model.dispose();
      throw e;
    }
    // Building leaves JS garbage the engine would carry into the first generation's peak
    // (bench-small bf16: ~5 MiB of its prefill's peak RSS).
    const device = model.lmHead.weight.device;
    if (device.kind === 'cpu') device.releaseIdleMemory(performance.now() - start);
    return model;
  }

  /** What the last {@link fromPretrained} load found (e.g. MTP tensors ignored by a model without MTP). */
  loadReport: LoadReport | null = null;

  /**
   * Loads a checkpoint: a local folder, or a Hub repository id (`org/name`) resolved through the HF
   * cache. Reads config.json (and generation_config.json into `generationConfig`), builds the model
   * and streams the weights in; the model is returned in eval mode. The file I/O is the root
   * package's (see `pretrained-io.ts`), as are the options.
   */
  static async fromPretrained(pathOrRepoId: string, options: FromPretrainedOptions = {}): Promise<NemotronHForCausalLM> {
    return pretrainedIO('fromPretrained').load(pathOrRepoId, options);
  }

  /**
   * Writes config.json, generation_config.json (when the model has one) and the weights (HF's
   * on-disk names, sharded) into `folder`, loadable by transformers and by {@link fromPretrained}.
   */
  async savePretrained(folder: string, options: SavePretrainedOptions = {}): Promise<SavedPretrained> {
    return pretrainedIO('savePretrained').save(this, folder, options);
  }
}

/**
 * HF's `ForCausalLMLoss`: logits[:, :-1] against labels[:, 1:], f32, -100 ignored, mean over the
 * remaining targets (0 when there are none).
 */
function causalLmLoss(logits: Tensor, labels: Tensor): Tensor {
  const [batch, length] = labels.shape as [number, number];
  // Position t scores label t + 1 and the last position nothing (ignored): the same loss and
  // gradient, without a copy of the logits minus their last position and its zero-padded gradient.
  return tidy(() => {
    const none = full([batch, 1], IGNORE_INDEX, { dtype: 'i32', device: labels.device });
    const next = length > 1 ? concat([narrow(labels, 1, 1, length - 1), none], 1) : none;
    return crossEntropy(logits, next, { ignoreIndex: IGNORE_INDEX, reduction: 'mean' });
  });
}

/** The document of each position of each packed row (the boundaries checked as `forward` checks them). */
function documentsOf(cuSeqlens: readonly number[] | Rows, batch: number, length: number): Int32Array[] {
  const { seqIdx } = packedLayout(cuSeqlens, undefined, batch, length);
  return Array.from({ length: batch }, (_, b) => seqIdx.subarray(b * length, (b + 1) * length));
}

/**
 * The targets of the MTP depth that looks `ahead` positions further (depth k: ahead = k + 1):
 * labels[t + ahead], -100 where that runs past the row or into another packed document.
 */
function mtpTargets(labels: Rows, ahead: number, documents: Int32Array[] | null): number[][] {
  return labels.map((row, b) =>
    row.map((_, t) => {
      const from = t + ahead;
      const doc = documents?.[b];
      if (from >= row.length || (doc && doc[from] !== doc[t])) return IGNORE_INDEX;
      return row[from]!;
    }),
  );
}

/** Rows of a forward's inputs (for a cache it creates). */
function batchOf(inputs: CausalLMInputs): number {
  const x = inputs.inputIds ?? inputs.inputsEmbeds;
  if (x === undefined) throw new Error('forward: give exactly one of inputIds and inputsEmbeds');
  if ('shape' in x) return x.rank === 1 ? 1 : x.shape[0]!;
  return typeof x[0] === 'number' ? 1 : x.length;
}

/** Σ over rows: [N, H] → [1, H]. */
function sumRows(t: Tensor): Tensor {
  return reshape(sum(t, 0), [1, t.shape[1]!]);
}
