/**
 * Cross-entropy of logits [..., V] (f32 or bf16) against i32 labels [...], in f32.
 *
 * - `ignoreIndex` (default −100) rows contribute nothing. `mean` (the default) divides by the
 *   number of kept rows; with no kept rows the mean loss is 0 (not NaN) and so is its gradient.
 *   `none` returns the per-row losses (0 on ignored rows); `sum` their sum.
 * - Fused: the forward keeps only the per-row log-sum-exp; the backward recomputes
 *   softmax − onehot row by row from the logits (saved: logits, labels, log-sum-exp).
 * - Labels outside [0, V) that are not ignoreIndex: on the CPU backend the labels are on the
 *   host and the op throws naming the row; on a GPU they are not readable without a sync, so that
 *   row's loss and gradient are NaN (the mean becomes NaN: loud, never a silent wrong number).
 *   Call {@link assertValidLabels} where a sync is acceptable (e.g. when a batch is loaded).
 */
import { noGrad, record } from '../../autograd/graph';
import { empty } from '../../creation';
import { tidy } from '../../runtime/scope';
import { formatShape, shapesEqual } from '../../shape';
import type { Tensor } from '../../tensor';
import { div, maximum, ne } from '../elementwise/elementwise';
import { reshape } from '../layout/layout';
import { sum } from '../reduce/reduce';
import { assertFloatRows, dense, rowsOf } from '../rows';
import { assertLabelsInRange, crossEntropyCpu, crossEntropyGradCpu } from './cross-entropy.cpu';
import { crossEntropyGradNative, crossEntropyNative } from './cross-entropy.native';
import { crossEntropyGpu, crossEntropyGradGpu, type CrossEntropyRows } from './cross-entropy.wgsl';

export type CrossEntropyReduction = 'mean' | 'sum' | 'none';

export interface CrossEntropyOptions {
  /** Label value whose rows are skipped (default −100). */
  ignoreIndex?: number;
  /** Default `mean` over the rows that are not ignored. */
  reduction?: CrossEntropyReduction;
}

export function crossEntropy(logits: Tensor, labels: Tensor, options: CrossEntropyOptions = {}): Tensor {
  const ignoreIndex = options.ignoreIndex ?? -100;
  const reduction = options.reduction ?? 'mean';
  const r = checkArgs(logits, labels, ignoreIndex, reduction);
  const { lse, perRow } = noGrad(() => rowLosses(logits, labels, r));
  const kept = reduction === 'mean' ? keptCount(labels, ignoreIndex) : null;
  const out = noGrad(() =>
    tidy(() => {
      if (reduction === 'none') return reshape(perRow, labels.shape);
      const total = sum(perRow, 0);
      return kept ? div(total, maximum(kept, 1)) : total;
    }),
  );
  perRow.dispose();
  const saved = [logits, labels, lse, ...(kept ? [kept] : [])];
  record('crossEntropy', out, [logits], (g, [sl, slab, slse, count]) => [crossEntropyGrad(sl!, slab!, slse!, count ?? null, g, reduction, r)], saved);
  lse.dispose();
  kept?.dispose();
  return out;
}

/**
 * Reads `labels` back and throws naming the first that is neither `ignoreIndex` nor in
 * [0, numClasses): the check a GPU forward cannot do without a sync.
 */
export async function assertValidLabels(labels: Tensor, numClasses: number, ignoreIndex = -100): Promise<void> {
  if (labels.dtype !== 'i32') throw new Error(`crossEntropy: labels must be i32, got ${labels.dtype}`);
  assertLabelsInRange(await labels.data<'i32'>(), { rows: labels.size, classes: numClasses, ignoreIndex });
}

function checkArgs(logits: Tensor, labels: Tensor, ignoreIndex: number, reduction: string): CrossEntropyRows {
  assertFloatRows(logits, 'crossEntropy', 'logits');
  labels.assertAlive('crossEntropy labels');
  if (labels.dtype !== 'i32') throw new Error(`crossEntropy: labels ${formatShape(labels.shape)} must be i32, got ${labels.dtype}`);
  if (!shapesEqual(labels.shape, logits.shape.slice(0, -1))) {
    throw new Error(`crossEntropy: labels ${formatShape(labels.shape)} must match the logits ${formatShape(logits.shape)} without their last dim`);
  }
  if (labels.device !== logits.device) throw new Error('crossEntropy: logits and labels are on different devices');
  if (!Number.isInteger(ignoreIndex) || Math.abs(ignoreIndex) > 2 ** 31 - 1) throw new Error(`crossEntropy: ignoreIndex must be an i32, got ${ignoreIndex}`);
  if (reduction !== 'mean' && reduction !== 'sum' && reduction !== 'none')
    throw new Error(`crossEntropy: reduction must be 'mean', 'sum' or 'none', got '${reduction}'`);
  const { rows, cols } = rowsOf(logits);
  if (cols === 0) throw new Error(`crossEntropy: logits ${formatShape(logits.shape)} have no classes`);
  return { rows, classes: cols, ignoreIndex };
}

/** Per-row log-sum-exp and loss, both [rows] f32. */
function rowLosses(logits: Tensor, labels: Tensor, r: CrossEntropyRows): { lse: Tensor; perRow: Tensor } {
  const device = logits.device;
  const lse = empty([r.rows], { device });
  const perRow = empty([r.rows], { device });
  if (r.rows === 0) return { lse, perRow };
  const ld = dense(logits);
  const lab = dense(labels);
  if (device.kind === 'cpu') {
    if (!device.native || !crossEntropyNative(device.native, ld, lab, r, lse, perRow)) crossEntropyCpu(ld, lab, r, lse, perRow);
  } else crossEntropyGpu(device, ld, lab, r, lse, perRow);
  ld.dispose();
  lab.dispose();
  return { lse, perRow };
}

/** Number of rows whose label is not ignoreIndex, as an f32 scalar on the device. */
function keptCount(labels: Tensor, ignoreIndex: number): Tensor {
  return noGrad(() => tidy(() => sum(ne(reshape(labels, [labels.size]), ignoreIndex), 0)));
}

function crossEntropyGrad(
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  kept: Tensor | null,
  g: Tensor,
  reduction: CrossEntropyReduction,
  r: CrossEntropyRows,
): Tensor {
  const device = logits.device;
  const dx = empty(logits.shape, { device });
  if (dx.size === 0) return dx;
  // The factor every row's (softmax − onehot) is multiplied by: g, or g / kept rows for the mean.
  const scale = kept ? tidy(() => div(g, maximum(kept, 1))) : dense(g);
  const perRowScale = reduction === 'none';
  const ld = dense(logits);
  const lab = dense(labels);
  if (device.kind === 'cpu') {
    if (!device.native || !crossEntropyGradNative(device.native, ld, lab, lse, scale, perRowScale, r, dx))
      crossEntropyGradCpu(ld, lab, lse, scale, perRowScale, r, dx);
  } else crossEntropyGradGpu(device, ld, lab, lse, scale, perRowScale, r, dx);
  for (const t of [scale, ld, lab]) t.dispose();
  return dx;
}
