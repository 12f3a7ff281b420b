/**
 * The root's parallel entry point: a checkpoint loaded as usual, then spread over Bun Workers by
 * `@nemotron-ts/parallel` — pipeline stages, expert shards or data-parallel replicas, one device
 * per worker, or any product of them (replicated pipelines whose stages shard their experts over
 * their own workers: PP × EP × DP workers); with none the model runs here, on one device, behind
 * the same methods.
 */
import { noGrad, tidy } from '@nemotron-ts/kernels';
import {
  clipCoefficient,
  DataParallel,
  ExpertParallel,
  fromHost,
  PipelineParallel,
  toHost,
  type ParallelBatch,
  type PipelineForwardResult,
  type PipelineGenerateOptions,
  type PipelineGenerateResult,
  type HostTensor,
  type NamedOptimizerState,
  type ScheduleName,
  type TrainOptimizerOptions,
  type TransferStats,
} from '@nemotron-ts/parallel';
import { NemotronHForCausalLM, type FromPretrainedOptions } from './pretrained';

export interface ParallelOptions {
  /** Pipeline stages (NeMo's splitter; default 1 = none). */
  pipelineStages?: number;
  /** Layers per stage instead of a stage count. */
  layersPerStage?: number;
  /** Expert-parallel size (routed experts sharded over this many workers; default 1 = none). */
  expertParallel?: number;
  /** Data-parallel replicas (default 1 = none). */
  dataParallel?: number;
  /** Worker device specs, one per worker (rank = (replica · stages + stage) · ep + shard) or one for all: cpu, native[:THREADS] (cpu:native[:THREADS]; native workers without a count share the cores), webgpu, auto, vulkan|metal|d3d12|opengl|opengles[:0], adapter:NAME (one repeats). */
  devices?: string[];
  /** Pipeline microbatches (default: one per stage, at most one per row). */
  microbatches?: number;
  /** Pipeline training schedule (default 1f1b). */
  schedule?: ScheduleName;
  /** A worker silent this long is declared hung (default 60 s). */
  heartbeatTimeoutMs?: number;
}

export type ParallelFromPretrainedOptions = FromPretrainedOptions & ParallelOptions;

export interface TrainUpdate {
  /** Mean of the micro-batches' losses. */
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

/** One kind of parallelism, or `composed` for a product of two or three (see {@link ParallelModel.sizes}). */
export type ParallelMode = 'single' | 'pipeline' | 'expert' | 'data' | 'composed';

/** The parallel sizes; the workers number their product. */
export interface ParallelSizes {
  readonly pipelineStages: number;
  readonly expertParallel: number;
  readonly dataParallel: number;
}

export class ParallelModel {
  private constructor(
    /** The model as loaded here (weights shipped to the workers; runs the single-device mode). */
    readonly model: NemotronHForCausalLM,
    readonly mode: ParallelMode,
    private readonly engine: PipelineParallel | ExpertParallel | DataParallel | null,
    private readonly options: ParallelOptions,
    private readonly ownsModel: boolean,
  ) {}

  /** Loads a checkpoint (see `NemotronHForCausalLM.fromPretrained`) and starts the workers the options ask for. */
  static async fromPretrained(pathOrRepoId: string, options: ParallelFromPretrainedOptions = {}): Promise<ParallelModel> {
    const mode = modeOf(options);
    const model = await NemotronHForCausalLM.fromPretrained(pathOrRepoId, options);
    try {
      return await ParallelModel.start(model, mode, options, true);
    } catch (e) {
      model.dispose();
      throw e;
    }
  }

  /** Spreads a loaded model (it stays the caller's). */
  static fromModel(model: NemotronHForCausalLM, options: ParallelOptions = {}): Promise<ParallelModel> {
    return ParallelModel.start(model, modeOf(options), options, false);
  }

  private static async start(model: NemotronHForCausalLM, mode: ParallelMode, options: ParallelOptions, owns: boolean): Promise<ParallelModel> {
    const common = { devices: options.devices, heartbeatTimeoutMs: options.heartbeatTimeoutMs };
    let engine: PipelineParallel | ExpertParallel | DataParallel | null = null;
    if (mode === 'pipeline')
      engine = await PipelineParallel.fromModel(model, {
        ...common,
        stages: options.layersPerStage === undefined ? options.pipelineStages : undefined,
        layersPerStage: options.layersPerStage,
      });
    else if (mode === 'expert') engine = await ExpertParallel.fromModel(model, { ...common, expertParallel: options.expertParallel! });
    else if (mode === 'data') engine = await DataParallel.fromModel(model, { ...common, replicas: options.dataParallel! });
    else if (mode === 'composed')
      // One pipeline (a single stage without pipeline parallelism) per replica, each stage with its expert group.
      engine = await PipelineParallel.fromModel(model, {
        ...common,
        stages: options.layersPerStage === undefined ? (options.pipelineStages ?? 1) : undefined,
        layersPerStage: options.layersPerStage,
        expertParallel: options.expertParallel,
        replicas: options.dataParallel,
      });
    return new ParallelModel(model, mode, engine, options, owns);
  }

