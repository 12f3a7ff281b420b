/** CPU reference for softmax / log-softmax over the rows of dense [rows, cols] views, in f64. */
import { cpuView, type Tensor } from '../../tensor';
import { storageReader } from '../cpu-values';
import type { SoftmaxKind } from './softmax.wgsl';

/** Per-row max and log Σ exp(x − max) (the log-sum-exp is max + logSum). Shared with cross-entropy. */
export function rowMaxLogSum(read: (i: number) => number, base: number, cols: number): { max: number; logSum: number } {
  let max = -Infinity;
  for (let c = 0; c < cols; c++) {
    const v = read(base + c);
    max = Number.isNaN(v) || Number.isNaN(max) ? NaN : Math.max(max, v);
  }
  let sum = 0;
  for (let c = 0; c < cols; c++) sum += Math.exp(read(base + c) - max);
  return { max, logSum: Math.log(sum) };
}

export function softmaxCpu(kind: SoftmaxKind, x: Tensor, rows: number, cols: number, out: Tensor): void {
  const read = storageReader(x);
  const dst = cpuView(out);
  for (let r = 0; r < rows; r++) {
    const base = x.offset + r * cols;
    const { max, logSum } = rowMaxLogSum(read, base, cols);
    const o = out.offset + r * cols;
    for (let c = 0; c < cols; c++) {
      const shifted = read(base + c) - max;
      dst[o + c] = kind === 'softmax' ? Math.exp(shifted - logSum) : shifted - logSum;
    }
  }
}

export function softmaxGradCpu(kind: SoftmaxKind, y: Tensor, g: Tensor, rows: number, cols: number, dx: Tensor): void {
  const ry = storageReader(y);
  const rg = storageReader(g);
  const dst = cpuView(dx);
  for (let r = 0; r < rows; r++) {
    const yb = y.offset + r * cols;
    const gb = g.offset + r * cols;
    let s = 0;
    for (let c = 0; c < cols; c++) s += kind === 'softmax' ? rg(gb + c) * ry(yb + c) : rg(gb + c);
    const o = dx.offset + r * cols;
    for (let c = 0; c < cols; c++) {
      dst[o + c] = kind === 'softmax' ? ry(yb + c) * (rg(gb + c) - s) : rg(gb + c) - Math.exp(ry(yb + c)) * s;
    }
  }
}
