/**
 * `nemotron train --model DIR|REPO_ID --data FILE --out DIR [...]`: full fine-tuning (src/train) on
 * text or chat data (a .jsonl of {"messages"}: the loss on the assistant's tokens), `--pack` packing
 * whole documents into rows with cu_seqlens,
 * `--no-strict` loading a --model with missing or unexpected tensors (warnings; missing ones freshly
 * initialised), or with `--lora-r R` LoRA fine-tuning (checkpoints hold the PEFT adapter; `--merge` also writes
 * the merged model to OUT/merged/).
 * One JSON object per update on stdout ({"step","loss","lr","grad_norm","tokens_per_s","peak_bytes"}, and
 * {"step","eval_loss"} after each evaluation); human progress on stderr. Checkpoints go to
 * OUT/checkpoint-<step>/; `--resume` continues from the newest one exactly. The run holds a lock
 * on OUT throughout (a second trainer on it exits 2), and `--save-total-limit N` keeps the newest N
 * checkpoints.
 */
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ADAPTER_CONFIG_FILE, applyLora, mergeLora, removeLora, type LoraHandle } from '@nemotron-ts/core';
import type { Device } from '@nemotron-ts/kernels';
import { NemotronHForCausalLM } from '../pretrained';
import { latestCheckpoint, readTrainerState } from '../train/trainer-state';
import { Trainer, type TrainerOptions } from '../train/trainer';
import { ParallelTrainer } from '../train/parallel-trainer';
import { ParallelModel, type ParallelOptions } from '../parallel';
import { dataFingerprint, loadTrainingData } from '../train/training-data';
import { TrainingProgress } from '../train/progress';
import { RunReporter } from '../train/report';
import { integerFlag, MAX_SEED, numberFlag, requireFlag, stringFlag, UsageError, type ParsedArgs } from './args';
import { checkLoraResume, LORA_FLAGS, readLoraFlags, type LoraFlagOptions } from './lora-flags';
import { readParallelFlags } from './parallel-flags';
import { openTrainingCheckpoint } from './train-checkpoint';
import { checkRoomForCheckpoint, prepareOutDir } from './train-out-dir';
import { checkParallelTrainFlags } from './train-parallel';
import { checkResumeData, checkResumeSettings, describeChanges } from './train-resume';

export const TRAIN_FLAGS = [
  'model',
  'data',
  'out',
  'steps',
  'batch-size',
  'seq-len',
  'lr',
  'min-lr',
  'warmup',
  'weight-decay',
  'grad-clip',
  'grad-accum',
  'eval-every',
  'eval-data',
  'save-every',
  'save-total-limit',
  'resume',
  'seed',
  'dtype',
  ...LORA_FLAGS,
  'merge',
  'gradient-checkpointing',
  'pack',
  'no-strict',
] as const;
export const TRAIN_BOOLEAN_FLAGS = ['resume', 'merge', 'gradient-checkpointing', 'pack', 'no-strict'] as const;

export interface TrainFlags {
  steps: number;
  batchSize: number;
  seqLen: number;
  lr: number;
  minLr: number;
  warmup: number;
  weightDecay: number;
  gradClip: number;
  gradAccum: number;
  evalEvery: number;
  saveEvery: number;
  saveTotalLimit: number;
  seed: number;
  dtype: 'f32' | 'bf16';
}

function readFlags(args: ParsedArgs): TrainFlags {
  const integer = (name: string, fallback: number, min: number, max?: number): number => integerFlag(args, name, min, fallback, max)!;
  const real = (name: string, fallback: number, ok: (v: number) => boolean, what: string): number => {
    const v = numberFlag(args, name, fallback)!;
    if (!ok(v)) throw new UsageError(`--${name} must be ${what}, got ${v}`);
    return v;
  };
  const steps = integer('steps', 100, 1);
  const lr = real('lr', 1e-5, (v) => v > 0, '> 0');
  const flags: TrainFlags = {
    steps,
    batchSize: integer('batch-size', 1, 1),
    seqLen: integer('seq-len', 512, 2),
    lr,
    minLr: real('min-lr', 0, (v) => v >= 0 && v <= lr, `in [0, --lr ${lr}]`),
    warmup: integer('warmup', 0, 0),
    weightDecay: real('weight-decay', 0.01, (v) => v >= 0, '≥ 0'),
    gradClip: real('grad-clip', 1, (v) => v >= 0, '≥ 0 (0 = no clipping)'),
    gradAccum: integer('grad-accum', 1, 1),
    evalEvery: integer('eval-every', 0, 0),
    saveEvery: integer('save-every', 0, 0),
    saveTotalLimit: integer('save-total-limit', 0, 0),
    seed: integer('seed', 0, 0, MAX_SEED),
    dtype: 'f32',
  };
  if (flags.warmup > steps) throw new UsageError(`--warmup (${flags.warmup}) must not exceed --steps (${steps})`);
  const dtype = stringFlag(args, 'dtype', 'f32');
  if (dtype !== 'f32' && dtype !== 'bf16') throw new UsageError(`--dtype must be f32 or bf16, got '${dtype}'`);
  flags.dtype = dtype;
  return flags;
}

