/**
 * RMSNorm (spec §2.1) and Nemotron-H's grouped gated RMSNorm (spec §2.3.6). Both compute the
 * statistic, the normalisation and the weight multiply in f32 and return f32 (NeMo's semantics:
 * one rounding, by whoever casts the result). Inputs and weight may be f32 or bf16.
 */
import { record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { isFloat } from '../../dtype';
import { formatShape, shapesEqual } from '../../shape';
import type { Tensor } from '../../tensor';
import { assertFloatRows, dense, rowsOf } from '../rows';
import { normCpu, normGradCpu } from './norm.cpu';
import { normGradNative, normNative } from './norm.native';
import { normGpu, normGradGpu, normWeightGradGpu, sumRunsGpu, type NormLayout } from './norm.wgsl';

/** y = w ⊙ x / sqrt(mean(x²) + eps) over the last dim; `weight` is [d]. Gradients for x and weight. */
export function rmsNorm(x: Tensor, weight: Tensor, eps: number): Tensor {
  return groupNorm('rmsNorm', x, null, weight, 1, eps);
}

export interface GroupedGatedRmsNormOptions {
  /** Number of contiguous channel blocks of the last dim normalised separately (must divide it). */
  groups: number;
  eps: number;
}

/**
 * The Mamba2 output norm of Nemotron-H: v = y ⊙ silu(z) (gate first), then each of `groups`
 * contiguous blocks of d / groups channels of the last dim is RMS-normalised on its own, times
 * `weight` [d]. One fused kernel forward; gradients for y, z and weight.
 */
export function groupedGatedRmsNorm(y: Tensor, z: Tensor, weight: Tensor, options: GroupedGatedRmsNormOptions): Tensor {
  const op = 'groupedGatedRmsNorm';
  assertFloatRows(z, op, 'gate z');
  y.assertAlive(`${op} y`);
  if (!shapesEqual(y.shape, z.shape)) throw new Error(`${op}: y ${formatShape(y.shape)} and gate z ${formatShape(z.shape)} must have the same shape`);
  if (y.device !== z.device) throw new Error(`${op}: y and gate z are on different devices`);
  return groupNorm(op, y, z, weight, options.groups, options.eps);
}

function groupNorm(op: string, x: Tensor, z: Tensor | null, weight: Tensor, groups: number, eps: number): Tensor {
  assertFloatRows(x, op, z ? 'y' : 'input');
  weight.assertAlive(`${op} weight`);
  const { rows, cols: d } = rowsOf(x);
  if (weight.rank !== 1 || weight.shape[0] !== d || !isFloat(weight.dtype)) {
    throw new Error(
      `${op}: weight must be an f32 or bf16 vector [${d}] matching the last dim of ${formatShape(x.shape)}, got ${weight.dtype} ${formatShape(weight.shape)}`,
    );
  }
  if (weight.device !== x.device) throw new Error(`${op}: weight is on another device than the input`);
  if (!Number.isInteger(groups) || groups < 1) throw new Error(`${op}: groups must be a positive integer, got ${groups}`);
  if (d % groups !== 0) throw new Error(`${op}: the last dim ${d} of ${formatShape(x.shape)} is not divisible by groups = ${groups}`);
  if (!Number.isFinite(eps) || eps < 0) throw new Error(`${op}: eps must be a finite number ≥ 0, got ${eps}`);
  const layout: NormLayout = { rows, d, groups, eps };
  const out = empty(x.shape, { device: x.device });
  if (out.size > 0) {
    const xd = dense(x);
    const zd = z ? dense(z) : null;
    const wd = dense(weight);
    if (x.device.kind === 'cpu') {
      if (!x.device.native || !normNative(x.device.native, xd, zd, wd, layout, out)) normCpu(xd, zd, wd, layout, out);
    } else normGpu(x.device, xd, zd, wd, layout, out, op);
    for (const t of [xd, zd, wd]) t?.dispose();
  }
  const inputs = z ? [x, z, weight] : [x, weight];
  record(op, out, inputs, (g, saved) => normGrad(op, saved, z !== null, g, layout), inputs);
  return out;
}

/** Gradients [dx, (dz,) dw] of the group norm from the saved inputs and the upstream gradient. */
function normGrad(op: string, saved: readonly Tensor[], gated: boolean, g: Tensor, l: NormLayout): Tensor[] {
  const [x, z, w] = gated ? [saved[0]!, saved[1]!, saved[2]!] : [saved[0]!, null, saved[1]!];
  const device = x.device;
  const dx = empty(x.shape, { device });
  const dz = z ? empty(z.shape, { device }) : null;
  const gradsOf = (dw: Tensor) => (dz ? [dx, dz, dw] : [dx, dw]);
  if (dx.size === 0) return gradsOf(zeros(w.shape, { device }));
  const xd = dense(x);
  const zd = z ? dense(z) : null;
  const wd = dense(w);
  const gd = dense(g);
  let dw: Tensor;
  if (device.kind === 'cpu') {
    dw = empty(w.shape, { device });
    if (!device.native || !normGradNative(device.native, xd, zd, wd, gd, l, dx, dz, dw)) normGradCpu(xd, zd, wd, gd, l, dx, dz, dw);
  } else {
    const rstd = empty([l.rows, l.groups], { device });
    normGradGpu(device, xd, zd, wd, gd, l, dx, dz, rstd, op);
    const partial = normWeightGradGpu(device, xd, zd, gd, rstd, l, op);
    dw = empty(w.shape, { device });
    sumRunsGpu(device, partial, l.d, dw, op);
    partial.dispose();
    rstd.dispose();
  }
  for (const t of [xd, zd, wd, gd]) t?.dispose();
  return gradsOf(dw);
}
