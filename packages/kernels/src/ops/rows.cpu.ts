/** Shared helpers of the row-wise CPU references. */
import { bf16BitsToF32 } from '../dtype';
import { cpuView, type Tensor } from '../tensor';

/** Element i of a CPU tensor's storage as a number (bf16 widened). */
export function readerF64(t: Tensor): (i: number) => number {
  const src = cpuView(t);
  return t.dtype === 'bf16' ? (i) => bf16BitsToF32(src[i]!) : (i) => src[i]!;
}
