/**
 * A training checkpoint: `OUT/checkpoint-<step>/` holds the model (`savePretrained`, loadable by
 * `fromPretrained` and transformers) — or, for a LoRA run, only its adapter (`saveLoraAdapter`: a
 * PEFT folder, the base being the run's unchanged `--model`) — `optimizer.safetensors` (AdamW moments, named
 * `<parameter>.<buffer>`), for a bf16 model `master_weights.safetensors` (the f32 masters of its bf16
 * weights, by parameter name) and `trainer_state.json` (step, data position, seed, the optimizer's
 * step counts and hyperparameters, the run's schedule and clipping, and the settings a resumed
 * run must share). Everything is written through hub's `writeFolderAtomically` (a temporary sibling
 * renamed into place when whole); an interrupted run's leftovers are removed by the next
 * `nemotron train` (hub's `recoverFoldersIn`, and `removeUnfinishedCheckpoints` for the
 * `.checkpoint-<step>.partial-<pid>` folders of older versions and the `.deleting-<pid>` ones of
 * `pruneCheckpoints`), and `pruneCheckpoints` keeps only the newest N.
 */
import { copyFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fsErrorMeaning, SafetensorsReader, saveSafetensors, TOKENIZER_FILES, writeFolderAtomically } from '@nemotron-ts/hub';
import type { AdamWOptions, Device, OptimizerStateDict, Tensor } from '@nemotron-ts/kernels';
import { saveLoraAdapter } from '../peft-files';
import type { DataFingerprint } from './training-data';
import type { NemotronHForCausalLM } from '../pretrained';

export const TRAINER_STATE_FILE = 'trainer_state.json';
export const OPTIMIZER_FILE = 'optimizer.safetensors';
export const MASTER_WEIGHTS_FILE = 'master_weights.safetensors';

/** Settings that fix what a step means: a resumed run must use the same. */
export interface RunSettings {
  seqLen: number;
  batchSize: number;
  gradAccum: number;
  seed: number;
  mtp: boolean;
  /** Weight dtype of the model (bf16: trained through f32 masters). */
  dtype: 'f32' | 'bf16';
  /** The LoRA adapters' options when only adapters train, else null (absent in older states). */
  lora: LoraRunSettings | null;
  /** The training rows (absent in older states: not checked). */
  data?: DataFingerprint;
  /** Rows other than plain text blocks: 'chat', 'text+pack' or 'chat+pack' (absent for plain text, and in older states). */
  dataMode?: string;
}

export interface LoraRunSettings {
  r: number;
  alpha: number;
  dropout: number;
  /** Module names, or one regular expression the whole module name must match (PEFT's string form). */
  targetModules: string[] | string;
  seed: number;
}

/**
 * The optimization hyperparameters of the run that wrote a checkpoint. Unlike `RunSettings`, a
 * resumed run may change them: its own values apply from the resumed step on.
 */
export interface Hyperparameters {
  steps: number;
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  gradClip: number;
}

export interface TrainerState {
  version: 1;
  /** Optimizer updates done. */
  step: number;
  /** Training rows handed out so far (the data sampler's position). */
  dataPosition: number;
  settings: RunSettings;
  /** Absent in states written before resumed runs could change them. */
  hyperparameters?: Hyperparameters;
  optimizer: { stepCount: number; groups: AdamWOptions[]; params: ({ name: string; step: number } | null)[] };
}

export function checkpointDir(outDir: string, step: number): string {
  return join(outDir, `checkpoint-${step}`);
}

export interface SaveCheckpointOptions {
  /** Folder whose tokenizer files are copied along. */
  tokenizerFrom?: string;
  /** f32 masters of bf16 weights, by parameter name (written when not empty). */
  masters: ReadonlyMap<string, Tensor>;
  /** Save only the LoRA adapter (PEFT folder) instead of the whole model. */
  loraAdapter?: { baseModelNameOrPath: string | null };
}

