/**
 * Pipeline parallelism against one device on the golden fixtures: stages in Bun Workers on the
 * CPU backend (NEMOTRON_TEST_WORKER_DEVICE overrides), the unsplit model on the CPU backend here.
 * Logits and losses (batch and packed row), gradients through GPipe and 1F1B, the MTP case,
 * greedy generation (the case's prompt and the padded batch), and a few AdamW steps.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { AdamW, backward, getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { PipelineParallel, type PipelineParallel as Pipeline } from '@nemotron-ts/parallel';
import type { NemotronHForCausalLM } from '../src';
import { expectedArray, expectedInts, expectLoss, expectRel, mtpScalars, relDiff } from './support/fixtures';
import { LOGITS_TOL, loadFixtureModel, LOSS_TOL, oneDeviceTrainStep, WORKER_DEVICES } from './support/workers';
import { rejection } from '@nemotron-ts/parallel/testing';

const device = getCpuDevice();
const open: Pipeline[] = [];
afterAll(() => open.forEach((p) => p.close()));

const load = (name: string) => loadFixtureModel(name, device);

async function pipeline(model: NemotronHForCausalLM, stages: number): Promise<Pipeline> {
  const p = await PipelineParallel.fromModel(model, { stages, devices: WORKER_DEVICES });
  open.push(p);
  return p;
}

/** Single-device gradients by name (f32 host arrays). */
async function referenceGradients(model: NemotronHForCausalLM, run: () => { loss: import('@nemotron-ts/kernels').Tensor }): Promise<Map<string, Float32Array>> {
  model.zeroGrad();
  const out = run();
  backward(out.loss);
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) if (p.grad) grads.set(name, await p.grad.toFloat32());
  model.zeroGrad();
  return grads;
}

async function expectGradientsEqual(got: Map<string, import('@nemotron-ts/parallel').HostTensor>, want: Map<string, Float32Array>): Promise<number> {
  expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
  let worst = 0;
  for (const [name, w] of want) {
    const rel = relDiff(got.get(name)!.toFloat32(), w);
    expect({ name, ok: rel <= 1e-4 }).toEqual({ name, ok: true });
    worst = Math.max(worst, rel);
  }
  return worst;
}

describe('pipeline parallel forward', () => {
  for (const [name, stages] of [
    ['dense_f32', 2],
    ['hybrid_bf16', 3],
    ['moe_flat_rsf2.5', 3],
  ] as const) {
    test(`${name}: ${stages} stages equal one device (batch and packed row)`, async () => {
      const { fixture, model } = await load(name);
      const { inputs } = fixture;
      const p = await pipeline(model, stages);
      expect(p.plans.map((s) => s.layers.length).reduce((a, b) => a + b)).toBe(model.config.numHiddenLayers);
      const one = noGrad(() => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels }));
      const got = await p.forward({ inputIds: inputs.input_ids, labels: inputs.labels }, { microbatches: 2 });
      expect(got.logits.shape).toEqual(one.logits.shape as number[]);
      expect(relDiff(got.logits.toFloat32(), await one.logits.toFloat32())).toBeLessThanOrEqual(LOGITS_TOL);
      expectRel('logits vs fixture', got.logits.toFloat32(), await expectedArray(fixture, 'logits'));
      expectLoss('loss', got.loss!, fixture.scalars.loss!);
      expect(Math.abs(got.loss! - (await one.loss!.item()))).toBeLessThan(LOSS_TOL);
      const sent = p.transferStats.bytesReceived;
      expect(Math.abs((await p.loss({ inputIds: inputs.input_ids, labels: inputs.labels })) - got.loss!)).toBeLessThan(1e-6);
      // Without the logits only the stages' hidden states come back.
      expect(p.transferStats.bytesReceived - sent).toBeLessThan(got.logits.byteLength);

      const packed = await p.forward({ inputIds: [inputs.packed.input_ids], cuSeqlens: inputs.packed.cu_seqlens, labels: [inputs.packed.labels] });
      expectRel('packed logits', packed.logits.toFloat32(), await expectedArray(fixture, 'packed_logits'));
      expectLoss('packed loss', packed.loss!, fixture.scalars.packed_loss!);
      p.close();
      model.dispose();
    });
  }
});

