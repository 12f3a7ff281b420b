/**
 * Composed parallelism against one device on the MoE fixture: pipeline stages whose MoE layers
 * dispatch to each stage's expert group (PP × EP), replicated pipelines (PP × DP), replicated
 * expert groups (EP × DP) and all three, workers on the CPU backend (NEMOTRON_TEST_WORKER_DEVICE
 * overrides). Logits and loss (batch and packed row), gradients, a few AdamW steps' losses and
 * weights, greedy ids (MoE layers dispatched while prefilling and decoding; microbatches round the
 * replicas), a failed dispatch, and workers killed mid-step.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { AdamW, backward, getCpuDevice, noGrad, type Tensor } from '@nemotron-ts/kernels';
import { type CallOptions, HostTensor, PipelineParallel, type PipelineOptions } from '@nemotron-ts/parallel';
import { rejection } from '@nemotron-ts/parallel/testing';
import type { NemotronHForCausalLM } from '../src';
import { expectedArray, expectedInts, expectLoss, expectRel, relDiff } from './support/fixtures';
import { LOGITS_TOL, loadFixtureModel, LOSS_TOL, oneDeviceTrainStep, SAME_BACKEND, WORKER_DEVICES } from './support/workers';

const device = getCpuDevice();
const open: PipelineParallel[] = [];
afterAll(() => open.forEach((p) => p.close()));

const LAYOUTS: { name: string; options: Pick<PipelineOptions, 'stages' | 'expertParallel' | 'replicas'>; workers: number }[] = [
  { name: 'PP2×EP2', options: { stages: 2, expertParallel: 2 }, workers: 4 },
  { name: 'PP2×DP2', options: { stages: 2, replicas: 2 }, workers: 4 },
  { name: 'EP2×DP2', options: { stages: 1, expertParallel: 2, replicas: 2 }, workers: 4 },
];

const load = () => loadFixtureModel('moe_group4_top2', device);

async function start(model: NemotronHForCausalLM, options: PipelineOptions): Promise<PipelineParallel> {
  const p = await PipelineParallel.fromModel(model, { devices: WORKER_DEVICES, ...options });
  open.push(p);
  return p;
}

/** Kills worker `target` as the host sends it its first `method` call (a crash at a known step); `at` is when. */
function killOn(p: PipelineParallel, target: number, method: string): { at: number } {
  const killed = { at: 0 };
  const call = p.group.call.bind(p.group);
  p.group.call = <T>(rank: number, m: string, args?: unknown, options?: CallOptions): Promise<T> => {
    const reply = call<T>(rank, m, args, options);
    if (rank === target && m === method && !killed.at) {
      killed.at = Date.now();
      p.group.kill(target);
    }
    return reply;
  };
  return killed;
}

