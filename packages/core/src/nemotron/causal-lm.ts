/**
 * `NemotronHForCausalLM` (spec §2.0, §2.7): the backbone, an untied `lm_head` [V, H] without bias, and
 * the MTP head when the config enables it. Module names match HF's in-memory (v5) layout:
 * `model.embeddings`, `model.layers.{i}`, `model.norm_f`, `lm_head`, plus `mtp.layers.{j}`.
 */
import { add, crossEntropy, mul, narrow, reshape, tensor, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type LoadReport, type Placement } from '../nn/module';
import type { NemotronHybridCache } from './cache';
import type { GenerationConfig } from '../generation/generation-config';
import { generate, generateStream, type GenerateOptions, type GenerateResult, type GenerationEvent } from '../generation/generate';
import { initializeWeights } from './init';
import { allocating } from './allocation-errors';
import { checkCuSeqlens, checkLabels, checkPaddingLayout, IGNORE_INDEX, prepareInputs, prepareLabels, rowsShape, type ModelInputs, type PreparedInputs, type Rows } from './inputs';
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
  labels?: Tensor | Rows;
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
}

export interface CausalLMOutput {
  /** f32 [B, L, V] (or [B, n, V] with logitsToKeep = n). */
  readonly logits: Tensor;
  /** f32 scalar: the mean cross-entropy over the targets that are not -100; null without labels. */
  readonly loss: Tensor | null;
  /** With outputHiddenStates: the embeddings, blocks 0 … L−2, and the final state after norm_f (HF order). */
  readonly hiddenStates: Tensor[] | null;
}

export interface MtpInputs extends Omit<ModelInputs, 'inputsEmbeds' | 'outputHiddenStates' | 'cuSeqlens'> {
  /** i32 [B, L] token ids, or rows of ids (each depth rolls them). */
  inputIds: Tensor | Rows;
  /**
   * NeMo's pre-shifted labels, rows [B][L]: labels[t] is the target of position t (-100 = none).
   * Unlike `forward`'s HF labels nothing is shifted inside; HF-style labels relate as
   * labels[t] = hfLabels[t + 1].
   */
  labels: Rows;
  /** Packed-row boundaries (B = 1), as an array: the per-depth targets are built from them. */
  cuSeqlens?: readonly number[];
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

