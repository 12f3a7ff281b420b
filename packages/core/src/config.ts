/**
 * `NemotronHConfig`: the Hugging Face `nemotron_h` config.json (spec §1), typed and validated.
 *
 * Every field of HF's `NemotronHConfig` is here with HF's default. Parsing accepts the legacy aliases
 * (`mamba_n_groups`, `mamba_d_conv`, …), both layer-list vocabularies (`mamba/attention/mlp/moe` and
 * `linear_attention/full_attention/mlp/moe`), the pattern string, and every JSON form of
 * `time_step_limit`. Errors name the file and the field at fault.
 *
 * Choices between the references (spec §10 item 14), made once here:
 * - Layer count: the layer pattern (`layers_block_type` / `layer_types` list, else
 *   `hybrid_override_pattern`) decides the layers, as in current HF. `num_hidden_layers`, when also
 *   given, must equal its length: NeMo builds `num_hidden_layers` blocks while HF builds one per
 *   pattern entry, so a mismatch describes two different models and is refused rather than warned
 *   about. A list and a pattern string that are both present must agree.
 * - `tie_word_embeddings`: NeMo refuses tied weights and HF ignores the flag for this model; every
 *   shipped config says false. The model always owns a separate `lm_head.weight`. The flag is only
 *   honoured by the checkpoint loader when a checkpoint has no `lm_head.weight`: the head is then
 *   loaded from (an independent copy of) the embedding matrix.
 * - `attention_bias`: HF's attention never has q/k/v/o biases (the golden fixtures agree); NeMo adds
 *   them when the flag is true. We follow HF: the flag is kept for round trips but builds no bias.
 * - `mlp_bias`: biases on the dense MLP, the shared expert and the latent projections (HF), but never
 *   on routed experts (HF's stacked experts have none; only NeMo adds them).
 * - `residual_in_fp32`: ignored. NeMo-only; we keep activations in f32 anyway.
 * - `expand`: kept for round trips, never used to size anything (d_inner = heads · head_dim).
 * - `n_shared_experts`: must be 1 (NeMo hard-codes one shared expert; HF's width ignores the count).
 */

import type { JsonObject, JsonValue } from '@nemotron-ts/kernels';

export type { JsonObject, JsonValue };

/** The four block types. Names follow NeMo / legacy HF (`mamba`, `attention`, `mlp`, `moe`). */
export type LayerKind = 'mamba' | 'attention' | 'mlp' | 'moe';

/** Pattern characters (spec §1.1). */
export const LAYER_KIND_OF_CHAR: Readonly<Record<string, LayerKind>> = Object.freeze({ M: 'mamba', '*': 'attention', '-': 'mlp', E: 'moe' });
const CHAR_OF_LAYER_KIND: Readonly<Record<LayerKind, string>> = { mamba: 'M', attention: '*', mlp: '-', moe: 'E' };

/** Block-type names in `layers_block_type` lists: legacy HF / NeMo and current HF. */
const LAYER_KIND_OF_NAME: Readonly<Record<string, LayerKind>> = {
  mamba: 'mamba',
  attention: 'attention',
  mlp: 'mlp',
  moe: 'moe',
  linear_attention: 'mamba',
  full_attention: 'attention',
};

export class ConfigError extends Error {
  constructor(
    readonly source: string,
    /** The config.json field at fault. */
    readonly field: string,
    message: string,
  ) {
    super(`${source}: ${field}: ${message}`);
    this.name = 'ConfigError';
  }
}

// ---------------------------------------------------------------------------------------------
// Scalar fields: one table drives parsing, validation, defaults and serialisation.

/** @internal The kinds a config field may take; also used by the generation config. */
export type ValueKind =
  | 'positiveInt'
  | 'nonNegativeInt'
  | 'optionalPositiveInt'
  | 'optionalNonNegativeInt'
  | 'positiveNumber'
  | 'nonNegativeNumber'
  | 'optionalNonNegativeNumber'
  | 'probability'
  | 'bool'
  | 'string'
  | 'optionalString'
  | 'optionalStringList'
  | 'tokenIds';

/** @internal */
export interface KindType {
  positiveInt: number;
  nonNegativeInt: number;
  optionalPositiveInt: number | null;
  optionalNonNegativeInt: number | null;
  positiveNumber: number;
  nonNegativeNumber: number;
  optionalNonNegativeNumber: number | null;
  probability: number;
  bool: boolean;
  string: string;
  optionalString: string | null;
  optionalStringList: readonly string[] | null;
  tokenIds: number | readonly number[] | null;
}

