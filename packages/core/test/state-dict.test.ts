import { describe, expect, test } from 'bun:test';
import { fromBf16, getCpuDevice, narrow, reshape, tidy, toBf16, type Device, type Tensor } from '@nemotron-ts/kernels';
import { testDevices } from '@nemotron-ts/kernels/testing';
import {
  exportCheckpoint,
  loadCheckpoint,
  NemotronHConfig,
  NemotronHForCausalLM,
  planCheckpointExport,
  planCheckpointLoad,
  type CheckpointFormat,
  type TensorLoader,
} from '../src';
import { expectValues } from './support/values';
import { FIXTURE_CASES, fixturePath, hostValues, loadTensor, readSafetensors, shapesOf, type SafetensorsFile } from './support/safetensors';

const cpu = getCpuDevice();
const devices = await testDevices();

async function fixtureConfig(name: string, overrides: Record<string, unknown> = {}): Promise<NemotronHConfig> {
  const json = (await Bun.file(fixturePath(name, 'config.json')).json()) as Record<string, unknown>;
  return NemotronHConfig.fromJSON({ ...json, ...overrides }, { source: name });
}

function fileLoader(file: SafetensorsFile, device: Device = cpu, rename: (key: string) => string = (k) => k): TensorLoader {
  return (key) => loadTensor(file, rename(key), device);
}

/** A checkpoint held in memory: key → tensor (as exportCheckpoint produces). */
async function exportToMap(model: NemotronHForCausalLM, format: CheckpointFormat): Promise<Map<string, Tensor>> {
  const out = new Map<string, Tensor>();
  await exportCheckpoint(model, format, (key, t) => {
    out.set(key, t.share());
  });
  return out;
}

function mapLoader(map: ReadonlyMap<string, Tensor>): TensorLoader {
  return (key) => map.get(key)!.share();
}

function shapesOfMap(map: ReadonlyMap<string, Tensor>): Map<string, readonly number[]> {
  return new Map([...map].map(([k, t]) => [k, t.shape]));
}

async function expectSameState(a: NemotronHForCausalLM, b: NemotronHForCausalLM): Promise<void> {
  const bs = b.stateDict();
  for (const [name, t] of a.stateDict()) {
    const other = bs.get(name)!;
    expect({ name, dtype: other.dtype }).toEqual({ name, dtype: t.dtype });
    expectValues(name, await other.toFloat32(), await t.toFloat32());
  }
}

function disposeMap(map: Map<string, Tensor>): void {
  for (const t of map.values()) t.dispose();
}

/** The checkpoint key(s) and host values behind each of our tensors, checked against the file. */
async function expectMatchesFile(model: NemotronHForCausalLM, file: SafetensorsFile, round: (v: Float32Array) => Float32Array = (v) => v): Promise<void> {
  for (const entry of planCheckpointExport(
    model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape })),
    'hf',
  )) {
    const source = model.getTensor(entry.source);
    const got = tidy(() => (entry.expert === undefined ? reshape(source, entry.shape) : reshape(narrow(source, 0, entry.expert, 1), entry.shape)));
    const keepF32 = /\.(A_log|dt_bias|D|e_score_correction_bias)$/.test(entry.source);
    const expected = keepF32 ? hostValues(file, entry.key) : round(hostValues(file, entry.key));
    expectValues(entry.key, await got.toFloat32(), expected);
    got.dispose();
  }
}

describe('loading the fixture checkpoints (HF on-disk layout)', () => {
  for (const name of FIXTURE_CASES) {
    test(name, async () => {
      const file = await readSafetensors(fixturePath(name, 'model.safetensors'));
      const model = new NemotronHForCausalLM(await fixtureConfig(name), { device: cpu });
      const report = await loadCheckpoint(model, shapesOf(file), fileLoader(file));
      expect(report).toEqual({ missing: [], unexpected: [], mismatched: [], ignored: [] });
      await expectMatchesFile(model, file);
      // Every tensor is a leaf of the right dtype; parameters require grad.
      for (const t of model.namedTensors()) {
        expect(t.tensor.dtype).toBe('f32');
        expect(t.tensor.requiresGrad).toBe(t.kind === 'parameter');
      }
      model.dispose();
    });
  }

  test('a bf16 model from an f32 checkpoint rounds everything but the keep-f32 tensors', async () => {
    const file = await readSafetensors(fixturePath('moe_flat_rsf2.5', 'model.safetensors'));
    const model = new NemotronHForCausalLM(await fixtureConfig('moe_flat_rsf2.5'), { device: cpu, dtype: 'bf16' });
    await loadCheckpoint(model, shapesOf(file), fileLoader(file));
    await expectMatchesFile(model, file, (v) => fromBf16(toBf16(v)));
    expect(model.model.layers.at(0).mixer.kind).toBe('mamba');
    model.dispose();
  });
});

