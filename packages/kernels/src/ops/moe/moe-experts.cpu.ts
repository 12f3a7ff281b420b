/** CPU reference for grouped experts: each token's k slots computed directly, in f64. */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { MoeExpertOperands } from './moe-experts';

/** Reader of a contiguous tensor's elements as f32 values (bf16 widened), from its offset. */
export function reader(t: Tensor): (i: number) => number {
  return storageReader(t, t.offset);
}

/** The operands' sizes and f32 readers of their elements (absent biases read as 0). */
export function operandReaders(o: MoeExpertOperands) {
  const [tokens, hin] = o.x.shape as [number, number];
  const [experts, inter] = o.upProj.shape as [number, number];
  return {
    tokens,
    hin,
    slots: o.indices.shape[1]!,
    experts,
    inter,
    hout: o.downProj.shape[1]!,
    x: reader(o.x),
    weight: reader(o.weights),
    up: reader(o.upProj),
    down: reader(o.downProj),
    upBias: o.upBias ? reader(o.upBias) : () => 0,
    downBias: o.downBias ? reader(o.downBias) : () => 0,
  };
}

/** Σ_s w[t,s] · (relu(x_t·up_eᵀ + b_up)² · down_eᵀ + b_down), e = indices[t,s]; operands are contiguous. */
export function moeExpertsCpu(o: MoeExpertOperands, out: Tensor): void {
  const { tokens, hin, slots, experts, inter, hout, x, weight, up, down, upBias, downBias } = operandReaders(o);
  const indices = cpuView(o.indices) as Int32Array;
  const dst = cpuView(out) as Float32Array;
  const hidden = new Float64Array(inter);
  const acc = new Float64Array(hout);
  for (let t = 0; t < tokens; t++) {
    acc.fill(0);
    for (let s = 0; s < slots; s++) {
      const e = indices[o.indices.offset + t * slots + s]!;
      if (e < 0 || e >= experts) {
        throw new Error(`moeExperts: token ${t} slot ${s} routes to expert ${e}, outside [0, ${experts})`);
      }
      for (let i = 0; i < inter; i++) {
        let h = upBias(e * inter + i);
        const w = (e * inter + i) * hin;
        for (let j = 0; j < hin; j++) h += x(t * hin + j) * up(w + j);
        hidden[i] = Math.max(h, 0) ** 2; // Math.max keeps a NaN
      }
      const ws = weight(t * slots + s);
      for (let n = 0; n < hout; n++) {
        let y = downBias(e * hout + n);
        const w = (e * hout + n) * inter;
        for (let i = 0; i < inter; i++) y += hidden[i]! * down(w + i);
        acc[n]! += ws * y;
      }
    }
    for (let n = 0; n < hout; n++) dst[out.offset + t * hout + n] = acc[n]!;
  }
}
