/** CPU reference for the (gated) group RMSNorm, forward and backward, in f64 over dense rows. */
import { cpuView, type Tensor } from '../../tensor';
import { storageReader } from '../cpu-values';
import type { NormLayout } from './norm.wgsl';

const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));

/** v = x, or x · silu(z) when gated, as a reader over element indices relative to the tensors' offsets. */
function valueReader(x: Tensor, z: Tensor | null): (e: number) => number {
  const rx = storageReader(x);
  if (!z) return (e) => rx(x.offset + e);
  const rz = storageReader(z);
  return (e) => {
    const zv = rz(z.offset + e);
    return rx(x.offset + e) * zv * sigmoid(zv);
  };
}

export function normCpu(x: Tensor, z: Tensor | null, w: Tensor, l: NormLayout, out: Tensor): void {
  const v = valueReader(x, z);
  const rw = storageReader(w);
  const dst = cpuView(out);
  const n = l.d / l.groups;
  for (let r = 0; r < l.rows; r++) {
    for (let k = 0; k < l.groups; k++) {
      const start = r * l.d + k * n;
      let ss = 0;
      for (let j = 0; j < n; j++) ss += v(start + j) ** 2;
      const rstd = 1 / Math.sqrt(ss / n + l.eps);
      for (let j = 0; j < n; j++) dst[out.offset + start + j] = rw(w.offset + k * n + j) * v(start + j) * rstd;
    }
  }
}

/** Writes dx (and dz when gated) and returns dw as f64 sums, all from the upstream gradient `g`. */
export function normGradCpu(x: Tensor, z: Tensor | null, w: Tensor, g: Tensor, l: NormLayout, dx: Tensor, dz: Tensor | null, dw: Tensor): void {
  const v = valueReader(x, z);
  const rx = storageReader(x);
  const rz = z ? storageReader(z) : null;
  const rw = storageReader(w);
  const rg = storageReader(g);
  const outX = cpuView(dx);
  const outZ = dz ? cpuView(dz) : null;
  const n = l.d / l.groups;
  const wGrad = new Float64Array(l.d);
  for (let r = 0; r < l.rows; r++) {
    for (let k = 0; k < l.groups; k++) {
      const start = r * l.d + k * n;
      let ss = 0;
      let sgv = 0;
      for (let j = 0; j < n; j++) {
        const vj = v(start + j);
        ss += vj * vj;
        sgv += rg(g.offset + start + j) * rw(w.offset + k * n + j) * vj;
      }
      const rstd = 1 / Math.sqrt(ss / n + l.eps);
      const c = (rstd ** 3 * sgv) / n;
      for (let j = 0; j < n; j++) {
        const e = start + j;
        const gj = rg(g.offset + e);
        const vj = v(e);
        wGrad[k * n + j]! += gj * vj * rstd;
        const dv = rstd * gj * rw(w.offset + k * n + j) - vj * c;
        if (!z || !rz || !outZ || !dz) {
          outX[dx.offset + e] = dv;
          continue;
        }
        const y = rx(x.offset + e);
        const zv = rz(z.offset + e);
        const s = sigmoid(zv);
        outX[dx.offset + e] = dv * zv * s;
        outZ[dz.offset + e] = dv * y * s * (1 + zv * (1 - s));
      }
    }
  }
  cpuView(dw).set(wGrad, dw.offset);
}
