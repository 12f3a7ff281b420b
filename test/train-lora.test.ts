/**
 * LoRA fine-tuning through the Trainer on the project's tiny model: only the adapters train (every
 * base weight stays bit-identical, f32 or bf16) and the loss falls; checkpoints hold a PEFT adapter, and a run
 * resumed from one (dropout on) repeats the uninterrupted run's losses.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import type { Device } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { applyLora, loraHandle, type LoraOptions } from '../src';
import { NemotronHForCausalLM } from '../src/pretrained';
import { ensureTinyModel } from './support/tiny-model';
import { loadTrainingData, Trainer, type TrainerOptions } from '../src/train';

const scratch = await mkdtemp(join(tmpdir(), 'nemotron-train-lora-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));
const modelDir = await ensureTinyModel(join(scratch, 'tiny'));
const tokenizer = await loadTokenizer(modelDir);
const devices = await testDevices();
const dataPath = join(scratch, 'data.txt');
await writeFile(dataPath, 'the cat sat on the mat. '.repeat(40));
const data = () => loadTrainingData(tokenizer, { dataPath, holdOut: false, seqLen: 24, seed: 3, vocabSize: 264 });
const LORA: LoraOptions = {
  r: 4,
  alpha: 8,
  dropout: 0.1,
  targetModules: ['in_proj', 'out_proj', 'q_proj', 'k_proj', 'v_proj', 'o_proj', 'up_proj', 'down_proj'],
  seed: 1,
};

/** Trains base + adapters(`lora`); returns the losses and the base's parameters before and after. */
async function run(device: Device, options: Partial<TrainerOptions>, lora: LoraOptions = LORA, resumeFrom?: string, dtype: 'f32' | 'bf16' = 'f32') {
  const model = await NemotronHForCausalLM.fromPretrained(modelDir, { device, dtype });
  const base = async () =>
    Promise.all(
      model
        .namedParameters()
        .filter(([n]) => !n.includes('lora_'))
        .map(async ([n, p]) => [n, await p.toFloat32()] as const),
    );
  const before = await base();
  applyLora(model, lora);
  const trainer = new Trainer(model, await data(), { steps: 4, batchSize: 2, lr: 2e-2, warmup: 1, outDir: null, ...options });
  try {
    if (resumeFrom) await trainer.resumeFrom(resumeFrom);
    const losses = (await trainer.train()).map((l) => l.loss);
    const trained = loraHandle(model)!.parameters().length;
    return { losses, before, after: await base(), trained, optimized: trainer.optimizer.groups.flatMap((g) => g.params).length };
  } finally {
    trainer.dispose();
    model.dispose();
  }
}

describe('Trainer with LoRA adapters', () => {
  for (const device of devices) {
    test(`${device.kind}: the loss falls, only the adapters are optimized, every base weight stays bit-identical`, async () => {
      const { losses, before, after, trained, optimized } = await run(device, { steps: 6 }, { ...LORA, dropout: 0 });
      expect(losses.every(Number.isFinite)).toBe(true);
      expect(losses[5]!).toBeLessThan(0.8 * losses[0]!);
      expect(optimized).toBe(trained);
      expect(after.length).toBe(before.length);
      for (let i = 0; i < before.length; i++) expect(after[i]).toEqual(before[i]!);
    }, 120_000);
  }

  test('a bf16 base: f32 adapters train without master copies; the bf16 base stays bit-identical', async () => {
    const out = join(scratch, 'bf16');
    const { losses, before, after } = await run(devices[0]!, { steps: 6, outDir: out }, { ...LORA, dropout: 0 }, undefined, 'bf16');
    expect(losses[5]!).toBeLessThan(0.8 * losses[0]!);
    for (let i = 0; i < before.length; i++) expect(after[i]).toEqual(before[i]!);
    expect(await readdir(join(out, 'checkpoint-6'))).not.toContain('master_weights.safetensors');
  }, 120_000);

  test('checkpoints hold a PEFT adapter; a resumed run (dropout on) repeats the uninterrupted losses', async () => {
    const device = devices[devices.length - 1]!;
    const out = join(scratch, `resume-${device.kind}`);
    const whole = await run(device, { outDir: out, saveEvery: 2, baseModelNameOrPath: 'tiny-base' });
    const files = (await readdir(join(out, 'checkpoint-2'))).sort();
    for (const f of ['adapter_config.json', 'adapter_model.safetensors', 'optimizer.safetensors', 'trainer_state.json']) expect(files).toContain(f);
    expect(files).not.toContain('model.safetensors');
    expect((await Bun.file(join(out, 'checkpoint-2', 'adapter_config.json')).json()).base_model_name_or_path).toBe('tiny-base');
    const resumed = await run(device, { outDir: join(out, 'again') }, LORA, join(out, 'checkpoint-2'));
    expect(whole.losses.every(Number.isFinite)).toBe(true);
    expect(resumed.losses).toEqual(whole.losses.slice(2));
    await expect(run(device, { outDir: null }, { ...LORA, r: 2 }, join(out, 'checkpoint-2'))).rejects.toThrow(
      /checkpoint-2: the checkpoint was trained with lora \{"r":4,.*this run has \{"r":2,/,
    );
  }, 120_000);

  test('a regular-expression targetModules is kept as one string in the checkpoint; resuming needs the same one', async () => {
    const device = devices[devices.length - 1]!;
    const out = join(scratch, `regex-${device.kind}`);
    const regex: LoraOptions = { ...LORA, dropout: 0, targetModules: String.raw`.*\.(in_proj|q_proj|up_proj)` };
    const whole = await run(device, { steps: 3, outDir: out, saveEvery: 2 }, regex);
    const state = await Bun.file(join(out, 'checkpoint-2', 'trainer_state.json')).json();
    expect(state.settings.lora.targetModules).toBe(regex.targetModules);
    const resumed = await run(device, { steps: 3, outDir: join(out, 'again') }, regex, join(out, 'checkpoint-2'));
    expect(resumed.losses).toEqual(whole.losses.slice(2));
    const names = { ...regex, targetModules: ['in_proj', 'q_proj', 'up_proj'] };
    await expect(run(device, { steps: 3, outDir: null }, names, join(out, 'checkpoint-2'))).rejects.toThrow(
      /checkpoint-2: the checkpoint was trained with lora .*"targetModules":".*in_proj\|q_proj\|up_proj\)".*this run has .*"targetModules":\["in_proj"/,
    );
  }, 120_000);
});
