/**
 * AdamW (Loshchilov & Hutter): Adam with decoupled weight decay and bias correction, as in
 * PyTorch's `torch.optim.AdamW`:
 *   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²;
 *   p ← p − lr/(1−β1^t) · m / (sqrt(v)/sqrt(1−β2^t) + eps)
 * One fused kernel per parameter tensor; moments are f32 buffers shaped like the parameter.
 */
import type { Tensor } from '../tensor';
import { adamwStepCpu } from './adamw.cpu';
import { adamwStepNative } from './adamw.native';
import { adamwStepGpu, type AdamWCoefficients } from './adamw.wgsl';
import { Optimizer, type ParamGroupInput, type ParamState } from './optimizer';

export interface AdamWOptions {
  /** Learning rate (default 1e-3). */
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled weight decay (default 0.01; use 0 for norms and biases, see `decayGroups`). */
  weightDecay: number;
}

export const ADAMW_DEFAULTS: AdamWOptions = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 };

export class AdamW extends Optimizer<AdamWOptions> {
  constructor(params: readonly Tensor[] | readonly ParamGroupInput<AdamWOptions>[], options: Partial<AdamWOptions> = {}) {
    super('AdamW', params, { ...ADAMW_DEFAULTS, ...options });
  }

  protected validate(h: AdamWOptions, i: number): void {
    const bad = (what: string) => new Error(`AdamW: group ${i}: ${what}`);
    if (!(h.lr >= 0)) throw bad(`lr must be ≥ 0, got ${h.lr}`);
    if (!(h.beta1 >= 0 && h.beta1 < 1)) throw bad(`beta1 must be in [0, 1), got ${h.beta1}`);
    if (!(h.beta2 >= 0 && h.beta2 < 1)) throw bad(`beta2 must be in [0, 1), got ${h.beta2}`);
    if (!(h.eps > 0)) throw bad(`eps must be > 0, got ${h.eps}`);
    if (!(h.weightDecay >= 0)) throw bad(`weightDecay must be ≥ 0, got ${h.weightDecay}`);
  }

  protected initialBuffers(param: Tensor): Record<string, Tensor> {
    return { expAvg: this.zerosLike(param), expAvgSq: this.zerosLike(param) };
  }

  /** The CPU kernels scale the gradient as they read it; WebGPU's get a scaled copy. */
  protected override foldsGradScale(param: Tensor): boolean {
    return param.device.kind === 'cpu';
  }

  protected update(param: Tensor, grad: Tensor, state: ParamState, h: AdamWOptions, lrScale: number, gradScale: number): void {
    const lr = h.lr * lrScale;
    const t = state.step;
    const c: AdamWCoefficients = {
      beta1: h.beta1,
      beta2: h.beta2,
      eps: h.eps,
      decay: 1 - lr * h.weightDecay,
      stepSize: lr / (1 - h.beta1 ** t),
      bias2Sqrt: Math.sqrt(1 - h.beta2 ** t),
      gradScale,
    };
    const { expAvg, expAvgSq } = state.buffers as { expAvg: Tensor; expAvgSq: Tensor };
    const device = param.device;
    if (device.kind === 'cpu') {
      if (!device.native || !adamwStepNative(device.native, param, grad, expAvg, expAvgSq, c)) adamwStepCpu(param, grad, expAvg, expAvgSq, c);
    } else adamwStepGpu(device, param, grad, expAvg, expAvgSq, c);
  }
}
