/**
 * CPU reference for attention: for each (batch, query, head) row, the visible keys' scores
 * scale·q·k in f64, a direct softmax, and the weighted sum of values. Rows with no visible key get
 * zeros and lse = +Infinity.
 */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { AttentionProblem, HeadView, KeyRowView } from './attention';

/** Reader of a per-key view (key mask or document ids) by batch row and key, or null. */
export function keyReader(view: KeyRowView | null): ((b: number, j: number) => number) | null {
  if (!view) return null;
  const read = storageReader(view.tensor);
  return (b, j) => read(view.tensor.offset + b * view.batchStride + j * view.keyStride);
}

/** Element index of [b, s, h, 0] in a head view. */
export function base(view: HeadView, b: number, s: number, h: number): number {
  return view.tensor.offset + b * view.strides.batch + s * view.strides.seq + h * view.strides.head;
}

export function attentionCpu(p: AttentionProblem, out: Tensor, lse: Tensor | null): void {
  const { batch, queries, qHeads, kvHeads, headDim, valueDim } = p;
  // A key count read "on the device": clamped to the capacity, queries at the last valid keys.
  const keys = p.keysOnDevice ? Math.max(0, Math.min(p.keys, cpuView(p.keysOnDevice)[p.keysOnDevice.offset]!)) : p.keys;
  const queryOffset = p.keysOnDevice ? Math.max(0, keys - queries) : p.queryOffset;
  const readQ = storageReader(p.q.tensor);
  const readK = storageReader(p.k.tensor);
  const readV = storageReader(p.v.tensor);
  const mask = keyReader(p.keyMask);
  const seq = keyReader(p.seqIds);
  const dst = cpuView(out) as Float32Array;
  const lseDst = lse ? (cpuView(lse) as Float32Array) : null;
  const group = qHeads / kvHeads;
  const scores = new Float64Array(keys);
  const visible = new Uint8Array(keys);
  const acc = new Float64Array(valueDim);
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < queries; i++) {
      const position = queryOffset + i;
      const ownSeq = seq ? seq(b, position) : 0;
      for (let h = 0; h < qHeads; h++) {
        const g = Math.floor(h / group);
        const qb = base(p.q, b, i, h);
        let max = -Infinity;
        for (let j = 0; j < keys; j++) {
          visible[j] = Number((!p.causal || j <= position) && (!mask || mask(b, j) !== 0) && (!seq || seq(b, j) === ownSeq));
          if (!visible[j]) continue;
          const kb = base(p.k, b, j, g);
          let dot = 0;
          for (let d = 0; d < headDim; d++) dot += readQ(qb + d) * readK(kb + d);
          scores[j] = dot * p.scale;
          max = Math.max(max, scores[j]!);
        }
        acc.fill(0);
        let sum = 0;
        for (let j = 0; j < keys; j++) {
          if (!visible[j]) continue;
          const w = Math.exp(scores[j]! - max);
          sum += w;
          const vb = base(p.v, b, j, g);
          for (let d = 0; d < valueDim; d++) acc[d]! += w * readV(vb + d);
        }
        const row = (b * queries + i) * qHeads + h;
        // sum is 0 only without a visible key; a NaN sum (a NaN score) must reach the output.
        for (let d = 0; d < valueDim; d++) dst[out.offset + row * valueDim + d] = sum === 0 ? 0 : acc[d]! / sum;
        if (lseDst) lseDst[lse!.offset + row] = sum === 0 ? Infinity : max + Math.log(sum);
      }
    }
  }
}
