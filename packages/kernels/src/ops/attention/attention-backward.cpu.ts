/**
 * CPU reference for the attention backward, FlashAttention-2 style in f64: per (batch, query, head)
 * row, P_j = exp(scale·q·k_j − lse) over the visible keys (zero elsewhere, and for a row whose lse is
 * +Infinity), D = dO·O, then dV_j += P_j·dO, dS_j = P_j·(dO·v_j − D), dQ += scale·dS_j·k_j,
 * dK_j += scale·dS_j·q. GQA: the q heads of a group accumulate into their kv head's dK and dV.
 */
import { tensor } from '../../creation';
import type { AttentionBackwardProblem, AttentionGradients } from './attention';
import { storageReader } from '../cpu-values';
import { base, keyReader } from './attention.cpu';

/** Gradients for q (when `want.q`) and for k and v (when `want.kv`): contiguous f32 in the shapes of q, k and v. */
export function attentionBackwardCpu(bp: AttentionBackwardProblem, want: { q: boolean; kv: boolean }): AttentionGradients {
  const p = bp.forward;
  const { batch, queries, keys, qHeads, kvHeads, headDim, valueDim, scale } = p;
  const readQ = storageReader(p.q.tensor);
  const readK = storageReader(p.k.tensor);
  const readV = storageReader(p.v.tensor);
  const readDo = storageReader(bp.gradOut.tensor);
  const readO = storageReader(bp.out);
  const readLse = storageReader(bp.lse);
  const mask = keyReader(p.keyMask);
  const seq = keyReader(p.seqIds);
  const group = qHeads / kvHeads;
  const dq = new Float64Array(batch * queries * qHeads * headDim);
  const dk = new Float64Array(batch * keys * kvHeads * headDim);
  const dv = new Float64Array(batch * keys * kvHeads * valueDim);
  const outHead = (b: number, i: number, h: number) => bp.out.offset + ((b * queries + i) * qHeads + h) * valueDim;
  for (let b = 0; b < batch; b++) {
    for (let i = 0; i < queries; i++) {
      const position = p.queryOffset + i;
      const ownSeq = seq ? seq(b, position) : 0;
      for (let h = 0; h < qHeads; h++) {
        const lse = readLse(bp.lse.offset + (b * queries + i) * qHeads + h);
        // A row that saw no key has zero output and zero gradients.
        if (lse === Infinity) continue;
        const g = Math.floor(h / group);
        const qb = base(p.q, b, i, h);
        const gb = base(bp.gradOut, b, i, h);
        const ob = outHead(b, i, h);
        let rowDot = 0;
        for (let d = 0; d < valueDim; d++) rowDot += readDo(gb + d) * readO(ob + d);
        const dqRow = ((b * queries + i) * qHeads + h) * headDim;
        for (let j = 0; j < keys; j++) {
          const visible = (!p.causal || j <= position) && (!mask || mask(b, j) !== 0) && (!seq || seq(b, j) === ownSeq);
          if (!visible) continue;
          const kb = base(p.k, b, j, g);
          const vb = base(p.v, b, j, g);
          let s = 0;
          for (let d = 0; d < headDim; d++) s += readQ(qb + d) * readK(kb + d);
          const prob = Math.exp(s * scale - lse);
          let dp = 0;
          for (let d = 0; d < valueDim; d++) dp += readDo(gb + d) * readV(vb + d);
          const ds = prob * (dp - rowDot) * scale;
          const kvRow = (b * keys + j) * kvHeads + g;
          for (let d = 0; d < valueDim; d++) dv[kvRow * valueDim + d]! += prob * readDo(gb + d);
          for (let d = 0; d < headDim; d++) {
            dq[dqRow + d]! += ds * readK(kb + d);
            dk[kvRow * headDim + d]! += ds * readQ(qb + d);
          }
        }
      }
    }
  }
  const device = p.q.tensor.device;
  const toTensor = (wanted: boolean, values: Float64Array, shape: number[]) => (wanted ? tensor(Float32Array.from(values), shape, { device }) : null);
  return {
    q: toTensor(want.q, dq, [batch, queries, qHeads, headDim]),
    k: toTensor(want.kv, dk, [batch, keys, kvHeads, headDim]),
    v: toTensor(want.kv, dv, [batch, keys, kvHeads, valueDim]),
  };
}
