/**
 * PEFT adapter folders: saveLoraAdapter writes HF's keys and adapter_config.json; loadLoraAdapter
 * gives identical logits (also across backends); bad folders fail naming the file and key and leave
 * the model without adapters.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SafetensorsReader, saveSafetensors } from '@nemotron-ts/hub';
import { Generator, getCpuDevice, noGrad, tensor, type Device, type Tensor } from '@nemotron-ts/kernels';
import { expectClose, testGpu } from '@nemotron-ts/kernels/testing';
import { NemotronHConfig, NemotronHForCausalLM, applyLora, loadLoraAdapter, loadLoraAdapterWeights, loraHandle, saveLoraAdapter } from '../src';

const cpu = getCpuDevice();
const gpu = await testGpu();
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-lora-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

const config = NemotronHConfig.create({
  pattern: 'M*-E',
  vocabSize: 53,
  hiddenSize: 20,
  numAttentionHeads: 2,
  numKeyValueHeads: 1,
  headDim: 6,
  mambaNumHeads: 2,
  mambaHeadDim: 5,
  nGroups: 1,
  ssmStateSize: 4,
  convKernel: 4,
  chunkSize: 4,
  intermediateSize: 18,
  nRoutedExperts: 3,
  numExpertsPerTok: 2,
  moeIntermediateSize: 6,
  moeSharedExpertIntermediateSize: 10,
});
const TARGETS = ['in_proj', 'out_proj', 'q_proj', 'v_proj', 'up_proj', 'down_proj', 'lm_head'];
const inputIds = [
  [3, 17, 52, 8, 0, 44],
  [9, 1, 30, 30, 12, 5],
];

function model(device: Device = cpu): NemotronHForCausalLM {
  return NemotronHForCausalLM.fromConfig(config, { seed: 4, device }).eval();
}

/** A model with trained-looking adapters (random A and B). */
function adapted(device: Device = cpu): NemotronHForCausalLM {
  const m = model(device);
  const handle = applyLora(m, { r: 3, alpha: 12, dropout: 0.05, targetModules: TARGETS, seed: 2 });
  const g = new Generator(8);
  for (const [name, p] of handle.namedParameters()) {
    const t = tensor(
      Float32Array.from({ length: p.size }, () => g.normal() * 0.3),
      p.shape,
      { device },
    );
    m.setTensor(name, t);
    t.dispose();
  }
  return m;
}

async function logitsOf(m: NemotronHForCausalLM): Promise<Float32Array> {
  const { logits } = noGrad(() => m.forward({ inputIds }));
  const values = await logits.toFloat32();
  logits.dispose();
  return values;
}

describe('saveLoraAdapter', () => {
  test('writes the keys PEFT writes on the native class (base_model.model.model.…) and adapter_config.json', async () => {
    const m = adapted();
    const dir = join(scratch, 'saved');
    await saveLoraAdapter(m, dir, { baseModelNameOrPath: 'nvidia/tiny' });
    expect((await readdir(dir)).sort()).toEqual(['adapter_config.json', 'adapter_model.safetensors']);
    const reader = await SafetensorsReader.open(join(dir, 'adapter_model.safetensors'));
    const names = reader.names();
    expect(names).toContain('base_model.model.model.layers.0.mixer.in_proj.lora_A.weight');
    expect(names).toContain('base_model.model.model.layers.1.mixer.q_proj.lora_B.weight');
    expect(names).toContain('base_model.model.model.layers.3.mixer.shared_experts.down_proj.lora_A.weight');
    expect(names).toContain('base_model.model.lm_head.lora_B.weight');
    expect(names.some((n) => n.includes('experts.up_proj') && !n.includes('shared'))).toBe(false);
    expect(names.length).toBe(2 * loraHandle(m)!.adapters.size);
    expect(reader.entry('base_model.model.model.layers.0.mixer.in_proj.lora_B.weight').shape).toEqual([config.dInProj, 3]);
    expect(reader.entry('base_model.model.lm_head.lora_A.weight').dtype).toBe('F32');
    const json = JSON.parse(await readFile(join(dir, 'adapter_config.json'), 'utf8'));
    expect(json).toMatchObject({
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: 3,
      lora_alpha: 12,
      lora_dropout: 0.05,
      target_modules: TARGETS,
      bias: 'none',
      base_model_name_or_path: 'nvidia/tiny',
      fan_in_fan_out: false,
    });
    m.dispose();
  });
});

