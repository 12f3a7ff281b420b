/**
 * `nemotron train --pipeline-stages N | --data-parallel N | --expert-parallel N [--devices …]
 * [--microbatches M]`: full fine-tuning through {@link ParallelModel} with the one-device trainer's
 * data (the same rows in the same order), AdamW groups (no decay on norms, biases, A_log, D,
 * dt_bias), warmup + cosine schedule, global-norm clipping, gradient accumulation, JSON step
 * lines and evaluation (`--eval-every`, on the loaded model with the workers' weights synced back). `OUT/checkpoint-<step>/` holds the workers' weights (synced back and saved with
 * `savePretrained`, written atomically) and the tokenizer — no optimizer state: a parallel run
 * does not resume. What does not compose with the workers yet is refused (exit 2, naming the flag).
 */
import { warmupCosineSchedule, type Device } from '@nemotron-ts/kernels';
import type { ParallelBatch } from '@nemotron-ts/parallel';
import { ParallelModel, type ParallelOptions } from '../parallel';
import { noWeightDecayNames, parallelBatch } from '../train/parallel-batch';
import { hasCheckpointFolders, pruneCheckpoints, writeCheckpointFolder } from '../train/trainer-state';
import { loadTrainingData } from '../train/training-data';
import { evaluationLoss } from '../train/trainer';
import { RefusedError, requireFlag, stringFlag, type ParsedArgs } from './args';
import { LORA_FLAGS } from './lora-flags';
import type { TrainFlags } from './train';
import { openTrainingCheckpoint } from './train-checkpoint';
import { prepareOutDir } from './train-out-dir';

/** Trainer flags that do not compose with the workers yet, and why. */
const REFUSED: readonly (readonly [string, string])[] = [
  ...LORA_FLAGS.map((f) => [f, 'LoRA training runs on one device'] as const),
  ['merge', 'LoRA training runs on one device'],
  ['resume', 'parallel checkpoints hold no optimizer state, so a parallel run does not resume'],
  ['gradient-checkpointing', 'the workers keep every activation'],
];

const round = (v: number, digits: number) => Number(v.toPrecision(digits));