interface ScalarSpec {
  /** The canonical config.json name (what `toJSON` writes). */
  readonly json: string;
  /** Older names accepted on input. */
  readonly aliases?: readonly string[];
  readonly kind: ValueKind;
  readonly default: KindType[ValueKind];
}

const SCALARS = {
  // Global
  vocabSize: { json: 'vocab_size', kind: 'positiveInt', default: 131072 },
  hiddenSize: { json: 'hidden_size', kind: 'positiveInt', default: 4096 },
  tieWordEmbeddings: { json: 'tie_word_embeddings', kind: 'bool', default: false },
  layerNormEpsilon: { json: 'layer_norm_epsilon', kind: 'positiveNumber', default: 1e-5 },
  residualInFp32: { json: 'residual_in_fp32', kind: 'bool', default: false },
  rescalePrenormResidual: { json: 'rescale_prenorm_residual', kind: 'bool', default: true },
  initializerRange: { json: 'initializer_range', kind: 'nonNegativeNumber', default: 0.02 },
  hiddenDropout: { json: 'hidden_dropout', kind: 'probability', default: 0 },
  attentionDropout: { json: 'attention_dropout', kind: 'probability', default: 0 },
  maxPositionEmbeddings: { json: 'max_position_embeddings', kind: 'positiveInt', default: 4096 },
  /** Ignored by HF and NeMo (full causal attention); kept for round trips. */
  slidingWindow: { json: 'sliding_window', kind: 'optionalPositiveInt', default: null },
  numLogitsToKeep: { json: 'num_logits_to_keep', kind: 'optionalNonNegativeInt', default: 1 },
  useCache: { json: 'use_cache', kind: 'bool', default: true },
  useMambaKernels: { json: 'use_mamba_kernels', kind: 'bool', default: true },
  padTokenId: { json: 'pad_token_id', kind: 'optionalNonNegativeInt', default: 0 },
  bosTokenId: { json: 'bos_token_id', kind: 'optionalNonNegativeInt', default: 1 },
  // Attention
  numAttentionHeads: { json: 'num_attention_heads', kind: 'positiveInt', default: 32 },
  attentionBias: { json: 'attention_bias', kind: 'bool', default: false },
  // Mamba2
  mambaNumHeads: { json: 'mamba_num_heads', kind: 'positiveInt', default: 128 },
  mambaHeadDim: { json: 'mamba_head_dim', kind: 'positiveInt', default: 64 },
  ssmStateSize: { json: 'ssm_state_size', kind: 'positiveInt', default: 128 },
  nGroups: { json: 'n_groups', aliases: ['mamba_n_groups'], kind: 'positiveInt', default: 8 },
  convKernel: { json: 'conv_kernel', aliases: ['mamba_d_conv'], kind: 'positiveInt', default: 4 },
  chunkSize: { json: 'chunk_size', aliases: ['mamba_chunk_size'], kind: 'positiveInt', default: 128 },
  expand: { json: 'expand', aliases: ['mamba_expand'], kind: 'positiveInt', default: 2 },
  mambaHiddenAct: { json: 'mamba_hidden_act', kind: 'string', default: 'silu' },
  useConvBias: { json: 'use_conv_bias', aliases: ['mamba_conv_bias'], kind: 'bool', default: true },
  useBias: { json: 'use_bias', kind: 'bool', default: false },
  /** Present in configs but HF and NeMo read `use_bias` for in/out_proj; kept for round trips. */
  mambaProjBias: { json: 'mamba_proj_bias', kind: 'bool', default: false },
  timeStepMin: { json: 'time_step_min', aliases: ['mamba_dt_min'], kind: 'positiveNumber', default: 0.001 },
  timeStepMax: { json: 'time_step_max', aliases: ['mamba_dt_max'], kind: 'positiveNumber', default: 0.1 },
  timeStepFloor: { json: 'time_step_floor', aliases: ['mamba_dt_init_floor'], kind: 'nonNegativeNumber', default: 1e-4 },
  mambaSsmCacheDtype: { json: 'mamba_ssm_cache_dtype', kind: 'string', default: 'float32' },
  // MLP
  intermediateSize: { json: 'intermediate_size', kind: 'positiveInt', default: 21504 },
  mlpHiddenAct: { json: 'mlp_hidden_act', kind: 'string', default: 'relu2' },
  mlpBias: { json: 'mlp_bias', kind: 'bool', default: false },
  // MoE
  nRoutedExperts: { json: 'n_routed_experts', aliases: ['num_local_experts'], kind: 'positiveInt', default: 8 },
  numExpertsPerTok: { json: 'num_experts_per_tok', kind: 'positiveInt', default: 2 },
  moeIntermediateSize: { json: 'moe_intermediate_size', kind: 'positiveInt', default: 7688 },
  nSharedExperts: { json: 'n_shared_experts', kind: 'positiveInt', default: 1 },
  moeSharedExpertIntermediateSize: { json: 'moe_shared_expert_intermediate_size', kind: 'positiveInt', default: 7688 },
  nGroup: { json: 'n_group', kind: 'positiveInt', default: 1 },
  topkGroup: { json: 'topk_group', kind: 'positiveInt', default: 1 },
  routedScalingFactor: { json: 'routed_scaling_factor', kind: 'positiveNumber', default: 1.0 },
  normTopkProb: { json: 'norm_topk_prob', kind: 'bool', default: true },
  moeLatentSize: { json: 'moe_latent_size', kind: 'optionalPositiveInt', default: null },
  moeSharedExpertOverlap: { json: 'moe_shared_expert_overlap', kind: 'bool', default: true },
  // MTP (the last two are NeMo constructor arguments that fixtures record in config.json)
  numNextnPredictLayers: { json: 'num_nextn_predict_layers', kind: 'nonNegativeInt', default: 0 },
  mtpUseRepeatedLayer: { json: 'mtp_use_repeated_layer', kind: 'bool', default: false },
  mtpLossScalingFactor: { json: 'mtp_loss_scaling_factor', kind: 'nonNegativeNumber', default: 0.1 },
} as const satisfies Record<string, ScalarSpec>;

