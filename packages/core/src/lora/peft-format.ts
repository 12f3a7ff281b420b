/**
 * Hugging Face PEFT's adapter format, without file I/O (the root package reads and writes the files):
 * the tensor keys of `adapter_model.safetensors` and the fields of `adapter_config.json`.
 *
 * Keys: PEFT saves `base_model.model.<module name>.lora_A.weight` / `.lora_B.weight`, the module name
 * being the base model's in-memory one. transformers' native `NemotronHForCausalLM` (v5) keeps the
 * backbone under `model`, so PEFT on it writes `base_model.model.model.layers.N.mixer.in_proj…`; the
 * remote-code class (trust_remote_code) keeps it under `backbone`, giving
 * `base_model.model.backbone.layers.N…`. Our module names are the native ones, so we WRITE the
 * native prefix (what stock PEFT writes and loads on the native class without any key conversion)
 * and READ both.
 */
import type { LoraConfig, LoraOptions } from './lora-config';
import type { LoraHandle } from './apply';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';

const PEFT_PREFIX = 'base_model.model.';
const REMOTE_CODE_BACKBONE = `${PEFT_PREFIX}backbone.`;
const NATIVE_BACKBONE = `${PEFT_PREFIX}model.`;
/** A per-expert routed-expert layer, as the remote-code class has them (PEFT adapts each there). */
const ROUTED_EXPERT_LAYER = /\.mixer\.experts\.\d+\.(up_proj|down_proj)\.lora_[AB]\.weight$/;

/** One adapter tensor: its key in the file and its parameter in the model. */
export interface PeftTensorKey {
  readonly key: string;
  /** Our parameter name (`model.layers.0.mixer.in_proj.lora_A.weight`). */
  readonly parameter: string;
}

/** Every adapter tensor of `handle` with the PEFT key we write (the native-class one), in the handle's order. */
export function peftTensorKeys(handle: LoraHandle): PeftTensorKey[] {
  return handle.namedParameters().map(([parameter]) => ({ key: `${PEFT_PREFIX}${parameter}`, parameter }));
}

/**
 * The key `key` of an adapter file has in our naming (`base_model.model.` + our parameter name):
 * the remote-code prefix `base_model.model.backbone.` becomes the native `base_model.model.model.`.
 */
export function nativePeftKey(key: string): string {
  return key.startsWith(REMOTE_CODE_BACKBONE) ? NATIVE_BACKBONE + key.slice(REMOTE_CODE_BACKBONE.length) : key;
}

/** Why an adapter file's key cannot be loaded here, when the reason is known (else null: just unexpected). */
export function unsupportedPeftKey(key: string): string | null {
  if (ROUTED_EXPERT_LAYER.test(key))
    return "an adapter on one routed expert (PEFT on the remote-code class adapts each expert); the routed experts here are stacked, as in transformers' native class, and take no adapters";
  return null;
}

/**
 * The JSON object of adapter_config.json for `config`: every field PEFT 0.20's LoraConfig saves,
 * with its defaults, sorted by name as PEFT writes them — less `peft_version`, which PEFT fills in
 * with its own version when absent.
 */
export function peftAdapterConfig(config: LoraConfig, baseModelNameOrPath: string | null): Record<string, unknown> {
  const fields: Record<string, unknown> = {
    alora_invocation_tokens: null,
    alpha_pattern: {},
    arrow_config: null,
    auto_mapping: null,
    base_model_name_or_path: baseModelNameOrPath,
    bias: 'none',
    corda_config: null,
    ensure_weight_tying: false,
    eva_config: null,
    exclude_modules: null,
    fan_in_fan_out: false,
    inference_mode: true,
    init_lora_weights: true,
    layer_replication: null,
    layers_pattern: null,
    layers_to_transform: null,
    loftq_config: {},
    lora_alpha: config.alpha,
    lora_bias: false,
    lora_dropout: config.dropout,
    lora_ga_config: null,
    megatron_config: null,
    megatron_core: 'megatron.core',
    modules_to_save: null,
    monteclora_config: null,
    peft_type: 'LORA',
    qalora_group_size: 16,
    r: config.r,
    rank_pattern: {},
    revision: null,
    target_modules: typeof config.targetModules === 'string' ? config.targetModules : [...config.targetModules],
    target_parameters: null,
    task_type: 'CAUSAL_LM',
    trainable_token_indices: null,
    use_bdlora: null,
    use_dora: false,
    use_qalora: false,
    use_rslora: false,
  };
  return fields;
}

