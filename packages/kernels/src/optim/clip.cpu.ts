/** CPU reference of gradient-norm clipping (f64 sums). */
import { cpuView, type Tensor } from '../tensor';

export function sumSquaresCpu(grad: Tensor): number {
  const g = cpuView(grad) as Float32Array;
  let s = 0;
  for (let i = 0; i < grad.size; i++) s += g[grad.offset + i]! ** 2;
  return s;
}

export function scaleCpu(grad: Tensor, out: Tensor, coef: number): void {
  const g = cpuView(grad) as Float32Array;
  const o = cpuView(out) as Float32Array;
  for (let i = 0; i < grad.size; i++) o[out.offset + i] = g[grad.offset + i]! * coef;
}
