/**
 * Fine-tuning of a Nemotron-H model (all its weights, or only its LoRA adapters): AdamW over
 * weight-decay groups, linear warmup then cosine decay to `minLr`, global gradient-norm clipping, gradient accumulation, the MTP loss when the
 * model has an MTP head, periodic evaluation, and checkpoints that a resumed run continues from
 * exactly (same losses as an uninterrupted run).
 *
 * One step: `gradAccum` micro-batches of `batchSize` rows; each micro-batch's mean loss, scaled by
 * 1 / gradAccum, is backpropagated (gradients add up), then the norm is clipped and AdamW steps.
 * Every micro-batch has the same number of targets (rows of seqLen − 1), so this equals one batch
 * of batchSize · gradAccum rows.
 *
 * Mixed precision: a model loaded with bf16 weights trains them through f32 master copies (the
 * optimizer updates f32 tensors): after each backward the bf16 weights' (f32) gradients move to
 * their masters, AdamW updates the masters, and the masters are rounded back into the bf16
 * weights. Weights that are f32 (all of them in an f32 model; A_log, D, dt_bias always) are their
 * own masters. Checkpoints keep the masters, so resuming is exact in both precisions.
 *
 * LoRA: when the model has adapters (`applyLora` / `loraHandle`), only their parameters train; the
 * base stays frozen (bit-identical) and its MTP head too. The adapters' matrices take `weightDecay`
 * like every other matrix (as HF's Trainer does for PEFT models: it decays all weights but biases
 * and norms). The adapters are f32 whatever the base's dtype, so they are their own masters.
 * Checkpoints hold the adapter as a PEFT folder (not the base), and dropout masks are reseeded per
 * step (`reseedLoraDropout`), so a resumed run draws the same masks and repeats the same losses.
 *
 * Resuming: the settings that fix what a step means (`RunSettings`: rows, batch, accumulation,
 * seed, MTP, dtype, LoRA) must match the checkpoint's; the optimization hyperparameters (steps, lr,
 * minLr, warmup, weightDecay, gradClip) are this run's, applied from the resumed step on
 * (`resumeFrom` reports those that differ from the checkpoint's run).
 */
import {
  AdamW,
  backward,
  bytesPerElement,
  cast,
  clipCoefficient,
  clipGradNorm,
  copyInto,
  dispose,
  disposeStateDict,
  formatShape,
  keep,
  mul,
  noGrad,
  profilePhase,
  shapesEqual,
  tidy,
  warmupCosineSchedule,
  type LrSchedule,
  type Tensor,
} from '@nemotron-ts/kernels';
import { loraHandle, reseedLoraDropout, type LoraHandle } from '@nemotron-ts/core';
import { loadLoraAdapterWeights } from '../peft-files';
import type { NemotronHForCausalLM } from '../pretrained';
import { weightDecayGroups, type NamedGroup } from './param-groups';
import {
  pruneCheckpoints,
  readMasterWeights,
  readOptimizerState,
  readTrainerState,
  saveCheckpoint,
  type Hyperparameters,
  type RunSettings,
} from './trainer-state';
import { changedHyperparameters, checkResumable, runSettings, type ChangedHyperparameter } from './run-settings';
import { rowBatch, type RowBatch } from './row-batch';
import type { TrainingData } from './training-data';

