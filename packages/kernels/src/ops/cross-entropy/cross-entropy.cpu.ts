/** CPU reference for the fused cross-entropy, in f64. Labels are on the host here, so bad ones throw. */
import { cpuView, type Tensor } from '../../tensor';
import { storageReader } from '../cpu-values';
import { rowMaxLogSum } from '../softmax/softmax.cpu';
import type { CrossEntropyRows } from './cross-entropy.wgsl';

/** Throws naming the first label that is neither ignoreIndex nor in [0, classes). */
export function assertLabelsInRange(labels: Int32Array, r: CrossEntropyRows, offset = 0): void {
  for (let i = 0; i < r.rows; i++) {
    const label = labels[offset + i]!;
    if (label !== r.ignoreIndex && (label < 0 || label >= r.classes)) {
      throw new Error(`crossEntropy: label ${label} at row ${i} is outside [0, ${r.classes}) and is not ignoreIndex (${r.ignoreIndex})`);
    }
  }
}

export function crossEntropyCpu(logits: Tensor, labels: Tensor, r: CrossEntropyRows, lse: Tensor, loss: Tensor): void {
  const lab = cpuView(labels) as Int32Array;
  assertLabelsInRange(lab, r, labels.offset);
  const read = storageReader(logits);
  const outLse = cpuView(lse);
  const outLoss = cpuView(loss);
  for (let i = 0; i < r.rows; i++) {
    const base = logits.offset + i * r.classes;
    const { max, logSum } = rowMaxLogSum(read, base, r.classes);
    outLse[lse.offset + i] = max + logSum;
    const label = lab[labels.offset + i]!;
    outLoss[loss.offset + i] = label === r.ignoreIndex ? 0 : max - read(base + label) + logSum;
  }
}

/** dlogits = (softmax − onehot) · scale (one scale, or one per row); 0 on ignored rows. */
export function crossEntropyGradCpu(logits: Tensor, labels: Tensor, lse: Tensor, scale: Tensor, perRowScale: boolean, r: CrossEntropyRows, dx: Tensor): void {
  const lab = cpuView(labels) as Int32Array;
  const read = storageReader(logits);
  const readLse = storageReader(lse);
  const readScale = storageReader(scale);
  const out = cpuView(dx);
  for (let i = 0; i < r.rows; i++) {
    const label = lab[labels.offset + i]!;
    const o = dx.offset + i * r.classes;
    if (label === r.ignoreIndex) {
      out.fill(0, o, o + r.classes);
      continue;
    }
    const m = readLse(lse.offset + i);
    const g = readScale(scale.offset + (perRowScale ? i : 0));
    for (let c = 0; c < r.classes; c++) out[o + c] = (Math.exp(read(logits.offset + i * r.classes + c) - m) - (c === label ? 1 : 0)) * g;
  }
}