describe('composed parallelism', () => {
  for (const { name, options, workers } of LAYOUTS) {
    test(`moe_group4_top2 ${name}: logits, losses and gradients equal one device`, async () => {
      const { fixture, model } = await load();
      const { inputs } = fixture;
      const p = await start(model, options);
      expect(p.group.size).toBe(workers);
      const batch = { inputIds: inputs.input_ids, labels: inputs.labels };
      const one = noGrad(() => model.forward(batch));
      const got = await p.forward(batch, { microbatches: 2 });
      const rel = relDiff(got.logits.toFloat32(), await one.logits.toFloat32());
      expect(rel).toBeLessThanOrEqual(LOGITS_TOL * 10);
      expectRel('logits vs fixture', got.logits.toFloat32(), await expectedArray(fixture, 'logits'));
      expectLoss('loss', got.loss!, fixture.scalars.loss!);
      const packed = await p.forward({ inputIds: [inputs.packed.input_ids], cuSeqlens: inputs.packed.cu_seqlens, labels: [inputs.packed.labels] });
      expectRel('packed logits', packed.logits.toFloat32(), await expectedArray(fixture, 'packed_logits'));
      expectLoss('packed loss', packed.loss!, fixture.scalars.packed_loss!);

      model.train();
      const want = new Map<string, Float32Array>();
      const { loss } = model.forward(batch);
      backward(loss as Tensor);
      for (const [n, t] of model.namedParameters()) if (t.grad) want.set(n, await t.grad.toFloat32());
      model.zeroGrad();
      const trained = await p.forwardBackward(batch, { microbatches: 2, schedule: '1f1b' });
      expectLoss('training loss', trained, fixture.scalars.loss!);
      await p.allReduceGradients();
      const grads = await p.gradients();
      expect([...grads.keys()].sort()).toEqual([...want.keys()].sort());
      let worst = 0;
      for (const [n, w] of want) {
        const r = relDiff(grads.get(n)!.toFloat32(), w);
        worst = Math.max(worst, r);
        expect({ n, ok: r <= 1e-4 }).toEqual({ n, ok: true });
      }
      console.log(JSON.stringify({ test: 'composed vs one device', layout: name, logitsRel: rel, gradientsWorst: worst, bytes: p.transferStats }));
      p.close();
      model.dispose();
    });
  }

  test("moe_group4_top2 PP2×EP2×DP2 (8 workers): three AdamW steps give one device's losses and weights", async () => {
    const { fixture, model } = await load();
    const batch = { inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels };
    const p = await start(model, { stages: 2, expertParallel: 2, replicas: 2 });
    expect(p.group.size).toBe(8);
    const adam = { lr: 1e-2, weightDecay: 0.1 };
    await p.setOptimizer(adam);
    model.train();
    const optimizer = new AdamW(model.parameters(), adam);
    const losses: [number, number][] = [];
    for (let step = 0; step < 3; step++) {
      const want = await oneDeviceTrainStep(model, optimizer, batch);
      const got = await p.trainStep(batch, { microbatches: 2, schedule: 'gpipe' });
      losses.push([want, got]);
      expect(Math.abs(got - want)).toBeLessThan(LOSS_TOL);
    }
    expect(losses[2]![0]).toBeLessThan(losses[0]![0]);
    const weights = await p.weights();
    // AdamW divides by √v: gradients equal up to summation order can move a weight by ~lr·1e-3.
    let worst = 0;
    let worstName = '';
    for (const [n, t] of model.namedParameters()) {
      const r = relDiff(weights.get(n)!.toFloat32(), await t.toFloat32());
      if (r > worst) [worst, worstName] = [r, n];
    }
    console.log(JSON.stringify({ test: 'composed adamw', losses, worst, worstName }));
    // (Native workers beside the TypeScript host measured 7.8e-4 on layer 5's MLP.)
    expect(worst).toBeLessThan(SAME_BACKEND ? 1e-3 : 1e-2);
    p.close();
    model.dispose();
  });

  for (const { name, options } of LAYOUTS) {
    test(`moe_group4_top2 ${name}: greedy ids of the fixture's prompt and a padded batch equal one device`, async () => {
      const { fixture, model } = await load();
      model.requiresGrad_(false);
      const { generate, input_ids } = fixture.inputs;
      const p = await start(model, options);
      const single = await p.generate({ inputIds: [generate.prompt], maxNewTokens: generate.max_new_tokens });
      expect(single.tokens[0]).toEqual([...(await expectedInts(fixture, 'gen_tokens'))]);
      // Row 1 left-padded by 3 tokens.
      const inputIds = input_ids.map((row) => row.slice(0, 12));
      const attentionMask = inputIds.map((row, r) => row.map((_, t) => (r === 1 && t < 3 ? 0 : 1)));
      const got = await p.generate({ inputIds, attentionMask, maxNewTokens: 5, padTokenId: 0, microbatches: 2 });
      const want = await model.generate({ inputIds, attentionMask, maxNewTokens: 5, eosTokenId: null });
      expect(got.tokens).toEqual(want.tokens.map((r) => [...r]));
      p.close();
      model.dispose();
    });
  }

  test('a failed dispatch fails the call and frees the waiting stage: the next call runs', async () => {
    const { fixture, model } = await load();
    const batch = { inputIds: fixture.inputs.input_ids };
    const p = await start(model, { stages: 2, expertParallel: 2 });
    const shard = p.rank(0, 0, 1);
    const good = await p.group.call<Record<string, HostTensor>>(shard, 'weights');
    const [up, down] = ['model.layers.1.mixer.experts.up_proj', 'model.layers.1.mixer.experts.down_proj'].map((n) => good[n]!);
    const zeros = (shape: number[]) => HostTensor.fromF32(new Float32Array(shape.reduce((a, b) => a * b, 1)), shape);
    // Stage 0's shard 1 gets experts whose projections do not fit each other: its dispatch throws.
    await p.group.call(shard, 'loadExperts', { layer: 1, up: zeros([up!.shape[0]!, 2, up!.shape[2]!]), down: zeros([down!.shape[0]!, down!.shape[1]!, 3]) });
    const failed = await rejection(p.forward(batch));
    expect(failed.name).not.toBe('WorkerFailure');
    expect(p.group.failed).toBeNull();
    await p.group.call(shard, 'loadExperts', { layer: 1, up, down });
    const got = await p.forward(batch);
    const one = noGrad(() => model.forward(batch));
    expect(relDiff(got.logits.toFloat32(), await one.logits.toFloat32())).toBeLessThanOrEqual(LOGITS_TOL * 10);
    p.close();
    model.dispose();
  });

  test('an expert shard worker of a stage killed during its experts backward ends training with an error naming it and the step within 10 s', async () => {
    const { fixture, model } = await load();
    const p = await start(model, { stages: 2, expertParallel: 2 });
    // Stage 1's expert shard 1 is killed as the host sends it its first experts backward (stage 1 waits for the answer).
    const killed = killOn(p, p.rank(0, 1, 1), 'expertsBackward');
    const run = p.forwardBackward({ inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels }, { microbatches: 2, schedule: 'gpipe' });
    const message = (await rejection(run)).message;
    const ms = Date.now() - killed.at;
    console.log(JSON.stringify({ test: 'composed kill', message, msAfterKill: ms }));
    expect(message).toMatch(
      /^expert shard 1 \(experts 4–7\) of pipeline stage 1 \(layers 4–6\) exited \(code \d+\) during 'experts backward of layer \d \(backward of microbatch \d\)'/,
    );
    expect(ms).toBeLessThan(10_000);
    model.dispose();
  });

  test('a replica worker killed during the gradient all-reduce of a replicated pipeline ends the all-reduced step with an error naming it within 10 s', async () => {
    const { fixture, model } = await load();
    const p = await start(model, { stages: 2, replicas: 2 });
    await p.setOptimizer({ lr: 1e-2 });
    // Replica 1's stage 1 is killed as the all-reduce sends it the summed gradients.
    const killed = killOn(p, p.rank(1, 1), 'setGradients');
    const run = p.trainStep({ inputIds: fixture.inputs.input_ids, labels: fixture.inputs.labels });
    const message = (await rejection(run)).message;
    const ms = Date.now() - killed.at;
    console.log(JSON.stringify({ test: 'composed kill', message, msAfterKill: ms }));
    expect(message).toMatch(
      /^pipeline stage 1 \(layers 4–6\) of data-parallel replica 1 exited \(code \d+\) during 'all-reduce bucket 0 of ranks 1, 3 \(scatter\)'/,
    );
    expect(ms).toBeLessThan(10_000);
    model.dispose();
  });
});
