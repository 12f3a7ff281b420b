import { describe, expect, test } from 'bun:test';
import { fromBf16, Generator, getCpuDevice, toBf16 } from '@nemotron-ts/kernels';
import { testGpu } from '@nemotron-ts/kernels/testing';
import { differ, expectValues } from './support/values';
import { initializeWeights, NemotronHConfig, NemotronHForCausalLM, type NemotronHConfigInit } from '../src';
import { seedFor } from '../src/nemotron/init';

const cpu = getCpuDevice();
const gpu = await testGpu();

const INIT: NemotronHConfigInit = {
  pattern: 'M*-E',
  vocabSize: 1000,
  hiddenSize: 96,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  headDim: 24,
  mambaNumHeads: 8,
  mambaHeadDim: 16,
  nGroups: 2,
  ssmStateSize: 16,
  convKernel: 4,
  intermediateSize: 256,
  nRoutedExperts: 8,
  numExpertsPerTok: 2,
  moeIntermediateSize: 64,
  moeSharedExpertIntermediateSize: 128,
  moeLatentSize: 48,
  useBias: true,
  mlpBias: true,
  numNextnPredictLayers: 1,
  mtpPattern: '*E',
  initializerRange: 0.02,
};

const config = NemotronHConfig.create(INIT);
const residualScale = 1 / Math.sqrt(config.numHiddenLayers); // 0.5

function stats(v: Float32Array) {
  let sum = 0;
  let max = 0;
  for (const x of v) {
    sum += x;
    max = Math.max(max, Math.abs(x));
  }
  const mean = sum / v.length;
  let sq = 0;
  for (const x of v) sq += (x - mean) ** 2;
  return { mean, std: Math.sqrt(sq / v.length), max };
}

/** What a tensor should look like, from its name (spec §7, NeMo column). */
type Expected = { normal: number } | { uniform: number } | { constant: number } | { aLog: true } | { dtBias: true };

function expectedInit(name: string, shape: readonly number[]): Expected {
  const fanIn = shape[shape.length - 1]!;
  if (/(^|\.)(norm|norm_f|enorm|hnorm|final_layernorm)\.weight$/.test(name) || /\.D$/.test(name)) return { constant: 1 };
  if (/\.bias$/.test(name) && !/conv1d/.test(name)) return { constant: 0 };
  if (/e_score_correction_bias$/.test(name)) return { constant: 0 };
  if (/\.A_log$/.test(name)) return { aLog: true };
  if (/\.dt_bias$/.test(name)) return { dtBias: true };
  if (/conv1d\.(weight|bias)$/.test(name)) return { uniform: 1 / Math.sqrt(config.convKernel) };
  if (/\.(in_proj|q_proj|k_proj|v_proj)\.weight$/.test(name)) return { uniform: 1 / Math.sqrt(fanIn) };
  if (/\.(out_proj|o_proj)\.weight$/.test(name)) return { uniform: residualScale / Math.sqrt(fanIn) };
  if (/down_proj(\.weight)?$/.test(name)) return { normal: 0.02 * residualScale };
  return { normal: 0.02 };
}

async function checkTensor(name: string, shape: readonly number[], values: Float32Array): Promise<void> {
  const e = expectedInit(name, shape);
  const n = values.length;
  const s = stats(values);
  const what = `${name} ${JSON.stringify(e)} got ${JSON.stringify(s)}`;
  if ('constant' in e)
    expect(
      values.every((v) => v === e.constant),
      what,
    ).toBe(true);
  else if ('aLog' in e)
    expectValues(
      name,
      values,
      Float32Array.from({ length: n }, (_, i) => Math.log(i + 1)),
    );
  else if ('dtBias' in e) {
    for (const b of values) {
      const dt = Math.log1p(Math.exp(b));
      expect(dt, what).toBeGreaterThanOrEqual(config.timeStepMin * (1 - 1e-5));
      expect(dt, what).toBeLessThanOrEqual(config.timeStepMax * (1 + 1e-5));
    }
  } else {
    const std = 'normal' in e ? e.normal : e.uniform / Math.sqrt(3);
    // Five standard errors: the mean's is std/√n, the sample std's is about std/√(2n).
    expect(Math.abs(s.mean), what).toBeLessThan((5 * std) / Math.sqrt(n));
    expect(Math.abs(s.std / std - 1), what).toBeLessThan(5 / Math.sqrt(2 * n) + 0.02);
    if ('uniform' in e) {
      expect(s.max, what).toBeLessThanOrEqual(e.uniform);
      expect(s.max, what).toBeGreaterThan(0.9 * e.uniform);
    }
  }
}