export async function runParallelTrain(args: ParsedArgs, parallel: ParallelOptions, flags: TrainFlags, openDevice: () => Promise<Device>): Promise<void> {
  const sizes = [
    ['--pipeline-stages', parallel.pipelineStages],
    ['--expert-parallel', parallel.expertParallel],
    ['--data-parallel', parallel.dataParallel],
  ] as const;
  const mode = sizes
    .filter(([, n]) => (n ?? 1) > 1)
    .map(([flag]) => flag)
    .join(' with ');
  for (const [flag, why] of REFUSED) if (args.flags.has(flag)) throw new RefusedError(`--${flag} is not supported with ${mode} (${why})`);
  if (flags.dtype !== 'f32')
    throw new RefusedError(
      `--dtype ${flags.dtype} is not supported with ${mode} (the workers train f32 weights; bf16 needs the one-device trainer's f32 masters)`,
    );
  const pack = args.flags.has('pack');
  if (pack && flags.batchSize > 1)
    throw new RefusedError(
      `--pack with --batch-size ${flags.batchSize} is not supported with ${mode} (packed rows go to the workers one at a time: use --batch-size 1 and --grad-accum)`,
    );
  const modelPath = requireFlag(args, 'model');
  const dataPath = requireFlag(args, 'data');
  const outDir = requireFlag(args, 'out');
  const evalDataPath = stringFlag(args, 'eval-data');

  const lock = await prepareOutDir(outDir);
  try {
    if (await hasCheckpointFolders(outDir))
      throw new RefusedError(`--out ${outDir} already holds checkpoint folders; choose another --out (${mode} runs do not resume)`);
    const { folder, config, tokenizer } = await openTrainingCheckpoint(modelPath);
    const data = await loadTrainingData(tokenizer, {
      dataPath,
      evalDataPath,
      holdOut: flags.evalEvery > 0,
      seqLen: flags.seqLen,
      seed: flags.seed,
      vocabSize: config.vocabSize,
      pack,
    });
    console.error(
      `data: ${data.train.blocks.length} training rows of ${flags.seqLen} tokens${data.eval ? `, ${data.eval.length} evaluation rows` : ''}; ${data.kind === 'chat' ? 'chat (loss on assistant tokens)' : 'text'}${pack ? ', packed documents' : ''}`,
    );

    const model = await ParallelModel.fromPretrained(folder, {
      ...parallel,
      device: await openDevice(),
      dtype: 'f32',
      localFilesOnly: true,
      strict: !args.flags.has('no-strict'),
    });
    try {
      // The one-device trainer trains the MTP loss whenever the model has an MTP head.
      const mtp = model.model.mtp !== null;
      if (mtp && model.mode === 'expert')
        throw new RefusedError(`--expert-parallel does not train the MTP loss, and ${folder} has an MTP head (use --pipeline-stages or --data-parallel)`);
      await model.setOptimizer({
        lr: flags.lr,
        beta1: 0.9,
        beta2: 0.95,
        eps: 1e-8,
        weightDecay: flags.weightDecay,
        noWeightDecay: noWeightDecayNames(model.model),
      });
      const schedule = warmupCosineSchedule({ warmupSteps: flags.warmup, totalSteps: flags.steps, minRatio: flags.minLr / flags.lr });
      console.error(`${model.mode} parallelism over ${parallel.devices?.join(',') ?? 'the default devices'}`);
      let position = 0;
      for (let step = 1; step <= flags.steps; step++) {
        const started = performance.now();
        const batches: ParallelBatch[] = [];
        for (let micro = 0; micro < flags.gradAccum; micro++) {
          batches.push(parallelBatch(data.train.batch(position, flags.batchSize), mtp));
          position += flags.batchSize;
        }
        const lrScale = schedule(step - 1);
        const { loss, gradNorm } = await model.trainUpdate(batches, { lrScale, maxGradNorm: flags.gradClip, step });
        const seconds = (performance.now() - started) / 1000;
        const lr = flags.lr * lrScale;
        const tokensPerS = (flags.gradAccum * flags.batchSize * flags.seqLen) / seconds;
        // peak_bytes: the workers' memory is not reported back, so null.
        console.log(
          JSON.stringify({ step, loss: round(loss, 7), lr: round(lr, 6), grad_norm: round(gradNorm, 6), tokens_per_s: round(tokensPerS, 4), peak_bytes: null }),
        );
        console.error(
          `step ${step}/${flags.steps}  loss ${loss.toFixed(4)}  lr ${lr.toExponential(2)}  grad norm ${gradNorm.toFixed(3)}  ${tokensPerS.toFixed(1)} tokens/s`,
        );
        const last = step === flags.steps;
        const evaluate = flags.evalEvery > 0 && (last || step % flags.evalEvery === 0);
        const save = last || (flags.saveEvery > 0 && step % flags.saveEvery === 0);
        // Evaluation and saving use the loaded model, with the workers' weights copied back.
        if (evaluate || save) await model.syncWeights();
        if (evaluate) {
          const evalLoss = await evaluationLoss(model.model, data, flags.batchSize);
          console.log(JSON.stringify({ step, eval_loss: round(evalLoss, 7) }));
          console.error(`step ${step}: eval loss ${evalLoss.toFixed(4)}`);
        }
        if (save) {
          const dir = await writeCheckpointFolder(outDir, step, async (temp) => {
            await model.model.savePretrained(temp, { copyTokenizerFrom: folder });
          });
          const deleted = flags.saveTotalLimit > 0 ? await pruneCheckpoints(outDir, flags.saveTotalLimit) : [];
          console.error(`saved ${dir}${deleted.length ? `; deleted ${deleted.join(', ')} (--save-total-limit ${flags.saveTotalLimit})` : ''}`);
        }
        // Let signal handlers run between updates.
        await new Promise((resolve) => setImmediate(resolve));
      }
    } finally {
      await model.close();
    }
  } finally {
    lock.release();
  }
}
