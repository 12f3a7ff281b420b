/** CPU reference for matmul: f64 accumulation over the strided operands of a {@link MatmulProblem}. */
import { storageReader } from '../cpu-values';
import { cpuView, type Tensor } from '../../tensor';
import type { MatmulProblem, MatrixView } from './problem';

/** Reads a strided matrix view into a dense f64 [batchEntries][rows][cols] array (for cache-friendly loops). */
function dense(v: MatrixView, batchEntries: number, rows: number, cols: number): Float64Array {
  const read = storageReader(v.tensor);
  const out = new Float64Array(batchEntries * rows * cols);
  let o = 0;
  for (let z = 0; z < batchEntries; z++) {
    for (let r = 0; r < rows; r++) {
      const base = v.offset + z * v.batchStride + r * v.rowStride;
      for (let c = 0; c < cols; c++) out[o++] = read(base + c * v.colStride);
    }
  }
  return out;
}

/** Writes `out` (dense f32 [batch, M, N] from its offset) = A · B (+ bias), or adds that to it with `accumulate`. */
export function matmulCpu(p: MatmulProblem, out: Tensor, accumulate = false): void {
  const { batch, m, n, k } = p;
  const aBatches = p.a.batchStride === 0 ? 1 : batch;
  const bBatches = p.b.batchStride === 0 ? 1 : batch;
  const a = dense(p.a, aBatches, m, k);
  // B transposed to [N, K] so the inner loop walks both operands contiguously.
  const bT = dense({ ...p.b, rowStride: p.b.colStride, colStride: p.b.rowStride }, bBatches, n, k);
  const bias = new Float64Array(n);
  if (p.bias) {
    const read = storageReader(p.bias.tensor);
    for (let j = 0; j < n; j++) bias[j] = read(p.bias.offset + j * p.bias.stride);
  }
  const dst = cpuView(out) as Float32Array;
  let o = out.offset;
  for (let z = 0; z < batch; z++) {
    const aBase = (aBatches === 1 ? 0 : z) * m * k;
    const bBase = (bBatches === 1 ? 0 : z) * n * k;
    for (let i = 0; i < m; i++) {
      const ai = aBase + i * k;
      for (let j = 0; j < n; j++) {
        const bj = bBase + j * k;
        let s = 0;
        for (let q = 0; q < k; q++) s += a[ai + q]! * bT[bj + q]!;
        dst[o] = (accumulate ? dst[o]! : 0) + s + bias[j]!;
        o++;
      }
    }
  }
}