type ScalarName = keyof typeof SCALARS;
/** The plain scalar fields of a config, in camelCase (their JSON names are in `SCALARS`). */
export type NemotronHScalarFields = { readonly [K in ScalarName]: KindType[(typeof SCALARS)[K]['kind']] };

/** The fields that are not plain scalars. */
export interface NemotronHStructuredFields {
  /** One character per backbone layer: `M` Mamba2, `*` attention, `-` MLP, `E` MoE. */
  readonly pattern: string;
  /** One character per MTP sublayer of a depth (empty when the config has none). */
  readonly mtpPattern: string;
  /** Per-head attention dim (`head_dim`, older `attention_head_dim`, else hidden_size / heads). */
  readonly headDim: number;
  /** GQA kv heads (`null` in the file means as many as query heads). */
  readonly numKeyValueHeads: number;
  /** Clamp range for dt after softplus; `[0, Infinity]` means no clamp. */
  readonly timeStepLimit: readonly [number, number];
  readonly eosTokenId: number | readonly number[] | null;
}

type FieldValues = NemotronHScalarFields & NemotronHStructuredFields;

/** What {@link NemotronHConfig.create} takes: a pattern, and any fields that differ from HF's defaults. */
export type NemotronHConfigInit = Partial<NemotronHScalarFields> &
  Partial<Omit<NemotronHStructuredFields, 'pattern' | 'headDim' | 'numKeyValueHeads'>> & {
    pattern: string;
    headDim?: number;
    numKeyValueHeads?: number | null;
    /** Unmodelled config.json fields, written back by `toJSON`. */
    extra?: Readonly<Record<string, JsonValue>>;
  };

export interface ConfigSourceOptions {
  /** Name used in error messages (e.g. the config file path). */
  source?: string;
}

// Keys consumed by the structured fields (so they do not land in `extra`).
const STRUCTURED_KEYS = [
  'model_type',
  'hybrid_override_pattern',
  'layers_block_type',
  'layer_types',
  'num_hidden_layers',
  'head_dim',
  'attention_head_dim',
  'num_key_value_heads',
  'time_step_limit',
  'mamba_dt_limit',
  'eos_token_id',
  'mtp_hybrid_override_pattern',
  'mtp_layers_block_type',
] as const;

/** Fields HF writes into configs that this model does not read: kept in `extra` as they are, kinds checked. */
const CARRIED_FIELDS: Readonly<Record<string, ValueKind>> = {
  architectures: 'optionalStringList',
  torch_dtype: 'optionalString',
  dtype: 'optionalString',
  transformers_version: 'string',
};

/** Merges the validated fields and the derived dimensions into the config class's type. */
export interface NemotronHConfig extends FieldValues {}

export class NemotronHConfig {
  /** Unmodelled config.json fields (architectures, torch_dtype, rope_theta, …), kept for `toJSON`. */
  readonly extra!: Readonly<Record<string, JsonValue>>;

