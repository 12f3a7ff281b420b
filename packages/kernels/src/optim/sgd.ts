/**
 * SGD with momentum, dampening, Nesterov momentum and (L2, coupled) weight decay, as in PyTorch's
 * `torch.optim.SGD`:
 *   d ← g + wd·p;  b ← d at the first step, else μ·b + (1−dampening)·d;
 *   d ← d + μ·b (Nesterov) or b;  p ← p − lr·d
 */
import type { Tensor } from '../tensor';
import { Optimizer, type ParamGroupInput, type ParamState } from './optimizer';
import { sgdStepCpu } from './sgd.cpu';
import { sgdStepGpu } from './sgd.wgsl';

export interface SgdOptions {
  lr: number;
  momentum: number;
  dampening: number;
  weightDecay: number;
  nesterov: boolean;
}

export const SGD_DEFAULTS: Omit<SgdOptions, 'lr'> = { momentum: 0, dampening: 0, weightDecay: 0, nesterov: false };

export class SGD extends Optimizer<SgdOptions> {
  constructor(params: readonly Tensor[] | readonly ParamGroupInput<SgdOptions>[], options: Partial<SgdOptions> & { lr: number }) {
    super('SGD', params, { ...SGD_DEFAULTS, ...options });
  }

  protected validate(h: SgdOptions, i: number): void {
    const bad = (what: string) => new Error(`SGD: group ${i}: ${what}`);
    if (!(h.lr >= 0)) throw bad(`lr must be ≥ 0, got ${h.lr}`);
    if (!(h.momentum >= 0)) throw bad(`momentum must be ≥ 0, got ${h.momentum}`);
    if (!(h.dampening >= 0 && h.dampening <= 1)) throw bad(`dampening must be in [0, 1], got ${h.dampening}`);
    if (!(h.weightDecay >= 0)) throw bad(`weightDecay must be ≥ 0, got ${h.weightDecay}`);
    if (h.nesterov && (h.momentum <= 0 || h.dampening !== 0)) throw bad('nesterov needs momentum > 0 and dampening 0');
  }

  protected initialBuffers(param: Tensor, h: SgdOptions): Record<string, Tensor> {
    return h.momentum !== 0 ? { momentum: this.zerosLike(param) } : {};
  }

  protected update(param: Tensor, grad: Tensor, state: ParamState, h: SgdOptions, lrScale: number, _gradScale: number): void {
    let buffer = h.momentum !== 0 ? (state.buffers.momentum ?? null) : null;
    let first = state.step === 1;
    // Momentum switched on after this parameter's first steps: its buffer starts now, like PyTorch's.
    if (h.momentum !== 0 && !buffer) {
      buffer = state.buffers.momentum = this.zerosLike(param);
      first = true;
    }
    const c = { lr: h.lr * lrScale, momentum: h.momentum, dampening: h.dampening, weightDecay: h.weightDecay, nesterov: h.nesterov, first };
    const device = param.device;
    if (device.kind === 'cpu') sgdStepCpu(param, grad, buffer, c);
    else sgdStepGpu(device, param, grad, buffer, c);
  }
}
