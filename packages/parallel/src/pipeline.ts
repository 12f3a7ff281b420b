/**
 * Pipeline parallelism on the host: the model's stages in workers (one device each), driven by
 * microbatch schedules. Forward (logits, loss), training (GPipe or 1F1B: loss on the last stage,
 * gradients flowing back stage by stage, accumulated over microbatches), and generation (prefill
 * and decode pipelined over microbatches, each stage holding its layers' share of the cache).
 * Activations travel worker → host → worker as transferred buffers.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import { checkBatch, concatRows, rowsTensor, sliceBatch, targetCount, type ParallelBatch } from './batch';
import type { TrainOptimizerOptions } from './gradient-ops';
import type { HostTensor } from './host-tensor';
import { scheduleOps, splitRows, type ScheduleName } from './schedules';
import type { NamedOptimizerState } from './optimizer-state';
import { planStages, stageOwns, type SplitOptions, type StagePlan } from './stage-plan';
import type { ForwardReply } from './stage-service';
import { startStageWorkers, type StageWorkerOptions } from './stage-workers';
import type { WorkerGroup } from './worker-group';

export interface PipelineOptions extends SplitOptions, StageWorkerOptions {}

export interface PipelineRunOptions {
  /** Microbatches the batch rows are cut into (default: as many as stages, at most one per row). */
  readonly microbatches?: number;
  /** Training schedule (default 1f1b). */
  readonly schedule?: ScheduleName;
}

export interface PipelineForwardResult {
  /** f32 [B, L, V]. */
  readonly logits: HostTensor;
  /** The batch loss (HF mean; with mtpLabels NeMo's main + MTP loss), or null without labels. */
  readonly loss: number | null;
}

export interface PipelineGenerateOptions {
  readonly inputIds: readonly (readonly number[])[];
  readonly attentionMask?: readonly (readonly number[])[];
  readonly maxNewTokens: number;
  /** Rows stop at these ids (default none); finished rows produce `padTokenId` until all are done. */
  readonly eosTokenIds?: readonly number[];
  readonly padTokenId?: number;
  readonly microbatches?: number;
}

export interface PipelineGenerateResult {
  /** Generated ids per row (greedy). */
  readonly tokens: number[][];
}

/** Bytes of tensors the host sent to and received from the workers. */
export interface TransferStats {
  readonly bytesSent: number;
  readonly bytesReceived: number;
}

interface Deferred<T> {
  readonly promise: Promise<T>;
  resolve(v: T): void;
}

