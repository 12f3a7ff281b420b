/**
 * The parallelism flags of `nemotron forward` and `nemotron generate`: `--pipeline-stages N`,
 * `--expert-parallel N`, `--data-parallel N`, `--devices cpu,webgpu,…` (one per worker, or one for
 * all) and `--microbatches M`. Several compose (PP × EP × DP workers, `--devices` one per worker). With none of them (or all 1)
 * the command runs on one device as before.
 */
import type { ParallelOptions } from '../parallel';
import { numberFlag, stringFlag, UsageError, type ParsedArgs } from './args';

export const PARALLEL_FLAGS = ['pipeline-stages', 'expert-parallel', 'data-parallel', 'devices', 'microbatches'] as const;

/** The parallel options the flags ask for, or null when the command should run on one device. */
export function readParallelFlags(args: ParsedArgs): ParallelOptions | null {
  const size = (name: string): number | undefined => {
    const v = numberFlag(args, name);
    if (v !== undefined && (!Number.isInteger(v) || v < 1)) throw new UsageError(`--${name} must be an integer ≥ 1, got ${v}`);
    return v;
  };
  const options: ParallelOptions = {
    pipelineStages: size('pipeline-stages'),
    expertParallel: size('expert-parallel'),
    dataParallel: size('data-parallel'),
    microbatches: size('microbatches'),
  };
  const devices = stringFlag(args, 'devices');
  if (devices !== undefined) {
    options.devices = devices.split(',').map((d) => d.trim());
    if (options.devices.some((d) => d === '')) throw new UsageError(`--devices must be comma-separated device specs, got '${devices}'`);
  }
  const active = [options.pipelineStages, options.expertParallel, options.dataParallel].filter((n) => (n ?? 1) > 1);
  if (active.length === 0) {
    const stray = (['devices', 'microbatches'] as const).find((name) => args.flags.has(name));
    if (stray) throw new UsageError(`--${stray} needs --pipeline-stages, --expert-parallel or --data-parallel above 1`);
    return null;
  }
  if (options.microbatches !== undefined && (options.pipelineStages ?? 1) <= 1) throw new UsageError('--microbatches needs --pipeline-stages');
  return options;
}
