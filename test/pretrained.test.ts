/**
 * The root entry point: fromPretrained (config through the hub package, lazy weights, dtype
 * choice), savePretrained (HF names, sharding, dtype, keep-f32 tensors, config.json with bare
 * Infinity) and the round trip between them; one class whichever package it comes from.
 */
import { afterAll, describe, expect, spyOn, test } from 'bun:test';
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Checkpoint, readConfigJson, saveSafetensors, writeConfigJson } from '@nemotron-ts/hub';
import { CpuDevice, getCpuDevice, noGrad, tensor, type Tensor } from '@nemotron-ts/kernels';
import { expectClose } from '@nemotron-ts/kernels/testing';
import * as core from '@nemotron-ts/core';
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
  test("core's NemotronHForCausalLM is the root's: one class, one set of methods", async () => {
    expect(core.NemotronHForCausalLM).toBe(NemotronHForCausalLM);
    const model = await core.NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'dense_f32'), { device: cpu });
    expect(typeof model.savePretrained).toBe('function');
    model.dispose();
  });

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

  test("loading keeps one copy of the weights: the model's own bytes live, none left in the CPU pool", async () => {
    const device = new CpuDevice();
    const model = await NemotronHForCausalLM.fromPretrained(join(FIXTURES_DIR, 'hybrid_bf16'), { device });
    const storages = new Set(model.namedTensors().map((t) => t.tensor.storage));
    const weightBytes = [...storages].reduce((sum, s) => sum + s.cpu!.byteLength, 0);
    expect(device.memoryStats()).toMatchObject({ liveBytes: weightBytes, pooledBytes: 0 });
    model.dispose();
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
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device: cpu })).rejects.toThrow(
      /mis-shaped 4 \(backbone.layers.3.mixer.up_proj.weight: model needs \[130, 64\], checkpoint has \[128, 64\]/,
    );
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

  test('fromConfig builds the model; a finite dt limit is written with a bare Infinity and read back', async () => {
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

describe('loading what others save', () => {
  const ROOT = join(import.meta.dir, '..');
  const nemotron = (...args: string[]) => {
    const r = Bun.spawnSync([process.execPath, join(ROOT, 'src/cli/main.ts'), ...args], { cwd: ROOT, stdout: 'pipe', stderr: 'pipe' });
    return { code: r.exitCode, stderr: r.stderr.toString() };
  };

  /** A copy of fixture `name` whose weights went through `edit` (keys → host f32 values). */
  async function editedCopy(name: string, folder: string, edit: (tensors: Map<string, Tensor>) => void): Promise<string> {
    await mkdir(folder, { recursive: true });
    await copyFile(join(FIXTURES_DIR, name, 'config.json'), join(folder, 'config.json'));
    const checkpoint = await Checkpoint.open(join(FIXTURES_DIR, name));
    const tensors = new Map<string, Tensor>();
    for (const key of checkpoint.names()) tensors.set(key, await checkpoint.load(key, { device: cpu }));
    edit(tensors);
    await saveSafetensors(join(folder, 'model.safetensors'), tensors);
    for (const t of tensors.values()) t.dispose();
    return folder;
  }

  test('MTP layers in config.json but no mtp.* tensors (an HF re-save): MTP off, one warning line', async () => {
    const folder = await editedCopy('mtp_d2', join(scratch, 'mtp-dropped'), (t) => {
      for (const key of [...t.keys()]) if (key.startsWith('mtp.')) t.delete(key);
    });
    const fixture = await openFixture('mtp_d2');
    const warn = spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const model = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu });
      expect(model.mtp).toBeNull();
      expect(model.config.numNextnPredictLayers).toBe(0);
      expect(warn).toHaveBeenCalledTimes(1);
      expect(String(warn.mock.calls[0]![0])).toMatch(
        /config\.json has num_nextn_predict_layers = 2 but .*mtp-dropped holds no mtp\.\* tensors .*loading without MTP/,
      );
      const full = await NemotronHForCausalLM.fromPretrained(fixture.dir, { device: cpu });
      expectClose(await logitsOf(model, fixture.inputs.input_ids), await logitsOf(full, fixture.inputs.input_ids), {
        rtol: 0,
        what: 'logits without the MTP head',
      });
      model.dispose();
      full.dispose();
    } finally {
      warn.mockRestore();
    }
    // The CLI loads it too, with exactly one warning line.
    const input = join(scratch, 'mtp-dropped.json');
    await Bun.write(input, JSON.stringify({ input_ids: [[1, 2, 3]] }));
    const r = nemotron('forward', '--model', folder, '--input', input, '--out', join(scratch, 'mtp-dropped.safetensors'), '--device', 'cpu');
    expect(r.code).toBe(0);
    expect(r.stderr.split('\n').filter((line) => line.includes('mtp'))).toHaveLength(1);
  });

  test('config overrides: a config.json field, or a whole NemotronHConfig', async () => {
    const dir = join(FIXTURES_DIR, 'mtp_d2');
    const warn = spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const noMtp = await NemotronHForCausalLM.fromPretrained(dir, { device: cpu, config: { num_nextn_predict_layers: 0 } });
      expect(noMtp.mtp).toBeNull();
      expect(noMtp.loadReport!.ignored.length).toBeGreaterThan(0);
      noMtp.dispose();
      const config = NemotronHConfig.fromJSON({ ...(await readConfigJson(join(dir, 'config.json'))), num_nextn_predict_layers: 1 });
      const oneDepth = await NemotronHForCausalLM.fromPretrained(dir, { device: cpu, config, strict: false });
      expect(oneDepth.config).toBe(config);
      expect(oneDepth.mtp!.numDepths).toBe(1);
      oneDepth.dispose();
      await expect(NemotronHForCausalLM.fromPretrained(dir, { device: cpu, config: { hidden_size: -1 } })).rejects.toThrow(
        /config\.json with overrides \{"hidden_size":-1\}: hidden_size/,
      );
    } finally {
      warn.mockRestore();
    }
  });

  test('strict off: missing tensors are initialised and unexpected ones ignored, one warning line each; wrong shapes still fail', async () => {
    const folder = await editedCopy('dense_f32', join(scratch, 'loose'), (t) => {
      t.get('backbone.layers.0.norm.weight')!.dispose();
      t.delete('backbone.layers.0.norm.weight');
      t.set('backbone.layers.0.mixer.extra.weight', tensor(new Float32Array(3), [3], { device: cpu }));
    });
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device: cpu })).rejects.toThrow(
      /missing 1 \(backbone\.layers\.0\.norm\.weight\); unexpected 1 \(backbone\.layers\.0\.mixer\.extra\.weight\)/,
    );
    const warn = spyOn(console, 'warn').mockImplementation(() => {});
    try {
      const model = await NemotronHForCausalLM.fromPretrained(folder, { device: cpu, strict: false });
      expect(warn.mock.calls.map((c) => String(c[0]))).toEqual([
        expect.stringMatching(/lacks 1 tensor\(s\) the model needs \(backbone\.layers\.0\.norm\.weight\); .* freshly initialised/),
        expect.stringMatching(/has 1 tensor\(s\) the model does not use \(backbone\.layers\.0\.mixer\.extra\.weight\); .* ignored/),
      ]);
      // An RMSNorm weight starts at 1; the loaded neighbours keep the checkpoint's values.
      expect(Array.from(await model.getTensor('model.layers.0.norm.weight').toFloat32()).every((v) => v === 1)).toBe(true);
      const reference = await Checkpoint.open(join(FIXTURES_DIR, 'dense_f32'));
      const norm1 = await (await reference.load('backbone.layers.1.norm.weight', { device: cpu })).toFloat32();
      expect(await model.getTensor('model.layers.1.norm.weight').toFloat32()).toEqual(norm1);
      model.dispose();
    } finally {
      warn.mockRestore();
    }
    const config = await readConfigJson(join(folder, 'config.json'));
    await writeConfigJson(join(folder, 'config.json'), { ...config, intermediate_size: 130 });
    await expect(NemotronHForCausalLM.fromPretrained(folder, { device: cpu, strict: false })).rejects.toThrow(
      /mis-shaped 4 \(backbone\.layers\.3\.mixer\.up_proj\.weight/,
    );
    await writeConfigJson(join(folder, 'config.json'), config);

    // The CLI: an error naming the tensors, or with --no-strict the warnings and a result.
    const input = join(scratch, 'loose.json');
    await Bun.write(input, JSON.stringify({ input_ids: [[1, 2, 3]] }));
    const out = join(scratch, 'loose.safetensors');
    const strict = nemotron('forward', '--model', folder, '--input', input, '--out', out, '--device', 'cpu');
    expect(strict.code).toBe(1);
    expect(strict.stderr).toContain('missing 1 (backbone.layers.0.norm.weight)');
    const loose = nemotron('forward', '--model', folder, '--input', input, '--out', out, '--device', 'cpu', '--no-strict');
    expect(loose.code).toBe(0);
    expect(loose.stderr).toContain('freshly initialised');
  });
});