export interface TrainerOptions {
  /** Optimizer updates in the whole run (the schedule's length). */
  steps: number;
  /** Rows per micro-batch. */
  batchSize: number;
  /** Micro-batches per update (default 1). */
  gradAccum?: number;
  /** Peak learning rate. */
  lr: number;
  /** Learning rate at the end of the cosine decay (default 0). */
  minLr?: number;
  /** Linear warmup updates (default 0). */
  warmup?: number;
  /** AdamW decoupled weight decay of the matrices (default 0.01). */
  weightDecay?: number;
  /** Largest global gradient norm; 0 = no clipping (default 1). */
  gradClip?: number;
  /** Evaluate every N updates (and at the end); 0 = never (default 0). */
  evalEvery?: number;
  /** Checkpoint every N updates (and at the end); 0 = only at the end (default 0). */
  saveEvery?: number;
  /** Keep only the newest N checkpoints in `outDir`, deleting older ones after each save; 0 = keep all (default 0). */
  saveTotalLimit?: number;
  /** Where checkpoints go; null = none. */
  outDir: string | null;
  /** Seed of the data order (default 0). */
  seed?: number;
  /** Train the MTP loss too (default: when the model has an MTP head). */
  mtp?: boolean;
  /** Recompute each block's forward during backward (`gradientCheckpointingEnable`): less memory, same gradients. */
  gradientCheckpointing?: boolean;
  /** Folder whose tokenizer files each checkpoint gets a copy of. */
  tokenizerFrom?: string;
  /** A LoRA checkpoint's `base_model_name_or_path` (the base's Hub id or folder; default null). */
  baseModelNameOrPath?: string;
  /** Called after every update. */
  onStep?: (log: StepLog) => void;
  /** Called after every evaluation. */
  onEval?: (log: EvalLog) => void;
  /** Called when a checkpoint has been written (with the older checkpoints `saveTotalLimit` deleted). */
  onCheckpoint?: (dir: string, step: number, deleted: readonly string[]) => void;
}

export interface StepLog {
  step: number;
  /** Mean training loss of the update (the MTP total when MTP is on). */
  loss: number;
  /** Learning rate the update applied (the optimizer's, after the schedule). */
  lr: number;
  /** Global gradient norm before clipping. */
  grad_norm: number;
  tokens_per_s: number;
  /** The device's high-water mark of live tensor bytes during the update (reset at its start); null where it is not known (the parallel trainer's workers). */
  peak_bytes: number | null;
}

export interface EvalLog {
  step: number;
  /** Mean next-token cross-entropy over the evaluation rows (no MTP term). */
  eval_loss: number;
}

/** The weight-decay groups of the parameters a run trains: every one or only the LoRA adapters', the MTP head only with `mtp`. */
export function trainedGroups(model: NemotronHForCausalLM, weightDecay: number, mtp: boolean, lora: LoraHandle | null): NamedGroup[] {
  const adapterNames = lora && new Set(lora.namedParameters().map(([name]) => name));
  // Without MTP the MTP head gets no gradient: leave it out of the optimizer.
  return weightDecayGroups(model, weightDecay, (name) => (mtp || !name.startsWith('mtp.')) && (!adapterNames || adapterNames.has(name)));
}

/** {@link TrainerOptions} with the defaults filled in and `mtp` decided. */
export type ResolvedTrainerOptions = Required<
  Omit<TrainerOptions, 'outDir' | 'tokenizerFrom' | 'baseModelNameOrPath' | 'onStep' | 'onEval' | 'onCheckpoint' | 'mtp' | 'gradientCheckpointing'>
> &
  TrainerOptions & { mtp: boolean };

