/**
 * The parallel trainer's updates against the one-device Trainer on the MTP fixture (the MTP loss
 * through pipeline stages and replicas) and the MoE fixture (expert shards, alone and inside
 * pipeline stages): `ParallelModel.trainUpdate` — the one parallel update — with the Trainer's
 * micro-batches, weight-decay groups, clipping and schedule logs the same losses and gradient
 * norms and ends with the same weights.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, warmupCosineSchedule } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM, ParallelModel, type ParallelOptions } from '../src';
import { BlockSampler, noWeightDecayNames, parallelBatch, Trainer, type TrainingData } from '../src/train';
import { openFixture, relDiff } from './support/fixtures';
import { SAME_BACKEND, WORKER_DEVICES } from './support/workers';

const device = getCpuDevice();
const TOL = SAME_BACKEND ? 1e-5 : 1e-4;

/**
 * The Trainer's run on `fixtureName`, then the same updates through `ParallelModel.trainUpdate`
 * for each layout: per-step losses and gradient norms (clipping active) and the final lm_head.
 */
async function expectTrainerUpdates(fixtureName: string, layouts: readonly ParallelOptions[]): Promise<void> {
  const fixture = await openFixture(fixtureName);
  // Deterministic rows of odd length over the fixture's vocabulary.
  const rows = Array.from({ length: 6 }, (_, r) => Int32Array.from({ length: 9 }, (_, t) => (r * 37 + t * 11 + 5) % 256));
  const data: TrainingData = { train: new BlockSampler(rows, 3), eval: null, seqLen: 9 };
  const hyper = { steps: 3, batchSize: 2, gradAccum: 2, lr: 1e-2, warmup: 1, gradClip: 0.5, weightDecay: 0.5 };
  const reference = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
  const mtp = reference.mtp !== null;
  const trainer = new Trainer(reference, data, { ...hyper, outDir: null });
  const want = await trainer.train();
  expect(want.some((l) => l.grad_norm > hyper.gradClip)).toBe(true);
  const wantHead = await reference.lmHead.weight.toFloat32();
  trainer.dispose();
  reference.dispose();

  for (const options of layouts) {
    const pm = await ParallelModel.fromPretrained(fixture.dir, { device, localFilesOnly: true, devices: WORKER_DEVICES, ...options });
    try {
      await pm.setOptimizer({
        lr: hyper.lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weightDecay: hyper.weightDecay,
        noWeightDecay: noWeightDecayNames(pm.model),
      });
      const schedule = warmupCosineSchedule({ warmupSteps: hyper.warmup, totalSteps: hyper.steps, minRatio: 0 });
      let position = 0;
      for (let step = 0; step < hyper.steps; step++) {
        const batches = Array.from({ length: hyper.gradAccum }, () => {
          const b = parallelBatch(data.train.batch(position, hyper.batchSize), mtp);
          position += hyper.batchSize;
          return b;
        });
        const got = await pm.trainUpdate(batches, { lrScale: schedule(step), maxGradNorm: hyper.gradClip });
        expect({ options, step, loss: Math.abs(got.loss - want[step]!.loss) / want[step]!.loss <= TOL }).toEqual({ options, step, loss: true });
        expect({ options, step, norm: Math.abs(got.gradNorm - want[step]!.grad_norm) / want[step]!.grad_norm <= 10 * TOL }).toEqual({
          options,
          step,
          norm: true,
        });
      }
      await pm.syncWeights();
      expect(relDiff(await pm.model.lmHead.weight.toFloat32(), wantHead)).toBeLessThanOrEqual(10 * TOL);
    } finally {
      await pm.close();
    }
  }
}

describe('parallel training equals the one-device Trainer', () => {
  test('mtp_d2: pipeline stages, data-parallel replicas and both, with accumulation, clipping and weight decay', async () => {
    await expectTrainerUpdates('mtp_d2', [{ pipelineStages: 2, microbatches: 2 }, { dataParallel: 2 }, { pipelineStages: 2, dataParallel: 2 }]);
  }, 180_000);

  test('moe_group4_top2: expert shards alone and inside pipeline stages, with clipping and weight decay', async () => {
    await expectTrainerUpdates('moe_group4_top2', [{ expertParallel: 2 }, { pipelineStages: 2, expertParallel: 2, microbatches: 2 }]);
  }, 180_000);
});
