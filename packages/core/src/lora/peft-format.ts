/**
 * Hugging Face PEFT's adapter format, without file I/O (the root package reads and writes the files):
 * the tensor keys of `adapter_model.safetensors` — `base_model.model.<HF checkpoint name of the
 * layer>.lora_A.weight` / `.lora_B.weight`, the HF name being the on-disk `backbone.*` one that
 * state-dict.ts maps to — and the fields of `adapter_config.json`.
 */
import { planCheckpointExport } from '../nemotron/state-dict';
import type { LoraConfig, LoraOptions } from './lora-config';
import type { LoraHandle } from './apply';

export const ADAPTER_WEIGHTS_FILE = 'adapter_model.safetensors';
export const ADAPTER_CONFIG_FILE = 'adapter_config.json';

const PEFT_PREFIX = 'base_model.model.';

/** One adapter tensor: its key in the file and its parameter in the model. */
export interface PeftTensorKey {
  readonly key: string;
  /** Our parameter name (`model.layers.0.mixer.in_proj.lora_A.weight`). */
  readonly parameter: string;
}

/** Every adapter tensor of `handle` with its PEFT key, in the handle's order. */
export function peftTensorKeys(handle: LoraHandle): PeftTensorKey[] {
  return handle.namedParameters().map(([parameter, t]) => {
    // lora_A / lora_B sit under the layer; the layer's HF name is its weight's, less ".weight".
    const layer = parameter.replace(/\.lora_[AB]\.weight$/, '');
    const part = parameter.slice(layer.length);
    const [entry] = planCheckpointExport([{ name: `${layer}.weight`, shape: t.shape }], 'hf');
    return { key: `${PEFT_PREFIX}${entry!.key.replace(/\.weight$/, '')}${part}`, parameter };
  });
}

/** The JSON object of adapter_config.json for `config` (the fields PEFT's LoraConfig reads). */
export function peftAdapterConfig(config: LoraConfig, baseModelNameOrPath: string | null): Record<string, unknown> {
  return {
    peft_type: 'LORA',
    task_type: 'CAUSAL_LM',
    base_model_name_or_path: baseModelNameOrPath,
    r: config.r,
    lora_alpha: config.alpha,
    lora_dropout: config.dropout,
    target_modules: [...config.targetModules],
    bias: 'none',
    fan_in_fan_out: false,
    inference_mode: true,
    modules_to_save: null,
    use_rslora: false,
    use_dora: false,
  };
}

/**
 * The LoRA options an adapter_config.json describes. Errors name `file` and the field; variants
 * this implementation does not run (bias training, rsLoRA, DoRA, per-layer ranks, fan_in_fan_out,
 * extra trained modules) are refused rather than loaded wrongly.
 */
export function parsePeftAdapterConfig(json: unknown, file: string): LoraOptions {
  const fail = (message: string): never => {
    throw new Error(`${file}: ${message}`);
  };
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return fail('expected a JSON object');
  const o = json as Record<string, unknown>;
  if (o.peft_type !== 'LORA') fail(`peft_type must be "LORA", got ${JSON.stringify(o.peft_type)}`);
  if (typeof o.r !== 'number') fail(`r must be a number, got ${JSON.stringify(o.r)}`);
  if (typeof o.lora_alpha !== 'number') fail(`lora_alpha must be a number, got ${JSON.stringify(o.lora_alpha)}`);
  const dropout = o.lora_dropout ?? 0;
  if (typeof dropout !== 'number') fail(`lora_dropout must be a number, got ${JSON.stringify(dropout)}`);
  const targets = o.target_modules;
  if (typeof targets === 'string') fail(`target_modules as one string (PEFT's regular expression, ${JSON.stringify(targets)}) is not supported; list the module names`);
  if (!Array.isArray(targets) || targets.some((t) => typeof t !== 'string')) fail(`target_modules must be a list of names, got ${JSON.stringify(o.target_modules)}`);
  const unsupported: [string, boolean][] = [
    ['bias', (o.bias ?? 'none') !== 'none'],
    ['fan_in_fan_out', o.fan_in_fan_out === true],
    ['use_rslora', o.use_rslora === true],
    ['use_dora', o.use_dora === true],
    ['modules_to_save', Array.isArray(o.modules_to_save) && o.modules_to_save.length > 0],
    ['rank_pattern', isNonEmptyObject(o.rank_pattern)],
    ['alpha_pattern', isNonEmptyObject(o.alpha_pattern)],
    ['layers_to_transform', o.layers_to_transform !== undefined && o.layers_to_transform !== null],
    ['lora_bias', o.lora_bias === true],
  ];
  for (const [field, bad] of unsupported) if (bad) fail(`${field} = ${JSON.stringify(o[field])} is not supported`);
  return { r: o.r as number, alpha: o.lora_alpha as number, dropout: dropout as number, targetModules: targets as string[] };
}

function isNonEmptyObject(v: unknown): boolean {
  return typeof v === 'object' && v !== null && Object.keys(v).length > 0;
}
