/**
 * What the one-device {@link Trainer} and the {@link ParallelTrainer} record about a run and check
 * when one resumes: the settings that fix what a step means (they must match the checkpoint's) and
 * the hyperparameters a resumed run may change (reported). Both trainers write and read the same
 * checkpoints, so a run may resume on the other kind where the shapes allow.
 */
import type { LoraConfig } from '@nemotron-ts/core';
import type { Hyperparameters, LoraRunSettings, RunSettings, TrainerState } from './trainer-state';
import { dataFingerprint, type TrainingData } from './training-data';

/** A hyperparameter whose value differs from the resumed checkpoint's run (this run's applies). */
export interface ChangedHyperparameter {
  name: keyof Hyperparameters;
  checkpoint: number;
  applied: number;
}

export interface RunShape {
  batchSize: number;
  gradAccum: number;
  seed: number;
  mtp: boolean;
  dtype: 'f32' | 'bf16';
  lora: LoraConfig | null;
}

/** The settings a checkpoint of this run records. */
export function runSettings(data: TrainingData, shape: RunShape): RunSettings {
  const dataMode = `${data.kind ?? 'text'}${data.packed ? '+pack' : ''}`;
  return {
    seqLen: data.seqLen,
    batchSize: shape.batchSize,
    gradAccum: shape.gradAccum,
    seed: shape.seed,
    mtp: shape.mtp,
    dtype: shape.dtype,
    lora: shape.lora && loraRunSettings(shape.lora),
    data: dataFingerprint(data),
    ...(dataMode === 'text' ? {} : { dataMode }),
  };
}

/** Fails naming the setting when `state` (read from `dir`) was trained differently from `settings`, or past `steps`. */
export function checkResumable(dir: string, state: TrainerState, settings: RunSettings, steps: number): void {
  for (const key of Object.keys(settings) as (keyof RunSettings)[]) {
    if (state.settings[key] === undefined) continue; // written before the setting was recorded
    const [saved, mine] = [JSON.stringify(state.settings[key]), JSON.stringify(settings[key])];
    if (saved !== mine) throw new Error(`${dir}: the checkpoint was trained with ${key} ${saved}, this run has ${mine}`);
  }
  const [savedData, myData] = [state.settings.dataMode ?? 'text', settings.dataMode ?? 'text'];
  if (savedData !== myData) throw new Error(`${dir}: the checkpoint was trained on ${savedData} rows, this run has ${myData} rows`);
  if (state.step > steps) throw new Error(`${dir}: the checkpoint is at step ${state.step}, past this run's ${steps} steps`);
}

/** The hyperparameters of `state`'s run that differ from `mine` (older states: lr and weight decay, from the optimizer's groups). */
export function changedHyperparameters(state: TrainerState, mine: Hyperparameters): ChangedHyperparameter[] {
  const decayed = state.optimizer.groups.find((g) => (g.weightDecay ?? 0) > 0);
  const saved: Partial<Hyperparameters> = state.hyperparameters ?? {
    lr: state.optimizer.groups[0]?.lr,
    ...(decayed && { weightDecay: decayed.weightDecay }),
  };
  return (Object.keys(mine) as (keyof Hyperparameters)[])
    .filter((name) => saved[name] !== undefined && saved[name] !== mine[name])
    .map((name) => ({ name, checkpoint: saved[name]!, applied: mine[name] }));
}

/** The LoRA settings checkpoints record, as a plain copy of the adapters' options. */
function loraRunSettings(config: LoraConfig): LoraRunSettings {
  const { r, alpha, dropout, targetModules, seed } = config;
  // A list of names, or one regular expression (PEFT's string form), which stays one string.
  return { r, alpha, dropout, targetModules: typeof targetModules === 'string' ? targetModules : [...targetModules], seed };
}