/** Checks `options` (errors name the option) and fills in the defaults; shared with the parallel trainer. */
export function resolveTrainerOptions(model: NemotronHForCausalLM, data: TrainingData, options: TrainerOptions): ResolvedTrainerOptions {
  const mtp = options.mtp ?? model.mtp !== null;
  if (mtp && !model.mtp) throw new Error('Trainer: mtp is on but the model has no MTP head');
  const o: ResolvedTrainerOptions = {
    gradAccum: 1,
    minLr: 0,
    warmup: 0,
    weightDecay: 0.01,
    gradClip: 1,
    evalEvery: 0,
    saveEvery: 0,
    saveTotalLimit: 0,
    seed: 0,
    ...options,
    mtp,
  };
  const integer = (name: string, v: number, min: number) => {
    if (!Number.isInteger(v) || v < min) throw new Error(`Trainer: ${name} must be an integer ≥ ${min}, got ${v}`);
  };
  integer('steps', o.steps, 1);
  integer('batchSize', o.batchSize, 1);
  integer('gradAccum', o.gradAccum, 1);
  integer('warmup', o.warmup, 0);
  integer('evalEvery', o.evalEvery, 0);
  integer('saveEvery', o.saveEvery, 0);
  integer('saveTotalLimit', o.saveTotalLimit, 0);
  if (o.warmup > o.steps) throw new Error(`Trainer: warmup (${o.warmup}) must not exceed steps (${o.steps})`);
  if (!(o.lr > 0)) throw new Error(`Trainer: lr must be > 0, got ${o.lr}`);
  if (!(o.minLr >= 0 && o.minLr <= o.lr)) throw new Error(`Trainer: minLr must be in [0, lr], got ${o.minLr}`);
  if (!(o.gradClip >= 0)) throw new Error(`Trainer: gradClip must be ≥ 0, got ${o.gradClip}`);
  if (o.evalEvery > 0 && !data.eval) throw new Error('Trainer: evalEvery is set but the data has no evaluation rows');
  return o;
}

/** A run's optimization hyperparameters, as checkpoints record them. */
export function hyperparametersOf(o: ResolvedTrainerOptions): Hyperparameters {
  return { steps: o.steps, lr: o.lr, minLr: o.minLr, warmup: o.warmup, weightDecay: o.weightDecay, gradClip: o.gradClip };
}

/** A trainer as the update loop drives it (this one, or the parallel one over workers). */
interface Updates {
  readonly step: number;
  trainStep(): Promise<StepLog>;
  evaluate(): Promise<number>;
  saveCheckpoint(): Promise<string>;
}

/** Runs `t`'s remaining updates with the evaluations, checkpoints and callbacks `o` asks for; each update's log. */
export async function runUpdates(t: Updates, o: ResolvedTrainerOptions): Promise<StepLog[]> {
  const logs: StepLog[] = [];
  while (t.step < o.steps) {
    const log = await t.trainStep();
    logs.push(log);
    o.onStep?.(log);
    const last = t.step === o.steps;
    if (o.evalEvery > 0 && (t.step % o.evalEvery === 0 || last)) o.onEval?.({ step: t.step, eval_loss: await t.evaluate() });
    if (o.outDir !== null && (last || (o.saveEvery > 0 && t.step % o.saveEvery === 0))) await t.saveCheckpoint();
    // Yield to the event loop between updates: on the CPU backend every await settles as a
    // microtask, and signal handlers (SIGINT/SIGTERM) would never run.
    await new Promise((resolve) => setImmediate(resolve));
  }
  return logs;
}

/** AdamW's betas and eps in every run (Megatron/NeMo's beta2 0.95). */
export const ADAMW_BETAS = { beta1: 0.9, beta2: 0.95, eps: 1e-8 } as const;

export class NonFiniteLossError extends Error {
  override name = 'NonFiniteLossError';
}

export class Trainer {
  readonly optimizer: AdamW;
  readonly schedule: LrSchedule;
  /** Updates done. */
  step = 0;
  /** Training rows handed out so far. */
  dataPosition = 0;
  /** Trained parameters' names, in optimizer order. */
  private readonly names: string[];
  /** The model's trained parameters (f32 or bf16), in optimizer order. */
  private readonly params: Tensor[];
  /** What AdamW updates: the parameter itself when it is f32, else an f32 copy. */
  private readonly masters: Tensor[];
  private readonly settings: RunSettings;
  /** The model's LoRA adapters, when only they train. */
  private readonly lora: LoraHandle | null;
  private readonly options: ResolvedTrainerOptions;

