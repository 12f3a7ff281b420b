/**
 * Microbatch schedules for pipeline training, as per-stage lists of forward (F) and backward (B)
 * operations. Each stage runs its list in order; F(m) on stage s waits for stage s − 1's F(m), and
 * B(m) for stage s + 1's B(m).
 *
 * - GPipe: every forward, then every backward (activations of all M microbatches are held).
 * - 1F1B: stage s runs S − s − 1 warm-up forwards, then alternates one forward and one backward,
 *   then drains the backwards (at most S − s microbatches in flight).
 */
export type ScheduleName = 'gpipe' | '1f1b';

export interface ScheduleOp {
  readonly kind: 'F' | 'B';
  readonly mb: number;
}

export function scheduleOps(name: ScheduleName, stages: number, microbatches: number, stage: number): ScheduleOp[] {
  const F = (mb: number): ScheduleOp => ({ kind: 'F', mb });
  const B = (mb: number): ScheduleOp => ({ kind: 'B', mb });
  const all = Array.from({ length: microbatches }, (_, m) => m);
  if (name === 'gpipe') return [...all.map(F), ...all.map(B)];
  if (name !== '1f1b') throw new Error(`unknown pipeline schedule '${name as string}' (gpipe or 1f1b)`);
  const warmup = Math.min(stages - stage - 1, microbatches);
  const ops: ScheduleOp[] = all.slice(0, warmup).map(F);
  let nextB = 0;
  for (let m = warmup; m < microbatches; m++) ops.push(F(m), B(nextB++));
  while (nextB < microbatches) ops.push(B(nextB++));
  return ops;
}

/** Splits `rows` rows into `parts` contiguous, near-equal microbatches: [start, count] each. */
export function splitRows(rows: number, parts: number): [number, number][] {
  if (!Number.isInteger(parts) || parts < 1) throw new Error(`microbatches must be a positive integer, got ${parts}`);
  if (parts > rows) throw new Error(`${parts} microbatches for a batch of ${rows} rows (at most one per row)`);
  const base = Math.floor(rows / parts);
  const extra = rows % parts;
  const out: [number, number][] = [];
  let start = 0;
  for (let p = 0; p < parts; p++) {
    const n = base + (p < extra ? 1 : 0);
    out.push([start, n]);
    start += n;
  }
  return out;
}