/**
 * Writes `OUT/checkpoint-<step>/` atomically (a re-save of the same step replaces it): the model
 * (or its LoRA adapter), `dict` (an AdamW's state, its parameters named by `names`; the caller
 * keeps and disposes it) and the trainer state.
 */
export async function saveCheckpoint(
  outDir: string,
  model: NemotronHForCausalLM,
  dict: OptimizerStateDict<AdamWOptions>,
  names: readonly string[],
  state: Omit<TrainerState, 'optimizer' | 'version'>,
  options: SaveCheckpointOptions,
): Promise<string> {
  return writeCheckpointFolder(outDir, state.step, async (temp) => {
    if (options.loraAdapter) {
      await saveLoraAdapter(model, temp, options.loraAdapter);
      if (options.tokenizerFrom) await copyTokenizerFiles(options.tokenizerFrom, temp);
    } else {
      await model.savePretrained(temp, { copyTokenizerFrom: options.tokenizerFrom });
    }
    if (options.masters.size > 0) await saveSafetensors(join(temp, MASTER_WEIGHTS_FILE), options.masters);
    const buffers = new Map<string, Tensor>();
    dict.params.forEach((s, i) => {
      if (s) for (const [key, t] of Object.entries(s.buffers)) buffers.set(`${names[i]}.${key}`, t);
    });
    await saveSafetensors(join(temp, OPTIMIZER_FILE), buffers);
    const full: TrainerState = {
      version: 1,
      ...state,
      optimizer: { stepCount: dict.stepCount, groups: dict.groups, params: dict.params.map((s, i) => (s ? { name: names[i]!, step: s.step } : null)) },
    };
    await writeFile(join(temp, TRAINER_STATE_FILE), JSON.stringify(full, null, 2));
  });
}

/**
 * Writes `OUT/checkpoint-<step>/` atomically: `write` fills a temporary folder that is renamed
 * into place when whole (a re-save of the same step replaces it). Returns the folder.
 */
export async function writeCheckpointFolder(outDir: string, step: number, write: (temp: string) => Promise<void>): Promise<string> {
  const final = checkpointDir(outDir, step);
  try {
    await writeFolderAtomically(final, write);
  } catch (e) {
    // The hub names the folder the user asked for, never the temporary one.
    const code = (e as NodeJS.ErrnoException).code;
    throw new Error(`${final}: cannot save the checkpoint${code ? ` (${fsErrorMeaning(e as NodeJS.ErrnoException)})` : ''}: ${(e as Error).message}`, {
      cause: e,
    });
  }
  return final;
}

/** Whether `outDir` holds any `checkpoint-<step>/` folder (resumable or not). */
export async function hasCheckpointFolders(outDir: string): Promise<boolean> {
  return (await checkpointSteps(outDir)).length > 0;
}

