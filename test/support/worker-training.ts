/**
 * Support for the tests that train the tiny model through workers (ParallelTrainer) against the
 * one-device Trainer: its scratch folder with a short training text, one run's losses, and a run's
 * step-2 checkpoint copied into a fresh folder to resume from.
 */
import { cp, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadTokenizer } from '@nemotron-ts/hub';
import { ParallelModel, type ParallelOptions } from '../../src';
import type { NemotronHForCausalLM } from '../../src/pretrained';
import { loadTrainingData, ParallelTrainer, Trainer, type TrainerOptions, type TrainingData } from '../../src/train';
import { scratchWithTinyModel } from './scratch';
import { WORKER_DEVICES } from './workers';

export interface TinyTraining {
  scratch: string;
  modelDir: string;
  /** "the cat sat on the mat." repeated, in rows of 11 tokens, no held-out part. */
  data: () => Promise<TrainingData>;
}

/** The scratch folder (see scratchWithTinyModel) with the training text; call at a test file's top level. */
export async function tinyTraining(name: string): Promise<TinyTraining> {
  const { scratch, modelDir } = await scratchWithTinyModel(name);
  const tokenizer = await loadTokenizer(modelDir);
  const dataPath = join(scratch, 'data.txt');
  await writeFile(dataPath, 'the cat sat on the mat. '.repeat(40));
  return { scratch, modelDir, data: () => loadTrainingData(tokenizer, { dataPath, holdOut: false, seqLen: 11, seed: 3, vocabSize: 264 }) };
}

/**
 * Trains `model` on `data()` with `options`, on its own device (`parallel` null) or through workers,
 * resuming from the checkpoint `resumeFrom` when given; the logged losses. The workers are closed
 * and the model disposed however it ends.
 */
export async function trainedLosses(
  model: NemotronHForCausalLM,
  data: () => Promise<TrainingData>,
  options: TrainerOptions,
  parallel: ParallelOptions | null,
  resumeFrom?: string,
): Promise<number[]> {
  const workers = parallel ? await ParallelModel.fromModel(model, { devices: WORKER_DEVICES, ...parallel }) : null;
  try {
    const trainer = workers ? await ParallelTrainer.create(workers, await data(), options) : new Trainer(model, await data(), options);
    try {
      if (resumeFrom) await trainer.resumeFrom(resumeFrom);
      return (await trainer.train()).map((l) => l.loss);
    } finally {
      trainer.dispose();
    }
  } finally {
    await workers?.close();
    model.dispose();
  }
}

/** A fresh run folder `outDir` holding a copy of `runDir`'s step-2 checkpoint; the copy's path. */
export async function checkpoint2Copy(runDir: string, outDir: string): Promise<string> {
  await mkdir(outDir);
  await cp(join(runDir, 'checkpoint-2'), join(outDir, 'checkpoint-2'), { recursive: true });
  return join(outDir, 'checkpoint-2');
}