  // Derived dimensions (spec §1.2 "Derived Mamba dims", §1.3).
  /** Number of backbone layers (= pattern length). */
  readonly numHiddenLayers!: number;
  readonly layerKinds!: readonly LayerKind[];
  /** Block types of one MTP depth's sublayers. */
  readonly mtpLayerKinds!: readonly LayerKind[];
  /** Mamba inner width: heads · head_dim (never expand · hidden_size). */
  readonly dInner!: number;
  /** Channels through the causal conv: x | B | C. */
  readonly convDim!: number;
  /** in_proj output width: z | x | B | C | dt. */
  readonly dInProj!: number;
  /** Channels per gated-RMSNorm group (d_inner / n_groups). */
  readonly groupSize!: number;
  /** Mamba heads sharing one B/C group. */
  readonly headsPerGroup!: number;
  /** Query heads per kv head. */
  readonly queriesPerKvHead!: number;
  /** Width routed experts work in: moe_latent_size when set, else hidden_size. */
  readonly expertHiddenSize!: number;
  /** True when multi-token prediction is configured (D > 0 and a sublayer pattern). */
  readonly mtpEnabled!: boolean;
  /** Depths with their own weights: 1 with `mtp_use_repeated_layer`, else D. */
  readonly mtpPhysicalDepths!: number;
  /** True when `time_step_limit` is not the default (0, ∞), i.e. dt is clamped. */
  readonly clampsDt!: boolean;

  private constructor(values: FieldValues, extra: Readonly<Record<string, JsonValue>>) {
    Object.assign(this, values);
    const nh = values.mambaNumHeads;
    const dInner = nh * values.mambaHeadDim;
    const convDim = dInner + 2 * values.nGroups * values.ssmStateSize;
    const layerKinds = Object.freeze([...values.pattern].map((c) => LAYER_KIND_OF_CHAR[c]!));
    const mtpLayerKinds = Object.freeze([...values.mtpPattern].map((c) => LAYER_KIND_OF_CHAR[c]!));
    const mtpEnabled = values.numNextnPredictLayers > 0 && mtpLayerKinds.length > 0;
    Object.assign(this, {
      extra: Object.freeze({ ...extra }),
      numHiddenLayers: layerKinds.length,
      layerKinds,
      mtpLayerKinds,
      dInner,
      convDim,
      dInProj: dInner + convDim + nh,
      groupSize: dInner / values.nGroups,
      headsPerGroup: nh / values.nGroups,
      queriesPerKvHead: values.numAttentionHeads / values.numKeyValueHeads,
      expertHiddenSize: values.moeLatentSize ?? values.hiddenSize,
      mtpEnabled,
      mtpPhysicalDepths: !mtpEnabled ? 0 : values.mtpUseRepeatedLayer ? 1 : values.numNextnPredictLayers,
      clampsDt: !(values.timeStepLimit[0] === 0 && values.timeStepLimit[1] === Infinity),
    });
    Object.freeze(this);
  }

  /** A config from field values; everything not given takes HF's default. */
  static create(init: NemotronHConfigInit, options: ConfigSourceOptions = {}): NemotronHConfig {
    const { extra = {}, ...fields } = init;
    const source = options.source ?? 'NemotronHConfig';
    return new NemotronHConfig(validate(resolve(fields, source, new Map()), source, new Map()), extra);
  }

  /**
   * A config from a parsed config.json object. Read files with a parser that accepts Python's bare
   * `Infinity` (the hub package's `readConfigJson`); `{"__float__": "Infinity"}` values are accepted too.
   */
  static fromJSON(json: unknown, options: ConfigSourceOptions = {}): NemotronHConfig {
    const source = options.source ?? 'config.json';
    if (typeof json !== 'object' || json === null || Array.isArray(json)) {
      throw new ConfigError(source, '(root)', `expected a JSON object, got ${describe(json)}`);
    }
    const { init, keys, extra } = readJson(json as Record<string, unknown>, source);
    return new NemotronHConfig(validate(resolve(init, source, keys), source, keys), extra);
  }

  /** This config with another vocabulary size (after resizing the token embeddings). */
  withVocabSize(vocabSize: number): NemotronHConfig {
    return NemotronHConfig.fromJSON({ ...this.toJSON(), vocab_size: vocabSize }, { source: 'NemotronHConfig.withVocabSize' });
  }

  /** Block type of backbone layer `i`. */
  layerKind(i: number): LayerKind {
    const kind = this.layerKinds[i];
    if (kind === undefined) throw new RangeError(`layer ${i} is outside 0..${this.numHiddenLayers - 1}`);
    return kind;
  }

