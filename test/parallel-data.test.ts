/**
 * Data parallelism against one device on the fixtures: two replicas in workers (CPU backend; see
 * NEMOTRON_TEST_WORKER_DEVICE) with a bucketed gradient all-reduce give one device's gradients for
 * the same global batch (the all-reduce after the backward, or overlapped with it: each bucket sent
 * by gradient hooks as soon as it is final), and the same losses and weights over a few AdamW steps.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { AdamW, backward, getCpuDevice } from '@nemotron-ts/kernels';
import { DataParallel, type CallOptions, type HostTensor } from '@nemotron-ts/parallel';
import { expectLoss, relDiff } from './support/fixtures';
import { loadFixtureModel, LOSS_TOL, oneDeviceTrainStep, WORKER_DEVICES } from './support/workers';

const device = getCpuDevice();
const open: DataParallel[] = [];
afterAll(() => open.forEach((p) => p.close()));

describe('data parallel', () => {
  test("moe_flat_rsf2.5: 2 replicas, all-reduced in small buckets, give one device's gradients", async () => {
    const { fixture, model } = await loadFixtureModel('moe_flat_rsf2.5', device);
    const { inputs } = fixture;
    model.train();
    const { loss } = model.forward({ inputIds: inputs.input_ids, labels: inputs.labels });
    backward(loss!);
    const dp = await DataParallel.fromModel(model, { replicas: 2, devices: WORKER_DEVICES, bucketBytes: 64 * 1024 });
    open.push(dp);
    const got = await dp.forwardBackward({ inputIds: inputs.input_ids, labels: inputs.labels });
    expectLoss('loss', got, fixture.scalars.loss!);
    await dp.allReduceGradients();
    for (const rank of [0, 1]) {
      const grads = new Map(Object.entries(await dp.group.call<Record<string, import('@nemotron-ts/parallel').HostTensor>>(rank, 'gradients')));
      for (const [name, p] of model.namedParameters()) {
        if (!p.grad) continue;
        expect({ rank, name, ok: relDiff(grads.get(name)!.toFloat32(), await p.grad.toFloat32()) <= 1e-4 }).toEqual({ rank, name, ok: true });
      }
    }
    dp.close();
    model.dispose();
  });

  test('moe_flat_rsf2.5: the all-reduce overlapped with the backward sends every bucket during it and sums exactly as after it', async () => {
    const { fixture, model } = await loadFixtureModel('moe_flat_rsf2.5', device);
    const batch = { inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels };
    const dp = await DataParallel.fromModel(model, { replicas: 2, devices: WORKER_DEVICES, bucketBytes: 64 * 1024 });
    open.push(dp);
    const gradients = async () => new Map(Object.entries(await dp.group.call<Record<string, HostTensor>>(1, 'gradients')));
    await dp.forwardBackward(batch);
    await dp.allReduceGradients();
    const after = await gradients();
    await dp.zeroGrad();
    // Which buckets each replica sent before its backward answered.
    const sent: number[][] = [[], []];
    const answered = [false, false];
    const call = dp.group.call.bind(dp.group);
    dp.group.call = (<T>(rank: number, method: string, args?: unknown, options: CallOptions = {}) => {
      const onPart = options.onPart;
      const wrapped = onPart
        ? { ...options, onPart: (part: unknown) => (answered[rank] || sent[rank]!.push((part as { bucket: number }).bucket), onPart(part)) }
        : options;
      const reply = call<T>(rank, method, args, wrapped);
      if (method === 'backward') void reply.then(() => (answered[rank] = true));
      return reply;
    }) as typeof dp.group.call;
    await dp.forwardBackward(batch, { allReduce: true });
    const buckets = Math.max(...sent.flat()) + 1;
    expect(buckets).toBeGreaterThan(2);
    for (const s of sent) expect([...s].sort((a, b) => a - b)).toEqual(Array.from({ length: buckets }, (_, b) => b));
    const overlapped = await gradients();
    expect([...overlapped.keys()].sort()).toEqual([...after.keys()].sort());
    for (const [name, g] of after) expect({ name, same: [...overlapped.get(name)!.data].every((v, i) => v === g.data[i]) }).toEqual({ name, same: true });
    dp.close();
    model.dispose();
  });

  test("dense_f32: three AdamW steps on 2 replicas give one device's losses; the replicas stay identical", async () => {
    const { fixture, model } = await loadFixtureModel('dense_f32', device);
    const batch = { inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels };
    const dp = await DataParallel.fromModel(model, { replicas: 2, devices: WORKER_DEVICES });
    open.push(dp);
    const adam = { lr: 1e-2, weightDecay: 0.1 };
    await dp.setOptimizer(adam);
    model.train();
    const optimizer = new AdamW(model.parameters(), adam);
    const losses: number[][] = [];
    for (let step = 0; step < 3; step++) {
      const want = await oneDeviceTrainStep(model, optimizer, batch);
      const got = await dp.trainStep(batch);
      losses.push([want, got]);
      expect(Math.abs(got - want)).toBeLessThan(LOSS_TOL);
    }
    expect(losses[2]![0]!).toBeLessThan(losses[0]![0]!);
    const [w0, w1] = [await dp.weights(0), await dp.weights(1)];
    let worst = 0;
    for (const [name, t] of model.namedParameters()) {
      expect([...w0.get(name)!.data]).toEqual([...w1.get(name)!.data]);
      worst = Math.max(worst, relDiff(w0.get(name)!.toFloat32(), await t.toFloat32()));
    }
    console.log(JSON.stringify({ test: 'dp adamw', losses, worst }));
    expect(worst).toBeLessThan(1e-4);
    dp.close();
    model.dispose();
  });
});