  /** The parallel sizes (1 for each kind not used). */
  get sizes(): ParallelSizes {
    const e = this.engine;
    if (e instanceof PipelineParallel) return { pipelineStages: e.layout.stages, expertParallel: e.layout.expertParallel, dataParallel: e.layout.replicas };
    if (e instanceof ExpertParallel) return { pipelineStages: 1, expertParallel: e.group.size, dataParallel: 1 };
    if (e instanceof DataParallel) return { pipelineStages: 1, expertParallel: 1, dataParallel: e.replicas };
    return { pipelineStages: 1, expertParallel: 1, dataParallel: 1 };
  }

  /** Tensor bytes moved between this thread and the workers so far (zero on one device). */
  get transferStats(): TransferStats {
    return this.engine ? this.engine.transferStats : { bytesSent: 0, bytesReceived: 0 };
  }

  /** Logits f32 [B, L, V] (host) and the loss with labels (HF mean; NeMo's MTP loss with mtpLabels). */
  async forward(batch: ParallelBatch): Promise<PipelineForwardResult> {
    const engine = this.engine;
    if (engine instanceof PipelineParallel) return engine.forward(batch, { microbatches: this.options.microbatches });
    if (engine instanceof ExpertParallel) return engine.forward(batch);
    // Data parallelism is for training; inference runs on the loaded model.
    if (batch.mtpLabels) throw new Error('forward: mtpLabels are a training loss (use forwardBackward)');
    const out = noGrad(() =>
      tidy(() => this.model.forward({ inputIds: batch.inputIds, attentionMask: batch.attentionMask, cuSeqlens: batch.cuSeqlens, labels: batch.labels })),
    );
    try {
      return { logits: await toHost(out.logits), loss: out.loss ? await out.loss.item() : null };
    } finally {
      out.logits.dispose();
      out.loss?.dispose();
    }
  }

  /**
   * Greedy generation: pipelined over the stages (microbatches going round the replicas, MoE layers
   * dispatching to each stage's expert group) when pipeline parallelism or a composition runs,
   * else on the loaded model (after training with data or expert parallelism alone, `syncWeights` first).
   */
  async generate(options: PipelineGenerateOptions): Promise<PipelineGenerateResult> {
    if (this.engine instanceof PipelineParallel) return this.engine.generate({ microbatches: this.options.microbatches, ...options });
    const eos = options.eosTokenIds ?? [];
    const result = await this.model.generate({
      inputIds: options.inputIds,
      attentionMask: options.attentionMask,
      maxNewTokens: options.maxNewTokens,
      doSample: false,
      eosTokenId: eos.length > 0 ? [...eos] : null,
      padTokenId: options.padTokenId ?? 0,
    });
    return { tokens: result.tokens.map((r) => [...r]) };
  }

  private trainer(what: string): PipelineParallel | DataParallel | ExpertParallel {
    const e = this.engine;
    if (e) return e;
    throw new Error(`${what}: training here runs with pipeline, data or expert parallelism (on one device use the trainer: train.Trainer)`);
  }

  /** Forward and backward of a batch; gradients accumulate in the workers. Returns the batch loss. */
  async forwardBackward(batch: ParallelBatch): Promise<number> {
    const e = this.trainer('forwardBackward');
    return e instanceof PipelineParallel
      ? e.forwardBackward(batch, { microbatches: this.options.microbatches, schedule: this.options.schedule })
      : e.forwardBackward(batch);
  }

  /** AdamW in every worker (the same update as one AdamW over the whole model; `noWeightDecay` names parameters without decay). */
  async setOptimizer(options: TrainOptimizerOptions): Promise<void> {
    return this.trainer('setOptimizer').setOptimizer(options);
  }

