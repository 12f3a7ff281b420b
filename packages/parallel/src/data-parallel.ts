/**
 * Data parallelism: N replicas of the whole model in workers (each a one-stage split), each
 * running forward and backward on its share of the batch rows with the loss scaled by the whole
 * batch's target count, so the replicas' gradients sum to the one-device gradient. Gradients are
 * all-reduced in buckets (DDP's reverse parameter order, about `bucketBytes` each): every bucket
 * is gathered from all replicas, summed in rank order, and sent back, the next bucket's gather
 * already queued while one is summed. Then every replica takes the same AdamW step, so the
 * replicas stay identical.
 */
import type { NemotronHForCausalLM } from '@nemotron-ts/core';
import { checkBatch, rowsTensor, sliceBatch, targetCount, type ParallelBatch } from './batch';
import type { TrainOptimizerOptions } from './gradient-ops';
import { GradientAllReduce } from './all-reduce';
import type { HostTensor } from './host-tensor';
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

  /** Forward and backward of each replica's rows; gradients stay local until {@link allReduceGradients}. Returns the batch loss. */
  async forwardBackward(batch: ParallelBatch): Promise<number> {
    const [rows] = checkBatch(this.model.config, batch);
    if (!batch.labels && !batch.mtpLabels) throw new Error('forwardBackward: the batch has no labels');
    const shards = splitRows(rows, Math.min(this.replicas, rows));
    const lossScale = 1 / Math.max(targetCount(batch), 1);
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
        await this.group.call(r, 'backward', { mb: id }, { step: `backward of rows ${start}–${start + n - 1}` });
        return reply.loss!;
      }),
    );
    // Replicas without rows (a batch smaller than the replica count) contribute no gradient.
    return losses.reduce((a, b) => a + b, 0);
  }

  /** Sums every replica's gradients, bucket by bucket, and gives each replica the sum. */
  async allReduceGradients(): Promise<void> {
    await this.allReduce.run();
  }

  /** Replica 0's gradients (after the all-reduce, every replica's), by name. */
  async gradients(): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(0, 'gradients')));
  }

  async weights(rank = 0): Promise<Map<string, HostTensor>> {
    return new Map(Object.entries(await this.group.call<Record<string, HostTensor>>(rank, 'weights')));
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

  /** One training step: zero, forward/backward on every replica, all-reduce, update. Returns the batch loss. */
  async trainStep(batch: ParallelBatch): Promise<number> {
    await this.zeroGrad();
    const loss = await this.forwardBackward(batch);
    await this.allReduceGradients();
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
