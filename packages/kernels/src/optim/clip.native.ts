/** Native gradient-norm clipping (packages/kernels/native/clip.c): same contracts as clip.cpu.ts, on dense f32 gradients. */
import type { NativeKernels } from '../native/library';
import type { Tensor } from '../tensor';

export function sumSquaresNative(lib: NativeKernels, grad: Tensor): number {
  return lib.symbols.nt_sum_squares(new Float64Array([grad.size, grad.offset]), grad.storage.cpu);
}

export function scaleNative(lib: NativeKernels, grad: Tensor, out: Tensor, coef: number): void {
  lib.symbols.nt_scale(new Float64Array([grad.size, grad.offset, out.offset, coef]), grad.storage.cpu, out.storage.cpu);
}
