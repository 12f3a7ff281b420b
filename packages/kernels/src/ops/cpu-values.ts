/** Host access for CPU references: a dense CPU tensor's values widened to f64 (bf16 decoded). */
import { bf16BitsToF32 } from '../dtype';
import { cpuView, type Tensor } from '../tensor';

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
