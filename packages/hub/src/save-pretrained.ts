/**
 * `savePretrainedFiles`: the model-agnostic half of `save_pretrained` — weights (sharded as HF
 * does), config.json, generation_config.json and the tokenizer files — into one folder that
 * transformers and our own loader both read. The folder is written atomically.
 */
import { readFile, realpath, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomically } from './atomic-file';
import { writeFolderAtomically } from './atomic-folder';
import { writeConfigJson } from './config-json';
import type { JsonObject } from './hf-json';
import { writeWeightsInto, type SavedWeights, type SaveWeightsOptions, type TensorSource } from './safetensors/sharded-write';

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

/**
 * Writes a checkpoint folder (created if needed) atomically: the files go into a temporary sibling
 * that replaces the folder when complete (see atomic-folder.ts), so a save killed midway leaves the
 * old checkpoint or the new one, never a mix. Other files already in the folder are kept.
 */
export async function savePretrainedFiles(folder: string, options: SavePretrainedOptions): Promise<SavedPretrained> {
  const copyFrom = options.copyFrom && !(await sameFolder(options.copyFrom, folder)) ? options.copyFrom : undefined;
  return writeFolderAtomically(
    folder,
    async (temp) => {
      const weights = await writeWeightsInto(temp, options.tensors, options, folder);
      const files = [...weights.files, ...(weights.indexFile ? [weights.indexFile] : [])];
      if (options.config) {
        await writeConfigJson(join(temp, 'config.json'), options.config);
        files.push('config.json');
      }
      if (options.generationConfig) {
        await writeConfigJson(join(temp, 'generation_config.json'), options.generationConfig);
        files.push('generation_config.json');
      }
      if (copyFrom) {
        for (const name of TOKENIZER_FILES) {
          const source = join(copyFrom, name);
          if (
            !(await stat(source).then(
              (s) => s.isFile(),
              () => false,
            ))
          )
            continue;
          await writeFileAtomically(join(temp, name), await readFile(source));
          files.push(name);
        }
      }
      return { weights, files };
    },
    { keepOtherFiles: true },
  );
}

async function sameFolder(a: string, b: string): Promise<boolean> {
  const [ra, rb] = await Promise.all([realpath(a).catch(() => null), realpath(b).catch(() => null)]);
  return ra !== null && ra === rb;
}
