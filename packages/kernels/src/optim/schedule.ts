/**
 * Learning-rate schedules: functions from the optimizer step (0 for the first update) to a
 * multiplier of each group's base learning rate, passed as `optimizer.step({ lrScale })`:
 *
 *   const schedule = warmupCosineSchedule({ warmupSteps: 100, totalSteps: 10_000, minRatio: 0.1 });
 *   opt.step({ lrScale: schedule(opt.stepCount) });
 *
 * Warmup rises linearly to 1 over the first `warmupSteps` updates: (step + 1) / warmupSteps, so the
 * first update already moves the parameters and the last warmup step uses the full rate.
 */

export type LrSchedule = (step: number) => number;

export interface WarmupDecayOptions {
  /** Updates spent rising to the full rate (0 for none). */
  warmupSteps: number;
  /** Step at which the decay reaches `minRatio` (and stays there). */
  totalSteps: number;
  /** Final multiplier (default 0). */
  minRatio?: number;
}

export function constantSchedule(): LrSchedule {
  return () => 1;
}

/** Linear warmup, then cosine decay from 1 to `minRatio` at `totalSteps`. */
export function warmupCosineSchedule(options: WarmupDecayOptions): LrSchedule {
  const { warmupSteps, totalSteps, minRatio } = checked('warmupCosineSchedule', options);
  return (step) => {
    if (step < warmupSteps) return (step + 1) / warmupSteps;
    const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
    return minRatio + (1 - minRatio) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
}

/** Linear warmup, then linear decay from 1 to `minRatio` at `totalSteps`. */
export function warmupLinearSchedule(options: WarmupDecayOptions): LrSchedule {
  const { warmupSteps, totalSteps, minRatio } = checked('warmupLinearSchedule', options);
  return (step) => {
    if (step < warmupSteps) return (step + 1) / warmupSteps;
    const progress = Math.min(1, (step - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
    return 1 - (1 - minRatio) * progress;
  };
}

function checked(name: string, o: WarmupDecayOptions): Required<WarmupDecayOptions> {
  const minRatio = o.minRatio ?? 0;
  if (!Number.isInteger(o.warmupSteps) || o.warmupSteps < 0) throw new Error(`${name}: warmupSteps must be an integer ≥ 0, got ${o.warmupSteps}`);
  if (!Number.isInteger(o.totalSteps) || o.totalSteps < o.warmupSteps)
    throw new Error(`${name}: totalSteps must be an integer ≥ warmupSteps, got ${o.totalSteps}`);
  if (!(minRatio >= 0 && minRatio <= 1)) throw new Error(`${name}: minRatio must be in [0, 1], got ${minRatio}`);
  return { warmupSteps: o.warmupSteps, totalSteps: o.totalSteps, minRatio };
}
