/**
 * `GenerationConfig`: the decoding defaults a checkpoint ships in generation_config.json (HF's
 * field names, camelCase here), resolved against the call's options by {@link resolveGeneration}.
 * Unset fields take HF's defaults: greedy, temperature 1, top_k 50, top_p 1, no min_p, no
 * repetition penalty, max_length 20 (prompt included) when neither max_new_tokens nor max_length
 * is given; EOS and pad ids fall back to the model config's.
 */
import type { SamplingOptions } from '@nemotron-ts/kernels';
import { checkKind, type JsonValue, type NemotronHConfig, type ValueKind } from '../config';

export interface GenerationConfigFields {
  doSample?: boolean;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number | null;
  repetitionPenalty?: number;
  maxNewTokens?: number | null;
  maxLength?: number;
  eosTokenId?: number | readonly number[] | null;
  padTokenId?: number | null;
  bosTokenId?: number | null;
}

/** Each field's generation_config.json name and kind. */
const FIELDS: Readonly<Record<keyof GenerationConfigFields, { readonly json: string; readonly kind: ValueKind }>> = {
  doSample: { json: 'do_sample', kind: 'bool' },
  temperature: { json: 'temperature', kind: 'nonNegativeNumber' },
  topK: { json: 'top_k', kind: 'nonNegativeInt' },
  topP: { json: 'top_p', kind: 'nonNegativeNumber' },
  minP: { json: 'min_p', kind: 'optionalNonNegativeNumber' },
  repetitionPenalty: { json: 'repetition_penalty', kind: 'nonNegativeNumber' },
  maxNewTokens: { json: 'max_new_tokens', kind: 'optionalPositiveInt' },
  maxLength: { json: 'max_length', kind: 'positiveInt' },
  eosTokenId: { json: 'eos_token_id', kind: 'tokenIds' },
  padTokenId: { json: 'pad_token_id', kind: 'optionalNonNegativeInt' },
  bosTokenId: { json: 'bos_token_id', kind: 'optionalNonNegativeInt' },
};

export class GenerationConfig implements Readonly<GenerationConfigFields> {
  readonly doSample?: boolean;
  readonly temperature?: number;
  readonly topK?: number;
  readonly topP?: number;
  readonly minP?: number | null;
  readonly repetitionPenalty?: number;
  readonly maxNewTokens?: number | null;
  readonly maxLength?: number;
  readonly eosTokenId?: number | readonly number[] | null;
  readonly padTokenId?: number | null;
  readonly bosTokenId?: number | null;

  constructor(fields: GenerationConfigFields = {}) {
    Object.assign(this, fields);
    Object.freeze(this);
  }

  /**
   * From a parsed generation_config.json (fields HF knows but generation here does not use are
   * ignored). `source` names the file in errors (a `ConfigError` naming the field).
   */
  static fromJSON(json: { readonly [key: string]: JsonValue | undefined }, source = 'generation_config.json'): GenerationConfig {
    const fields: Record<string, unknown> = {};
    for (const [key, { json: name, kind }] of Object.entries(FIELDS) as [keyof GenerationConfigFields, (typeof FIELDS)[keyof GenerationConfigFields]][]) {
      const v = json[name];
      if (v !== undefined) fields[key] = checkKind(v, kind, source, name);
    }
    return new GenerationConfig(fields as GenerationConfigFields);
  }

  /** HF's generation_config.json object (set fields only). */
  toJSON(): Record<string, JsonValue> {
    const out: Record<string, JsonValue> = {};
    for (const [key, { json: name }] of Object.entries(FIELDS) as [keyof GenerationConfigFields, (typeof FIELDS)[keyof GenerationConfigFields]][]) {
      const v = this[key];
      if (v !== undefined) out[name] = Array.isArray(v) ? [...v] : (v as JsonValue);
    }
    return out;
  }
}

/**
 * The options a generation call takes for decoding (each overrides the generation config); the
 * sampling ones mean what they mean for `sampleTokens`. The seed defaults to 0.
 */
export interface DecodingOptions extends Pick<SamplingOptions, 'doSample' | 'temperature' | 'topK' | 'topP' | 'minP' | 'repetitionPenalty' | 'seed'> {
  maxNewTokens?: number;
  /** One or more end-of-sequence ids; null or [] for none. */
  eosTokenId?: number | readonly number[] | null;
  /** What finished rows produce (default: the configs' pad id, else the first EOS id, else 0). */
  padTokenId?: number;
}

/** Decoding settings with every default applied. */
export interface ResolvedGeneration {
  readonly maxNewTokens: number;
  readonly doSample: boolean;
  readonly temperature: number;
  readonly topK: number;
  readonly topP: number;
  readonly minP: number;
  readonly repetitionPenalty: number;
  readonly seed: number;
  readonly eosTokenIds: readonly number[];
  readonly padTokenId: number;
}

/** Options over the generation config over HF's defaults; `promptLength` turns max_length into new tokens. */
export function resolveGeneration(options: DecodingOptions, config: GenerationConfig | null, model: NemotronHConfig, promptLength: number): ResolvedGeneration {
  const gc = config ?? new GenerationConfig();
  const maxLength = gc.maxLength ?? 20;
  const maxNewTokens = options.maxNewTokens ?? gc.maxNewTokens ?? Math.max(1, maxLength - promptLength);
  const eos = options.eosTokenId !== undefined ? options.eosTokenId : gc.eosTokenId !== undefined ? gc.eosTokenId : model.eosTokenId;
  const eosTokenIds = eos === null ? [] : typeof eos === 'number' ? [eos] : [...eos];
  const padTokenId = options.padTokenId ?? gc.padTokenId ?? model.padTokenId ?? eosTokenIds[0] ?? 0;
  const resolved: ResolvedGeneration = {
    maxNewTokens,
    doSample: options.doSample ?? gc.doSample ?? false,
    temperature: options.temperature ?? gc.temperature ?? 1,
    topK: options.topK ?? gc.topK ?? 50,
    topP: options.topP ?? gc.topP ?? 1,
    minP: options.minP ?? gc.minP ?? 0,
    repetitionPenalty: options.repetitionPenalty ?? gc.repetitionPenalty ?? 1,
    seed: options.seed ?? 0,
    eosTokenIds,
    padTokenId,
  };
  const fail = (what: string) => {
    throw new Error(`generate: ${what}`);
  };
  if (!Number.isInteger(resolved.maxNewTokens) || resolved.maxNewTokens < 1) fail(`maxNewTokens must be a positive integer, got ${resolved.maxNewTokens}`);
  for (const id of [...eosTokenIds, padTokenId])
    if (!Number.isInteger(id) || id < 0 || id >= model.vocabSize) fail(`token id ${id} (EOS or pad) is outside the vocabulary [0, ${model.vocabSize})`);
  return resolved;
}
