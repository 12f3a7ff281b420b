import { describe, expect, test } from 'bun:test';
import { getCpuDevice } from '@nemotron-ts/kernels';
import { Attention, Mamba2Mixer, MLP, MoE, NemotronHConfig, NemotronHForCausalLM, planCheckpointExport, type LayerKind } from '../src';
import { FIXTURE_CASES, fixturePath, readSafetensors } from './support/safetensors';

const cpu = getCpuDevice();

async function fixtureConfig(name: string, overrides: Record<string, unknown> = {}): Promise<NemotronHConfig> {
  const json = (await Bun.file(fixturePath(name, 'config.json')).json()) as Record<string, unknown>;
  return NemotronHConfig.fromJSON({ ...json, ...overrides }, { source: name });
}

function tensorInfos(model: NemotronHForCausalLM) {
  return model.namedTensors().map((t) => ({ name: t.name, shape: t.tensor.shape }));
}

const MIXER_CLASS: Record<LayerKind, Function> = { mamba: Mamba2Mixer, attention: Attention, mlp: MLP, moe: MoE };
const F32_TENSORS = /\.(A_log|dt_bias|D|e_score_correction_bias)$/;

describe('module tree vs fixture checkpoints', () => {
  for (const name of FIXTURE_CASES) {
    test(name, async () => {
      const config = await fixtureConfig(name);
      const file = await readSafetensors(fixturePath(name, 'model.safetensors'));
      const model = new NemotronHForCausalLM(config, { device: cpu });
      // Our tensors, saved under HF's on-disk names, are exactly the checkpoint's keys and shapes.
      const exported = new Map(planCheckpointExport(tensorInfos(model), 'hf').map((e) => [e.key, e.shape]));
      const header = new Map([...file.header].map(([k, e]) => [k, e.shape]));
      expect([...exported.keys()].sort()).toEqual([...header.keys()].sort());
      for (const [key, shape] of header) expect({ key, shape: exported.get(key) }).toEqual({ key, shape });
      // Same element count (the manifest's n_params counts the correction-bias buffers too).
      const elements = [...header.values()].reduce((n, s) => n + s.reduce((a, b) => a * b, 1), 0);
      expect(model.numParameters() + model.namedBuffers().reduce((n, [, b]) => n + b.size, 0)).toBe(elements);
      // Mixer classes follow the pattern.
      config.layerKinds.forEach((kind, i) => expect(model.model.layers.at(i).mixer).toBeInstanceOf(MIXER_CLASS[kind]));
      model.dispose();
    });
  }

  test('keep-f32 tensors and bf16 placement', async () => {
    const config = await fixtureConfig('hybrid_bf16');
    const model = new NemotronHForCausalLM(config, { device: cpu, dtype: 'bf16' });
    for (const t of model.namedTensors()) {
      expect({ name: t.name, keepF32: t.keepF32, dtype: t.tensor.dtype }).toEqual({
        name: t.name,
        keepF32: F32_TENSORS.test(t.name),
        dtype: F32_TENSORS.test(t.name) ? 'f32' : 'bf16',
      });
    }
    expect(model.namedBuffers().map(([n]) => n)).toEqual([
      'model.layers.4.mixer.gate.e_score_correction_bias',
      'model.layers.7.mixer.gate.e_score_correction_bias',
    ]);
    model.dispose();
  });
});

describe('MTP', () => {
  test('fusion modules on the first sublayer, final_layernorm on the last', async () => {
    const model = new NemotronHForCausalLM(await fixtureConfig('mtp_d2'), { device: cpu });
    const mtp = model.mtp!;
    expect(mtp.layers.length).toBe(4);
    expect([mtp.numDepths, mtp.sublayersPerDepth]).toEqual([2, 2]);
    const extras = [...mtp.layers].map((l) => [l.kind, !!l.enorm, !!l.hnorm, l.ehProj?.weight.shape ?? null, !!l.finalLayernorm]);
    expect(extras).toEqual([
      ['attention', true, true, [64, 128], false],
      ['moe', false, false, null, true],
      ['attention', true, true, [64, 128], false],
      ['moe', false, false, null, true],
    ]);
    expect(mtp.sublayer(1, 0)).toBe(mtp.layers.at(2));
    expect(() => mtp.sublayer(2, 0)).toThrow(/depth 2 is outside 0..1/);
    model.dispose();
  });

  test('mtp_use_repeated_layer builds one physical depth that every depth runs', async () => {
    const model = new NemotronHForCausalLM(await fixtureConfig('mtp_d2', { mtp_use_repeated_layer: true, num_nextn_predict_layers: 3 }), { device: cpu });
    const mtp = model.mtp!;
    expect(mtp.layers.length).toBe(2);
    expect(mtp.numDepths).toBe(3);
    expect(mtp.sublayer(2, 1)).toBe(mtp.layers.at(1));
    expect(model.namedTensors().filter((t) => t.name.startsWith('mtp.layers.2')).length).toBe(0);
    model.dispose();
  });

  test('no MTP module without num_nextn_predict_layers', async () => {
    const model = new NemotronHForCausalLM(await fixtureConfig('mtp_d2', { num_nextn_predict_layers: 0 }), { device: cpu });
    expect(model.mtp).toBeNull();
    expect(model.namedTensors().some((t) => t.name.startsWith('mtp.'))).toBe(false);
    model.dispose();
  });
});