const round = (v: number, digits: number) => Number(v.toPrecision(digits));

export async function runTrain(args: ParsedArgs, openDevice: () => Promise<Device>): Promise<void> {
  const modelPath = requireFlag(args, 'model');
  const dataPath = requireFlag(args, 'data');
  const outDir = requireFlag(args, 'out');
  const evalDataPath = stringFlag(args, 'eval-data');
  const resume = args.flags.has('resume');
  const flags = readFlags(args);
  if (evalDataPath !== undefined && flags.evalEvery === 0) throw new UsageError('--eval-data needs --eval-every N');
  const parallel = readParallelFlags(args);
  const lora = readLoraFlags(args, flags.seed);
  const merge = args.flags.has('merge');
  const pack = args.flags.has('pack');
  const gradientCheckpointing = args.flags.has('gradient-checkpointing');
  if (merge && !lora) throw new UsageError('--merge needs --lora-r R: it merges the trained LoRA adapters into the model');
  if (parallel) checkParallelTrainFlags(args, parallel, flags, lora);

  // Before anything slow: a bad --out fails now, and a second trainer on it exits at once.
  const lock = await prepareOutDir(outDir);
  try {
    await trainLocked(
      { modelPath, dataPath, outDir, evalDataPath, resume, flags, lora, merge, pack, gradientCheckpointing, strict: !args.flags.has('no-strict'), parallel },
      openDevice,
    );
  } finally {
    lock.release();
  }
}

interface TrainRequest {
  modelPath: string;
  dataPath: string;
  outDir: string;
  evalDataPath: string | undefined;
  resume: boolean;
  flags: TrainFlags;
  lora: LoraFlagOptions | null;
  merge: boolean;
  /** Pack whole documents into rows (`--pack`). */
  pack: boolean;
  gradientCheckpointing: boolean;
  /** Off (`--no-strict`): --model's missing tensors are initialised and unexpected ones ignored, with warnings. */
  strict: boolean;
  /** Train through workers (`--pipeline-stages`, `--data-parallel`, `--expert-parallel`), or null. */
  parallel: ParallelOptions | null;
}

