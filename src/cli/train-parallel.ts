/**
 * `nemotron train --pipeline-stages N | --data-parallel N | --expert-parallel N [--devices …]
 * [--microbatches M]`: the one-device trainer's run through workers (src/train/parallel-trainer.ts)
 * — the same rows, updates, logs, evaluation and checkpoints (weights or PEFT adapter, AdamW
 * moments, trainer state), so `--resume` continues a run exactly, on one device or in parallel.
 * What does not compose with the workers yet is refused (exit 2, naming the flag and why).
 */
import type { ParallelOptions } from '../parallel';
import { RefusedError, type ParsedArgs } from './args';
import type { LoraFlagOptions } from './lora-flags';
import type { TrainFlags } from './train';

/** The flags that chose the parallelism, as refusals name them (`--pipeline-stages with --data-parallel` when composed). */
export function parallelModeFlag(parallel: ParallelOptions): string {
  const sizes = [
    ['--pipeline-stages', parallel.layersPerStage !== undefined ? 2 : parallel.pipelineStages],
    ['--expert-parallel', parallel.expertParallel],
    ['--data-parallel', parallel.dataParallel],
  ] as const;
  return sizes
    .filter(([, n]) => (n ?? 1) > 1)
    .map(([flag]) => flag)
    .join(' with ');
}

/** Refuses (exit 2) the training flags that do not compose with the parallelism asked for. */
export function checkParallelTrainFlags(args: ParsedArgs, parallel: ParallelOptions, flags: TrainFlags, lora: LoraFlagOptions | null): void {
  const mode = parallelModeFlag(parallel);
  const refuse = (what: string, why: string): never => {
    throw new RefusedError(`${what} is not supported with ${mode} (${why})`);
  };
  if (args.flags.has('gradient-checkpointing')) refuse('--gradient-checkpointing', 'the workers keep every activation');
  if (mode.includes(' with ')) {
    // A composition's workers hold a stage's or an expert shard's part per replica: it trains, checkpoints and resumes f32 weights, but LoRA and bf16 masters are not built for it.
    const single = 'use one of --pipeline-stages, --data-parallel or --expert-parallel';
    if (lora) refuse('--lora-r', `LoRA is not built for composed parallelism; ${single}`);
    if (flags.dtype !== 'f32') refuse(`--dtype ${flags.dtype}`, `f32 masters are not built for composed parallelism; ${single}`);
  }
  if (flags.dtype !== 'f32' && mode === '--expert-parallel')
    refuse(`--dtype ${flags.dtype}`, "the host's and the expert shards' AdamW have no f32 masters; use --pipeline-stages or --data-parallel");
  if (args.flags.has('pack') && flags.batchSize > 1)
    refuse(`--pack with --batch-size ${flags.batchSize}`, 'packed rows go to the workers one at a time: use --batch-size 1 and --grad-accum');
  if (lora && mode === '--expert-parallel')
    refuse('--lora-r', 'the expert shards would train the frozen routed experts; use --pipeline-stages or --data-parallel');
  if (lora && (lora.dropout ?? 0) > 0 && mode === '--data-parallel')
    refuse(
      `--lora-dropout ${lora.dropout}`,
      'each replica would draw the dropout masks for its own rows, not the ones one device draws; use --pipeline-stages or --lora-dropout 0',
    );
}
