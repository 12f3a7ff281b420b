import { describe, expect, test } from 'bun:test';
import { readdirSync } from 'node:fs';
import { ConfigError, GenerationConfig, NemotronHConfig, type JsonObject } from '../src';
import { FIXTURE_CASES, fixturePath } from './support/safetensors';

const SPEC_CONFIGS = new URL('./configs/', import.meta.url);

async function fixtureJson(name: string): Promise<JsonObject> {
  return (await Bun.file(fixturePath(name, 'config.json')).json()) as JsonObject;
}

function specJson(file: string): Promise<JsonObject> {
  return Bun.file(new URL(file, SPEC_CONFIGS)).json() as Promise<JsonObject>;
}

/** A small valid config object to mutate in error tests. */
function base(): JsonObject {
  return {
    model_type: 'nemotron_h',
    hybrid_override_pattern: 'M*-E',
    num_hidden_layers: 4,
    vocab_size: 64,
    hidden_size: 32,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    head_dim: 8,
    mamba_num_heads: 4,
    mamba_head_dim: 8,
    n_groups: 2,
    ssm_state_size: 4,
    intermediate_size: 48,
    n_routed_experts: 8,
    num_experts_per_tok: 2,
    moe_intermediate_size: 16,
    moe_shared_expert_intermediate_size: 24,
  };
}