  /**
   * An HF-compatible config.json object (`model_type: nemotron_h`, canonical field names, the
   * pattern as `hybrid_override_pattern`, which every HF version reads). `time_step_limit` is left
   * out when it is the default (0, ∞); an infinite bound is the number `Infinity`, so write it with
   * a serializer that emits Python's bare `Infinity` (the hub package's `writeConfigJson`), not
   * `JSON.stringify`, which would turn it into `null`.
   */
  toJSON(): JsonObject {
    const out: JsonObject = { ...this.extra, model_type: 'nemotron_h' };
    if (!('architectures' in out)) out.architectures = ['NemotronHForCausalLM'];
    for (const name of Object.keys(SCALARS) as ScalarName[]) {
      if (name.startsWith('mtp') || name === 'numNextnPredictLayers') continue;
      out[SCALARS[name].json] = this[name];
    }
    out.hybrid_override_pattern = this.pattern;
    out.num_hidden_layers = this.numHiddenLayers;
    out.head_dim = this.headDim;
    out.num_key_value_heads = this.numKeyValueHeads;
    out.eos_token_id = this.eosTokenId === null || typeof this.eosTokenId === 'number' ? this.eosTokenId : [...this.eosTokenId];
    if (this.clampsDt) out.time_step_limit = [...this.timeStepLimit];
    if (this.numNextnPredictLayers > 0 || this.mtpPattern.length > 0) {
      out.num_nextn_predict_layers = this.numNextnPredictLayers;
      out.mtp_hybrid_override_pattern = this.mtpPattern;
      out.mtp_use_repeated_layer = this.mtpUseRepeatedLayer;
      out.mtp_loss_scaling_factor = this.mtpLossScalingFactor;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading config.json

interface ReadResult {
  /** Raw values by field name (types checked later by `resolve`). */
  init: Record<string, unknown>;
  /** Which config.json key supplied each field (for error messages). */
  keys: Map<string, string>;
  extra: Record<string, JsonValue>;
}

function readJson(json: Record<string, unknown>, source: string): ReadResult {
  const init: Record<string, unknown> = {};
  const keys = new Map<string, string>();
  const consumed = new Set<string>(STRUCTURED_KEYS);

  const modelType = json.model_type;
  if (modelType !== undefined && modelType !== 'nemotron_h') {
    throw new ConfigError(source, 'model_type', `expected "nemotron_h", got ${describe(modelType)}`);
  }

  for (const [name, spec] of Object.entries(SCALARS) as [ScalarName, ScalarSpec][]) {
    const found = pickAliased(json, spec.json, spec.aliases ?? [], source);
    for (const k of [spec.json, ...(spec.aliases ?? [])]) consumed.add(k);
    if (found) {
      init[name] = found.value;
      keys.set(name, found.key);
    }
  }

  // Layer patterns: a block-type list (current HF) or a pattern string; both present must agree.
  const pattern = readPattern(json, 'layers_block_type', ['layer_types'], 'hybrid_override_pattern', source);
  if (!pattern) {
    throw new ConfigError(
      source,
      'hybrid_override_pattern',
      'missing: a config needs hybrid_override_pattern or layers_block_type (HF versions disagree on a default)',
    );
  }
  init.pattern = pattern.value;
  keys.set('pattern', pattern.key);
  if (json.num_hidden_layers !== undefined && json.num_hidden_layers !== null) {
    init.numHiddenLayers = json.num_hidden_layers;
    keys.set('numHiddenLayers', 'num_hidden_layers');
  }
  const mtpPattern = readPattern(json, 'mtp_layers_block_type', [], 'mtp_hybrid_override_pattern', source);
  if (mtpPattern) {
    init.mtpPattern = mtpPattern.value;
    keys.set('mtpPattern', mtpPattern.key);
  }

  const headDim = pickAliased(json, 'head_dim', ['attention_head_dim'], source);
  if (headDim && headDim.value !== null) {
    init.headDim = headDim.value;
    keys.set('headDim', headDim.key);
  }
  if (json.num_key_value_heads !== undefined) init.numKeyValueHeads = json.num_key_value_heads;

  const limit = pickAliased(json, 'time_step_limit', ['mamba_dt_limit'], source);
  // null: HF's mixer then passes no dt_limit to the kernel, i.e. no clamp.
  if (limit && limit.value !== null) {
    init.timeStepLimit = limit.value;
    keys.set('timeStepLimit', limit.key);
  }
  if (json.eos_token_id !== undefined) init.eosTokenId = json.eos_token_id;

  const extra: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(json)) if (!consumed.has(k) && v !== undefined) extra[k] = v as JsonValue;
  for (const [k, kind] of Object.entries(CARRIED_FIELDS)) if (extra[k] !== undefined) checkKind(extra[k], kind, source, k);
  return { init, keys, extra };
}

/** The value under the canonical key or one alias; two different values are an error. */
function pickAliased(json: Record<string, unknown>, key: string, aliases: readonly string[], source: string): { key: string; value: unknown } | undefined {
  let found: { key: string; value: unknown } | undefined;
  for (const k of [key, ...aliases]) {
    const value = json[k];
    if (value === undefined) continue;
    if (found && !sameJson(found.value, value)) {
      throw new ConfigError(source, k, `${describe(value)} conflicts with ${found.key} = ${describe(found.value)}`);
    }
    found ??= { key: k, value };
  }
  return found;
}

function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(a, jsonNumbers) === JSON.stringify(b, jsonNumbers);
}

function jsonNumbers(_key: string, v: unknown): unknown {
  const tagged = taggedFloat(v);
  const n = tagged ?? v;
  return typeof n === 'number' && !Number.isFinite(n) ? String(n) : n;
}

/** A pattern from a block-type list (under `listKey` or an alias) or a pattern string; null counts as absent. */
function readPattern(
  json: Record<string, unknown>,
  listKey: string,
  listAliases: readonly string[],
  stringKey: string,
  source: string,
): { key: string; value: string } | undefined {
  const list = pickAliased(json, listKey, listAliases, source);
  const fromList = list && list.value !== null ? { key: list.key, value: layerListToPattern(list.value, list.key, source) } : undefined;
  const text = json[stringKey] ?? undefined;
  if (text !== undefined && typeof text !== 'string') throw new ConfigError(source, stringKey, `expected a string, got ${describe(text)}`);
  if (fromList && text !== undefined && fromList.value !== text) {
    throw new ConfigError(source, fromList.key, `describes pattern "${fromList.value}" but ${stringKey} is "${text}"`);
  }
  return fromList ?? (text === undefined ? undefined : { key: stringKey, value: text });
}

function layerListToPattern(value: unknown, key: string, source: string): string {
  if (!Array.isArray(value)) throw new ConfigError(source, key, `expected a list of block types, got ${describe(value)}`);
  return value
    .map((name, i) => {
      const kind = typeof name === 'string' ? LAYER_KIND_OF_NAME[name] : undefined;
      if (!kind) {
        throw new ConfigError(source, `${key}[${i}]`, `unknown block type ${describe(name)} (expected one of ${Object.keys(LAYER_KIND_OF_NAME).join(', ')})`);
      }
      return CHAR_OF_LAYER_KIND[kind];
    })
    .join('');
}

// ---------------------------------------------------------------------------------------------
// Type checks, defaults and validation

function resolve(init: Record<string, unknown>, source: string, keys: Map<string, string>): FieldValues & { numHiddenLayers?: number } {
  const keyOf = (field: string, fallback: string) => keys.get(field) ?? fallback;
  const values: Record<string, unknown> = {};
  for (const [name, spec] of Object.entries(SCALARS) as [ScalarName, ScalarSpec][]) {
    const raw = init[name];
    values[name] = raw === undefined ? spec.default : checkKind(raw, spec.kind, source, keyOf(name, spec.json));
  }

  const pattern = init.pattern;
  if (typeof pattern !== 'string') throw new ConfigError(source, keyOf('pattern', 'hybrid_override_pattern'), `expected a string, got ${describe(pattern)}`);
  values.pattern = checkPattern(pattern, source, keyOf('pattern', 'hybrid_override_pattern'));
  const mtpPattern = init.mtpPattern ?? '';
  if (typeof mtpPattern !== 'string') throw new ConfigError(source, 'mtp_hybrid_override_pattern', `expected a string, got ${describe(mtpPattern)}`);
  values.mtpPattern = mtpPattern.length === 0 ? '' : checkPattern(mtpPattern, source, keyOf('mtpPattern', 'mtp_hybrid_override_pattern'));
  if (init.numHiddenLayers !== undefined) values.numHiddenLayers = checkKind(init.numHiddenLayers, 'positiveInt', source, 'num_hidden_layers');

  const nq = values.numAttentionHeads as number;
  const hidden = values.hiddenSize as number;
  if (init.headDim !== undefined) values.headDim = checkKind(init.headDim, 'positiveInt', source, keyOf('headDim', 'head_dim'));
  else if (hidden % nq === 0) values.headDim = hidden / nq;
  else throw new ConfigError(source, 'head_dim', `missing, and hidden_size ${hidden} is not a multiple of num_attention_heads ${nq} to derive it`);
  const nkv = init.numKeyValueHeads;
  values.numKeyValueHeads = nkv === undefined ? 8 : nkv === null ? nq : checkKind(nkv, 'positiveInt', source, 'num_key_value_heads');

  values.timeStepLimit = init.timeStepLimit === undefined ? [0, Infinity] : checkLimit(init.timeStepLimit, source, keyOf('timeStepLimit', 'time_step_limit'));
  values.eosTokenId = init.eosTokenId === undefined ? 2 : checkKind(init.eosTokenId, 'tokenIds', source, 'eos_token_id');
  return values as unknown as FieldValues & { numHiddenLayers?: number };
}

function validate(v: FieldValues & { numHiddenLayers?: number }, source: string, keys: Map<string, string>): FieldValues {
  const fail = (field: string, message: string): never => {
    throw new ConfigError(source, field, message);
  };
  const json = (name: ScalarName) => keys.get(name) ?? SCALARS[name].json;

  if (v.numHiddenLayers !== undefined && v.numHiddenLayers !== v.pattern.length) {
    fail('num_hidden_layers', `${v.numHiddenLayers} does not match the ${v.pattern.length} layers of the pattern "${v.pattern}"`);
  }
  // Attention
  if (v.numKeyValueHeads > v.numAttentionHeads || v.numAttentionHeads % v.numKeyValueHeads !== 0) {
    fail('num_key_value_heads', `${v.numKeyValueHeads} must divide num_attention_heads ${v.numAttentionHeads}`);
  }
  // Mamba2. Heads map to B/C groups in contiguous blocks, so heads must split evenly; that also
  // makes d_inner = heads · head_dim split evenly into the gated norm's groups.
  if (v.mambaNumHeads % v.nGroups !== 0) {
    fail(json('nGroups'), `${v.nGroups} must divide mamba_num_heads ${v.mambaNumHeads} (and so d_inner ${v.mambaNumHeads * v.mambaHeadDim})`);
  }
  if (v.mambaHiddenAct !== 'silu') fail(json('mambaHiddenAct'), `only "silu" is supported, got "${v.mambaHiddenAct}"`);
  if (v.timeStepMin > v.timeStepMax) fail(json('timeStepMin'), `${v.timeStepMin} is above time_step_max ${v.timeStepMax}`);
  // MLP / experts
  if (v.mlpHiddenAct !== 'relu2') fail(json('mlpHiddenAct'), `only "relu2" is supported, got "${v.mlpHiddenAct}"`);
  // MoE
  const E = v.nRoutedExperts;
  if (v.numExpertsPerTok > E) fail(json('numExpertsPerTok'), `${v.numExpertsPerTok} is more than n_routed_experts ${E}`);
  if (E % v.nGroup !== 0) fail(json('nGroup'), `${v.nGroup} must divide n_routed_experts ${E}`);
  if (v.topkGroup > v.nGroup) fail(json('topkGroup'), `${v.topkGroup} is more than n_group ${v.nGroup}`);
  if (v.nGroup > 1) {
    const perGroup = E / v.nGroup;
    // Group scores sum each group's two best experts (DeepSeek-V3 routing).
    if (perGroup < 2) fail(json('nGroup'), `${v.nGroup} groups leave ${perGroup} expert per group; group scoring needs at least 2`);
    if (v.numExpertsPerTok > v.topkGroup * perGroup) {
      fail(json('numExpertsPerTok'), `${v.numExpertsPerTok} is more than the ${v.topkGroup * perGroup} experts in the topk_group ${v.topkGroup} kept groups`);
    }
  }
  if (v.nSharedExperts !== 1) fail(json('nSharedExperts'), `only 1 shared expert is supported, got ${v.nSharedExperts}`);
  // MTP
  if (v.numNextnPredictLayers > 0 && v.mtpPattern.length === 0) {
    fail('mtp_hybrid_override_pattern', `missing: num_nextn_predict_layers is ${v.numNextnPredictLayers}, so the MTP sublayer pattern is required`);
  }
  const { numHiddenLayers: _checked, ...values } = v;
  return values;
}

function checkPattern(pattern: string, source: string, key: string): string {
  if (pattern.length === 0) throw new ConfigError(source, key, 'is empty: a model needs at least one layer');
  [...pattern].forEach((c, i) => {
    if (!(c in LAYER_KIND_OF_CHAR)) {
      throw new ConfigError(source, key, `unknown layer character "${c}" at position ${i} (expected M, *, - or E)`);
    }
  });
  return pattern;
}

/** @internal `raw` as a value of `kind`, else a {@link ConfigError} naming `source` and `key`. */
export function checkKind<K extends ValueKind>(raw: unknown, kind: K, source: string, key: string): KindType[K] {
  const fail = (expected: string): never => {
    throw new ConfigError(source, key, `expected ${expected}, got ${describe(raw)}`);
  };
  switch (kind) {
    case 'bool':
      return (typeof raw === 'boolean' ? raw : fail('true or false')) as KindType[K];
    case 'string':
      return (typeof raw === 'string' ? raw : fail('a string')) as KindType[K];
    case 'optionalString':
      return (raw === null || typeof raw === 'string' ? raw : fail('a string or null')) as KindType[K];
    case 'optionalStringList':
      if (raw === null) return null as KindType[K];
      return (Array.isArray(raw) && raw.every((x) => typeof x === 'string') ? Object.freeze([...raw]) : fail('a list of strings or null')) as KindType[K];
    case 'tokenIds':
      if (raw === null) return null as KindType[K];
      if (typeof raw === 'number' && Number.isInteger(raw) && raw >= 0) return raw as KindType[K];
      if (Array.isArray(raw) && raw.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0))
        return Object.freeze([...(raw as number[])]) as KindType[K];
      return fail('a token id, a list of token ids or null');
    case 'optionalNonNegativeNumber':
      if (raw === null) return null as KindType[K];
      return checkKind(raw, 'nonNegativeNumber', source, key) as KindType[K];
    case 'optionalPositiveInt':
    case 'optionalNonNegativeInt':
      if (raw === null) return null as KindType[K];
      return checkKind(raw, kind === 'optionalPositiveInt' ? 'positiveInt' : 'nonNegativeInt', source, key) as KindType[K];
    case 'positiveInt':
    case 'nonNegativeInt': {
      const min = kind === 'positiveInt' ? 1 : 0;
      return (
        typeof raw === 'number' && Number.isInteger(raw) && raw >= min ? raw : fail(min === 1 ? 'a positive integer' : 'a non-negative integer')
      ) as KindType[K];
    }
    case 'positiveNumber':
    case 'nonNegativeNumber':
    case 'probability': {
      const n = typeof raw === 'number' ? raw : taggedFloat(raw);
      const ok = n !== undefined && Number.isFinite(n) && (kind === 'positiveNumber' ? n > 0 : n >= 0) && (kind !== 'probability' || n <= 1);
      return (
        ok ? n : fail(kind === 'positiveNumber' ? 'a positive finite number' : kind === 'probability' ? 'a number in [0, 1]' : 'a non-negative finite number')
      ) as KindType[K];
    }
  }
  return fail(kind);
}