function deferred<T>(): Deferred<T> {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export class PipelineParallel {
  private nextMb = 0;

  private constructor(
    readonly model: NemotronHForCausalLM,
    readonly plans: readonly StagePlan[],
    readonly group: WorkerGroup,
  ) {}

  /** Splits `model` (NeMo's splitter) and starts one worker per stage with that stage's weights. */
  static async fromModel(model: NemotronHForCausalLM, options: PipelineOptions): Promise<PipelineParallel> {
    const plans = planStages(model.config.numHiddenLayers, options, model.mtp !== null);
    const describe = (r: number) => `pipeline stage ${r} (layers ${plans[r]!.layers[0]}–${plans[r]!.layers.at(-1)})`;
    return new PipelineParallel(model, plans, await startStageWorkers(model, plans, options, describe));
  }

  get stages(): number {
    return this.plans.length;
  }

  get transferStats(): TransferStats {
    return { bytesSent: this.group.bytesSent, bytesReceived: this.group.bytesReceived };
  }

  /** Logits (and the loss with labels) of a batch, with no graph kept. */
  async forward(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<PipelineForwardResult> {
    const replies = await this.run(batch, false, options);
    return { logits: concatRows(replies.map((r) => r.logits!)), loss: sumLoss(replies) };
  }

  /** The batch loss only, with no graph kept: the logits (most of the bytes a forward moves) stay on the last stage. */
  async loss(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    if (!batch.labels && !batch.mtpLabels) throw new Error('loss: the batch has no labels');
    return sumLoss(await this.run(batch, false, options, false))!;
  }

  /**
   * Forward and backward of a batch through the schedule: gradients accumulate on every stage
   * (call {@link zeroGrad} between steps). Returns the batch loss.
   */
  async forwardBackward(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    if (!batch.labels && !batch.mtpLabels) throw new Error('forwardBackward: the batch has no labels');
    const replies = await this.run(batch, true, options);
    return sumLoss(replies)!;
  }

  private async run(batch: ParallelBatch, train: boolean, options: PipelineRunOptions, returnLogits = !train): Promise<ForwardReply[]> {
    const config = this.model.config;
    const [rows] = checkBatch(config, batch);
    const S = this.stages;
    const parts = splitRows(rows, options.microbatches ?? Math.min(S, rows));
    const M = parts.length;
    const count = targetCount(batch);
    const lossScale = 1 / Math.max(count, 1);
    const base = this.nextMb;
    this.nextMb += M;
    const mbs = parts.map(([start, n]) => sliceBatch(batch, start, n));
    const fwd = Array.from({ length: S }, () => Array.from({ length: M }, () => deferred<ForwardReply>()));
    const bwd = Array.from({ length: S }, () => Array.from({ length: M }, () => deferred<HostTensor[]>()));
    const schedule = options.schedule ?? '1f1b';
    const stageLoop = async (s: number) => {
      const plan = this.plans[s]!;
      const ops = train ? scheduleOps(schedule, S, M, s) : Array.from({ length: M }, (_, mb) => ({ kind: 'F' as const, mb }));
      for (const op of ops) {
        const mb = mbs[op.mb]!;
        const id = base + op.mb;
        if (op.kind === 'F') {
          const prev = s > 0 ? await fwd[s - 1]![op.mb]!.promise : null;
          const reply = await this.group.call<ForwardReply>(
            s,
            'forward',
            {
              mb: id,
              train,
              ids: plan.isFirst ? rowsTensor(mb.inputIds) : undefined,
              hidden: prev?.outputs?.[0],
              embeds: prev?.outputs?.slice(1),
              attentionMask: mb.attentionMask ?? null,
              cuSeqlens: mb.cuSeqlens ? [...mb.cuSeqlens] : null,
              ...(plan.isLast
                ? {
                    labels: mb.labels ? rowsTensor(mb.labels) : null,
                    mtpLabels: mb.mtpLabels ?? null,
                    mtpIds: mb.mtpLabels ? rowsTensor(mb.inputIds) : null,
                    lossScale,
                    returnLogits,
                  }
                : {}),
            },
            { step: `${train ? 'training ' : ''}forward of microbatch ${op.mb}` },
          );
          fwd[s]![op.mb]!.resolve(reply);
        } else {
          const grads = s < S - 1 ? await bwd[s + 1]![op.mb]!.promise : undefined;
          const reply = await this.group.call<{ grads: HostTensor[] }>(s, 'backward', { mb: id, grads }, { step: `backward of microbatch ${op.mb}` });
          bwd[s]![op.mb]!.resolve(reply.grads);
        }
      }
    };
    await Promise.all(Array.from({ length: S }, (_, s) => stageLoop(s)));
    return Promise.all(fwd[S - 1]!.map((d) => d.promise));
  }

  /** Every stage's accumulated gradients, by full-model name. */
  async gradients(): Promise<Map<string, HostTensor>> {
    const parts = await this.group.callAll<Record<string, HostTensor>>('gradients');
    return new Map(parts.flatMap((p) => Object.entries(p)));
  }

  /** Every stage's tensors (`names`, default all), by full-model name. */
  async weights(names?: readonly string[]): Promise<Map<string, HostTensor>> {
    const parts = await this.group.callAll<Record<string, HostTensor>>('weights', (s) =>
      names ? { names: names.filter((n) => stageOwns(this.plans[s]!, n)) } : null,
    );
    return new Map(parts.flatMap((p) => Object.entries(p)));
  }

  /** The parameters training updates (all, or only LoRA adapters), by full-model name. */
  async trainedWeights(): Promise<Map<string, HostTensor>> {
    const parts = await this.group.callAll<Record<string, HostTensor>>('weights', () => ({ trained: true }));
    return new Map(parts.flatMap((p) => Object.entries(p)));
  }

  /** Tensors replaced on the stages that own them (e.g. a resumed run's LoRA adapters). */
  async setWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.group.callAll('load', (s) => ({ tensors: Object.fromEntries([...tensors].filter(([n]) => stageOwns(this.plans[s]!, n))) }), {
      step: 'loading weights',
    });
  }

  /** Every stage's AdamW state, by full-model parameter name. */
  async optimizerState(): Promise<NamedOptimizerState> {
    const parts = await this.group.callAll<NamedOptimizerState>('optimizerState', () => null, { step: 'reading the optimizer state' });
    return { stepCount: parts[0]!.stepCount, params: Object.assign({}, ...parts.map((p) => p.params)) };
  }

  /** Each stage's AdamW state replaced by its parameters' part of `state` (a resumed run's). */
  async loadOptimizerState(state: NamedOptimizerState): Promise<void> {
    const unowned = Object.keys(state.params).find((n) => !this.plans.some((p) => stageOwns(p, n)));
    if (unowned !== undefined) throw new Error(`loadOptimizerState: no stage owns '${unowned}'`);
    await this.group.callAll(
      'loadOptimizerState',
      (s) => ({ stepCount: state.stepCount, params: Object.fromEntries(Object.entries(state.params).filter(([n]) => stageOwns(this.plans[s]!, n))) }),
      { step: 'loading the optimizer state' },
    );
  }

  /** The f32 masters of the stages' bf16 trained parameters (none for f32 weights), by full-model name. */
  async masterWeights(): Promise<Map<string, HostTensor>> {
    const parts = await this.group.callAll<Record<string, HostTensor>>('masterWeights', () => null, { step: 'reading the master weights' });
    return new Map(parts.flatMap((p) => Object.entries(p)));
  }

  /** A resumed run's f32 masters, each to the stage that owns it. */
  async loadMasterWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.group.callAll('loadMasterWeights', (s) => ({ tensors: Object.fromEntries([...tensors].filter(([n]) => stageOwns(this.plans[s]!, n))) }), {
      step: 'loading the master weights',
    });
  }

  /** LoRA dropout masks of training step `step` (the one-device trainer's reseeding). */
  async reseedDropout(step: number): Promise<void> {
    await this.group.callAll('reseedDropout', () => ({ step }));
  }

  async zeroGrad(): Promise<void> {
    await this.group.callAll('zeroGrad');
  }

  /** An AdamW per stage over the stage's parameters (the same update as one AdamW over the model). */
  async setOptimizer(options: TrainOptimizerOptions): Promise<void> {
    await this.group.callAll('optimizer', () => options);
  }

  /** The global gradient norm over every stage's parameters. */
  async gradientNorm(): Promise<number> {
    const parts = await this.group.callAll<number>('gradientSumOfSquares', () => null, { step: 'gradient norm' });
    return Math.sqrt(parts.reduce((a, b) => a + b, 0));
  }

  /** Every stage's gradients times `factor` (clipping, accumulation's mean). */
  async scaleGradients(factor: number): Promise<void> {
    await this.group.callAll('scaleGradients', () => ({ factor }), { step: 'gradient scaling' });
  }

  async step(lrScale = 1): Promise<void> {
    await this.group.callAll('step', () => ({ lrScale }), { step: 'optimizer step' });
  }

  /** One training step: zero the gradients, forward and backward through the schedule, update. */
  async trainStep(batch: ParallelBatch, options: PipelineRunOptions = {}): Promise<number> {
    await this.zeroGrad();
    const loss = await this.forwardBackward(batch, options);
    await this.step();
    return loss;
  }

  /**
   * Greedy generation, pipelined: the rows are cut into microbatches, each prefilled and decoded
   * through the stages in turn, so stage s works on one microbatch while stage s + 1 works on the
   * previous. Each stage caches only its own layers.
   */
  async generate(options: PipelineGenerateOptions): Promise<PipelineGenerateResult> {
    const batch: ParallelBatch = { inputIds: options.inputIds, attentionMask: options.attentionMask };
    const [rows, length] = checkBatch(this.model.config, batch);
    const maxNew = options.maxNewTokens;
    if (!Number.isInteger(maxNew) || maxNew < 1) throw new Error(`generate: maxNewTokens must be a positive integer, got ${maxNew}`);
    const eos = new Set(options.eosTokenIds ?? []);
    const pad = options.padTokenId ?? 0;
    const parts = splitRows(rows, options.microbatches ?? Math.min(this.stages, rows));
    const S = this.stages;
    const runMicrobatch = async ([start, n]: [number, number], index: number): Promise<number[][]> => {
      const mb = sliceBatch(batch, start, n);
      const id = this.nextMb++;
      const out: number[][] = Array.from({ length: n }, () => []);
      const finished = new Array<boolean>(n).fill(false);
      try {
        const through = async (method: 'prefill' | 'decode', first: Record<string, unknown>, step: string): Promise<number[]> => {
          let hidden: HostTensor | undefined;
          for (let s = 0; s < S; s++) {
            const args =
              s === 0
                ? { mb: id, ...first }
                : { mb: id, hidden, attentionMask: method === 'prefill' ? (mb.attentionMask ?? null) : undefined, capacity: length + maxNew };
            const reply = await this.group.call<{ hidden?: HostTensor; tokens?: number[] }>(s, method, args, { step: `${step} of microbatch ${index}` });
            if (s === S - 1) return reply.tokens!;
            hidden = reply.hidden;
          }
          throw new Error('unreachable');
        };
        let tokens = await through('prefill', { ids: rowsTensor(mb.inputIds), attentionMask: mb.attentionMask ?? null, capacity: length + maxNew }, 'prefill');
        for (let step = 0; ; step++) {
          tokens = tokens.map((t, b) => (finished[b] ? pad : t));
          tokens.forEach((t, b) => {
            out[b]!.push(t);
            if (eos.has(t)) finished[b] = true;
          });
          if (step + 1 >= maxNew || finished.every(Boolean)) break;
          tokens = await through('decode', { ids: tokens }, `decode step ${step + 1}`);
        }
      } finally {
        if (!this.group.failed) await Promise.all(Array.from({ length: S }, (_, s) => this.group.call(s, 'release', { mb: id })));
      }
      return out;
    };
    const results = await Promise.all(parts.map(runMicrobatch));
    const tokens = results.flat();
    // Rows of a microbatch that finished early are padded to the batch's length.
    const longest = Math.max(...tokens.map((r) => r.length));
    for (const row of tokens) while (row.length < longest) row.push(pad);
    return { tokens };
  }

  /** Terminates every worker. */
  /** The end of a run: workers free their tensors, then are terminated one after another. */
  shutdown(): Promise<void> {
    return this.group.shutdown();
  }

  /** Terminates every worker now. */
  close(): void {
    this.group.close();
  }
}

function sumLoss(replies: readonly ForwardReply[]): number | null {
  if (replies.some((r) => r.loss === null || r.loss === undefined)) return null;
  return replies.reduce((s, r) => s + r.loss!, 0);
}