function expectConfigError(json: JsonObject, field: string, message: RegExp): void {
  let error: unknown;
  try {
    NemotronHConfig.fromJSON(json, { source: 'test.json' });
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(ConfigError);
  expect((error as ConfigError).field).toBe(field);
  expect((error as ConfigError).message).toStartWith(`test.json: ${field}: `);
  expect((error as ConfigError).message).toMatch(message);
}

describe('fixture configs', () => {
  for (const name of FIXTURE_CASES) {
    test(name, async () => {
      const json = await fixtureJson(name);
      const c = NemotronHConfig.fromJSON(json, { source: name });
      expect(c.pattern).toBe(json.hybrid_override_pattern as string);
      expect(c.numHiddenLayers).toBe(json.num_hidden_layers as number);
      expect(c.dInner).toBe((json.mamba_num_heads as number) * (json.mamba_head_dim as number));
      expect(c.convDim).toBe(c.dInner + 2 * (json.n_groups as number) * (json.ssm_state_size as number));
      expect(c.dInProj).toBe(c.dInner + c.convDim + c.mambaNumHeads);
      expect(c.groupSize * c.nGroups).toBe(c.dInner);
      expect(c.headsPerGroup * c.nGroups).toBe(c.mambaNumHeads);
      expect(c.timeStepLimit).toEqual([0, Infinity]);
      expect(c.clampsDt).toBe(false);
      expect(c.routedScalingFactor).toBe(json.routed_scaling_factor as number);
      expect(c.nGroup).toBe(json.n_group as number);
      expect(c.topkGroup).toBe(json.topk_group as number);
      expect(c.extra.torch_dtype).toBe(json.torch_dtype!);
      // toJSON keeps every field of the file, with the same values.
      const out = c.toJSON();
      for (const [k, v] of Object.entries(json)) expect({ k, v: out[k] }).toEqual({ k, v });
      expect(NemotronHConfig.fromJSON(out).toJSON()).toEqual(out);
    });
  }

  test('mtp_d2 MTP fields', async () => {
    const c = NemotronHConfig.fromJSON(await fixtureJson('mtp_d2'));
    expect(c.mtpEnabled).toBe(true);
    expect(c.numNextnPredictLayers).toBe(2);
    expect(c.mtpLayerKinds).toEqual(['attention', 'moe']);
    expect(c.mtpPhysicalDepths).toBe(2);
    expect(c.mtpLossScalingFactor).toBe(0.1);
    const repeated = NemotronHConfig.fromJSON({ ...(await fixtureJson('mtp_d2')), mtp_use_repeated_layer: true });
    expect(repeated.mtpPhysicalDepths).toBe(1);
  });
});

describe('spec configs', () => {
  const files = readdirSync(SPEC_CONFIGS).filter((f) => f.endsWith('.json'));

  test('every saved config parses', async () => {
    expect(files.length).toBe(4);
    for (const file of files) {
      const json = await specJson(file);
      const c = NemotronHConfig.fromJSON(json, { source: file });
      expect(c.numHiddenLayers).toBe(json.num_hidden_layers as number);
    }
  });

  test('Nano-3 30B-A3B dimensions (spec §1.3)', async () => {
    const c = NemotronHConfig.fromJSON(await specJson('NVIDIA-Nemotron-3-Nano-30B-A3B-BF16.json'));
    expect([c.hiddenSize, c.dInner, c.convDim, c.dInProj, c.groupSize]).toEqual([2688, 4096, 6144, 10304, 512]);
    expect([c.numAttentionHeads * c.headDim, c.numKeyValueHeads * c.headDim]).toEqual([4096, 256]);
    expect([c.nRoutedExperts, c.numExpertsPerTok, c.moeIntermediateSize, c.moeSharedExpertIntermediateSize]).toEqual([128, 6, 1856, 3712]);
    expect(c.routedScalingFactor).toBe(2.5);
    const count = (k: string) => c.layerKinds.filter((x) => x === k).length;
    expect([count('mamba'), count('moe'), count('attention')]).toEqual([23, 23, 6]);
    expect(c.extra.rope_theta).toBe(10000);
    expect(c.extra.norm_eps).toBe(1e-5);
  });

  test('8B and 9B-v2 dimensions (spec §1.3)', async () => {
    const b8 = NemotronHConfig.fromJSON(await specJson('Nemotron-H-8B-Base-8K.partial.json'));
    // No head_dim in the partial file: hidden / heads.
    expect([b8.dInner, b8.convDim, b8.dInProj, b8.groupSize, b8.headDim]).toEqual([8192, 10240, 18560, 1024, 128]);
    expect([b8.numAttentionHeads * b8.headDim, b8.numKeyValueHeads * b8.headDim]).toEqual([4096, 1024]);
    const b9 = NemotronHConfig.fromJSON(await specJson('NVIDIA-Nemotron-Nano-9B-v2.partial.json'));
    // d_inner = heads · head_dim, not expand · hidden (2 · 4480).
    expect([b9.dInner, b9.convDim, b9.dInProj, b9.groupSize]).toEqual([10240, 12288, 22656, 1280]);
    expect([b9.numAttentionHeads * b9.headDim, b9.numKeyValueHeads * b9.headDim]).toEqual([5120, 1024]);
  });

  test('Super 120B: latent MoE and MTP', async () => {
    const c = NemotronHConfig.fromJSON(await specJson('NVIDIA-Nemotron-3-Super-120B-A12B.partial.json'));
    expect(c.expertHiddenSize).toBe(1024);
    expect(c.mtpEnabled).toBe(true);
    expect(c.mtpLayerKinds).toEqual(['attention', 'moe']);
  });
});

describe('aliases and list forms', () => {
  test('legacy mamba_* names', () => {
    const json = base();
    for (const k of ['n_groups']) delete json[k];
    Object.assign(json, {
      mamba_n_groups: 4,
      mamba_d_conv: 3,
      mamba_chunk_size: 64,
      mamba_expand: 3,
      mamba_dt_min: 0.002,
      mamba_dt_max: 0.2,
      mamba_dt_init_floor: 0.0002,
      mamba_dt_limit: [0.001, 10],
      mamba_conv_bias: false,
    });
    const c = NemotronHConfig.fromJSON(json);
    expect([c.nGroups, c.convKernel, c.chunkSize, c.expand]).toEqual([4, 3, 64, 3]);
    expect([c.timeStepMin, c.timeStepMax, c.timeStepFloor]).toEqual([0.002, 0.2, 0.0002]);
    expect(c.timeStepLimit).toEqual([0.001, 10]);
    expect(c.clampsDt).toBe(true);
    expect(c.useConvBias).toBe(false);
    // Written back under the canonical names only.
    const out = c.toJSON();
    expect(out.n_groups).toBe(4);
    expect(out.conv_kernel).toBe(3);
    expect(out.time_step_limit).toEqual([0.001, 10]);
    expect('mamba_n_groups' in out || 'mamba_dt_limit' in out).toBe(false);
  });

  test('an alias equal to the canonical field is accepted, a different one is an error', () => {
    expect(NemotronHConfig.fromJSON({ ...base(), mamba_n_groups: 2 }).nGroups).toBe(2);
    expectConfigError({ ...base(), mamba_n_groups: 4 }, 'mamba_n_groups', /conflicts with n_groups = 2/);
  });

  test('attention_head_dim, and hidden / heads as the fallback', () => {
    const json = base();
    delete json.head_dim;
    expect(NemotronHConfig.fromJSON({ ...json, attention_head_dim: 16 }).headDim).toBe(16);
    expect(NemotronHConfig.fromJSON(json).headDim).toBe(8);
    expectConfigError({ ...json, num_attention_heads: 5, num_key_value_heads: 5 }, 'head_dim', /hidden_size 32 is not a multiple of num_attention_heads 5/);
  });

  test('num_key_value_heads null means as many as query heads', () => {
    expect(NemotronHConfig.fromJSON({ ...base(), num_key_value_heads: null }).numKeyValueHeads).toBe(4);
  });

  test('layers_block_type in old and new names, layer_types, num_local_experts', () => {
    const json = base();
    delete json.hybrid_override_pattern;
    const old = NemotronHConfig.fromJSON({ ...json, layers_block_type: ['mamba', 'attention', 'mlp', 'moe'] });
    const current = NemotronHConfig.fromJSON({ ...json, layer_types: ['linear_attention', 'full_attention', 'mlp', 'moe'] });
    expect(old.pattern).toBe('M*-E');
    expect(current.layerKinds).toEqual(['mamba', 'attention', 'mlp', 'moe']);
    expect(current.toJSON().hybrid_override_pattern).toBe('M*-E');
    expect(NemotronHConfig.fromJSON({ ...base(), n_routed_experts: undefined as never, num_local_experts: 16 }).nRoutedExperts).toBe(16);
    // null lists count as absent.
    expect(NemotronHConfig.fromJSON({ ...base(), layers_block_type: null }).pattern).toBe('M*-E');
    // Without num_hidden_layers the list decides the count.
    delete json.num_hidden_layers;
    expect(NemotronHConfig.fromJSON({ ...json, layers_block_type: ['mamba', 'mlp'] }).numHiddenLayers).toBe(2);
  });

  test('MTP pattern as a string or a list', () => {
    const s = NemotronHConfig.fromJSON({ ...base(), num_nextn_predict_layers: 3, mtp_hybrid_override_pattern: '*E' });
    const l = NemotronHConfig.fromJSON({ ...base(), num_nextn_predict_layers: 3, mtp_layers_block_type: ['full_attention', 'moe'] });
    expect(s.mtpLayerKinds).toEqual(['attention', 'moe']);
    expect(l.mtpPattern).toBe('*E');
    expect(l.mtpPhysicalDepths).toBe(3);
    // HF writes a default MTP list even without MTP: parsed, but MTP stays off.
    const off = NemotronHConfig.fromJSON({ ...base(), mtp_layers_block_type: ['full_attention', 'moe'] });
    expect(off.mtpEnabled).toBe(false);
    expect(NemotronHConfig.fromJSON(base()).toJSON().num_nextn_predict_layers).toBeUndefined();
  });
});

describe('time_step_limit', () => {
  test('absent or null → (0, ∞)', () => {
    expect(NemotronHConfig.fromJSON({ ...base(), time_step_limit: null }).timeStepLimit).toEqual([0, Infinity]);
    const c = NemotronHConfig.fromJSON(base());
    expect(c.timeStepLimit).toEqual([0, Infinity]);
    expect(c.clampsDt).toBe(false);
    expect('time_step_limit' in c.toJSON()).toBe(false);
  });

  test('parsed numbers, including Infinity', () => {
    expect(NemotronHConfig.fromJSON({ ...base(), time_step_limit: [0, Infinity] }).clampsDt).toBe(false);
    expect(NemotronHConfig.fromJSON({ ...base(), time_step_limit: [0.0, 0.5] }).timeStepLimit).toEqual([0, 0.5]);
    const lower = NemotronHConfig.fromJSON({ ...base(), time_step_limit: [0.01, Infinity] });
    expect(lower.clampsDt).toBe(true);
    expect(lower.toJSON().time_step_limit).toEqual([0.01, Infinity]);
  });

  test('{"__float__": "Infinity"} (the fixtures manifest form)', () => {
    const c = NemotronHConfig.fromJSON({ ...base(), time_step_limit: [0.0, { __float__: 'Infinity' }] });
    expect(c.timeStepLimit).toEqual([0, Infinity]);
    expect(c.clampsDt).toBe(false);
  });

  test('invalid limits', () => {
    expectConfigError({ ...base(), time_step_limit: [0.1] }, 'time_step_limit', /expected \[lo, hi\]/);
    expectConfigError({ ...base(), time_step_limit: [0.5, 0.1] }, 'time_step_limit', /0 <= lo <= hi/);
    expectConfigError({ ...base(), time_step_limit: ['0', 1] }, 'time_step_limit', /expected \[lo, hi\]/);
    expectConfigError({ ...base(), mamba_dt_limit: [0, { __float__: 'NaN' }] }, 'mamba_dt_limit', /expected \[lo, hi\]/);
  });
});

describe('validation errors name the field', () => {
  test('layer pattern', () => {
    const json = base();
    delete json.hybrid_override_pattern;
    expectConfigError(json, 'hybrid_override_pattern', /missing/);
    expectConfigError({ ...base(), hybrid_override_pattern: 'M*X-' }, 'hybrid_override_pattern', /unknown layer character "X" at position 2/);
    expectConfigError({ ...base(), hybrid_override_pattern: '' }, 'hybrid_override_pattern', /is empty/);
    expectConfigError({ ...base(), num_hidden_layers: 5 }, 'num_hidden_layers', /5 does not match the 4 layers of the pattern "M\*-E"/);
    expectConfigError(
      { ...base(), layers_block_type: ['mamba', 'mlp', 'mlp', 'moe'] },
      'layers_block_type',
      /pattern "M--E" but hybrid_override_pattern is "M\*-E"/,
    );
    expectConfigError(
      { ...base(), hybrid_override_pattern: undefined as never, layers_block_type: ['mamba', 'ssm'] },
      'layers_block_type[1]',
      /unknown block type "ssm"/,
    );
    expectConfigError({ ...base(), hybrid_override_pattern: 7 }, 'hybrid_override_pattern', /expected a string/);
  });

  test('head counts that do not divide', () => {
    expectConfigError({ ...base(), num_key_value_heads: 3 }, 'num_key_value_heads', /3 must divide num_attention_heads 4/);
    expectConfigError({ ...base(), n_groups: 3 }, 'n_groups', /3 must divide mamba_num_heads 4/);
    expectConfigError({ ...base(), n_groups: undefined as never, mamba_n_groups: 8 }, 'mamba_n_groups', /must divide mamba_num_heads 4/);
    expectConfigError({ ...base(), n_group: 3 }, 'n_group', /3 must divide n_routed_experts 8/);
    expectConfigError({ ...base(), n_group: 2, topk_group: 3 }, 'topk_group', /3 is more than n_group 2/);
    expectConfigError({ ...base(), n_group: 8 }, 'n_group', /needs at least 2/);
    expectConfigError({ ...base(), n_group: 4, topk_group: 1, num_experts_per_tok: 3 }, 'num_experts_per_tok', /more than the 2 experts/);
    expectConfigError({ ...base(), num_experts_per_tok: 9 }, 'num_experts_per_tok', /more than n_routed_experts 8/);
  });

  test('wrong types and ranges', () => {
    expectConfigError({ ...base(), hidden_size: '32' }, 'hidden_size', /expected a positive integer, got "32"/);
    expectConfigError({ ...base(), hidden_size: 32.5 }, 'hidden_size', /positive integer/);
    expectConfigError({ ...base(), vocab_size: 0 }, 'vocab_size', /positive integer, got 0/);
    expectConfigError({ ...base(), use_conv_bias: 'yes' }, 'use_conv_bias', /true or false/);
    expectConfigError({ ...base(), layer_norm_epsilon: -1 }, 'layer_norm_epsilon', /positive finite number/);
    expectConfigError({ ...base(), hidden_dropout: 1.5 }, 'hidden_dropout', /\[0, 1\]/);
    expectConfigError({ ...base(), intermediate_size: [128, 256] }, 'intermediate_size', /positive integer, got \[128,256\]/);
    expectConfigError({ ...base(), eos_token_id: 'eos' }, 'eos_token_id', /token id/);
    expectConfigError({ ...base(), mamba_hidden_act: 'gelu' }, 'mamba_hidden_act', /only "silu"/);
    expectConfigError({ ...base(), mlp_hidden_act: 'silu' }, 'mlp_hidden_act', /only "relu2"/);
    expectConfigError({ ...base(), n_shared_experts: 2 }, 'n_shared_experts', /only 1 shared expert/);
    expectConfigError({ ...base(), time_step_min: 0.5 }, 'time_step_min', /above time_step_max/);
    expectConfigError({ ...base(), model_type: 'llama' }, 'model_type', /expected "nemotron_h"/);
    expect(() => NemotronHConfig.fromJSON([1, 2], { source: 'test.json' })).toThrow(/test.json: \(root\): expected a JSON object/);
  });

  test('fields HF writes that the model only carries along are kind-checked too', () => {
    expectConfigError({ ...base(), num_hidden_layers: 0 }, 'num_hidden_layers', /positive integer, got 0/);
    expectConfigError({ ...base(), vocab_size: 1.5 }, 'vocab_size', /got 1.5/);
    expectConfigError({ ...base(), eos_token_id: [2, 'x'] }, 'eos_token_id', /a token id, a list of token ids or null/);
    expectConfigError({ ...base(), tie_word_embeddings: 'yes' }, 'tie_word_embeddings', /true or false/);
    expectConfigError({ ...base(), architectures: 'NemotronHForCausalLM' }, 'architectures', /a list of strings or null/);
    expectConfigError({ ...base(), torch_dtype: 16 }, 'torch_dtype', /a string or null/);
    expectConfigError({ ...base(), transformers_version: null }, 'transformers_version', /expected a string/);
    const carried = NemotronHConfig.fromJSON({ ...base(), architectures: ['NemotronHForCausalLM'], torch_dtype: 'bfloat16', rope_theta: 'kept as is' });
    expect(carried.extra).toEqual({ architectures: ['NemotronHForCausalLM'], torch_dtype: 'bfloat16', rope_theta: 'kept as is' });
  });

  test('MTP', () => {
    expectConfigError(
      { ...base(), mtp_hybrid_override_pattern: '*E', mtp_layers_block_type: ['moe'] },
      'mtp_layers_block_type',
      /pattern "E" but mtp_hybrid_override_pattern is "\*E"/,
    );
    expectConfigError({ ...base(), num_nextn_predict_layers: 1 }, 'mtp_hybrid_override_pattern', /missing: num_nextn_predict_layers is 1/);
    expectConfigError(
      { ...base(), num_nextn_predict_layers: 1, mtp_hybrid_override_pattern: '*Q' },
      'mtp_hybrid_override_pattern',
      /unknown layer character "Q"/,
    );
    expectConfigError({ ...base(), num_nextn_predict_layers: -1, mtp_hybrid_override_pattern: '*E' }, 'num_nextn_predict_layers', /non-negative integer/);
  });
});

describe('generation_config.json', () => {
  test('fields name the file and the field; unused HF fields are ignored', () => {
    const file = '/x/generation_config.json';
    const error = (() => {
      try {
        GenerationConfig.fromJSON({ eos_token_id: [2, 11], do_sample: false, temperature: 0.6, top_k: -1 }, file);
      } catch (e) {
        return e;
      }
    })();
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).message).toBe(`${file}: top_k: expected a non-negative integer, got -1`);
    expect(() => GenerationConfig.fromJSON({ do_sample: 'no' }, file)).toThrow(`${file}: do_sample: expected true or false, got "no"`);
    expect(() => GenerationConfig.fromJSON({ eos_token_id: [2, -1] }, file)).toThrow(`${file}: eos_token_id: expected a token id, a list of token ids or null`);
    expect(() => GenerationConfig.fromJSON({ max_new_tokens: 0 }, file)).toThrow(`${file}: max_new_tokens: expected a positive integer, got 0`);
    const config = GenerationConfig.fromJSON({ eos_token_id: [2, 11], do_sample: false, temperature: 0.6, min_p: null, num_beams: 1 }, file);
    expect(config.toJSON()).toEqual({ eos_token_id: [2, 11], do_sample: false, temperature: 0.6, min_p: null });
  });
});

describe('programmatic configs', () => {
  test('create() applies HF defaults and validates', () => {
    const c = NemotronHConfig.create({ pattern: 'M-' });
    expect([c.vocabSize, c.hiddenSize, c.mambaNumHeads, c.chunkSize, c.headDim, c.numKeyValueHeads]).toEqual([131072, 4096, 128, 128, 128, 8]);
    expect(c.layerKind(1)).toBe('mlp');
    expect(() => c.layerKind(2)).toThrow(/outside 0..1/);
    expect(() => NemotronHConfig.create({ pattern: 'M', nGroups: 3 }, { source: 'mine' })).toThrow(/^mine: n_groups: 3 must divide/);
    expect(Object.isFrozen(c)).toBe(true);
  });
});