/**
 * The LoRA options an adapter_config.json describes. Errors name `file` and the field; variants
 * this implementation does not run (bias training, rsLoRA, DoRA, per-layer ranks, fan_in_fan_out,
 * extra trained modules, …) are refused rather than loaded wrongly. target_modules may be a list
 * of names or one regular expression (PEFT's full match).
 * Fields that only matter when initialising or training (init_lora_weights, loftq/eva/corda
 * configs, megatron_*, peft_version, revision, …) are ignored.
 */
export function parsePeftAdapterConfig(json: unknown, file: string): LoraOptions {
  const fail = (message: string): never => {
    throw new Error(`${file}: ${message}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object');
  const o = json as Record<string, unknown>;
  if (o.peft_type !== 'LORA') fail(`peft_type must be "LORA", got ${JSON.stringify(o.peft_type)}`);
  if (o.task_type !== undefined && o.task_type !== null && o.task_type !== 'CAUSAL_LM')
    fail(`task_type must be "CAUSAL_LM", got ${JSON.stringify(o.task_type)}`);
  if (typeof o.r !== 'number') fail(`r must be a number, got ${JSON.stringify(o.r)}`);
  if (typeof o.lora_alpha !== 'number') fail(`lora_alpha must be a number, got ${JSON.stringify(o.lora_alpha)}`);
  const dropout = o.lora_dropout ?? 0;
  if (typeof dropout !== 'number') fail(`lora_dropout must be a number, got ${JSON.stringify(dropout)}`);
  const targets = o.target_modules;
  const isList = Array.isArray(targets) && targets.length > 0 && targets.every((t) => typeof t === 'string');
  if (!isList && (typeof targets !== 'string' || targets === ''))
    fail(`target_modules must be a list of names or one regular expression, got ${JSON.stringify(o.target_modules)}`);
  const unsupported: [string, boolean][] = [
    ['bias', (o.bias ?? 'none') !== 'none'],
    ['fan_in_fan_out', o.fan_in_fan_out === true],
    ['use_rslora', o.use_rslora === true],
    ['use_dora', o.use_dora === true],
    ['use_qalora', o.use_qalora === true],
    ['lora_bias', o.lora_bias === true],
    ['modules_to_save', isSet(o.modules_to_save)],
    ['rank_pattern', isSet(o.rank_pattern)],
    ['alpha_pattern', isSet(o.alpha_pattern)],
    ['layers_to_transform', isSet(o.layers_to_transform)],
    ['exclude_modules', isSet(o.exclude_modules)],
    ['target_parameters', isSet(o.target_parameters)],
    ['trainable_token_indices', isSet(o.trainable_token_indices)],
    ['layer_replication', isSet(o.layer_replication)],
    ['alora_invocation_tokens', isSet(o.alora_invocation_tokens)],
    ['use_bdlora', isSet(o.use_bdlora)],
    ['arrow_config', isSet(o.arrow_config)],
  ];
  for (const [field, bad] of unsupported) if (bad) fail(`${field} = ${JSON.stringify(o[field])} is not supported`);
  return { r: o.r as number, alpha: o.lora_alpha as number, dropout: dropout as number, targetModules: targets as string[] | string };
}

/** A field with a value that changes what the adapter computes: not null/false, not an empty list or object. */
function isSet(v: unknown): boolean {
  if (v === undefined || v === null || v === false) return false;
  if (Array.isArray(v)) return v.length > 0;
  if (typeof v === 'object') return Object.keys(v).length > 0;
  return true;
}