/** Copies the tokenizer files `from` has into `to` (as HF's Trainer keeps them beside an adapter). */
async function copyTokenizerFiles(from: string, to: string): Promise<void> {
  for (const name of TOKENIZER_FILES) {
    const source = join(from, name);
    if (
      await stat(source).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      await copyFile(source, join(to, name));
  }
}

/** Steps of the `checkpoint-<step>` folders under `outDir`, oldest first. */
async function checkpointSteps(outDir: string): Promise<number[]> {
  const entries = await readdir(outDir).catch(() => [] as string[]);
  return entries
    .map((e) => /^checkpoint-(\d+)$/.exec(e))
    .filter((m) => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => a - b);
}

/** Temporary folders of checkpoints being deleted (`.deleting-<pid>`) or, by older versions, written (`.partial-<pid>`). */
const UNFINISHED = /^\.checkpoint-\d+\.(partial|deleting)-(\d+)$/;

/**
 * Deletes the temporary checkpoint folders an interrupted run left in `outDir` (those of other
 * processes: the caller holds the folder's lock, so no other trainer is writing them). Returns their paths.
 */
export async function removeUnfinishedCheckpoints(outDir: string): Promise<string[]> {
  const entries = await readdir(outDir).catch(() => [] as string[]);
  const removed: string[] = [];
  for (const name of entries) {
    const m = UNFINISHED.exec(name);
    if (!m || Number(m[2]) === process.pid) continue;
    await rm(join(outDir, name), { recursive: true, force: true });
    removed.push(join(outDir, name));
  }
  return removed;
}

/**
 * Keeps the newest `keep` checkpoints of `outDir` and deletes the older ones (HF's
 * `save_total_limit`); call it after a save succeeded, so the newest always exists. Each is renamed
 * aside before it is deleted, so a kill never leaves a half-deleted `checkpoint-<step>/`. Returns
 * the deleted folders.
 */
export async function pruneCheckpoints(outDir: string, keep: number): Promise<string[]> {
  if (!Number.isInteger(keep) || keep < 1) throw new Error(`pruneCheckpoints: keep must be an integer ≥ 1, got ${keep}`);
  const steps = await checkpointSteps(outDir);
  const deleted: string[] = [];
  for (const step of steps.slice(0, Math.max(0, steps.length - keep))) {
    const dir = checkpointDir(outDir, step);
    const aside = join(outDir, `.checkpoint-${step}.deleting-${process.pid}`);
    await rename(dir, aside);
    await rm(aside, { recursive: true, force: true });
    deleted.push(dir);
  }
  return deleted;
}

/** The newest complete checkpoint folder under `outDir`, or null. */
export async function latestCheckpoint(outDir: string): Promise<string | null> {
  const steps = await checkpointSteps(outDir);
  for (const step of steps.reverse()) {
    const dir = checkpointDir(outDir, step);
    if (
      await stat(join(dir, TRAINER_STATE_FILE)).then(
        (s) => s.isFile(),
        () => false,
      )
    )
      return dir;
  }
  return null;
}

export async function readTrainerState(dir: string): Promise<TrainerState> {
  const path = join(dir, TRAINER_STATE_FILE);
  let state: TrainerState;
  try {
    state = (await Bun.file(path).json()) as TrainerState;
  } catch (e) {
    throw new Error(`${path}: cannot read the trainer state (${(e as Error).message})`);
  }
  if (state.version !== 1 || !Number.isInteger(state.step) || !Number.isInteger(state.dataPosition) || !state.settings || !state.optimizer) {
    throw new Error(`${path}: not a trainer state this version writes`);
  }
  // States written before LoRA training existed are full fine-tuning runs.
  state.settings.lora ??= null;
  return state;
}

/** The optimizer state dict a checkpoint holds, its tensors on `device` (the caller disposes them). */
export async function readOptimizerState(
  dir: string,
  state: TrainerState,
  names: readonly string[],
  device: Device,
): Promise<OptimizerStateDict<AdamWOptions>> {
  const path = join(dir, OPTIMIZER_FILE);
  const saved = state.optimizer.params;
  if (saved.length !== names.length || saved.some((s, i) => s !== null && s.name !== names[i])) {
    throw new Error(`${join(dir, TRAINER_STATE_FILE)}: the optimizer's parameters do not match this model's trained parameters`);
  }
  const reader = await SafetensorsReader.open(path);
  const params = await Promise.all(
    saved.map(async (s) => {
      if (!s) return null;
      const buffers: Record<string, Tensor> = {};
      for (const key of ['expAvg', 'expAvgSq']) buffers[key] = await reader.load(`${s.name}.${key}`, { device });
      return { step: s.step, buffers };
    }),
  );
  return { stepCount: state.optimizer.stepCount, groups: state.optimizer.groups, params };
}

/** The f32 masters `names` from a checkpoint's master_weights.safetensors, on `device` (the caller disposes them). */
export async function readMasterWeights(dir: string, names: readonly string[], device: Device): Promise<Map<string, Tensor>> {
  const path = join(dir, MASTER_WEIGHTS_FILE);
  const reader = await SafetensorsReader.open(path);
  const out = new Map<string, Tensor>();
  for (const name of names) out.set(name, await reader.load(name, { device, dtype: 'f32' }));
  return out;
}
