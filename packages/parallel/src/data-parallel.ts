/**
 * Data parallelism: N replicas of the whole model in workers (each a one-stage split), each
 * running forward and backward on its share of the batch rows with the loss scaled by the whole
 * batch's target count, so the replicas' gradients sum to the one-device gradient. Gradients are
 * all-reduced in buckets (DDP's reverse parameter order, about `bucketBytes` each): every bucket
 * is gathered from all replicas, summed in rank order, and sent back. With `allReduce` a replica
 * sends each bucket during its backward as soon as the bucket's gradients are final (gradient
 * hooks), so gathering and summing overlap the rest of the backward; otherwise (gradient
 * accumulation's earlier micro-batches) {@link DataParallel.allReduceGradients} runs after it. Then every replica
 * takes the same AdamW step, so the replicas stay identical.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import { checkBatch, rowsTensor, sliceBatch, targetCount, type ParallelBatch } from './batch';
import type { TrainOptimizerOptions } from './gradient-ops';
import { GradientAllReduce, type GradientBucket } from './all-reduce';
import type { HostTensor } from './host-tensor';
import type { NamedOptimizerState } from './optimizer-state';
import type { TransferStats } from './pipeline';
import { splitRows } from './schedules';
import { planStages } from './stage-plan';
import type { ForwardReply } from './stage-service';
import { startStageWorkers, type StageWorkerOptions } from './stage-workers';
import type { WorkerGroup } from './worker-group';

export interface DataParallelOptions extends StageWorkerOptions {
  /** Number of replicas (workers). */
  readonly replicas: number;
  /** Gradient bytes per all-reduce bucket (default 25 MiB, DDP's default). */
  readonly bucketBytes?: number;
}

export class DataParallel {
  private nextMb = 0;
  private readonly allReduce: GradientAllReduce;

  private constructor(
    readonly model: NemotronHForCausalLM,
    readonly group: WorkerGroup,
    bucketBytes: number,
  ) {
    this.allReduce = new GradientAllReduce(group, [Array.from({ length: group.size }, (_, r) => r)], bucketBytes);
  }

  static async fromModel(model: NemotronHForCausalLM, options: DataParallelOptions): Promise<DataParallel> {
    const { replicas } = options;
    if (!Number.isInteger(replicas) || replicas < 1) throw new Error(`dataParallel: replicas must be a positive integer, got ${replicas}`);
    const whole = planStages(model.config.numHiddenLayers, { stages: 1 }, model.mtp !== null)[0]!;
    const plans = Array.from({ length: replicas }, () => whole);
    const group = await startStageWorkers(model, plans, options, (r) => `data-parallel replica ${r}`);
    return new DataParallel(model, group, options.bucketBytes ?? 25 * 2 ** 20);
  }

  get replicas(): number {
    return this.group.size;
  }

  get transferStats(): TransferStats {
    return { bytesSent: this.group.bytesSent, bytesReceived: this.group.bytesReceived };
  }

  /**
   * Forward and backward of each replica's rows. Returns the batch loss. Without `allReduce` the
   * gradients stay local (accumulating) until {@link allReduceGradients}; with it they are summed
   * over the replicas before this returns, each bucket as soon as every replica's backward has
   * finished its gradients (DDP's overlap: the gather and the sum run while the backward goes on;
   * a batch with fewer rows than replicas all-reduces after the backward instead).
   */
  async forwardBackward(batch: ParallelBatch, options: { allReduce?: boolean } = {}): Promise<number> {
    const [rows] = checkBatch(this.model.config, batch);
    if (!batch.labels && !batch.mtpLabels) throw new Error('forwardBackward: the batch has no labels');
    const shards = splitRows(rows, Math.min(this.replicas, rows));
    const lossScale = 1 / Math.max(targetCount(batch), 1);
    const overlap = options.allReduce === true && shards.length === this.replicas;
    const buckets = overlap ? await this.allReduce.bucketsOf(0) : null;
    const reduction = buckets ? this.allReduce.reduction(0, buckets) : null;
    const losses = await Promise.all(
      shards.map(async ([start, n], r) => {
        const mb = sliceBatch(batch, start, n);
        const id = this.nextMb++;
        const reply = await this.group.call<ForwardReply>(
          r,
          'forward',
          {
            mb: id,
            train: true,
            ids: rowsTensor(mb.inputIds),
            attentionMask: mb.attentionMask ?? null,
            cuSeqlens: mb.cuSeqlens ? [...mb.cuSeqlens] : null,
            labels: mb.labels ? rowsTensor(mb.labels) : null,
            mtpLabels: mb.mtpLabels ?? null,
            mtpIds: mb.mtpLabels ? rowsTensor(mb.inputIds) : null,
            lossScale,
          },
          { step: `forward of rows ${start}–${start + n - 1}` },
        );
        await this.group.call(
          r,
          'backward',
          { mb: id, buckets },
          { step: `backward of rows ${start}–${start + n - 1}`, onPart: reduction ? (part) => reduction.receive(r, part as GradientBucket) : undefined },
        );
        return reply.loss!;
      }),
    );
    if (reduction) await reduction.done();
    else if (options.allReduce) await this.allReduceGradients();
    // Replicas without rows (a batch smaller than the replica count) contribute no gradient.
    return losses.reduce((a, b) => a + b, 0);
  }