describe('loadLoraAdapter', () => {
  test('save → load gives identical logits, on the CPU and across backends', async () => {
    const source = adapted();
    const expected = await logitsOf(source);
    const dir = join(scratch, 'roundtrip');
    await saveLoraAdapter(source, dir);
    source.dispose();
    const loaded = model();
    const handle = await loadLoraAdapter(loaded, dir);
    expect(handle.config).toMatchObject({ r: 3, alpha: 12, dropout: 0.05, targetModules: TARGETS });
    expect(await logitsOf(loaded)).toEqual(expected);
    expect(loaded.lmHead.weight.requiresGrad).toBe(false);
    expect(handle.parameters().every((p) => p.requiresGrad)).toBe(true);
    loaded.dispose();
    if (gpu) {
      const onGpu = model(gpu);
      await loadLoraAdapter(onGpu, dir);
      expectClose(await logitsOf(onGpu), expected, { rtol: 1e-4, what: 'webgpu logits' });
      onGpu.dispose();
    }
  });

  test('loadLoraAdapterWeights loads into the existing adapter tensors; other r, alpha or targets fail', async () => {
    const source = adapted();
    const expected = await logitsOf(source);
    const dir = join(scratch, 'in-place');
    await saveLoraAdapter(source, dir);
    source.dispose();
    const m = model();
    await expect(loadLoraAdapterWeights(m, dir)).rejects.toThrow('loadLoraAdapterWeights: the model has no LoRA adapters');
    const handle = applyLora(m, { r: 3, alpha: 12, targetModules: TARGETS });
    const held = handle.parameters();
    await loadLoraAdapterWeights(m, dir);
    expect(handle.parameters().every((p, i) => p === held[i])).toBe(true);
    expect(await logitsOf(m)).toEqual(expected);
    m.dispose();
    const other = model();
    applyLora(other, { r: 3, alpha: 6, targetModules: TARGETS });
    await expect(loadLoraAdapterWeights(other, dir)).rejects.toThrow(
      /in-place\/adapter_config\.json has r 3, alpha 12, .*; the model's adapters have r 3, alpha 6/,
    );
    other.dispose();
  });

  /** An adapter folder written by a correct save, then its weights rewritten by `edit`. */
  async function brokenFolder(name: string, edit: (tensors: Map<string, Tensor>) => void): Promise<string> {
    const m = adapted();
    const dir = join(scratch, name);
    await saveLoraAdapter(m, dir);
    m.dispose();
    const file = join(dir, 'adapter_model.safetensors');
    const reader = await SafetensorsReader.open(file);
    const tensors = new Map<string, Tensor>();
    for (const key of reader.names()) tensors.set(key, await reader.load(key, { device: cpu }));
    edit(tensors);
    await saveSafetensors(file, tensors);
    for (const t of tensors.values()) t.dispose();
    return dir;
  }

  test('a missing, unexpected or mis-shaped tensor fails naming the file and key; the model keeps no adapters', async () => {
    const missingKey = 'base_model.model.model.layers.1.mixer.v_proj.lora_B.weight';
    const missing = await brokenFolder('missing', (t) => t.delete(missingKey));
    const extra = await brokenFolder('extra', (t) =>
      t.set('base_model.model.model.layers.1.mixer.k_proj.lora_A.weight', tensor(new Float32Array(3 * 20), [3, 20], { device: cpu })),
    );
    const shapeKey = 'base_model.model.model.layers.2.mixer.up_proj.lora_A.weight';
    const misShaped = await brokenFolder('shape', (t) => t.set(shapeKey, tensor(new Float32Array(4 * 20), [4, 20], { device: cpu })));
    const m = model();
    const base = await logitsOf(m);
    await expect(loadLoraAdapter(m, missing)).rejects.toThrow(`missing/adapter_model.safetensors lacks '${missingKey}'`);
    expect(loraHandle(m)).toBeNull();
    await expect(loadLoraAdapter(m, extra)).rejects.toThrow(
      /extra\/adapter_model\.safetensors has 'base_model\.model\.model\.layers\.1\.mixer\.k_proj\.lora_A\.weight'.*no adapted layer/,
    );
    await expect(loadLoraAdapter(m, misShaped)).rejects.toThrow(`shape/adapter_model.safetensors has '${shapeKey}' of shape [4, 20]; this model needs [3, 20]`);
    expect(loraHandle(m)).toBeNull();
    expect(m.namedParameters().some(([n]) => n.includes('lora_'))).toBe(false);
    expect(m.parameters().every((p) => p.requiresGrad)).toBe(true);
    expect(await logitsOf(m)).toEqual(base);
    m.dispose();
  });

  test('a missing or unsupported adapter_config.json, or missing weights, fail clearly', async () => {
    const m = model();
    const empty = join(scratch, 'empty');
    await rm(empty, { recursive: true, force: true });
    await expect(loadLoraAdapter(m, empty)).rejects.toThrow(/empty: no such folder, and not a Hub repository id/);
    await mkdir(empty);
    await expect(loadLoraAdapter(m, empty)).rejects.toThrow(/cannot read .*empty\/adapter_config\.json/);
    const configOnly = join(scratch, 'config-only');
    const source = adapted();
    await saveLoraAdapter(source, configOnly);
    source.dispose();
    await rm(join(configOnly, 'adapter_model.safetensors'));
    await expect(loadLoraAdapter(m, configOnly)).rejects.toThrow(/config-only\/adapter_model\.safetensors does not exist/);
    const write = async (json: object) => writeFile(join(configOnly, 'adapter_config.json'), JSON.stringify(json));
    await write({ peft_type: 'PREFIX_TUNING', r: 2, lora_alpha: 2, target_modules: ['q_proj'] });
    await expect(loadLoraAdapter(m, configOnly)).rejects.toThrow(/adapter_config\.json: peft_type must be "LORA"/);
    await write({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: ['q_proj'], use_dora: true });
    await expect(loadLoraAdapter(m, configOnly)).rejects.toThrow(/adapter_config\.json: use_dora = true is not supported/);
    await write({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: '' });
    await expect(loadLoraAdapter(m, configOnly)).rejects.toThrow(
      /adapter_config\.json: target_modules must be a list of names or one regular expression, got ""/,
    );
    await write({ peft_type: 'LORA', r: 2, lora_alpha: 2, target_modules: 7 });
    await expect(loadLoraAdapter(m, configOnly)).rejects.toThrow(/adapter_config\.json: target_modules must be a list of names/);
    expect(loraHandle(m)).toBeNull();
    m.dispose();
  });
});