describe('pipeline parallel training', () => {
  test('moe_group4_top2: gradients through GPipe (2 stages) and 1F1B (3 stages) equal one device', async () => {
    const { fixture, model } = await load('moe_group4_top2');
    const { inputs } = fixture;
    model.train();
    const want = await referenceGradients(
      model,
      () => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels }) as { loss: import('@nemotron-ts/kernels').Tensor },
    );
    for (const [stages, schedule] of [
      [2, 'gpipe'],
      [3, '1f1b'],
    ] as const) {
      const p = await pipeline(model, stages);
      const loss = await p.forwardBackward({ inputIds: inputs.input_ids, labels: inputs.labels }, { microbatches: 2, schedule });
      expectLoss(`loss ${schedule}`, loss, fixture.scalars.loss!);
      await expectGradientsEqual(await p.gradients(), want);
      // The fixture's global gradient norm (every tensor but the MTP head's).
      let sq = 0;
      for (const g of (await p.gradients()).values()) for (const v of g.toFloat32()) sq += v * v;
      expect(Math.abs(Math.sqrt(sq) - fixture.scalars.grad_global_l2!) / fixture.scalars.grad_global_l2!).toBeLessThan(1e-4);
      p.close();
    }
    model.dispose();
  });

  test('mtp_d2: the MTP loss through 3 stages (embeddings built on the first, head on the last) equals one device', async () => {
    const { fixture, model } = await load('mtp_d2');
    const mtp = fixture.inputs.mtp!;
    const scalars = (await mtpScalars(fixture))!;
    model.train();
    const want = await referenceGradients(model, () => model.forwardMtp({ inputIds: mtp.input_ids, labels: mtp.labels }));
    const p = await pipeline(model, 3);
    const loss = await p.forwardBackward({ inputIds: mtp.input_ids, mtpLabels: mtp.labels }, { microbatches: 2 });
    expectLoss('mtp total loss', loss, scalars.main.total_loss);
    await expectGradientsEqual(await p.gradients(), want);
    await p.zeroGrad();
    const packed = await p.forwardBackward({ inputIds: [mtp.packed.input_ids], cuSeqlens: mtp.packed.cu_seqlens, mtpLabels: [mtp.packed.labels] });
    expectLoss('mtp packed total loss', packed, scalars.packed.total_loss);
    p.close();
    model.dispose();
  });

  test("dense_f32: three AdamW steps through 2 stages give one device's losses and weights", async () => {
    const { fixture, model } = await load('dense_f32');
    const { inputs } = fixture;
    const batch = { inputIds: inputs.input_ids, labels: inputs.labels };
    const p = await pipeline(model, 2);
    const adam = { lr: 1e-2, weightDecay: 0.1 };
    await p.setOptimizer(adam);
    model.train();
    const optimizer = new AdamW(model.parameters(), adam);
    for (let step = 0; step < 3; step++) {
      const want = await oneDeviceTrainStep(model, optimizer, batch);
      const got = await p.trainStep(batch, { microbatches: 2, schedule: 'gpipe' });
      expect(Math.abs(got - want)).toBeLessThan(LOSS_TOL);
      if (step > 0) expect(want).toBeLessThan(fixture.scalars.loss!);
    }
    const weights = await p.weights();
    // AdamW divides by √v: gradients equal up to summation order can move a weight by ~lr·1e-3.
    let worst = 0;
    for (const [name, t] of model.namedParameters()) worst = Math.max(worst, relDiff(weights.get(name)!.toFloat32(), await t.toFloat32()));
    console.log(JSON.stringify({ test: 'pp adamw weights', worst }));
    expect(worst).toBeLessThan(1e-4);
    p.close();
    model.dispose();
  });
});

describe('pipeline parallel generation', () => {
  test('padded_generation: greedy ids of the prompt and the padded batch equal one device (3 stages, 2 microbatches)', async () => {
    const { fixture, model } = await load('padded_generation');
    const { generate, padded_generate: padded } = fixture.inputs;
    model.requiresGrad_(false);
    const p = await pipeline(model, 3);
    const single = await p.generate({ inputIds: [generate.prompt], maxNewTokens: generate.max_new_tokens });
    expect(single.tokens[0]).toEqual([...(await expectedInts(fixture, 'gen_tokens'))]);
    const got = await p.generate({
      inputIds: padded!.input_ids,
      attentionMask: padded!.attention_mask,
      maxNewTokens: padded!.max_new_tokens,
      padTokenId: 0,
      microbatches: 2,
    });
    const want = await model.generate({
      inputIds: padded!.input_ids,
      attentionMask: padded!.attention_mask,
      maxNewTokens: padded!.max_new_tokens,
      eosTokenId: null,
    });
    expect(got.tokens).toEqual(want.tokens);
    p.close();
    model.dispose();
  });
});

describe('pipeline failures', () => {
  test('a stage worker killed mid-step ends training with an error naming the stage and the step within 10 s', async () => {
    const { fixture, model } = await load('dense_f32');
    const p = await pipeline(model, 2);
    const t0 = Date.now();
    const run = p.forwardBackward({ inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels }, { microbatches: 2, schedule: 'gpipe' });
    setTimeout(() => p.group.kill(1), 5);
    expect((await rejection(run)).message).toMatch(/^pipeline stage 1 \(layers 4–7\) exited \(code \d+\) during '.*microbatch \d'/);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect((await rejection(p.forward({ inputIds: fixture.inputs.input_ids }))).message).toContain('pipeline stage 1');
    model.dispose();
  });
});