/** `[lo, hi]`: numbers, or `{"__float__": "Infinity"}` for an infinite bound; 0 ≤ lo ≤ hi. */
function checkLimit(raw: unknown, source: string, key: string): readonly [number, number] {
  const bounds = Array.isArray(raw) ? raw.map((b) => (typeof b === 'number' ? b : taggedFloat(b))) : [];
  const [lo, hi] = bounds;
  if (bounds.length !== 2 || lo === undefined || hi === undefined || Number.isNaN(lo) || Number.isNaN(hi)) {
    throw new ConfigError(source, key, `expected [lo, hi] with numbers (or {"__float__": "Infinity"}), got ${describe(raw)}`);
  }
  if (!(lo >= 0 && lo <= hi && Number.isFinite(lo))) throw new ConfigError(source, key, `needs 0 <= lo <= hi with a finite lo, got [${lo}, ${hi}]`);
  return Object.freeze([lo, hi] as const);
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing';
  const tagged = taggedFloat(value);
  if (tagged !== undefined) return String(tagged);
  if (typeof value === 'number' && !Number.isFinite(value)) return String(value);
  return JSON.stringify(value);
}

/** The number a `{"__float__": "Infinity"}` object stands for (the fixtures' manifest form), else undefined. */
function taggedFloat(value: unknown): number | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const keys = Object.keys(value);
  const tag = (value as { __float__?: unknown }).__float__;
  if (keys.length !== 1 || keys[0] !== '__float__') return undefined;
  if (typeof tag === 'number') return tag;
  return typeof tag === 'string' && Object.hasOwn(NON_FINITE, tag) ? NON_FINITE[tag] : undefined;
}

const NON_FINITE: Readonly<Record<string, number>> = { Infinity: Infinity, '-Infinity': -Infinity, inf: Infinity, '-inf': -Infinity, NaN: NaN, nan: NaN };