describe('round trips', () => {
  test('HF on-disk → ours → HF on-disk is exact, keys and shapes as in the file', async () => {
    const file = await readSafetensors(fixturePath('mtp_d2', 'model.safetensors'));
    const model = new NemotronHForCausalLM(await fixtureConfig('mtp_d2'), { device: cpu });
    await loadCheckpoint(model, shapesOf(file), fileLoader(file));
    const saved = await exportToMap(model, 'hf');
    expect([...saved.keys()].sort()).toEqual([...file.header.keys()].sort());
    for (const [key, t] of saved) {
      expect({ key, shape: t.shape }).toEqual({ key, shape: file.header.get(key)!.shape });
      expectValues(key, await t.toFloat32(), hostValues(file, key));
    }
    disposeMap(saved);
    model.dispose();
  });

  test('ours → HF v5 (model.*, stacked experts) → ours is exact', async () => {
    const file = await readSafetensors(fixturePath('hybrid_bf16', 'model.safetensors'));
    const config = await fixtureConfig('hybrid_bf16');
    const a = new NemotronHForCausalLM(config, { device: cpu, dtype: 'bf16' });
    await loadCheckpoint(a, shapesOf(file), fileLoader(file));
    const v5 = await exportToMap(a, 'hf-v5');
    expect(v5.get('model.layers.4.mixer.experts.up_proj')!.shape).toEqual([8, 48, 128]);
    expect(v5.get('model.layers.4.mixer.experts.down_proj')!.shape).toEqual([8, 128, 48]);
    expect(v5.get('model.layers.0.mixer.conv1d.weight')!.shape).toEqual([256, 1, 4]);
    expect(v5.has('model.embeddings.weight') && v5.has('model.norm_f.weight') && v5.has('lm_head.weight')).toBe(true);
    expect([...v5.keys()].some((k) => k.startsWith('backbone.') || /experts\.\d/.test(k))).toBe(false);
    // Keep-f32 tensors are saved in f32 (as NeMo exports them), the rest in the model dtype.
    expect(v5.get('model.layers.0.mixer.A_log')!.dtype).toBe('f32');
    expect(v5.get('model.layers.0.mixer.in_proj.weight')!.dtype).toBe('bf16');
    const b = new NemotronHForCausalLM(config, { device: cpu, dtype: 'bf16' });
    const report = await loadCheckpoint(b, shapesOfMap(v5), mapLoader(v5));
    expect(report).toEqual({ missing: [], unexpected: [], mismatched: [], ignored: [] });
    await expectSameState(a, b);
    // And v5 → HF on-disk gives back the file's keys.
    const disk = await exportToMap(b, 'hf');
    expect([...disk.keys()].sort()).toEqual([...file.header.keys()].sort());
    for (const m of [v5, disk]) disposeMap(m);
    a.dispose();
    b.dispose();
  });

  test('a model.* prefixed on-disk checkpoint and the legacy backbone.embedding.weight load too', async () => {
    const file = await readSafetensors(fixturePath('moe_group4_top2', 'model.safetensors'));
    const config = await fixtureConfig('moe_group4_top2');
    const renamed = (k: string) => k.replace(/^backbone\./, 'model.');
    const toFile = (k: string) => k.replace(/^model\./, 'backbone.');
    const a = new NemotronHForCausalLM(config, { device: cpu });
    const prefixed = new Map([...shapesOf(file)].map(([k, s]) => [renamed(k), s]));
    expect(await loadCheckpoint(a, prefixed, fileLoader(file, cpu, toFile))).toEqual({ missing: [], unexpected: [], mismatched: [], ignored: [] });
    await expectMatchesFile(a, file);

    const legacy = (k: string) => (k === 'backbone.embeddings.weight' ? 'backbone.embedding.weight' : k);
    const b = new NemotronHForCausalLM(config, { device: cpu });
    const legacyShapes = new Map([...shapesOf(file)].map(([k, s]) => [legacy(k), s]));
    const back = (k: string) => (k === 'backbone.embedding.weight' ? 'backbone.embeddings.weight' : k);
    expect((await loadCheckpoint(b, legacyShapes, fileLoader(file, cpu, back))).missing).toEqual([]);
    await expectSameState(a, b);
    a.dispose();
    b.dispose();
  });
});