describe('initializeWeights (NeMo, spec §7)', () => {
  test('every tensor follows its rule', async () => {
    const model = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 1 });
    const names = model.namedTensors().map((t) => t.name);
    // The rescaled and latent layers really are in this model.
    for (const n of [
      'model.layers.0.mixer.out_proj.weight',
      'model.layers.1.mixer.o_proj.weight',
      'model.layers.2.mixer.down_proj.weight',
      'model.layers.3.mixer.experts.down_proj',
      'model.layers.3.mixer.shared_experts.down_proj.weight',
      'model.layers.3.mixer.fc2_latent_proj.weight',
      'mtp.layers.0.eh_proj.weight',
      'model.layers.0.mixer.in_proj.bias',
    ]) {
      expect(names).toContain(n);
    }
    for (const t of model.namedTensors()) await checkTensor(t.name, t.tensor.shape, await t.tensor.toFloat32());
    model.dispose();
  });

  test('dt_bias is the inverse softplus of a log-uniform dt', async () => {
    const many = NemotronHConfig.create({
      ...INIT,
      pattern: 'M',
      hiddenSize: 4,
      numAttentionHeads: 1,
      numKeyValueHeads: 1,
      mambaNumHeads: 4096,
      mambaHeadDim: 1,
      nGroups: 1,
      ssmStateSize: 1,
    });
    const model = NemotronHForCausalLM.fromConfig(many, { device: cpu, seed: 2 });
    const bias = await model.getTensor('model.layers.0.mixer.dt_bias').toFloat32();
    const logDt = Array.from(bias, (b) => Math.log(Math.log1p(Math.exp(b))));
    const lo = Math.log(0.001);
    const hi = Math.log(0.1);
    const s = stats(Float32Array.from(logDt));
    // U(lo, hi): mean (lo+hi)/2, std (hi-lo)/√12.
    expect(Math.abs(s.mean - (lo + hi) / 2)).toBeLessThan((5 * (hi - lo)) / Math.sqrt(12 * 4096));
    expect(Math.abs(s.std / ((hi - lo) / Math.sqrt(12)) - 1)).toBeLessThan(0.05);
    model.dispose();
  });

  test('time_step_floor lifts small dt', async () => {
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, timeStepMin: 1e-4, timeStepMax: 1e-3, timeStepFloor: 5e-4 }), {
      device: cpu,
      seed: 2,
    });
    const dt = Array.from(await model.getTensor('model.layers.0.mixer.dt_bias').toFloat32(), (b) => Math.log1p(Math.exp(b)));
    expect(Math.min(...dt)).toBeGreaterThanOrEqual(5e-4 * (1 - 1e-4));
    model.dispose();
  });

  test('without rescale_prenorm_residual the residual writers are not scaled', async () => {
    const model = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, rescalePrenormResidual: false }), { device: cpu, seed: 1 });
    const down = stats(await model.getTensor('model.layers.3.mixer.experts.down_proj').toFloat32());
    expect(Math.abs(down.std / 0.02 - 1)).toBeLessThan(0.05);
    const out = stats(await model.getTensor('model.layers.0.mixer.out_proj.weight').toFloat32());
    expect(out.max).toBeGreaterThan(0.9 / Math.sqrt(config.dInner));
    model.dispose();
  });

  test('deterministic per seed and per tensor name', async () => {
    const a = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 7 });
    const b = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 7 });
    const c = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 8 });
    const noMtp = NemotronHForCausalLM.fromConfig(NemotronHConfig.create({ ...INIT, numNextnPredictLayers: 0 }), { device: cpu, seed: 7 });
    const bs = b.stateDict();
    const cs = c.stateDict();
    const ns = noMtp.stateDict();
    for (const [name, t] of a.stateDict()) {
      const v = await t.toFloat32();
      expectValues(name, v, await bs.get(name)!.toFloat32());
      // Tensors do not depend on which other tensors exist (MTP on or off).
      if (ns.has(name)) expectValues(name, v, await ns.get(name)!.toFloat32());
    }
    const w = await a.getTensor('model.layers.0.mixer.in_proj.weight').toFloat32();
    expect(differ(w, await cs.get('model.layers.0.mixer.in_proj.weight')!.toFloat32())).toBe(true);
    // Same-shaped tensors of different layers differ.
    expect(
      differ(await a.getTensor('mtp.layers.1.mixer.experts.up_proj').toFloat32(), await a.getTensor('model.layers.3.mixer.experts.up_proj').toFloat32()),
    ).toBe(true);
    for (const m of [a, b, c, noMtp]) m.dispose();
  });

  test('bf16 models: keep-f32 tensors stay f32, the rest are the f32 init rounded', async () => {
    const f32 = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 3 });
    const bf16 = NemotronHForCausalLM.fromConfig(config, { device: cpu, seed: 3, dtype: 'bf16' });
    const ref = f32.stateDict();
    for (const t of bf16.namedTensors()) {
      const want = await ref.get(t.name)!.toFloat32();
      expect({ name: t.name, dtype: t.tensor.dtype }).toEqual({ name: t.name, dtype: t.keepF32 ? 'f32' : 'bf16' });
      expectValues(t.name, await t.tensor.toFloat32(), t.keepF32 ? want : fromBf16(toBf16(want)));
    }
    f32.dispose();
    bf16.dispose();
  });

  test('a tensor larger than one written chunk (1 Mi elements) continues its draws across chunks, in f32 and bf16', async () => {
    const wide = NemotronHConfig.create({ ...INIT, pattern: 'M', vocabSize: 11_000, numNextnPredictLayers: 0 });
    const name = 'model.embeddings.weight';
    const g = new Generator(seedFor(5, name));
    const want = Float32Array.from({ length: 11_000 * INIT.hiddenSize! }, () => g.normal() * 0.02);
    for (const dtype of ['f32', 'bf16'] as const) {
      const model = NemotronHForCausalLM.fromConfig(wide, { device: cpu, seed: 5, dtype });
      const got = await model.getTensor(name).toFloat32();
      expect(got.length).toBeGreaterThan(1 << 20);
      expectValues(`${name} ${dtype}`, got, dtype === 'bf16' ? fromBf16(toBf16(want)) : want);
      model.dispose();
    }
  });

  test('a tensor without a rule is an error', () => {
    class Extended extends NemotronHForCausalLM {
      constructor() {
        super(config, { device: cpu });
        this.createParameter('mystery', [3], { device: cpu });
      }
    }
    const model = new Extended();
    expect(() => initializeWeights(model, { seed: 0 })).toThrow(/no rule for mystery/);
    model.dispose();
  });

  if (gpu) {
    test('the same weights on WebGPU as on the CPU', async () => {
      const small = NemotronHConfig.create({ ...INIT, vocabSize: 50 });
      for (const dtype of ['f32', 'bf16'] as const) {
        const onCpu = NemotronHForCausalLM.fromConfig(small, { device: cpu, seed: 4, dtype });
        const onGpu = NemotronHForCausalLM.fromConfig(small, { device: gpu, seed: 4, dtype });
        const ref = onCpu.stateDict();
        for (const [name, t] of onGpu.stateDict()) {
          expect(t.device).toBe(gpu);
          expectValues(`${name} ${dtype}`, await t.toFloat32(), await ref.get(name)!.toFloat32());
        }
        onCpu.dispose();
        onGpu.dispose();
      }
    });
  }
});
