/**
 * `ParallelModel.fromPretrained(path, { pipelineStages | expertParallel | dataParallel, devices })`:
 * the same forward as one device in every mode, training entry points that move the loaded model's
 * weights after `syncWeights` (PP × EP composed too), and the refusals.
 */
import { describe, expect, test } from 'bun:test';
import { getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { rejection } from '@nemotron-ts/parallel/testing';
import { ParallelModel } from '../src';
import { openFixture, relDiff } from './support/fixtures';
import { LOGITS_TOL, LOSS_TOL, WORKER_DEVICES } from './support/workers';

const device = getCpuDevice();

describe('ParallelModel', () => {
  test("every mode gives one device's logits; training in every mode changes the synced weights", async () => {
    const fixture = await openFixture('moe_flat_rsf2.5');
    const batch = { inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels };
    const single = await ParallelModel.fromPretrained(fixture.dir, { device, localFilesOnly: true });
    expect(single.mode).toBe('single');
    const want = await single.forward(batch);
    for (const options of [{ pipelineStages: 2 }, { expertParallel: 2 }, { dataParallel: 2 }, { pipelineStages: 2, expertParallel: 2 }]) {
      const pm = await ParallelModel.fromPretrained(fixture.dir, { device, localFilesOnly: true, devices: WORKER_DEVICES, ...options });
      expect(pm.sizes).toEqual({ pipelineStages: 1, expertParallel: 1, dataParallel: 1, ...options });
      const got = await pm.forward(batch);
      expect({
        options,
        rel: relDiff(got.logits.toFloat32(), want.logits.toFloat32()) <= LOGITS_TOL,
        loss: Math.abs(got.loss! - want.loss!) < LOSS_TOL,
      }).toEqual({ options, rel: true, loss: true });
      {
        await pm.setOptimizer({ lr: 1e-2 });
        const before = await pm.model.getTensor('lm_head.weight').toFloat32();
        const experts = 'model.layers.2.mixer.experts.up_proj';
        const expertsBefore = await pm.model.getTensor(experts).toFloat32();
        const { loss: first } = await pm.trainUpdate([batch]);
        const { loss: second } = await pm.trainUpdate([batch]);
        expect(second).toBeLessThan(first);
        await pm.syncWeights();
        expect(relDiff(await pm.model.getTensor('lm_head.weight').toFloat32(), before)).toBeGreaterThan(1e-3);
        expect(relDiff(await pm.model.getTensor(experts).toFloat32(), expertsBefore)).toBeGreaterThan(1e-4);
        const after = noGrad(() => pm.model.forward(batch));
        expect(await after.loss!.item()).toBeLessThan(second);
      }
      await pm.close();
      expect(pm.model.isDisposed).toBe(true);
    }
    await single.close();
  });

  test('bad sizes and a device list that does not match the worker count are refused', async () => {
    const dir = (await openFixture('dense_f32')).dir;
    expect(
      (await rejection(ParallelModel.fromPretrained(dir, { device, pipelineStages: 2, dataParallel: 2, devices: ['cpu', 'cpu', 'cpu'] }))).message,
    ).toContain('devices: 3 given (cpu, cpu, cpu) for 4 workers');
    expect((await rejection(ParallelModel.fromPretrained(dir, { device, expertParallel: 0 }))).message).toContain(
      'expert parallel size must be a positive integer, got 0',
    );
    expect((await rejection(ParallelModel.fromPretrained(dir, { device, expertParallel: 2 }))).message).toContain('the model has no MoE layer');
  });
});