describe('reports', () => {
  test('MTP tensors are ignored (not unexpected) by a model without MTP', async () => {
    const file = await readSafetensors(fixturePath('mtp_d2', 'model.safetensors'));
    const model = new NemotronHForCausalLM(await fixtureConfig('mtp_d2', { num_nextn_predict_layers: 0 }), { device: cpu });
    const report = await loadCheckpoint(model, shapesOf(file), fileLoader(file));
    expect(report.unexpected).toEqual([]);
    expect(report.ignored.length).toBe([...file.header.keys()].filter((k) => k.startsWith('mtp.')).length);
    expect(report.ignored.length).toBeGreaterThan(0);
    model.dispose();
  });

  test('missing, unexpected and mis-shaped keys; strict throws before loading anything', async () => {
    const file = await readSafetensors(fixturePath('dense_f32', 'model.safetensors'));
    const config = await fixtureConfig('dense_f32');
    const shapes = shapesOf(file);
    shapes.delete('backbone.layers.0.mixer.A_log');
    shapes.set('backbone.layers.8.norm.weight', [64]); // a layer beyond num_hidden_layers
    shapes.set('backbone.layers.1.mixer.q_proj.weight', [16, 64]);
    shapes.set('backbone.layers.2.mixer.conv1d.weight', [128, 4]); // conv without its [C, 1, K] axis

    const plan = planCheckpointLoad(
      new NemotronHForCausalLM(config, { device: cpu }).namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape })),
      shapes,
    );
    expect(plan.report).toEqual({
      missing: ['backbone.layers.0.mixer.A_log'],
      unexpected: ['backbone.layers.8.norm.weight'],
      mismatched: [
        { name: 'backbone.layers.1.mixer.q_proj.weight', expected: [32, 64], actual: [16, 64] },
        { name: 'backbone.layers.2.mixer.conv1d.weight', expected: [128, 1, 4], actual: [128, 4] },
      ],
      ignored: [],
    });

    const model = new NemotronHForCausalLM(config, { device: cpu });
    let requested = 0;
    const counting: TensorLoader = (key) => {
      requested++;
      return loadTensor(file, key, cpu);
    };
    await expect(loadCheckpoint(model, shapes, counting)).rejects.toThrow(
      /missing 1 \(backbone.layers.0.mixer.A_log\); unexpected 1 \(backbone.layers.8.norm.weight\); mis-shaped 2 \(backbone.layers.1.mixer.q_proj.weight: model needs \[32, 64\], checkpoint has \[16, 64\]/,
    );
    expect(requested).toBe(0);
    const report = await loadCheckpoint(model, shapes, counting, { strict: false });
    expect(report).toEqual(plan.report);
    expect(requested).toBe(file.header.size - 3);
    model.dispose();
  });

  test('a missing routed expert is reported by its key', async () => {
    const file = await readSafetensors(fixturePath('moe_flat_rsf2.5', 'model.safetensors'));
    const shapes = shapesOf(file);
    shapes.delete('backbone.layers.2.mixer.experts.5.down_proj.weight');
    const model = new NemotronHForCausalLM(await fixtureConfig('moe_flat_rsf2.5'), { device: cpu });
    const report = await loadCheckpoint(model, shapes, fileLoader(file), { strict: false });
    expect(report.missing).toEqual(['backbone.layers.2.mixer.experts.5.down_proj.weight']);
    expect(report.unexpected).toEqual([]);
    model.dispose();
  });

  test('a loader that disagrees with the header is an error', async () => {
    const file = await readSafetensors(fixturePath('dense_f32', 'model.safetensors'));
    const model = new NemotronHForCausalLM(await fixtureConfig('dense_f32'), { device: cpu });
    const wrong: TensorLoader = (key) => loadTensor(file, key === 'lm_head.weight' ? 'backbone.norm_f.weight' : key, cpu);
    await expect(loadCheckpoint(model, shapesOf(file), wrong)).rejects.toThrow(/loader returned \[64\] for 'lm_head.weight', whose header says \[256, 64\]/);
    model.dispose();
  });

  test('tie_word_embeddings: honoured only when lm_head.weight is absent', async () => {
    const file = await readSafetensors(fixturePath('dense_f32', 'model.safetensors'));
    const shapes = shapesOf(file);
    shapes.delete('lm_head.weight');
    const untied = new NemotronHForCausalLM(await fixtureConfig('dense_f32'), { device: cpu });
    expect((await loadCheckpoint(untied, shapes, fileLoader(file), { strict: false })).missing).toEqual(['lm_head.weight']);
    untied.dispose();

    const config = await fixtureConfig('dense_f32', { tie_word_embeddings: true });
    const tied = new NemotronHForCausalLM(config, { device: cpu });
    const report = await loadCheckpoint(tied, shapes, fileLoader(file), { tieWordEmbeddings: config.tieWordEmbeddings });
    expect(report.missing).toEqual([]);
    expectValues('tied lm_head', await tied.lmHead.weight.toFloat32(), hostValues(file, 'backbone.embeddings.weight'));
    expect(tied.lmHead.weight.storage).not.toBe(tied.model.embeddings.weight.storage);
    // With lm_head.weight present the flag changes nothing.
    const full = new NemotronHForCausalLM(config, { device: cpu });
    await loadCheckpoint(full, shapesOf(file), fileLoader(file), { tieWordEmbeddings: true });
    expectValues('lm_head', await full.lmHead.weight.toFloat32(), hostValues(file, 'lm_head.weight'));
    tied.dispose();
    full.dispose();
  });
});

