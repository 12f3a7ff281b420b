/**
 * The {@link Trainer}'s run through a {@link ParallelModel} (pipeline stages, data-parallel
 * replicas or expert shards in workers): the same rows in the same order, AdamW groups, warmup + cosine schedule,
 * clipping, accumulation, bf16 weights through f32 masters (kept in the workers), LoRA (adapters built in the workers that own the targeted layers; only
 * they train, and only their gradients are all-reduced) and per-step dropout reseeding — and the
 * same checkpoints. A checkpoint holds the model (or the PEFT adapter) synced back from the
 * workers, the workers' AdamW moments and step counts under the one-device names and order, and
 * the trainer state (step, data position, settings), so a parallel run resumes exactly, and a
 * one-device run can continue a parallel run's checkpoint and the other way round.
 * Expert parallelism (the host's AdamW and the shards' over their experts) checkpoints and
 * resumes the same way; it takes neither LoRA nor the MTP loss. Composed parallelism (PP × EP × DP)
 * trains, checkpoints and resumes f32 weights the same way, but takes neither LoRA nor bf16.
 */
import { loraHandle, type LoraHandle } from '@nemotron-ts/core';
import {
  bytesPerElement,
  disposeStateDict,
  warmupCosineSchedule,
  type AdamWOptions,
  type LrSchedule,
  type OptimizerStateDict,
  type Tensor,
} from '@nemotron-ts/kernels';
import { fromHost, toHost, type AdamParamState, type HostTensor, type NamedOptimizerState } from '@nemotron-ts/parallel';
import { loadLoraAdapterWeights } from '../peft-files';
import type { ParallelModel } from '../parallel';
import { noWeightDecayNames, parallelBatch } from './parallel-batch';
import { changedHyperparameters, checkResumable, runSettings, type ChangedHyperparameter } from './run-settings';
import {
  ADAMW_BETAS,
  evaluationLoss,
  hyperparametersOf,
  resolveTrainerOptions,
  runUpdates,
  trainedGroups,
  type ResolvedTrainerOptions,
  type StepLog,
  type TrainerOptions,
} from './trainer';
import {
  pruneCheckpoints,
  readMasterWeights,
  readOptimizerState,
  readTrainerState,
  saveCheckpoint,
  type Hyperparameters,
  type RunSettings,
} from './trainer-state';
import type { TrainingData } from './training-data';

export class ParallelTrainer {
  /** Updates done. */
  step = 0;
  /** Training rows handed out so far. */
  dataPosition = 0;
  readonly schedule: LrSchedule;
  /** The step whose weights the loaded model holds (synced back from the workers), or -1. */
  private syncedAt = -1;

  private constructor(
    readonly parallel: ParallelModel,
    readonly data: TrainingData,
    private readonly options: ResolvedTrainerOptions,
    /** Trained parameters' names in the one-device optimizer's order (its groups: decayed, then not). */
    private readonly names: readonly string[],
    /** The trained parameters that are bf16: the workers keep f32 masters of them, which checkpoints hold. */
    private readonly masterNames: readonly string[],
    private readonly settings: RunSettings,
    private readonly lora: LoraHandle | null,
  ) {
    const o = options;
    this.schedule = warmupCosineSchedule({ warmupSteps: o.warmup, totalSteps: o.steps, minRatio: o.minLr / o.lr });
  }

