/**
 * `nemotron train --resume`'s policy for flags that differ from the checkpoint's run: the flags that
 * fix what a step means (--seq-len, --batch-size, --grad-accum, --seed, --dtype; the --lora-* ones in
 * lora-flags.ts) must match, or the run exits naming the flag and both values, and so must the
 * training rows (--data, and --eval-every/--eval-data, which decide the held-out rows); the optimization
 * flags (--steps, --lr, --min-lr, --warmup, --weight-decay, --grad-clip) apply from the resumed step
 * on, each change said on stderr (the logged lr is the applied one).
 */
import type { ChangedHyperparameter } from '../train/run-settings';
import type { Hyperparameters, RunSettings } from '../train/trainer-state';
import type { DataFingerprint } from '../train/training-data';
import { RefusedError } from './args';

const SETTING_FLAGS = { seqLen: 'seq-len', batchSize: 'batch-size', gradAccum: 'grad-accum', seed: 'seed', dtype: 'dtype' } as const;
type FlagSettings = Pick<RunSettings, keyof typeof SETTING_FLAGS>;

const HYPERPARAMETER_FLAGS: Record<keyof Hyperparameters, string> = {
  steps: 'steps',
  lr: 'lr',
  minLr: 'min-lr',
  warmup: 'warmup',
  weightDecay: 'weight-decay',
  gradClip: 'grad-clip',
};

/** Fails naming each flag whose value differs from the run that wrote `checkpoint`. */
export function checkResumeSettings(mine: FlagSettings, saved: RunSettings, checkpoint: string): void {
  const differ = (Object.keys(SETTING_FLAGS) as (keyof FlagSettings)[]).filter((key) => mine[key] !== saved[key]);
  if (differ.length === 0) return;
  const list = differ.map((key) => `--${SETTING_FLAGS[key]} ${saved[key]} (this run has ${mine[key]})`).join(', ');
  throw new RefusedError(`--resume: ${checkpoint} was trained with ${list}; a resumed run must use the same`);
}

/** Fails when this run's training rows differ from those of the run that wrote `checkpoint` (older checkpoints: not checked). */
export function checkResumeData(mine: DataFingerprint, saved: RunSettings, checkpoint: string): void {
  const theirs = saved.data;
  if (!theirs || (theirs.rows === mine.rows && theirs.fnv1a === mine.fnv1a)) return;
  throw new RefusedError(
    `--resume: ${checkpoint} was trained on ${theirs.rows} rows (hash ${theirs.fnv1a}), this run's --data (less the rows --eval-every holds out without --eval-data) gives ${mine.rows} (hash ${mine.fnv1a}); a resumed run must train on the same rows`,
  );
}

/** One stderr line per hyperparameter this run changes from the resumed step on. */
export function describeChanges(changes: readonly ChangedHyperparameter[], step: number): string[] {
  return changes.map((c) => `--${HYPERPARAMETER_FLAGS[c.name]} ${c.applied} applies from step ${step + 1} on (the checkpoint's run had ${c.checkpoint})`);
}
