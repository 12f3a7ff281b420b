/** Host access for the CPU references: reading a CPU tensor's storage as numbers, bf16 widened. */
import { bf16BitsToF32 } from '../dtype';
import { cpuView, type Tensor } from '../tensor';

/** Element `base + i` of a CPU tensor's storage as a number (bf16 widened); `base` defaults to 0 (storage index). */
export function storageReader(t: Tensor, base = 0): (i: number) => number {
  const src = cpuView(t);
  return t.dtype === 'bf16' ? (i) => bf16BitsToF32(src[base + i]!) : (i) => src[base + i]!;
}

/** A dense CPU tensor's values widened to f64 (bf16 decoded). */
export function valuesF64(t: Tensor): Float64Array {
  if (!t.isContiguous) throw new Error(`valuesF64: ${t} must be dense`);
  const src = cpuView(t);
  const out = new Float64Array(t.size);
  for (let i = 0; i < out.length; i++) {
    const v = src[t.offset + i]!;
    out[i] = t.dtype === 'bf16' ? bf16BitsToF32(v) : v;
  }
  return out;
}
