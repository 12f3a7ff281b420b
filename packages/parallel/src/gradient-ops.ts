/**
 * Gradient clipping across workers: each worker reports the sum of squares of its gradients, the
 * host takes the global norm, and every worker scales its gradients by the same coefficient —
 * `clipGradNorm`'s rule (coef = min(1, maxNorm / (norm + 1e-6))) over parameters spread out.
 */
import { AdamW, keep, mul, noGrad, type AdamWOptions, type Tensor } from '@nemotron-ts/kernels';
import { toHost } from './host-tensor';

/** AdamW options plus the parameter names (full-model names) that skip weight decay. */
export type TrainOptimizerOptions = Partial<AdamWOptions> & { readonly noWeightDecay?: readonly string[] };

/** The sum of squares of the parameters' gradients (f64 on the host). */
export async function gradientSumOfSquares(params: Iterable<Tensor>): Promise<number> {
  let total = 0;
  for (const p of params) {
    if (!p.grad) continue;
    for (const v of (await toHost(p.grad)).toFloat32()) total += v * v;
  }
  return total;
}

/** Multiplies every gradient by `factor` in place of the old one. */
export function scaleGradients(params: Iterable<Tensor>, factor: number): void {
  if (factor === 1) return;
  noGrad(() => {
    for (const p of params) {
      if (!p.grad) continue;
      const scaled = keep(mul(p.grad, factor));
      p.grad.dispose();
      p.grad = scaled;
    }
  });
}

/** `clipGradNorm`'s coefficient for a global norm (1 = no clipping; maxNorm 0 = none). */
export function clipCoefficient(norm: number, maxNorm: number): number {
  return maxNorm > 0 ? Math.min(1, maxNorm / (norm + 1e-6)) : 1;
}

/** An AdamW over the named parameters: those in `noWeightDecay` in a group without decay (the one-device trainer's groups). */
export function groupedAdamW(named: readonly (readonly [string, Tensor])[], options: TrainOptimizerOptions): AdamW {
  const { noWeightDecay, ...hyper } = options;
  const skip = new Set(noWeightDecay ?? []);
  const decay = named.filter(([n]) => !skip.has(n)).map(([, p]) => p);
  const noDecay = named.filter(([n]) => skip.has(n)).map(([, p]) => p);
  const groups = [{ params: decay }, { params: noDecay, weightDecay: 0 }].filter((g) => g.params.length > 0);
  return new AdamW(groups.length > 0 ? groups : [{ params: [] }], hyper);
}
