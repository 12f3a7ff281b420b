/**
 * Expert parallelism against one device on the MoE fixtures: the routed experts sharded over
 * workers (CPU backend; see NEMOTRON_TEST_WORKER_DEVICE), tokens dispatched and combined through
 * the host. Logits and loss of the batch and the packed row.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { backward, getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { ExpertParallel } from '@nemotron-ts/parallel';
import { expectedArray, expectLoss, expectRel, relDiff } from './support/fixtures';
import { LOGITS_TOL, loadFixtureModel, WORKER_DEVICES } from './support/workers';
import { rejection } from '@nemotron-ts/parallel/testing';

const device = getCpuDevice();
const open: ExpertParallel[] = [];
afterAll(() => open.forEach((p) => p.close()));

describe('expert parallel', () => {
  for (const [name, ep] of [
    ['moe_group4_top2', 2],
    ['hybrid_bf16', 4],
  ] as const) {
    test(`${name}: experts over ${ep} workers equal one device`, async () => {
      const { fixture, model } = await loadFixtureModel(name, device);
      const { inputs } = fixture;
      const parallel = await ExpertParallel.fromModel(model, { expertParallel: ep, devices: WORKER_DEVICES });
      open.push(parallel);
      const one = noGrad(() => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels }));
      const got = await parallel.forward({ inputIds: inputs.input_ids, labels: inputs.labels });
      const rel = relDiff(got.logits.toFloat32(), await one.logits.toFloat32());
      console.log(JSON.stringify({ test: 'ep logits vs one device', name, ep, rel, bytes: parallel.transferStats }));
      expect(rel).toBeLessThanOrEqual(LOGITS_TOL * 10);
      expectRel('logits vs fixture', got.logits.toFloat32(), await expectedArray(fixture, 'logits'));
      expectLoss('loss', got.loss!, fixture.scalars.loss!);
      const packed = await parallel.forward({ inputIds: [inputs.packed.input_ids], cuSeqlens: inputs.packed.cu_seqlens, labels: [inputs.packed.labels] });
      expectRel('packed logits', packed.logits.toFloat32(), await expectedArray(fixture, 'packed_logits'));
      expectLoss('packed loss', packed.loss!, fixture.scalars.packed_loss!);
      parallel.close();
      model.dispose();
    });
  }

  test("moe_group4_top2: backward through the dispatch gives one device's gradients (host parameters and sharded experts)", async () => {
    const { fixture, model } = await loadFixtureModel('moe_group4_top2', device);
    const { inputs } = fixture;
    model.train();
    const { loss } = model.forward({ inputIds: inputs.input_ids, labels: inputs.labels });
    backward(loss!);
    const want = new Map<string, Float32Array>();
    for (const [name, p] of model.namedParameters()) if (p.grad) want.set(name, await p.grad.toFloat32());
    model.zeroGrad();
    const parallel = await ExpertParallel.fromModel(model, { expertParallel: 2, devices: WORKER_DEVICES });
    open.push(parallel);
    const got = await parallel.forwardBackward({ inputIds: inputs.input_ids, labels: inputs.labels });
    expectLoss('loss', got, fixture.scalars.loss!);
    const experts = await parallel.expertGradients();
    let worst = 0;
    for (const [name, w] of want) {
      const g = name.includes('.experts.') ? experts.get(name)!.toFloat32() : await model.getTensor(name).grad!.toFloat32();
      const rel = relDiff(g, w);
      worst = Math.max(worst, rel);
      expect({ name, ok: rel <= 1e-4 }).toEqual({ name, ok: true });
    }
    console.log(JSON.stringify({ test: 'ep gradients vs one device', worst }));
    await parallel.shutdown();
    model.dispose();
  });

  test('an expert-parallel size that does not divide n_routed_experts is refused', async () => {
    const { model } = await loadFixtureModel('moe_group4_top2', device);
    expect((await rejection(ExpertParallel.fromModel(model, { expertParallel: 3 }))).message).toContain(
      `n_routed_experts (${model.config.nRoutedExperts}) must be divisible by the expert-parallel size (3)`,
    );
    model.dispose();
  });
});