  /**
   * One update as the one-device trainer makes it: forward/backward of each micro-batch (their
   * gradients add up, then are averaged), the all-reduce with data parallelism, global-norm
   * clipping across the workers (`maxGradNorm` 0 = none), and AdamW with the learning rate scaled
   * by `lrScale`. A non-finite loss throws before the update (the gradients are zeroed).
   */
  async trainUpdate(batches: readonly ParallelBatch[], options: { lrScale?: number; maxGradNorm?: number; step?: number } = {}): Promise<TrainUpdate> {
    const e = this.trainer('trainUpdate');
    if (batches.length === 0) throw new Error('trainUpdate: no batches');
    await e.zeroGrad();
    const losses: number[] = [];
    // Data parallelism all-reduces during the last micro-batch's backward (its gradients are then final).
    for (const [i, batch] of batches.entries())
      losses.push(e instanceof DataParallel ? await e.forwardBackward(batch, { allReduce: i === batches.length - 1 }) : await this.forwardBackward(batch));
    const loss = losses.reduce((a, b) => a + b, 0) / losses.length;
    if (!Number.isFinite(loss)) {
      await e.zeroGrad();
      throw new Error(
        `training loss is ${loss}${options.step !== undefined ? ` at step ${options.step}` : ''} (micro-batch losses ${losses.join(', ')}); stopping before the update`,
      );
    }
    // Composed replicas of a pipeline all-reduce after the backward.
    if (e instanceof PipelineParallel) await e.allReduceGradients();
    if (batches.length > 1) await e.scaleGradients(1 / batches.length);
    const gradNorm = await e.gradientNorm();
    const coef = clipCoefficient(gradNorm, options.maxGradNorm ?? 0);
    if (coef < 1) await e.scaleGradients(coef);
    await e.step(options.lrScale ?? 1);
    return { loss, gradNorm };
  }

  /** The AdamW state by full-model parameter name (what a checkpoint keeps): the stages', replica 0's, or the host's and the expert shards' (stacked). */
  optimizerState(): Promise<NamedOptimizerState> {
    return this.trainer('optimizerState').optimizerState();
  }

  /** Replaces the AdamW state (a resumed run's); each parameter's state goes to the workers that train it. Sending moves `state`'s buffers. */
  loadOptimizerState(state: NamedOptimizerState): Promise<void> {
    return this.trainer('loadOptimizerState').loadOptimizerState(state);
  }

  /** Replaces tensors in the workers that hold them (e.g. a resumed run's LoRA adapters); sending moves their buffers. */
  setWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    return this.stagedTrainer('setWeights').setWeights(tensors);
  }

  /** The workers' f32 masters of their bf16 trained parameters (a bf16 model's mixed precision; none for f32 weights), by name. */
  masterWeights(): Promise<Map<string, HostTensor>> {
    return this.stagedTrainer('masterWeights').masterWeights();
  }

  /** Writes a resumed run's f32 masters into the workers' (sending moves the buffers). */
  loadMasterWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    return this.stagedTrainer('loadMasterWeights').loadMasterWeights(tensors);
  }

  /** Reseeds the workers' LoRA dropout for training step `step` (the one-device trainer's `reseedLoraDropout`). */
  reseedDropout(step: number): Promise<void> {
    return this.stagedTrainer('reseedDropout').reseedDropout(step);
  }

  private stagedTrainer(what: string): PipelineParallel | DataParallel {
    const e = this.trainer(what);
    if (e instanceof ExpertParallel) throw new Error(`${what}: not built for expert parallelism (pipeline or data parallelism)`);
    return e;
  }

  /** The trained weights (every parameter, or the LoRA adapters) copied back from the workers into the loaded model (e.g. before `savePretrained`). */
  async syncWeights(): Promise<void> {
    const e = this.trainer('syncWeights');
    // Expert parallelism trains the host's own weights in place (its AdamW holds them): only the
    // routed experts come back, so training can go on after a sync.
    const weights = e instanceof ExpertParallel ? await e.expertWeights() : await e.trainedWeights();
    const device = this.model.lmHead.weight.device;
    for (const [name, host] of weights) {
      const t = fromHost(host, device);
      this.model.setTensor(name, t);
      t.dispose();
    }
  }

  /** Ends the workers (they free their tensors first) and frees the model when it was loaded here. */
  async close(): Promise<void> {
    try {
      await this.engine?.shutdown();
    } finally {
      if (this.ownsModel) this.model.dispose();
    }
  }
}

function modeOf(options: ParallelOptions): ParallelMode {
  const sizes: [ParallelMode, number | undefined][] = [
    ['pipeline', options.layersPerStage !== undefined ? 2 : options.pipelineStages],
    ['expert', options.expertParallel],
    ['data', options.dataParallel],
  ];
  for (const [mode, n] of sizes)
    if (n !== undefined && (!Number.isInteger(n) || n < 1)) throw new Error(`${mode} parallel size must be a positive integer, got ${n}`);
  const active = sizes.filter(([, n]) => (n ?? 1) > 1).map(([m]) => m);
  if (active.length > 1) return 'composed';
  return active[0] ?? 'single';
}
