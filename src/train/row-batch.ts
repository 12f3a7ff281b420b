/**
 * What a training row carries besides its ids, and micro-batches of rows as `forward` takes them.
 * Plain rows (overlapping blocks of the text stream) are their own HF labels. Chat rows have -100
 * wherever the token is not the assistant's; packed rows also list their documents' boundaries.
 */

/** HF labels of a row (-100: not a target) and, for packed rows, its documents' boundaries. */
export interface RowTargets {
  readonly labels: Int32Array;
  readonly cuSeqlens: readonly number[] | null;
}

export interface RowBatch {
  readonly inputIds: number[][];
  /** HF's unshifted labels: logits at t are scored against labels[t + 1]. */
  readonly labels: number[][];
  /** Per row, its documents' boundaries (packed rows), or null. */
  readonly cuSeqlens: number[][] | null;
  /** Positions the loss scores: labels[t + 1] ≠ -100. */
  readonly targetCount: number;
}

/** Rows and their targets (null: the row is its own labels) as one micro-batch. */
export function rowBatch(rows: readonly Int32Array[], targets: readonly (RowTargets | null)[]): RowBatch {
  const inputIds = rows.map((r) => Array.from(r));
  const labels = rows.map((r, i) => Array.from(targets[i]?.labels ?? r));
  const packed = targets.some((t) => t?.cuSeqlens);
  const cuSeqlens = packed ? rows.map((r, i) => [...(targets[i]?.cuSeqlens ?? [0, r.length])]) : null;
  const targetCount = labels.reduce((n, row) => n + row.slice(1).filter((v) => v !== -100).length, 0);
  return { inputIds, labels, cuSeqlens, targetCount };
}
