/** The checkpoint a training run starts from: its folder (local or from the Hub), config and tokenizer. */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { NemotronHConfig } from '@nemotron-ts/core';
import { type HfTokenizer, loadTokenizer, readConfigJson, resolveCheckpoint } from '@nemotron-ts/hub';

export interface TrainingCheckpoint {
  folder: string;
  config: NemotronHConfig;
  tokenizer: HfTokenizer;
}

/** Resolves `--model` and reads its config and tokenizer (training reads text through the checkpoint's tokenizer). */
export async function openTrainingCheckpoint(modelPath: string): Promise<TrainingCheckpoint> {
  const folder = await resolveCheckpoint(modelPath);
  const configPath = join(folder, 'config.json');
  const config = NemotronHConfig.fromJSON(await readConfigJson(configPath), { source: configPath });
  const hasTokenizer = await stat(join(folder, 'tokenizer.json')).then(
    (s) => s.isFile(),
    () => false,
  );
  if (!hasTokenizer) throw new Error(`${folder} has no tokenizer.json: training reads text through the checkpoint's tokenizer`);
  return { folder, config, tokenizer: await loadTokenizer(folder) };
}