  /** Allocates every tensor uninitialised; use {@link fromConfig} or a checkpoint loader to fill them. */
  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    this.model = this.registerModule('model', new NemotronHModel(config, placement));
    const lmHead = allocating(`lm_head (vocab_size ${config.vocabSize} × hidden_size ${config.hiddenSize})`, () => new Linear(config.hiddenSize, config.vocabSize, placement));
    this.lmHead = this.registerModule('lm_head', lmHead);
    this.mtp = config.mtpEnabled ? this.registerModule('mtp', new MultiTokenPrediction(config, placement)) : null;
  }

  /**
   * The forward pass (spec §2): backbone, untied lm_head, and with labels HF's causal-LM loss.
   * Nothing stays allocated but the returned tensors (the caller disposes them); nothing is read
   * back. Differentiable in every parameter (the training path: no cache); run inference under
   * `noGrad()` so nothing is saved for a backward.
   */
  forward(inputs: CausalLMInputs): CausalLMOutput {
    return tidy(() => {
      const device = this.lmHead.weight.device;
      const cache = inputs.cache;
      const prepared = prepareInputs(this.config, device, inputs);
      const { batch, length } = prepared;
      const keep = inputs.logitsToKeep ?? 0;
      if (!Number.isInteger(keep) || keep < 0 || keep > length) throw new Error(`forward: logitsToKeep must be an integer in [0, ${length}] (0 = all), got ${keep}`);
      if (keep > 0 && keep < length && inputs.labels !== undefined) throw new Error(`forward: labels need the logits of every position; drop logitsToKeep (${keep}) or the labels`);
      const labels = inputs.labels === undefined ? null : prepareLabels(inputs.labels, this.config, batch, length, device);
      const outputHidden = inputs.outputHiddenStates ?? false;
      if (cache) {
        this.checkCache(cache, prepared, inputs);
        // The next tokens follow the last position: only the first piece may be padded, on the left.
        if (Array.isArray(inputs.attentionMask)) checkPaddingLayout(inputs.attentionMask as Rows, 'forward: attentionMask', cache.length > 0 ? 'none' : 'left');
      }
      if (cache && length === 1 && cache.length > 0) {
        const step = this.decodeForward(prepared, cache, outputHidden);
        return { ...step, loss: labels ? causalLmLoss(step.logits, labels) : null };
      }
      if (cache) {
        cache.reserve(length);
        cache.writeKeyMask(prepared.sequences.paddingMask, length);
      }
      const { lastHiddenState, hiddenStates } = this.model.forwardPrepared(prepared, outputHidden, cache);
      if (cache) {
        cache.advanceDevice(length);
        cache.advanceHost(length);
      }
      const logits = this.lmHead.forward(keep > 0 ? narrow(lastHiddenState, 1, length - keep, keep) : lastHiddenState);
      return { logits, loss: labels ? causalLmLoss(logits, labels) : null, hiddenStates };
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
    return tidy(() => {
      const device = this.lmHead.weight.device;
      const prepared = prepareInputs(this.config, device, inputs);
      const { batch, length } = prepared;
      const labels = checkLabels(inputs.labels, 'labels', this.config.vocabSize);
      const [labelRows, labelLength] = rowsShape(labels);
      if (labelRows !== batch || labelLength !== length) throw new Error(`forwardMtp: labels [${labelRows}, ${labelLength}] do not match inputIds [${batch}, ${length}]`);
      const documents = inputs.cuSeqlens === undefined ? null : documentOf(checkCuSeqlens(inputs.cuSeqlens, 'cuSeqlens', length), length);
      const labelCount = labels.reduce((n, row) => n + row.filter((v) => v !== IGNORE_INDEX).length, 0);
      const perLabel = 1 / Math.max(labelCount, 1);
      const lossOf = (logits: Tensor, targets: Rows) =>
        mul(crossEntropy(logits, tensor(Int32Array.from(targets.flat()), [batch, length], { device }), { ignoreIndex: IGNORE_INDEX, reduction: 'sum' }), perLabel);

      const { lastHiddenState } = this.model.forwardPrepared(prepared, false);
      const logits = this.lmHead.forward(lastHiddenState);
      const mainLoss = lossOf(logits, labels);
      const depthHiddenStates = mtp.forward(lastHiddenState, prepared.inputIds!, (ids) => this.model.embeddings.forward(ids), prepared.sequences);
      const depthTargets = depthHiddenStates.map((_, k) => mtpTargets(labels, k + 1, documents));
      const depthLosses = depthHiddenStates.map((h, k) => tidy(() => lossOf(this.lmHead.forward(h), depthTargets[k]!)));
      const mtpLoss = mul(depthLosses.slice(1).reduce((sum, l) => add(sum, l), depthLosses[0]!), this.config.mtpLossScalingFactor / mtp.numDepths);
      return { logits, loss: add(mainLoss, mtpLoss), mainLoss, mtpLoss, depthHiddenStates, depthLosses, depthTargets, labelCount };
    });
  }

  private checkCache(cache: NemotronHybridCache, prepared: PreparedInputs, inputs: CausalLMInputs): void {
    if (cache.isDisposed) throw new Error('forward: the cache was disposed');
    const c = cache.config;
    if (c !== this.config && (c.pattern !== this.config.pattern || c.hiddenSize !== this.config.hiddenSize || c.convDim !== this.config.convDim || c.headDim !== this.config.headDim)) {
      throw new Error(`forward: the cache was made for another model (pattern ${c.pattern}, this model ${this.config.pattern})`);
    }
    if (cache.device !== this.lmHead.weight.device) throw new Error(`forward: the cache is on ${cache.device.kind}, the model on ${this.lmHead.weight.device.kind}`);
    if (cache.batch !== prepared.batch) throw new Error(`forward: the cache holds ${cache.batch} rows, the inputs ${prepared.batch}`);
    if (inputs.cuSeqlens !== undefined) throw new Error('forward: packed rows (cuSeqlens) cannot use a cache');
    if (prepared.length === 1 && cache.length > 0 && prepared.sequences.paddingMask) {
      throw new Error('forward: a decode step (one token per row after cached positions) takes no attention mask: its tokens are never padding');
    }
  }

  /** A decode step through `forward`: the device step plus the host bookkeeping. */
  private decodeForward(prepared: PreparedInputs, cache: NemotronHybridCache, outputHidden: boolean): { logits: Tensor; hiddenStates: Tensor[] | null } {
    const { batch } = prepared;
    cache.reserve(1);
    cache.advanceDevice(1);
    const h = prepared.inputIds ? this.model.embeddings.forward(prepared.inputIds) : prepared.inputsEmbeds!.share();
    const hiddenStates = outputHidden ? [h] : null;
    const last = this.model.decodeBlocks(h, cache, hiddenStates);
    let logits: Tensor;
    if (hiddenStates) {
      const final = this.model.normF.forward(last);
      hiddenStates.push(final);
      logits = this.lmHead.forward(final);
    } else logits = reshape(this.headLogits(last), [batch, 1, this.config.vocabSize]);
    cache.advanceHost(1);
    return { logits, hiddenStates };
  }

  /** norm_f and lm_head as one fused projection: h [B, 1, H] → f32 [B, V]. */
  private headLogits(h: Tensor): Tensor {
    const normF = this.model.normF;
    return this.lmHead.fused(reshape(h, [h.shape[0]!, this.config.hiddenSize]), { norm: { weight: normF.weight, eps: normF.eps } });
  }

  /**
   * The device half of a decode step, for recorded generation loops: embeds `ids` (i32 [B], one new
   * token per row), advances the cache's device position, runs every block's decode path and
   * returns the logits f32 [B, V]. It reads and writes only device tensors, so it can be recorded
   * (`StepProgram`). The caller reserves room first (`cache.reserve(1)`) and advances the host
   * length after (`cache.advanceHost(1)`).
   */
  decodeStep(ids: Tensor, cache: NemotronHybridCache): Tensor {
    return tidy(() => {
      const batch = cache.batch;
      if (ids.dtype !== 'i32' || ids.size !== batch) throw new Error(`decodeStep: ids must be i32 with one token per row (${batch}), got ${ids.dtype} [${ids.shape.join(', ')}]`);
      if (cache.length + 1 > cache.capacity) throw new Error(`decodeStep: the cache is full (${cache.capacity} positions): reserve(1) first`);
      cache.advanceDevice(1);
      const h = this.model.embeddings.forward(reshape(ids, [batch, 1]));
      return this.headLogits(this.model.decodeBlocks(h, cache));
    });
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
  const length = logits.shape[1]!;
  return crossEntropy(narrow(logits, 1, 0, length - 1), narrow(labels, 1, 1, length - 1), { ignoreIndex: IGNORE_INDEX, reduction: 'mean' });
}

/** The document of each position of a packed row. */
function documentOf(cuSeqlens: readonly number[], length: number): Int32Array {
  const doc = new Int32Array(length);
  for (let d = 0; d + 1 < cuSeqlens.length; d++) doc.fill(d, cuSeqlens[d]!, cuSeqlens[d + 1]!);
  return doc;
}

/**
 * The targets of the MTP depth that looks `ahead` positions further (depth k: ahead = k + 1):
 * labels[t + ahead], -100 where that runs past the row or into another packed document.
 */
function mtpTargets(labels: Rows, ahead: number, documents: Int32Array | null): number[][] {
  return labels.map((row) =>
    row.map((_, t) => {
      const from = t + ahead;
      if (from >= row.length || (documents && documents[from] !== documents[t])) return IGNORE_INDEX;
      return row[from]!;
    }),
  );
}