  constructor(
    readonly model: NemotronHForCausalLM,
    readonly data: TrainingData,
    options: TrainerOptions,
  ) {
    this.options = resolveTrainerOptions(model, data, options);
    const o = this.options;
    const mtp = o.mtp;
    const dtype = model.lmHead.weight.dtype;
    if (dtype !== 'f32' && dtype !== 'bf16') throw new Error(`Trainer: the model's weights are ${dtype}; train f32 or bf16 weights`);
    this.lora = loraHandle(model);
    const lora = this.lora;
    if (lora && [...lora.adapters.values()].some((a) => a.merged))
      throw new Error('Trainer: the LoRA adapters are merged into the weights; unmergeLora before training');
    this.settings = runSettings(data, { batchSize: o.batchSize, gradAccum: o.gradAccum, seed: o.seed, mtp, dtype, lora: lora?.config ?? null });
    // With LoRA only the adapters take gradients (the base stays frozen, as applyLora left it); else every weight.
    model.train().requiresGrad_(!lora);
    if (options.gradientCheckpointing) {
      // The recompute would draw other dropout masks than the first forward did.
      if (lora && lora.config.dropout > 0)
        throw new Error('Trainer: gradient checkpointing needs LoRA dropout 0 (the recomputed forward would draw other dropout masks)');
      model.gradientCheckpointingEnable();
    }
    if (lora) for (const p of lora.parameters()) p.requiresGrad = true;
    const groups = trainedGroups(model, o.weightDecay, mtp, lora);
    this.names = groups.flatMap((g) => g.names);
    this.params = groups.flatMap((g) => g.params);
    const masterOf = new Map(this.params.map((p) => [p, p.dtype === 'f32' ? p : noGrad(() => cast(p, 'f32'))]));
    this.masters = this.params.map((p) => masterOf.get(p)!);
    this.optimizer = new AdamW(
      groups.map(({ params, weightDecay }) => ({ params: params.map((p) => masterOf.get(p)!), weightDecay })),
      { lr: o.lr, ...ADAMW_BETAS },
    );
    this.schedule = warmupCosineSchedule({ warmupSteps: o.warmup, totalSteps: o.steps, minRatio: o.minLr / o.lr });
  }

  /**
   * Continues from a checkpoint folder: the model must already hold its weights (`fromPretrained`
   * of the checkpoint) — or, for a LoRA run, be the run's base with the run's adapters applied
   * (`applyLora` with the same options), whose weights are then read from the checkpoint.
   * This run's hyperparameters apply from the resumed step on; returns those that differ from the
   * checkpoint's run.
   */
  async resumeFrom(dir: string): Promise<ChangedHyperparameter[]> {
    const state = await readTrainerState(dir);
    checkResumable(dir, state, this.settings, this.options.steps);
    if (this.lora) await loadLoraAdapterWeights(this.model, dir);
    const device = this.model.lmHead.weight.device;
    const dict = await readOptimizerState(dir, state, this.names, device);
    // The moments and step counts come from the checkpoint; lr and weight decay stay this run's.
    const hyper = this.optimizer.groups.map(({ params: _params, ...h }) => h);
    try {
      this.optimizer.loadStateDict({ ...dict, groups: hyper });
    } finally {
      for (const s of dict.params) if (s) dispose(Object.values(s.buffers));
    }
    const masters = this.separateMasters();
    if (masters.size > 0) {
      const saved = await readMasterWeights(dir, [...masters.keys()], device);
      try {
        for (const [name, m] of masters) {
          const t = saved.get(name)!;
          if (!shapesEqual(t.shape, m.shape))
            throw new Error(`${dir}: master weight '${name}' is ${formatShape(t.shape)}, the model's ${formatShape(m.shape)}`);
          noGrad(() => copyInto(m, t));
        }
      } finally {
        dispose([...saved.values()]);
      }
    }
    this.step = state.step;
    this.dataPosition = state.dataPosition;
    return changedHyperparameters(state, this.hyperparameters);
  }

  /** This run's optimization hyperparameters, as checkpoints record them. */
  get hyperparameters(): Hyperparameters {
    return hyperparametersOf(this.options);
  }

