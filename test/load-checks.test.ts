/**
 * Checks fromPretrained makes before trusting a checkpoint: a config that does not fit the weights
 * fails before anything is allocated, naming the config field and a tensor; weights (and LoRA
 * adapters) holding NaN or ±Inf are refused (on every device: the bytes are checked as they are
 * read, before a GPU could turn NaN into 0).
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, readConfigJson, saveSafetensors, writeConfigJson, type JsonObject } from '@nemotron-ts/hub';
import { full, getCpuDevice, tensor, type Tensor } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import { NemotronHForCausalLM, applyLora, loadLoraAdapter, loraHandle, removeLora, saveLoraAdapter } from '../src';
import { FIXTURES_DIR } from './support/fixtures';

const cpu = getCpuDevice();
const devices = await testDevices();
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-load-checks-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

/** A copy of a fixture checkpoint with `value` written into element `at` of tensor `name`. */
async function poisonedCopy(fixture: string, name: string, at: number, value: number): Promise<string> {
  const folder = join(scratch, `${fixture}-${name}-${at}-${value}`);
  await mkdir(folder, { recursive: true });
  await copyFile(join(FIXTURES_DIR, fixture, 'config.json'), join(folder, 'config.json'));
  const tensors = await (await Checkpoint.open(join(FIXTURES_DIR, fixture))).loadAll({ device: cpu });
  const original = tensors.get(name)!;
  const values = await original.toFloat32();
  values[at] = value;
  tensors.set(name, tensor(values, original.shape, { dtype: original.dtype, device: cpu }));
  original.dispose();
  await saveSafetensors(join(folder, 'model.safetensors'), tensors);
  for (const t of tensors.values()) (t as Tensor).dispose();
  return folder;
}

/** A fixture's weights under a config with `changes` applied. */
async function withConfig(fixture: string, changes: JsonObject): Promise<string> {
  const folder = join(scratch, `${fixture}-${Object.keys(changes).join('-')}`);
  await mkdir(folder, { recursive: true });
  await copyFile(join(FIXTURES_DIR, fixture, 'model.safetensors'), join(folder, 'model.safetensors'));
  const config = await readConfigJson(join(FIXTURES_DIR, fixture, 'config.json'));
  await writeConfigJson(join(folder, 'config.json'), { ...config, ...changes });
  return folder;
}

describe('a config that does not fit its checkpoint', () => {
  test('hidden_size 5000 times too large fails before allocating, naming the field and a tensor', async () => {
    const config = await readConfigJson(join(FIXTURES_DIR, 'dense_f32', 'config.json'));
    const hidden = (config.hidden_size as number) * 5000;
    const folder = await withConfig('dense_f32', { hidden_size: hidden });
    const before = cpu.memoryStats().liveBytes;
    cpu.resetPeak();
    const error = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toStartWith(
      `${join(folder, 'config.json')} does not match the checkpoint: field hidden_size (${hidden}) gives 'backbone.embeddings.weight' the shape [${config.vocab_size}, ${hidden}], the checkpoint has [${config.vocab_size}, ${config.hidden_size}]`,
    );
    // Nothing was allocated on the way (the model alone would take gigabytes).
    expect(cpu.memoryStats().peakLiveBytes - before).toBeLessThan(1 << 20);
  });

  test('a dimension set by several fields names them all; a wrong layer count names the missing tensors', async () => {
    const grown = await withConfig('dense_f32', { mamba_head_dim: 32 });
    await expect(NemotronHForCausalLM.fromPretrained(grown, { device: cpu })).rejects.toThrow(
      /field(s)? .*mamba_head_dim \(32\).* gives? 'backbone\.layers\.0\.mixer\.in_proj\.weight' the shape/,
    );
    const config = await readConfigJson(join(FIXTURES_DIR, 'dense_f32', 'config.json'));
    const pattern = `${config.hybrid_override_pattern as string}M`;
    const deeper = await withConfig('dense_f32', { hybrid_override_pattern: pattern, num_hidden_layers: pattern.length });
    await expect(NemotronHForCausalLM.fromPretrained(deeper, { device: cpu })).rejects.toThrow(`does not match the checkpoint: missing`);
  });
});

describe.each(devices.map((d) => [d.kind, d] as const))('non-finite weights on %s', (_kind, device) => {
  test('one NaN in an MLP up_proj (bf16 file) fails the load naming the file, tensor and element', async () => {
    const name = 'backbone.layers.1.mixer.up_proj.weight';
    const folder = await poisonedCopy('hybrid_bf16', name, 1000, Number.NaN);
    const error = await NemotronHForCausalLM.fromPretrained(folder, { device }).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message).toBe(
      `${join(folder, 'model.safetensors')}: tensor '${name}': element 1000 of 24576 is NaN: the weights are corrupted (NaN or infinite values)`,
    );
    // Opting out loads it (for inspecting a broken checkpoint).
    const model = await NemotronHForCausalLM.fromPretrained(folder, { device, checkFinite: false });
    expect(Number.isNaN((await model.getTensor('model.layers.1.mixer.up_proj.weight').toFloat32())[1000])).toBe(true);
    model.dispose();
  });

  test('an infinite value in an f32 file is refused as well', async () => {
    const name = 'backbone.layers.3.mixer.up_proj.weight';
    const folder = await poisonedCopy('dense_f32', name, 7, Number.NEGATIVE_INFINITY);
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device })).rejects.toThrow(`tensor '${name}': element 7 of 8192 is -Infinity`);
  });
});

test('a LoRA adapter holding NaN is refused naming the file and key, leaving the model without adapters', async () => {
  const model = await NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'dense_f32'), { device: cpu });
  applyLora(model, { r: 2, alpha: 4, targetModules: ['up_proj'] });
  const parameter = model.namedTensors().find((t) => t.name.endsWith('up_proj.lora_B.weight'))!;
  model.setTensor(parameter.name, full(parameter.tensor.shape, Number.NaN, { device: cpu }));
  const dir = join(scratch, 'nan-adapter');
  await saveLoraAdapter(model, dir);
  removeLora(model);
  await expect(loadLoraAdapter(model, dir)).rejects.toThrow(
    new RegExp(
      `${join(dir, 'adapter_model.safetensors')}: tensor 'base_model\\.model\\.model\\.layers\\.\\d+\\.mixer\\.up_proj\\.lora_B\\.weight': element 0 of \\d+ is NaN`,
    ),
  );
  expect(loraHandle(model)).toBeNull();
  model.dispose();
});
