/**
 * `savePretrainedFiles`: the model-agnostic half of `save_pretrained` — weights (sharded as HF
 * does), config.json, generation_config.json and the tokenizer files — into one folder that
 * transformers and our own loader both read. Every file is written atomically.
 */
import { mkdir, readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomically } from './atomic-file';
import { writeConfigJson } from './config-json';
import type { JsonObject } from './hf-json';
import { saveWeights, type SavedWeights, type SaveWeightsOptions, type TensorSource } from './safetensors/sharded-write';

/** Tokenizer files copied by `copyFrom`, when the source folder has them. */
export const TOKENIZER_FILES: readonly string[] = [
  'tokenizer.json',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'chat_template.jinja',
  'added_tokens.json',
  'tokenizer.model',
  'vocab.json',
  'merges.txt',
];

/** What {@link savePretrainedFiles} writes; weight options as for {@link saveWeights}. */
export interface SavePretrainedOptions extends SaveWeightsOptions {
  /** The weights by their checkpoint names (see {@link TensorSource}). */
  tensors: TensorSource;
  /** Written as config.json. */
  config?: JsonObject;
  /** Written as generation_config.json. */
  generationConfig?: JsonObject;
  /** A folder whose tokenizer files ({@link TOKENIZER_FILES}) are copied along. */
  copyFrom?: string;
}

/** What {@link savePretrainedFiles} wrote. */
export interface SavedPretrained {
  readonly weights: SavedWeights;
  /** Every file written, relative to the folder. */
  readonly files: readonly string[];
}

/** Writes a checkpoint folder (created if needed). */
export async function savePretrainedFiles(folder: string, options: SavePretrainedOptions): Promise<SavedPretrained> {
  await mkdir(folder, { recursive: true });
  const weights = await saveWeights(folder, options.tensors, options);
  const files = [...weights.files, ...(weights.indexFile ? [weights.indexFile] : [])];
  if (options.config) {
    await writeConfigJson(join(folder, 'config.json'), options.config);
    files.push('config.json');
  }
  if (options.generationConfig) {
    await writeConfigJson(join(folder, 'generation_config.json'), options.generationConfig);
    files.push('generation_config.json');
  }
  if (options.copyFrom && (await realpath(options.copyFrom)) !== (await realpath(folder))) {
    for (const name of TOKENIZER_FILES) {
      const source = join(options.copyFrom, name);
      if (!(await stat(source).then((s) => s.isFile(), () => false))) continue;
      await writeFileAtomically(join(folder, name), await readFile(source));
      files.push(name);
    }
  }
  return { weights, files };
}