  /** Runs the remaining updates; returns each update's log. */
  train(): Promise<StepLog[]> {
    return runUpdates(this, this.options);
  }

  /** One update: accumulate gradAccum micro-batches, clip, step. Throws before updating on a non-finite loss. */
  async trainStep(): Promise<StepLog> {
    const o = this.options;
    const started = performance.now();
    const device = this.model.device;
    await device.sync();
    device.resetPeak();
    const losses: Tensor[] = [];
    if (this.lora && this.lora.config.dropout > 0) reseedLoraDropout(this.model, this.step);
    for (let micro = 0; micro < o.gradAccum; micro++) {
      const batch = this.data.train.batch(this.dataPosition, o.batchSize);
      this.dataPosition += o.batchSize;
      losses.push(
        tidy(() => {
          const loss = profilePhase('forward', () => this.microBatchLoss(batch));
          profilePhase('backward', () => backward(mul(loss, 1 / o.gradAccum)));
          return keep(loss);
        }),
      );
    }
    const values = await Promise.all(losses.map((l) => l.item()));
    dispose(losses);
    const loss = values.reduce((s, v) => s + v, 0) / values.length;
    const step = this.step + 1;
    if (!Number.isFinite(loss)) {
      this.model.zeroGrad();
      throw new NonFiniteLossError(`training loss is ${loss} at step ${step} (micro-batch losses ${values.join(', ')}); stopping before the update`);
    }
    this.moveGradsToMasters();
    // On the CPU the clipping factor is applied inside AdamW's pass over the gradients instead of a
    // pass of its own writing scaled copies (the factor from the norm as logged, an f32).
    const maxNorm = o.gradClip > 0 ? o.gradClip : Infinity;
    const foldClip = device.kind === 'cpu';
    const normTensor = profilePhase('clip', () => clipGradNorm(this.masters, maxNorm, { scale: !foldClip }));
    const gradNorm = await normTensor.item();
    normTensor.dispose();
    const gradScale = foldClip ? clipCoefficient(gradNorm, maxNorm) : 1;
    const lrScale = this.schedule(this.optimizer.stepCount);
    // The lr logged is the one the optimizer applies (every group shares the peak lr).
    const lr = this.optimizer.groups[0]!.lr * lrScale;
    profilePhase('optimizer', () => {
      this.optimizer.step({ lrScale, gradScale });
      this.optimizer.zeroGrad();
      this.model.zeroGrad();
      this.copyMastersToParams();
    });
    await device.sync();
    const peakBytes = device.memoryStats().peakLiveBytes;
    this.step = step;
    const seconds = (performance.now() - started) / 1000;
    return { step, loss, lr, grad_norm: gradNorm, tokens_per_s: (o.gradAccum * o.batchSize * this.data.seqLen) / seconds, peak_bytes: peakBytes };
  }

  /** About how many bytes one checkpoint of this run takes: weights (or the adapter), AdamW moments, f32 masters. */
  checkpointBytes(): number {
    const bytes = (ts: readonly Tensor[], each?: number) => ts.reduce((n, t) => n + t.size * (each ?? bytesPerElement(t.dtype)), 0);
    return bytes(this.lora ? this.lora.parameters() : this.model.parameters()) + bytes(this.masters, 8) + bytes([...this.separateMasters().values()]);
  }

  /** The f32 masters that are copies (of bf16 weights), by parameter name. */
  private separateMasters(): Map<string, Tensor> {
    return new Map(this.names.map((name, i) => [name, this.masters[i]!] as const).filter(([, m], i) => m !== this.params[i]));
  }

  /** Hands each bf16 weight's (f32) gradient to its f32 master. */
  private moveGradsToMasters(): void {
    this.params.forEach((p, i) => {
      const m = this.masters[i]!;
      if (m === p || !p.grad) return;
      m.grad = p.grad;
      p.grad = null;
    });
  }