async function trainLocked(
  { modelPath, dataPath, outDir, evalDataPath, resume, flags, lora, merge, pack, gradientCheckpointing, strict, parallel }: TrainRequest,
  openDevice: () => Promise<Device>,
): Promise<void> {
  const { folder, config, tokenizer } = await openTrainingCheckpoint(modelPath);

  const existing = await latestCheckpoint(outDir);
  const savedSettings = resume && existing ? (await readTrainerState(existing)).settings : null;
  if (resume && !existing) throw new UsageError(`--resume: ${outDir} holds no checkpoint-<step>/ with a trainer_state.json`);
  if (!resume && existing) throw new UsageError(`--out ${outDir} already holds ${existing}: pass --resume to continue it, or choose another --out`);
  if (resume && existing) {
    const loraCheckpoint = await stat(join(existing, ADAPTER_CONFIG_FILE)).then(
      (s) => s.isFile(),
      () => false,
    );
    if (loraCheckpoint && !lora) throw new UsageError(`--resume: ${existing} holds a LoRA adapter; pass the run's --lora-r (and its other --lora-* flags)`);
    if (!loraCheckpoint && lora) throw new UsageError(`--resume: ${existing} is a full fine-tuning checkpoint; drop --lora-r`);
    checkResumeSettings(flags, savedSettings!, existing);
    if (lora && savedSettings!.lora) checkLoraResume(lora, savedSettings!.lora, existing);
  }

  // The data is read and checked before the weights are loaded.
  const data = await loadTrainingData(tokenizer, {
    dataPath,
    evalDataPath,
    holdOut: flags.evalEvery > 0,
    seqLen: flags.seqLen,
    seed: flags.seed,
    vocabSize: config.vocabSize,
    pack,
  });
  const what = `${data.kind === 'chat' ? 'chat (loss on assistant tokens)' : 'text'}${pack ? ', packed documents' : ''}`;
  console.error(
    `data: ${data.train.blocks.length} training rows of ${flags.seqLen} tokens${data.eval ? `, ${data.eval.length} evaluation rows` : ''}; ${what}`,
  );
  if (savedSettings && existing) checkResumeData(dataFingerprint(data), savedSettings, existing);

  const device = await openDevice();
  // --dtype bf16: bf16 weights for compute, trained through f32 masters (see src/train/trainer.ts).
  // A LoRA run's checkpoints hold only the adapter: the base always comes from --model.
  const model = await NemotronHForCausalLM.fromPretrained(resume && existing && !lora ? existing : folder, { device, dtype: flags.dtype, strict });
  if (lora) {
    let handle: LoraHandle;
    try {
      handle = applyLora(model, lora);
    } catch (e) {
      model.dispose();
      throw new UsageError(`--lora-targets ${lora.targetModules.join(',')}: ${(e as Error).message}`);
    }
    const count = handle.parameters().reduce((n, p) => n + p.size, 0);
    const skipped = handle.skipped.length ? `; not Linear layers, skipped: ${handle.skipped.length} (e.g. ${handle.skipped[0]})` : '';
    console.error(
      `LoRA r ${lora.r}, alpha ${lora.alpha}, dropout ${lora.dropout}: ${handle.adapters.size} adapted layers, ${count} trainable parameters${skipped}`,
    );
  }
  // Progress bar on a terminal (plain lines in a pipe), and OUT/log.jsonl + OUT/report.html + OUT/loss.svg.
  const progress = new TrainingProgress({ totalSteps: flags.steps });
  const reporter = new RunReporter({
    outDir,
    resume,
    settings: { model: modelPath, data: dataPath, ...flags, lora: lora ? `r ${lora.r}, alpha ${lora.alpha}` : null, device: device.describe() },
  });
  await reporter.start();
  const trainerOptions: TrainerOptions = {
    ...flags,
    outDir,
    tokenizerFrom: folder,
    gradientCheckpointing,
    baseModelNameOrPath: modelPath,
    onStep: (log) => {
      console.log(
        JSON.stringify({
          step: log.step,
          loss: round(log.loss, 7),
          lr: round(log.lr, 6),
          grad_norm: round(log.grad_norm, 6),
          tokens_per_s: round(log.tokens_per_s, 4),
          peak_bytes: log.peak_bytes,
        }),
      );
      progress.step(log);
      reporter.step(log);
    },
    onEval: (log) => {
      console.log(JSON.stringify({ step: log.step, eval_loss: round(log.eval_loss, 7) }));
      progress.message(`step ${log.step}: eval loss ${log.eval_loss.toFixed(4)}`);
      reporter.eval(log);
    },
    onCheckpoint: (dir, _step, deleted) => {
      reporter.refresh();
      progress.message(`saved ${dir}${deleted.length ? `; deleted ${deleted.join(', ')} (--save-total-limit ${flags.saveTotalLimit})` : ''}`);
    },
  };
  let workers: ParallelModel | null = null;
  let trainer: Trainer | ParallelTrainer;
  try {
    if (parallel) {
      workers = await ParallelModel.fromModel(model, parallel);
      console.error(`${workers.mode} parallelism over ${parallel.devices?.join(',') ?? 'the default devices'}`);
      trainer = await ParallelTrainer.create(workers, data, trainerOptions);
    } else trainer = new Trainer(model, data, trainerOptions);
  } catch (e) {
    await workers?.close();
    model.dispose();
    throw e;
  }
  try {
    await checkRoomForCheckpoint(outDir, trainer.checkpointBytes());
    if (resume && existing) {
      const changes = await trainer.resumeFrom(existing);
      console.error(`resumed from ${existing} (step ${trainer.step})`);
      for (const line of describeChanges(changes, trainer.step)) console.error(line);
    }
    if (trainer.step === flags.steps) console.error(`nothing to do: already at step ${flags.steps}`);
    await trainer.train();
    progress.end();
    reporter.refresh();
    console.error(`report: ${reporter.reportPath}`);
    if (merge) {
      const mergedDir = join(outDir, 'merged');
      mergeLora(model);
      removeLora(model);
      await model.savePretrained(mergedDir, { copyTokenizerFrom: folder });
      console.error(`saved the merged model to ${mergedDir}`);
    }
  } finally {
    trainer.dispose();
    await workers?.close();
    model.dispose();
  }
}