  /** Sums every replica's gradients, bucket by bucket, and gives each replica the sum (after the backward). */
  async allReduceGradients(): Promise<void> {
    await this.allReduce.run();
  }

  /** Replica 0's gradients (after the all-reduce, every replica's), by name. */
  async gradients(): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(0, 'gradients')));
  }

  /** Replica `rank`'s tensors (`names`, default all), by name. */
  async weights(rank = 0, names?: readonly string[]): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(rank, 'weights', names ? { names } : null)));
  }

  /** The parameters training updates (all, or only LoRA adapters) of replica 0, by name. */
  async trainedWeights(): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(0, 'weights', { trained: true })));
  }

  /** Every replica's tensors `tensors` replaced (e.g. a resumed run's LoRA adapters). */
  async setWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    // Sending moves a tensor's buffer: each replica gets its own copy.
    await this.group.callAll('load', () => ({ tensors: Object.fromEntries([...tensors].map(([n, t]) => [n, t.clone()])) }), { step: 'loading weights' });
  }

  /** Replica 0's AdamW state (every replica holds the same), by parameter name. */
  optimizerState(): Promise<NamedOptimizerState> {
    return this.group.call<NamedOptimizerState>(0, 'optimizerState', null, { step: 'reading the optimizer state' });
  }

  /** Every replica's AdamW state replaced by `state` (a resumed run's). */
  async loadOptimizerState(state: NamedOptimizerState): Promise<void> {
    const copy = (): NamedOptimizerState => ({
      stepCount: state.stepCount,
      params: Object.fromEntries(Object.entries(state.params).map(([n, s]) => [n, { step: s.step, expAvg: s.expAvg.clone(), expAvgSq: s.expAvgSq.clone() }])),
    });
    await this.group.callAll('loadOptimizerState', copy, { step: 'loading the optimizer state' });
  }

  /** Replica 0's f32 masters of its bf16 trained parameters (none for f32 weights; every replica holds the same), by name. */
  async masterWeights(): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(0, 'masterWeights', null, { step: 'reading the master weights' })));
  }

  /** A resumed run's f32 masters, into every replica. */
  async loadMasterWeights(tensors: ReadonlyMap<string, HostTensor>): Promise<void> {
    await this.group.callAll('loadMasterWeights', () => ({ tensors: Object.fromEntries([...tensors].map(([n, t]) => [n, t.clone()])) }), {
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

  /** An AdamW per replica (`noWeightDecay` names a group without decay). */
  async setOptimizer(options: TrainOptimizerOptions): Promise<void> {
    await this.group.callAll('optimizer', () => options);
  }

  /** The global gradient norm: replica 0's (after {@link allReduceGradients} every replica holds the sum). */
  async gradientNorm(): Promise<number> {
    return Math.sqrt(await this.group.call<number>(0, 'gradientSumOfSquares', null, { step: 'gradient norm' }));
  }

  /** Every replica's gradients times `factor` (clipping, accumulation's mean). */
  async scaleGradients(factor: number): Promise<void> {
    await this.group.callAll('scaleGradients', () => ({ factor }), { step: 'gradient scaling' });
  }

  async step(lrScale = 1): Promise<void> {
    await this.group.callAll('step', () => ({ lrScale }), { step: 'optimizer step' });
  }

  /** One training step: zero, forward/backward on every replica with the all-reduce overlapped, update. Returns the batch loss. */
  async trainStep(batch: ParallelBatch): Promise<number> {
    await this.zeroGrad();
    const loss = await this.forwardBackward(batch, { allReduce: true });
    await this.step();
    return loss;
  }

  /** The end of a run: workers free their tensors, then are terminated one after another. */
  shutdown(): Promise<void> {
    return this.group.shutdown();
  }

  /** Terminates every worker now. */
  close(): void {
    this.group.close();
  }
}