describe('expert stacking on each device', () => {
  // Odd I·Hx (7·33) makes a bf16 expert slice start mid-word; even (8·33) does not.
  for (const moeIntermediateSize of [7, 8]) {
    const config = NemotronHConfig.create({
      pattern: 'ME',
      vocabSize: 11,
      hiddenSize: 33,
      numAttentionHeads: 3,
      numKeyValueHeads: 1,
      headDim: 4,
      mambaNumHeads: 3,
      mambaHeadDim: 5,
      nGroups: 3,
      ssmStateSize: 2,
      nRoutedExperts: 5,
      numExpertsPerTok: 2,
      moeIntermediateSize,
      moeSharedExpertIntermediateSize: 9,
    });
    for (const device of devices) {
      test(`I=${moeIntermediateSize}, bf16 on ${device.kind}, CPU-side loader`, async () => {
        const source = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 3 });
        const saved = await exportToMap(source, 'hf');
        const model = new NemotronHForCausalLM(config, { device, dtype: 'bf16' });
        const targets = new Set<string>();
        await loadCheckpoint(model, shapesOfMap(saved), (key, target) => {
          targets.add(`${/\.(A_log|dt_bias|D|e_score_correction_bias)$/.test(key)} ${target.device.kind} ${target.dtype}`);
          return saved.get(key)!.share();
        });
        // The loader is told where each tensor goes: the slot's device and dtype.
        expect([...targets].sort()).toEqual([`false ${device.kind} bf16`, `true ${device.kind} f32`]);
        const up = model.getTensor('model.layers.1.mixer.experts.up_proj');
        expect([up.device.kind, up.dtype]).toEqual([device.kind, 'bf16']);
        for (const [name, t] of source.stateDict()) {
          const got = await model.getTensor(name).toFloat32();
          const want = await t.toFloat32();
          const keepF32 = /\.(A_log|dt_bias|D|e_score_correction_bias)$/.test(name);
          expectValues(name, got, keepF32 ? want : fromBf16(toBf16(want)));
        }
        disposeMap(saved);
        source.dispose();
        model.dispose();
      });
    }
  }
});
