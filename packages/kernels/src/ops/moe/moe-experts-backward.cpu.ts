/** CPU reference for the grouped experts' backward: each token's k slots recomputed directly, in f64. */
import { cpuView, type Tensor } from '../../tensor';
import type { MoeExpertGrads, MoeExpertOperands } from './moe-experts';
import { operandReaders, reader } from './moe-experts.cpu';

/** Accumulates in f64, then writes one f32 gradient tensor (when it is wanted). */
function sink(t: Tensor | null): { acc: Float64Array; flush(): void } {
  const acc = new Float64Array(t ? t.size : 0);
  return {
    acc,
    flush() {
      if (t) (cpuView(t) as Float32Array).set(acc, t.offset);
    },
  };
}

/**
 * Gradients of Σ_s w[t,s] · (relu(x_t·up_eᵀ + b_up)² · down_eᵀ + b_down) from `grad` [T, Hout]
 * (contiguous f32), written into the f32 tensors of `out` that are not null.
 */
export function moeExpertsBackwardCpu(o: MoeExpertOperands, grad: Tensor, out: MoeExpertGrads): void {
  const { tokens, hin, slots, experts, inter, hout, x, weight, up, down, upBias, downBias } = operandReaders(o);
  const g = reader(grad);
  const indices = cpuView(o.indices) as Int32Array;
  const [gx, gw, gUp, gDown, gUpBias, gDownBias] = [out.x, out.weights, out.upProj, out.downProj, out.upBias, out.downBias].map(sink) as [
    ReturnType<typeof sink>,
    ReturnType<typeof sink>,
    ReturnType<typeof sink>,
    ReturnType<typeof sink>,
    ReturnType<typeof sink>,
    ReturnType<typeof sink>,
  ];
  const pre = new Float64Array(inter);
  const hidden = new Float64Array(inter);
  const gHidden = new Float64Array(inter);
  for (let t = 0; t < tokens; t++) {
    for (let s = 0; s < slots; s++) {
      const e = indices[o.indices.offset + t * slots + s]!;
      if (e < 0 || e >= experts) {
        throw new Error(`moeExperts backward: token ${t} slot ${s} routes to expert ${e}, outside [0, ${experts})`);
      }
      for (let i = 0; i < inter; i++) {
        let a = upBias(e * inter + i);
        const w = (e * inter + i) * hin;
        for (let j = 0; j < hin; j++) a += x(t * hin + j) * up(w + j);
        pre[i] = a;
        hidden[i] = Math.max(a, 0) ** 2; // Math.max keeps a NaN
      }
      const ws = weight(t * slots + s);
      gHidden.fill(0);
      let gWeight = 0;
      for (let n = 0; n < hout; n++) {
        const row = (e * hout + n) * inter;
        let y = downBias(e * hout + n);
        for (let i = 0; i < inter; i++) y += hidden[i]! * down(row + i);
        const gn = g(t * hout + n);
        gWeight += gn * y;
        // ∂L/∂y = w·g: the down projection's gradients.
        const gy = ws * gn;
        gDownBias.acc[e * hout + n]! += gy;
        for (let i = 0; i < inter; i++) {
          gDown.acc[row + i]! += gy * hidden[i]!;
          gHidden[i]! += gy * down(row + i);
        }
      }
      gw.acc[t * slots + s] = gWeight;
      for (let i = 0; i < inter; i++) {
        // d relu(a)²/da = 2·relu(a).
        const ga = gHidden[i]! * 2 * Math.max(pre[i]!, 0);
        gUpBias.acc[e * inter + i]! += ga;
        const row = (e * inter + i) * hin;
        for (let j = 0; j < hin; j++) {
          gUp.acc[row + j]! += ga * x(t * hin + j);
          gx.acc[t * hin + j]! += ga * up(row + j);
        }
      }
    }
  }
  for (const s of [gx, gw, gUp, gDown, gUpBias, gDownBias]) s.flush();
}
