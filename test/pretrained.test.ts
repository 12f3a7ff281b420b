/**
 * The root entry point: fromPretrained (config through the hub package, lazy weights, dtype
 * choice), savePretrained (HF names, sharding, dtype, keep-f32 tensors, config.json with bare
 * Infinity) and the round trip between them; fromConfig on the subclass.
 */
import { afterAll, describe, expect, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, readConfigJson, writeConfigJson } from '@nemotron-ts/hub';
import { getCpuDevice, noGrad } from '@nemotron-ts/kernels';
import { expectClose } from '@nemotron-ts/kernels/testing';
import { NemotronHConfig, NemotronHForCausalLM } from '../src';
import { FIXTURES_DIR, openFixture } from './support/fixtures';

const cpu = getCpuDevice();
const scratch = await mkdtemp(join(tmpdir(), 'nemotron-pretrained-'));
afterAll(() => rm(scratch, { recursive: true, force: true }));

async function logitsOf(model: NemotronHForCausalLM, ids: number[][]): Promise<Float32Array> {
  const out = noGrad(() => model.forward({ inputIds: ids }));
  const values = await out.logits.toFloat32();
  out.logits.dispose();
  return values;
}

describe('fromPretrained', () => {
  test('dtype auto follows torch_dtype; keep-f32 tensors stay f32; MTP weights load', async () => {
    const bf16 = await NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'hybrid_bf16'), { device: cpu });
    expect(bf16).toBeInstanceOf(NemotronHForCausalLM);
    expect(bf16.training).toBe(false);
    expect(bf16.lmHead.weight.dtype).toBe('bf16');
    expect(bf16.getTensor('model.layers.0.mixer.A_log').dtype).toBe('f32');
    expect(bf16.getTensor('model.layers.4.mixer.gate.e_score_correction_bias').dtype).toBe('f32');
    bf16.dispose();
    const f32 = await NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'hybrid_bf16'), { device: cpu, dtype: 'f32' });
    expect(f32.lmHead.weight.dtype).toBe('f32');
    f32.dispose();
    const mtp = await NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'mtp_d2'), { device: cpu });
    expect(mtp.mtp).not.toBeNull();
    expect(mtp.loadReport).toEqual({ missing: [], unexpected: [], mismatched: [], ignored: [] });
    mtp.dispose();
  });

  test('errors name the folder, field or tensor at fault', async () => {
    await expect(NemotronHForCausalLM.fromPretrained(scratch, { device: cpu })).rejects.toThrow(/config.json: does not exist/);
    await expect(NemotronHForCausalLM.fromPretrained(join(scratch, 'nope'), { device: cpu, localFilesOnly: true })).rejects.toThrow(/no such folder/);
    // A config that does not describe the weights.
    const folder = join(scratch, 'mismatch');
    await mkdir(folder);
    await copyFile(join(FIXTURES_DIR, 'dense_f32', 'model.safetensors'), join(folder, 'model.safetensors'));
    const config = await readConfigJson(join(FIXTURES_DIR, 'dense_f32', 'config.json'));
    await writeConfigJson(join(folder, 'config.json'), { ...config, intermediate_size: 130 });
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device: cpu })).rejects.toThrow(/mis-shaped 4 \(backbone.layers.3.mixer.up_proj.weight: model needs \[130, 64\], checkpoint has \[128, 64\]/);
    await writeConfigJson(join(folder, 'config.json'), { ...config, ssm_state_size: 0 });
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device: cpu })).rejects.toThrow(/config.json: ssm_state_size: expected a positive integer/);
  });
});

describe('savePretrained', () => {
  test('round trip, sharded, f32', async () => {
    const fixture = await openFixture('dense_f32');
    const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device: cpu });
    const folder = join(scratch, 'dense');
    const saved = await model.savePretrained(folder, { maxShardSize: '300KB' });
    expect(saved.weights.indexFile).toBe('model.safetensors.index.json');
    expect(saved.weights.files.length).toBeGreaterThan(1);
    // The same names, shapes and dtypes as the HF checkpoint we loaded.
    const original = await Checkpoint.open(fixture.dir);
    const copy = await Checkpoint.open(folder);
    expect(copy.names().sort()).toEqual(original.names().sort());
    for (const name of original.names()) {
      const [a, b] = [copy.entry(name), original.entry(name)];
      expect({ name, dtype: a.dtype, shape: a.shape }).toEqual({ name, dtype: b.dtype, shape: b.shape });
    }
    const config = await readConfigJson(join(folder, 'config.json'));
    expect(config.torch_dtype).toBe('float32');
    expect(config.hybrid_override_pattern).toBe('M*M-M*-M');
    const reloaded = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu });
    expectClose(await logitsOf(reloaded, fixture.inputs.input_ids), await logitsOf(model, fixture.inputs.input_ids), { rtol: 0, what: 'reloaded logits' });
    model.dispose();
    reloaded.dispose();
  });

  test('bf16 save keeps A_log, dt_bias, D and the correction bias in F32', async () => {
    const fixture = await openFixture('moe_flat_rsf2.5');
    const model = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device: cpu });
    const folder = join(scratch, 'moe-bf16');
    await model.savePretrained(folder, { dtype: 'bf16' });
    expect((await readdir(folder)).sort()).toEqual(['config.json', 'model.safetensors']);
    const copy = await Checkpoint.open(folder);
    for (const name of copy.names()) {
      const f32 = /\.(A_log|dt_bias|D|e_score_correction_bias)$/.test(name);
      expect({ name, dtype: copy.entry(name).dtype }).toEqual({ name, dtype: f32 ? 'F32' : 'BF16' });
    }
    expect((await readConfigJson(join(folder, 'config.json'))).torch_dtype).toBe('bfloat16');
    const reloaded = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu });
    expect(reloaded.lmHead.weight.dtype).toBe('bf16');
    // bf16 rounding of the weights moves the logits a little, not more.
    expectClose(await logitsOf(reloaded, fixture.inputs.input_ids), await logitsOf(model, fixture.inputs.input_ids), { rtol: 5e-2, what: 'bf16 logits' });
    model.dispose();
    reloaded.dispose();
  });

  test('fromConfig builds the subclass; a finite dt limit is written with a bare Infinity and read back', async () => {
    const config = NemotronHConfig.create({
      pattern: 'M*',
      vocabSize: 61,
      hiddenSize: 24,
      mambaNumHeads: 2,
      mambaHeadDim: 8,
      ssmStateSize: 4,
      nGroups: 1,
      numAttentionHeads: 2,
      numKeyValueHeads: 1,
      headDim: 12,
      timeStepLimit: [0.01, Infinity],
    });
    const model = NemotronHForCausalLM.fromConfig(config, { seed: 3, device: cpu });
    expect(model).toBeInstanceOf(NemotronHForCausalLM);
    const folder = join(scratch, 'tiny');
    await model.savePretrained(folder);
    const text = await Bun.file(join(folder, 'config.json')).text();
    expect(text).toMatch(/"time_step_limit": \[\s*0\.01,\s*Infinity\s*\]/);
    const reloaded = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu });
    expect(reloaded.config.timeStepLimit).toEqual([0.01, Infinity]);
    expect(reloaded.config.clampsDt).toBe(true);
    expectClose(await logitsOf(reloaded, [[1, 2, 3, 4, 5]]), await logitsOf(model, [[1, 2, 3, 4, 5]]), { rtol: 0, what: 'tiny logits' });
    model.dispose();
    reloaded.dispose();
  });
});
