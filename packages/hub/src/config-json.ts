/**
 * config.json and generation_config.json as plain, validated JSON objects (model-specific typing is
 * the model package's job). Reads accept Python's `Infinity`/`NaN` literals; writes produce HF's
 * format (indent 2, sorted keys, bare `Infinity`). Errors name the file and the field.
 */
import { stat } from 'node:fs/promises';
import { writeFileAtomically } from './atomic-file';
import { CheckpointFormatError } from './errors';
import { parseHfJson, stringifyHfJson, type JsonObject, type JsonValue } from './hf-json';

/** A JSON value kind a field may take. */
export type FieldKind =
  | 'string'
  | 'boolean'
  | 'null'
  | 'object'
  | 'number'
  | 'non-negative-number'
  | 'integer'
  | 'non-negative-integer'
  | 'positive-integer'
  | 'string[]'
  | 'number[]'
  | 'integer[]';

/** The kinds a field may take (any one), and whether it must be present. */
export interface FieldRule {
  readonly kinds: readonly FieldKind[];
  readonly required?: boolean;
}

/** Rules by field name. */
export type FieldRules = Readonly<Record<string, FieldRule>>;

const tokenId: FieldRule = { kinds: ['non-negative-integer', 'integer[]', 'null'] };
const positive: FieldRule = { kinds: ['positive-integer'] };

/** Fields many HF configs share, checked whenever present. */
export const CONFIG_FIELDS: FieldRules = {
  model_type: { kinds: ['string'] },
  architectures: { kinds: ['string[]', 'null'] },
  vocab_size: positive,
  hidden_size: positive,
  intermediate_size: positive,
  num_hidden_layers: positive,
  num_attention_heads: positive,
  num_key_value_heads: positive,
  head_dim: { kinds: ['positive-integer', 'null'] },
  max_position_embeddings: positive,
  bos_token_id: tokenId,
  eos_token_id: tokenId,
  pad_token_id: tokenId,
  tie_word_embeddings: { kinds: ['boolean'] },
  use_cache: { kinds: ['boolean'] },
  torch_dtype: { kinds: ['string', 'null'] },
  dtype: { kinds: ['string', 'null'] },
  initializer_range: { kinds: ['non-negative-number'] },
  rms_norm_eps: { kinds: ['non-negative-number'] },
  layer_norm_epsilon: { kinds: ['non-negative-number'] },
  rope_theta: { kinds: ['non-negative-number'] },
  transformers_version: { kinds: ['string'] },
};

/** Fields of generation_config.json, checked whenever present. */
export const GENERATION_CONFIG_FIELDS: FieldRules = {
  bos_token_id: tokenId,
  eos_token_id: tokenId,
  pad_token_id: tokenId,
  decoder_start_token_id: tokenId,
  do_sample: { kinds: ['boolean'] },
  temperature: { kinds: ['non-negative-number'] },
  top_p: { kinds: ['non-negative-number'] },
  top_k: { kinds: ['non-negative-integer'] },
  min_p: { kinds: ['non-negative-number', 'null'] },
  repetition_penalty: { kinds: ['non-negative-number'] },
  max_length: positive,
  max_new_tokens: { kinds: ['positive-integer', 'null'] },
  min_new_tokens: { kinds: ['non-negative-integer', 'null'] },
  num_beams: positive,
  transformers_version: { kinds: ['string'] },
};

const KIND_TEXT: Record<FieldKind, string> = {
  string: 'a string',
  boolean: 'true or false',
  null: 'null',
  object: 'an object',
  number: 'a number',
  'non-negative-number': 'a number ≥ 0',
  integer: 'an integer',
  'non-negative-integer': 'an integer ≥ 0',
  'positive-integer': 'a positive integer',
  'string[]': 'a list of strings',
  'number[]': 'a list of numbers',
  'integer[]': 'a list of integers',
};

function isKind(value: JsonValue, kind: FieldKind): boolean {
  switch (kind) {
    case 'string':
      return typeof value === 'string';
    case 'boolean':
      return typeof value === 'boolean';
    case 'null':
      return value === null;
    case 'object':
      return typeof value === 'object' && value !== null && !Array.isArray(value);
    case 'number':
      return typeof value === 'number';
    case 'non-negative-number':
      return typeof value === 'number' && value >= 0;
    case 'integer':
      return Number.isSafeInteger(value);
    case 'non-negative-integer':
      return Number.isSafeInteger(value) && (value as number) >= 0;
    case 'positive-integer':
      return Number.isSafeInteger(value) && (value as number) > 0;
    case 'string[]':
      return Array.isArray(value) && value.every((v) => typeof v === 'string');
    case 'number[]':
      return Array.isArray(value) && value.every((v) => typeof v === 'number');
    case 'integer[]':
      return Array.isArray(value) && value.every((v) => Number.isSafeInteger(v));
  }
}

/** Checks `object` against `rules`; throws naming `file` and the first field at fault. */
export function validateFields(object: JsonObject, rules: FieldRules, file: string): void {
  for (const [field, rule] of Object.entries(rules)) {
    if (!Object.hasOwn(object, field)) {
      if (rule.required) throw new CheckpointFormatError(file, `field '${field}'`, `is required (${describeKinds(rule.kinds)})`);
      continue;
    }
    const value = object[field]!;
    if (!rule.kinds.some((k) => isKind(value, k))) {
      throw new CheckpointFormatError(file, `field '${field}'`, `must be ${describeKinds(rule.kinds)}, got ${describeValue(value)}`);
    }
  }
}

function describeKinds(kinds: readonly FieldKind[]): string {
  const texts = kinds.map((k) => KIND_TEXT[k]);
  return texts.length === 1 ? texts[0]! : `${texts.slice(0, -1).join(', ')} or ${texts.at(-1)}`;
}

function describeValue(value: JsonValue): string {
  const text = stringifyHfJson(value).trim().replace(/\s+/g, ' ');
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** Parses config text into an object and checks `rules` (default {@link CONFIG_FIELDS}). */
export function parseConfigJson(text: string, file: string, rules: FieldRules = CONFIG_FIELDS): JsonObject {
  const value = parseHfJson(text, file);
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new CheckpointFormatError(file, undefined, 'must hold a JSON object');
  validateFields(value, rules, file);
  return value;
}

/** Reads and validates a config.json (common HF fields plus any `rules` given). */
export async function readConfigJson(path: string, rules: FieldRules = {}): Promise<JsonObject> {
  return parseConfigJson(await readText(path), path, { ...CONFIG_FIELDS, ...rules });
}

/** Reads and validates a generation_config.json. */
export async function readGenerationConfigJson(path: string, rules: FieldRules = {}): Promise<JsonObject> {
  return parseConfigJson(await readText(path), path, { ...GENERATION_CONFIG_FIELDS, ...rules });
}

/** Writes a config (or generation config) as HF does, atomically. */
export async function writeConfigJson(path: string, config: JsonObject): Promise<void> {
  await writeFileAtomically(path, stringifyHfJson(config));
}

async function readText(path: string): Promise<string> {
  const info = await stat(path).catch(() => null);
  if (!info?.isFile()) throw new CheckpointFormatError(path, undefined, 'does not exist');
  return Bun.file(path).text();
}
