/**
 * Gradient checkpointing (`gradientCheckpointingEnable`): the same loss and the same gradient for
 * every parameter (backbone blocks of every kind, MTP sublayers, embeddings through the MTP fusion),
 * with padding and packed documents, and less memory held at once.
 */
import { describe, expect, test } from 'bun:test';
import { backward, type Device, type Tensor } from '@nemotron-ts/kernels';
import { expectClose, testDevices } from '@nemotron-ts/kernels/testing';
import { applyLora, NemotronHConfig, NemotronHForCausalLM, type NemotronHConfigInit } from '../src';
import { TINY_MTP_INIT } from './support/tiny-mtp-config';

// One MTP depth, and a vocabulary the ids below (up to 36) just fit.
const INIT: NemotronHConfigInit = { ...TINY_MTP_INIT, numNextnPredictLayers: 1, vocabSize: 37 };
const ids = [
  [3, 9, 27, 5, 34, 12, 8, 1, 30],
  [7, 1, 36, 33, 2, 19, 0, 22, 11],
];
const mask = [
  [1, 1, 1, 1, 1, 1, 1, 1, 1],
  [0, 0, 1, 1, 1, 1, 1, 1, 1],
];
const labels = ids.map((row, b) => [...row.slice(1).map((v, t) => (mask[b]![t + 1] ? v : -100)), -100]);

interface Run {
  loss: number;
  grads: Map<string, Float32Array>;
  peak: number;
}

async function run(model: NemotronHForCausalLM, device: Device, loss: () => Tensor): Promise<Run> {
  model.zeroGrad();
  await device.sync();
  device.resetPeak();
  const l = loss();
  backward(l);
  await device.sync();
  const peak = device.memoryStats().peakLiveBytes;
  const value = (await l.data())[0]!;
  l.dispose();
  const grads = new Map<string, Float32Array>();
  for (const [name, p] of model.namedParameters()) if (p.grad) grads.set(name, (await p.grad.toFloat32()) as Float32Array);
  model.zeroGrad();
  return { loss: value, grads, peak };
}

function expectSameGradients(a: Run, b: Run, what: string): void {
  expect(b.loss).toBeCloseTo(a.loss, 5);
  expect([...b.grads.keys()].sort()).toEqual([...a.grads.keys()].sort());
  for (const [name, g] of a.grads) expectClose(b.grads.get(name)!, g, { rtol: 1e-4, what: `${what}: ${name}` });
}

describe('gradient checkpointing', async () => {
  for (const device of await testDevices()) {
    test(`${device.kind}: MTP loss with padding — same loss and gradients, lower peak memory`, async () => {
      const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create(INIT), { device, seed: 3 });
      const loss = () => model.forwardMtp({ inputIds: ids, attentionMask: mask, labels }).loss;
      const plain = await run(model, device, loss);
      model.gradientCheckpointingEnable();
      model.gradientCheckpointingEnable();
      expect(model.isGradientCheckpointing).toBe(true);
      const checkpointed = await run(model, device, loss);
      expectSameGradients(plain, checkpointed, 'mtp');
      // Every parameter of every layer kind got a gradient (the MTP head and the embeddings included).
      for (const name of [
        'model.layers.0.mixer.in_proj.weight',
        'model.layers.1.mixer.q_proj.weight',
        'model.layers.2.mixer.up_proj.weight',
        'model.layers.3.mixer.experts.up_proj',
        'mtp.layers.0.eh_proj.weight',
        'mtp.layers.1.mixer.gate.weight',
        'model.embeddings.weight',
      ]) {
        expect(checkpointed.grads.has(name), name).toBe(true);
      }
      expect(checkpointed.peak).toBeLessThan(plain.peak);
      model.gradientCheckpointingDisable();
      model.gradientCheckpointingDisable();
      expect(model.isGradientCheckpointing).toBe(false);
      const again = await run(model, device, loss);
      expect(again.peak).toBeGreaterThan(checkpointed.peak);
      model.dispose();
    });

    // The recompute path is device-independent; the CPU run is enough for packed rows.
    test.skipIf(device.kind !== 'cpu')(`${device.kind}: HF loss on a packed row — same gradients`, async () => {
      const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, mtpPattern: '', numNextnPredictLayers: 0 }), { device, seed: 5 });
      const row = [ids[0]!];
      const loss = () => model.forward({ inputIds: row, labels: row, cuSeqlens: [0, 4, 9] }).loss!;
      const plain = await run(model, device, loss);
      model.gradientCheckpointingEnable();
      expectSameGradients(plain, await run(model, device, loss), 'packed');
      model.dispose();
    });
  }
  test('LoRA dropout cannot be recomputed: a clear error; dropout 0 gives the same adapter gradients', async () => {
    const { getCpuDevice } = await import('@nemotron-ts/kernels');
    const cpu = getCpuDevice();
    const config = NemotronHConfig.create({ ...INIT, mtpPattern: '', numNextnPredictLayers: 0 });
    const model = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 2 });
    applyLora(model, { r: 2, alpha: 4, dropout: 0.1, targetModules: ['in_proj', 'q_proj', 'up_proj'] });
    model.gradientCheckpointingEnable();
    expect(() => model.forward({ inputIds: ids, labels: ids })).toThrow(/LoRA dropout \(0\.1\) would draw other masks/);
    model.dispose();
    const plain = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 2 });
    applyLora(plain, { r: 2, alpha: 4, dropout: 0, targetModules: ['in_proj', 'q_proj', 'up_proj'] });
    const loss = () => plain.forward({ inputIds: ids, labels: ids }).loss!;
    const a = await run(plain, cpu, loss);
    plain.gradientCheckpointingEnable();
    expectSameGradients(a, await run(plain, cpu, loss), 'lora');
    expect([...a.grads.keys()].some((n) => n.includes('lora_B'))).toBe(true);
    plain.dispose();
  });
});
