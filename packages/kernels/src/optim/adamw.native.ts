/** Native AdamW update (packages/kernels/native/adamw.c): same contract as adamwStepCpu. */
import type { NativeKernels } from '../native/library';
import type { Tensor } from '../tensor';
import type { AdamWCoefficients } from './adamw.wgsl';

/** Updates param, expAvg and expAvgSq in place; false unless all four are dense f32. */
export function adamwStepNative(lib: NativeKernels, param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, c: AdamWCoefficients): boolean {
  const all = [param, grad, expAvg, expAvgSq];
  if (all.some((t) => t.dtype !== 'f32' || !t.isContiguous)) return false;
  const params = new Float64Array([
    param.size,
    param.offset,
    grad.offset,
    expAvg.offset,
    expAvgSq.offset,
    c.beta1,
    c.beta2,
    c.eps,
    c.decay,
    c.stepSize,
    c.bias2Sqrt,
    c.gradScale ?? 1,
  ]);
  lib.symbols.nt_adamw(params, param.storage.cpu, grad.storage.cpu, expAvg.storage.cpu, expAvgSq.storage.cpu);
  return true;
}