describe('biases and latent MoE', () => {
  const config = NemotronHConfig.create({
    pattern: 'M*-E',
    vocabSize: 16,
    hiddenSize: 12,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    headDim: 4,
    mambaNumHeads: 2,
    mambaHeadDim: 4,
    nGroups: 1,
    ssmStateSize: 3,
    convKernel: 3,
    intermediateSize: 10,
    nRoutedExperts: 4,
    numExpertsPerTok: 2,
    moeIntermediateSize: 5,
    moeSharedExpertIntermediateSize: 6,
    moeLatentSize: 7,
    useBias: true,
    useConvBias: false,
    mlpBias: true,
    attentionBias: true,
  });

  test('which biases exist (HF semantics)', () => {
    const model = new NemotronHForCausalLM(config, { device: cpu });
    const names = model.namedTensors().map((t) => `${t.name} [${t.tensor.shape.join(', ')}]`);
    expect(names).toEqual([
      'model.embeddings.weight [16, 12]',
      'model.layers.0.norm.weight [12]',
      'model.layers.0.mixer.dt_bias [2]',
      'model.layers.0.mixer.A_log [2]',
      'model.layers.0.mixer.D [2]',
      'model.layers.0.mixer.in_proj.weight [24, 12]',
      'model.layers.0.mixer.in_proj.bias [24]',
      'model.layers.0.mixer.conv1d.weight [14, 3]',
      'model.layers.0.mixer.norm.weight [8]',
      'model.layers.0.mixer.out_proj.weight [12, 8]',
      'model.layers.0.mixer.out_proj.bias [12]',
      'model.layers.1.norm.weight [12]',
      // attention_bias is ignored, as in HF.
      'model.layers.1.mixer.q_proj.weight [8, 12]',
      'model.layers.1.mixer.k_proj.weight [4, 12]',
      'model.layers.1.mixer.v_proj.weight [4, 12]',
      'model.layers.1.mixer.o_proj.weight [12, 8]',
      'model.layers.2.norm.weight [12]',
      'model.layers.2.mixer.up_proj.weight [10, 12]',
      'model.layers.2.mixer.up_proj.bias [10]',
      'model.layers.2.mixer.down_proj.weight [12, 10]',
      'model.layers.2.mixer.down_proj.bias [12]',
      'model.layers.3.norm.weight [12]',
      'model.layers.3.mixer.gate.weight [4, 12]',
      'model.layers.3.mixer.gate.e_score_correction_bias [4]',
      // Routed experts work in the latent width and never have biases.
      'model.layers.3.mixer.experts.up_proj [4, 5, 7]',
      'model.layers.3.mixer.experts.down_proj [4, 7, 5]',
      'model.layers.3.mixer.shared_experts.up_proj.weight [6, 12]',
      'model.layers.3.mixer.shared_experts.up_proj.bias [6]',
      'model.layers.3.mixer.shared_experts.down_proj.weight [12, 6]',
      'model.layers.3.mixer.shared_experts.down_proj.bias [12]',
      'model.layers.3.mixer.fc1_latent_proj.weight [7, 12]',
      'model.layers.3.mixer.fc1_latent_proj.bias [7]',
      'model.layers.3.mixer.fc2_latent_proj.weight [12, 7]',
      'model.layers.3.mixer.fc2_latent_proj.bias [12]',
      'model.norm_f.weight [12]',
      'lm_head.weight [16, 12]',
    ]);
    // d_in_proj = d_inner + conv_dim + heads = 8 + (8 + 2·1·3) + 2
    expect([config.dInner, config.convDim, config.dInProj]).toEqual([8, 14, 24]);
    model.dispose();
  });
});