  /**
   * A trainer over `parallel`'s workers, which must have been started from the model as it is to
   * be trained (LoRA adapters applied before, so the workers build them too). Sets the workers'
   * AdamW.
   */
  static async create(parallel: ParallelModel, data: TrainingData, options: TrainerOptions): Promise<ParallelTrainer> {
    const model = parallel.model;
    if (parallel.mode === 'single') throw new Error('ParallelTrainer: the model runs on one device (use the Trainer)');
    if (options.gradientCheckpointing) throw new Error('ParallelTrainer: gradient checkpointing is not built for the workers (they keep every activation)');
    const o = resolveTrainerOptions(model, data, options);
    const dtype = model.lmHead.weight.dtype;
    if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`ParallelTrainer: the model's weights are ${dtype}; train f32 or bf16 weights`);
    const lora = loraHandle(model);
    if (parallel.mode === 'composed' && (dtype !== 'f32' || lora))
      throw new Error(
        `ParallelTrainer: ${lora ? 'LoRA (--lora-r)' : `${dtype} weights (--dtype ${dtype})`} with composed parallelism (--pipeline-stages, --expert-parallel, --data-parallel together) is not built; use one kind of parallelism`,
      );
    if (dtype === 'bf16' && parallel.mode === 'expert')
      throw new Error("ParallelTrainer: bf16 weights with expert parallelism are not built (the host's and the shards' AdamW need f32 masters)");
    if (lora && parallel.mode === 'expert')
      throw new Error('ParallelTrainer: LoRA with expert parallelism is not built (the shards would train the frozen routed experts)');
    if (o.mtp && parallel.mode === 'expert') throw new Error('ParallelTrainer: expert parallelism does not train the MTP loss');
    if (lora && parallel.mode === 'data' && lora.config.dropout > 0)
      throw new Error(
        'ParallelTrainer: LoRA dropout with data parallelism would draw other masks than one device (each replica draws for its own rows); use dropout 0 or pipeline stages',
      );
    // The loaded model is not trained here (only evaluated and saved), but its flags say what trains.
    model.train().requiresGrad_(!lora);
    if (lora) for (const p of lora.parameters()) p.requiresGrad = true;
    const names = trainedGroups(model, o.weightDecay, o.mtp, lora).flatMap((g) => g.names);
    const bf16 = new Set(
      model
        .namedParameters()
        .filter(([, p]) => p.dtype !== 'f32')
        .map(([n]) => n),
    );
    const settings = runSettings(data, { batchSize: o.batchSize, gradAccum: o.gradAccum, seed: o.seed, mtp: o.mtp, dtype, lora: lora?.config ?? null });
    await parallel.setOptimizer({ lr: o.lr, ...ADAMW_BETAS, weightDecay: o.weightDecay, noWeightDecay: noWeightDecayNames(model) });
    return new ParallelTrainer(
      parallel,
      data,
      o,
      names,
      names.filter((n) => bf16.has(n)),
      settings,
      lora,
    );
  }

  /** This run's optimization hyperparameters, as checkpoints record them. */
  get hyperparameters(): Hyperparameters {
    return hyperparametersOf(this.options);
  }

  /**
   * Continues from a checkpoint folder (written by this trainer or the one-device one): the
   * workers must have been started from its weights (`fromPretrained` of the checkpoint) — or, for
   * a LoRA run, from the run's base with the run's adapters applied, whose weights are read here.
   * Returns the hyperparameters that differ from the checkpoint's run (this run's apply).
   */
  async resumeFrom(dir: string): Promise<ChangedHyperparameter[]> {
    const state = await readTrainerState(dir);
    checkResumable(dir, state, this.settings, this.options.steps);
    const model = this.parallel.model;
    if (this.lora) {
      await loadLoraAdapterWeights(model, dir);
      const adapters = new Map<string, HostTensor>();
      for (const [name, p] of this.lora.namedParameters()) adapters.set(name, await toHost(p));
      await this.parallel.setWeights(adapters);
    }
    const dict = await readOptimizerState(dir, state, this.names, model.lmHead.weight.device);
    try {
      const params: Record<string, AdamParamState> = {};
      for (const [i, s] of dict.params.entries()) {
        if (!s) continue;
        params[this.names[i]!] = { step: s.step, expAvg: await toHost(s.buffers.expAvg!), expAvgSq: await toHost(s.buffers.expAvgSq!) };
      }
      await this.parallel.loadOptimizerState({ stepCount: dict.stepCount, params });
    } finally {
      disposeStateDict(dict);
    }
    if (this.masterNames.length > 0) {
      const saved = await readMasterWeights(dir, this.masterNames, model.lmHead.weight.device);
      const masters = new Map<string, HostTensor>();
      try {
        for (const [name, t] of saved) masters.set(name, await toHost(t));
      } finally {
        for (const t of saved.values()) t.dispose();
      }
      await this.parallel.loadMasterWeights(masters);
    }
    this.step = state.step;
    this.dataPosition = state.dataPosition;
    this.syncedAt = -1;
    return changedHyperparameters(state, this.hyperparameters);
  }

  /** Runs the remaining updates; returns each update's log. The loaded model ends with the trained weights. */
  async train(): Promise<StepLog[]> {
    const logs = await runUpdates(this, this.options);
    await this.sync();
    return logs;
  }

  /** One update through the workers: accumulate gradAccum micro-batches (all-reduced with data parallelism), clip, step. */
  async trainStep(): Promise<StepLog> {
    const o = this.options;
    const started = performance.now();
    if (this.lora && this.lora.config.dropout > 0) await this.parallel.reseedDropout(this.step);
    const batches = Array.from({ length: o.gradAccum }, () => {
      const batch = parallelBatch(this.data.train.batch(this.dataPosition, o.batchSize), o.mtp);
      this.dataPosition += o.batchSize;
      return batch;
    });
    const lrScale = this.schedule(this.step);
    const step = this.step + 1;
    const { loss, gradNorm } = await this.parallel.trainUpdate(batches, { lrScale, maxGradNorm: o.gradClip, step });
    this.step = step;
    const seconds = (performance.now() - started) / 1000;
    // The workers' memory is not reported back: peak_bytes null.
    return { step, loss, lr: o.lr * lrScale, grad_norm: gradNorm, tokens_per_s: (o.gradAccum * o.batchSize * this.data.seqLen) / seconds, peak_bytes: null };
  }

  /** Mean next-token loss over the evaluation rows, on the loaded model with the workers' weights. */
  async evaluate(): Promise<number> {
    await this.sync();
    return evaluationLoss(this.parallel.model, this.data, this.options.batchSize);
  }

  /** Writes `OUT/checkpoint-<step>/` in the one-device trainer's format (model or LoRA adapter, optimizer, trainer state). */
  async saveCheckpoint(): Promise<string> {
    const o = this.options;
    if (o.outDir === null) throw new Error('ParallelTrainer.saveCheckpoint: no outDir');
    await this.sync();
    const dict = this.optimizerStateDict(await this.parallel.optimizerState());
    const masters = await this.masters();
    let dir: string;
    try {
      dir = await saveCheckpoint(
        o.outDir,
        this.parallel.model,
        dict,
        this.names,
        { step: this.step, dataPosition: this.dataPosition, settings: this.settings, hyperparameters: this.hyperparameters },
        {
          tokenizerFrom: o.tokenizerFrom,
          masters,
          loraAdapter: this.lora ? { baseModelNameOrPath: o.baseModelNameOrPath ?? null } : undefined,
        },
      );
    } finally {
      disposeStateDict(dict);
      for (const t of masters.values()) t.dispose();
    }
    const deleted = o.saveTotalLimit > 0 ? await pruneCheckpoints(o.outDir, o.saveTotalLimit) : [];
    o.onCheckpoint?.(dir, this.step, deleted);
    return dir;
  }

  /** About how many bytes one checkpoint of this run takes: weights (or the adapter), AdamW moments, f32 masters. */
  checkpointBytes(): number {
    const model = this.parallel.model;
    const trained = new Set(this.names);
    const bytes = (ts: readonly Tensor[], each?: number) => ts.reduce((n, t) => n + t.size * (each ?? bytesPerElement(t.dtype)), 0);
    const params = model.namedParameters();
    return (
      bytes(this.lora ? this.lora.parameters() : params.map(([, p]) => p)) +
      bytes(
        params.filter(([n]) => trained.has(n)).map(([, p]) => p),
        8,
      ) +
      bytes(
        params.filter(([n]) => this.masterNames.includes(n)).map(([, p]) => p),
        4,
      )
    );
  }

  /** Nothing to free here: the caller closes the {@link ParallelModel}. */
  dispose(): void {}

  /** The workers' trained weights copied into the loaded model, once per step. */
  private async sync(): Promise<void> {
    if (this.syncedAt === this.step) return;
    await this.parallel.syncWeights();
    this.syncedAt = this.step;
  }

  /** The workers' f32 masters of the bf16 trained parameters, on the loaded model's device (the caller disposes them). */
  private async masters(): Promise<Map<string, Tensor>> {
    if (this.masterNames.length === 0) return new Map();
    const hosts = await this.parallel.masterWeights();
    const missing = this.masterNames.find((n) => !hosts.has(n));
    if (missing !== undefined || hosts.size !== this.masterNames.length)
      throw new Error(`ParallelTrainer: the workers' master weights do not match this run's bf16 parameters${missing ? ` ('${missing}' missing)` : ''}`);
    const device = this.parallel.model.lmHead.weight.device;
    return new Map(this.masterNames.map((n) => [n, fromHost(hosts.get(n)!, device)]));
  }

  /** The workers' AdamW state as the one-device trainer's state dict (its two groups, its parameter order), on the loaded model's device. */
  private optimizerStateDict(state: NamedOptimizerState): OptimizerStateDict<AdamWOptions> {
    const known = new Set(this.names);
    const stray = Object.keys(state.params).find((n) => !known.has(n));
    if (stray !== undefined) throw new Error(`ParallelTrainer: the workers hold optimizer state for '${stray}', which this run does not train`);
    const device = this.parallel.model.lmHead.weight.device;
    const hyper = { lr: this.options.lr, ...ADAMW_BETAS };
    return {
      stepCount: state.stepCount,
      groups: [
        { ...hyper, weightDecay: this.options.weightDecay },
        { ...hyper, weightDecay: 0 },
      ],
      params: this.names.map((name) => {
        const s = state.params[name];
        return s ? { step: s.step, buffers: { expAvg: fromHost(s.expAvg, device), expAvgSq: fromHost(s.expAvgSq, device) } } : null;
      }),
    };
  }
}
