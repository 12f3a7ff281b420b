/** CPU reference of gradient-norm clipping (f64 sums). */
import { cpuView, type Tensor } from '../tensor';

export function sumSquaresCpu(grad: Tensor): number {
  const g = cpuView(grad) as Float32Array;
  // `size` is a getter that multiplies the shape out: read it once, not per element.
  const [n, offset] = [grad.size, grad.offset];
  let s = 0;
  for (let i = 0; i < n; i++) s += g[offset + i]! ** 2;
  return s;
}

export function scaleCpu(grad: Tensor, out: Tensor, coef: number): void {
  const g = cpuView(grad) as Float32Array;
  const o = cpuView(out) as Float32Array;
  const [n, from, to] = [grad.size, grad.offset, out.offset];
  for (let i = 0; i < n; i++) o[to + i] = g[from + i]! * coef;
}
