/** CPU reference of the AdamW update: f64 math per element, stored back to the f32 tensors in place. */
import { cpuView, type Tensor } from '../tensor';
import type { AdamWCoefficients } from './adamw.wgsl';

export function adamwStepCpu(param: Tensor, grad: Tensor, expAvg: Tensor, expAvgSq: Tensor, c: AdamWCoefficients): void {
  const p = cpuView(param) as Float32Array;
  const g = cpuView(grad) as Float32Array;
  const m = cpuView(expAvg) as Float32Array;
  const v = cpuView(expAvgSq) as Float32Array;
  const [po, go, mo, vo] = [param.offset, grad.offset, expAvg.offset, expAvgSq.offset];
  const scale = c.gradScale ?? 1;
  for (let i = 0, n = param.size; i < n; i++) {
    // Scaled as the clip's copy would be stored: an f32.
    const gi = scale === 1 ? g[go + i]! : Math.fround(g[go + i]! * scale);
    const mi = c.beta1 * m[mo + i]! + (1 - c.beta1) * gi;
    const vi = c.beta2 * v[vo + i]! + (1 - c.beta2) * gi * gi;
    m[mo + i] = mi;
    v[vo + i] = vi;
    p[po + i] = p[po + i]! * c.decay - (c.stepSize * mi) / (Math.sqrt(vi) / c.bias2Sqrt + c.eps);
  }
}
