/** CPU reference of the SGD update: f64 math per element, stored back to the f32 tensors in place. */
import { cpuView, type Tensor } from '../tensor';
import type { SgdCoefficients } from './sgd.wgsl';

export function sgdStepCpu(param: Tensor, grad: Tensor, momentumBuffer: Tensor | null, c: SgdCoefficients): void {
  const p = cpuView(param) as Float32Array;
  const g = cpuView(grad) as Float32Array;
  const b = momentumBuffer ? (cpuView(momentumBuffer) as Float32Array) : null;
  const bo = momentumBuffer?.offset ?? 0;
  for (let i = 0, n = param.size; i < n; i++) {
    const pi = p[param.offset + i]!;
    let d = g[grad.offset + i]! + c.weightDecay * pi;
    if (b) {
      const bi = c.first ? d : c.momentum * b[bo + i]! + (1 - c.dampening) * d;
      b[bo + i] = bi;
      d = c.nesterov ? d + c.momentum * bi : bi;
    }
    p[param.offset + i] = pi - c.lr * d;
  }
}