  /** Rounds the updated masters into the bf16 weights. */
  private copyMastersToParams(): void {
    noGrad(() =>
      this.params.forEach((p, i) => {
        const m = this.masters[i]!;
        if (m === p) return;
        copyInto(p, m);
        // Written in place: copies kept for it (packed matmul textures) are stale.
        p.storage.invalidateDerived();
      }),
    );
  }

  /**
   * The training loss of one micro-batch: HF labels (shifted inside), or NeMo's pre-shifted labels
   * with MTP. Chat rows score only assistant tokens; packed rows pass their documents' boundaries.
   */
  private microBatchLoss(batch: RowBatch): Tensor {
    const cuSeqlens = batch.cuSeqlens ?? undefined;
    if (!this.settings.mtp) return this.model.forward({ inputIds: batch.inputIds, labels: batch.labels, cuSeqlens, outputMtp: false }).loss!;
    const labels = batch.labels.map((r) => [...r.slice(1), -100]);
    return this.model.forwardMtp({ inputIds: batch.inputIds, labels, cuSeqlens }).loss;
  }

  /**
   * Mean next-token loss over the evaluation rows' targets, without gradients (batches of batchSize
   * rows, each batch's mean weighted by its target count).
   */
  async evaluate(): Promise<number> {
    return evaluationLoss(this.model, this.data, this.options.batchSize);
  }

  /** Writes `OUT/checkpoint-<step>/` (model or LoRA adapter, optimizer, trainer state). */
  async saveCheckpoint(): Promise<string> {
    const o = this.options;
    if (o.outDir === null) throw new Error('Trainer.saveCheckpoint: no outDir');
    const optimizerState = this.optimizer.stateDict();
    const dir = await saveCheckpoint(
      o.outDir,
      this.model,
      optimizerState,
      this.names,
      { step: this.step, dataPosition: this.dataPosition, settings: this.settings, hyperparameters: this.hyperparameters },
      {
        tokenizerFrom: o.tokenizerFrom,
        masters: this.separateMasters(),
        loraAdapter: this.lora ? { baseModelNameOrPath: o.baseModelNameOrPath ?? null } : undefined,
      },
    ).finally(() => disposeStateDict(optimizerState));
    // Older checkpoints go only once the new one is whole.
    const deleted = o.saveTotalLimit > 0 ? await pruneCheckpoints(o.outDir, o.saveTotalLimit) : [];
    o.onCheckpoint?.(dir, this.step, deleted);
    return dir;
  }

  /** Releases the optimizer state and the f32 masters of bf16 weights (not the model). */
  dispose(): void {
    this.optimizer.dispose();
    this.masters.forEach((m, i) => {
      if (m !== this.params[i]) m.dispose();
    });
  }
}

/**
 * Mean next-token loss of `model` over the data's evaluation rows, without gradients (batches of
 * `batchSize` rows, each batch's mean weighted by its target count); the model is left in training mode.
 */
export async function evaluationLoss(model: NemotronHForCausalLM, data: TrainingData, batchSize: number): Promise<number> {
  const rows = data.eval;
  if (!rows) throw new Error('evaluate: the data has no evaluation rows');
  const targets = data.evalTargets ?? null;
  let total = 0;
  let count = 0;
  model.eval();
  try {
    for (let i = 0; i < rows.length; i += batchSize) {
      const batch = rowBatch(
        rows.slice(i, i + batchSize),
        rows.slice(i, i + batchSize).map((_, j) => targets?.[i + j] ?? null),
      );
      if (batch.targetCount === 0) continue;
      const loss = noGrad(() => model.forward({ inputIds: batch.inputIds, labels: batch.labels, cuSeqlens: batch.cuSeqlens ?? undefined }).loss!);
      total += (await loss.item()) * batch.targetCount;
      count += batch.targetCount;
      loss.dispose();
    }
  } finally {
    model.train();
  }
  return total / Math.max(count, 1);
}
