/**
 * A matmul reduced to one strided form every backend consumes: `out[z] = A[z] · B[z] (+ bias)` over
 * one batch index z, with A a [M, K] and B a [K, N] matrix read through element strides (so
 * transposed and broadcast views need no copy), and a dense f32 output [batch, M, N].
 */
import { isGradEnabled } from '../../autograd/graph';
import { formatShape, broadcastShapes, broadcastStrides, collapseDims, contiguousStrides, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { expand } from '../layout/broadcast';
import { contiguous } from '../layout/layout';

/** One operand as a batch of matrices read through strides (in elements of its storage). */
export interface MatrixView {
  tensor: Tensor;
  /** Element offset of [0, 0, 0]. */
  offset: number;
  /** Stride between batch entries; 0 when the operand is broadcast over the batch. */
  batchStride: number;
  /** Stride along the first logical dimension (m for A, k for B). */
  rowStride: number;
  /** Stride along the second logical dimension (k for A, n for B). */
  colStride: number;
}

export interface MatmulProblem {
  batch: number;
  m: number;
  n: number;
  k: number;
  /** Logical [batch, M, K]. */
  a: MatrixView;
  /** Logical [batch, K, N]. */
  b: MatrixView;
  /** [N] (read through `offset` and `stride`), or null. */
  bias: { tensor: Tensor; offset: number; stride: number } | null;
}

export interface MatmulOptions {
  /** Read `a` as [..., K, M] (use its transpose). */
  transA?: boolean;
  /** Read `b` as [..., N, K] (use its transpose). */
  transB?: boolean;
  /** [N], added to every output row. */
  bias?: Tensor;
}

export interface NormalizedMatmul {
  problem: MatmulProblem;
  /** Output shape [...batch, M, N]. */
  outShape: number[];
  /** Copies made to collapse irregular batch broadcasting; the caller disposes them after launching. */
  temporaries: Tensor[];
}

/** Checks the operands and describes the product; throws an error naming the op and shapes at fault. */
export function normalizeMatmul(op: string, a: Tensor, b: Tensor, options: MatmulOptions = {}): NormalizedMatmul {
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  a.assertAlive(`${op}: a`);
  b.assertAlive(`${op}: b`);
  for (const [name, t] of [
    ['a', a],
    ['b', b],
  ] as const) {
    if (t.rank < 2) throw new Error(`${op}: ${name} ${formatShape(t.shape)} must have at least 2 dimensions ([..., rows, cols])`);
    if (t.dtype !== 'f32' && t.dtype !== 'bf16') throw new Error(`${op}: ${name} has dtype ${t.dtype}; matmul takes f32 or bf16`);
  }
  if (a.device !== b.device) throw new Error(`${op}: a and b are on different devices (${a.device.kind}, ${b.device.kind})`);
  const [ar, ac] = a.shape.slice(-2) as [number, number];
  const [br, bc] = b.shape.slice(-2) as [number, number];
  const m = transA ? ac : ar;
  const kA = transA ? ar : ac;
  const kB = transB ? bc : br;
  const n = transB ? br : bc;
  if (kA !== kB) {
    throw new Error(
      `${op}: inner dimensions differ: a ${formatShape(a.shape)}${transA ? ' (transposed)' : ''} has K=${kA}, b ${formatShape(b.shape)}${transB ? ' (transposed)' : ''} has K=${kB}`,
    );
  }
  const aBatch = a.shape.slice(0, -2);
  const bBatch = b.shape.slice(0, -2);
  let batchShape: number[];
  try {
    batchShape = broadcastShapes(aBatch, bBatch, op);
  } catch {
    throw new Error(`${op}: batch dimensions of a ${formatShape(a.shape)} and b ${formatShape(b.shape)} cannot be broadcast together`);
  }
  const bias = options.bias ?? null;
  if (bias) {
    bias.assertAlive(`${op}: bias`);
    if (bias.rank !== 1 || bias.shape[0] !== n) throw new Error(`${op}: bias ${formatShape(bias.shape)} must be [${n}] (one value per output column)`);
    if (bias.dtype !== 'f32' && bias.dtype !== 'bf16') throw new Error(`${op}: bias has dtype ${bias.dtype}; expected f32 or bf16`);
    if (bias.device !== a.device) throw new Error(`${op}: bias is on another device`);
  }
  const outShape = [...batchShape, m, n];
  const temporaries: Tensor[] = [];

  // Collapse the batch dimensions of the output and both operands into one index when their strides
  // allow it; otherwise materialize the operands at the full batch shape (rare: mixed broadcasting).
  const outBatchStrides = contiguousStrides(batchShape);
  let aStrides = broadcastStrides(aBatch, a.strides.slice(0, -2), batchShape);
  let bStrides = broadcastStrides(bBatch, b.strides.slice(0, -2), batchShape);
  let collapsed = collapseDims(batchShape, [outBatchStrides, aStrides, bStrides]);
  let av = a;
  let bv = b;
  if (collapsed.shape.length > 1) {
    av = materialize(a, [...batchShape, ar, ac], temporaries);
    bv = materialize(b, [...batchShape, br, bc], temporaries);
    aStrides = broadcastStrides(batchShape, av.strides.slice(0, -2), batchShape);
    bStrides = broadcastStrides(batchShape, bv.strides.slice(0, -2), batchShape);
    collapsed = collapseDims(batchShape, [outBatchStrides, aStrides, bStrides]);
  }
  const batch = sizeOf(batchShape);
  const [, aBatchStride, bBatchStride] = collapsed.strides.map((s) => (batch > 1 ? s[0]! : 0)) as [number, number, number];

  const aS = av.strides.slice(-2) as [number, number];
  const bS = bv.strides.slice(-2) as [number, number];
  const problem: MatmulProblem = {
    batch,
    m,
    n,
    k: kA,
    a: {
      tensor: av,
      offset: av.offset,
      batchStride: aBatchStride,
      rowStride: transA ? aS[1] : aS[0],
      colStride: transA ? aS[0] : aS[1],
    },
    b: {
      tensor: bv,
      offset: bv.offset,
      batchStride: bBatchStride,
      rowStride: transB ? bS[1] : bS[0],
      colStride: transB ? bS[0] : bS[1],
    },
    bias: bias ? { tensor: bias, offset: bias.offset, stride: bias.strides[0]! } : null,
  };
  return { problem: foldBatchIntoRows(problem), outShape, temporaries };
}

function materialize(t: Tensor, shape: number[], temporaries: Tensor[]): Tensor {
  const e = expand(t, shape);
  const c = contiguous(e);
  e.dispose();
  temporaries.push(c);
  return c;
}

/**
 * When B is shared by every batch entry and A's batches follow each other with A's row stride
 * (e.g. activations [batch, seq, hidden]), the batch is just more rows: one [batch·M, K] · [K, N]
 * product, which lets decode with several sequences use the GEMV kernels and reads B once.
 */
export function foldBatchIntoRows(p: MatmulProblem): MatmulProblem {
  if (p.batch === 1 || p.b.batchStride !== 0) return p;
  const rowStride = p.m === 1 ? p.a.batchStride : p.a.rowStride;
  if (p.a.batchStride !== p.m * rowStride) return p;
  return { ...p, batch: 1, m: p.batch * p.m, a: { ...p.a, rowStride, batchStride: 0 } };
}

/** Elements spanned by rows [r0, r1) × cols [c0, c1) of batch entries [z0, z1) of a view: first index and count. */
export function viewExtent(v: MatrixView, z0: number, z1: number, r0: number, r1: number, c0: number, c1: number): { start: number; count: number } {
  const start = v.offset + z0 * v.batchStride + r0 * v.rowStride + c0 * v.colStride;
  const last = start + (z1 - z0 - 1) * v.batchStride + (r1 - r0 - 1) * v.rowStride + (c1 - c0 - 1) * v.colStride;
  return { start, count: last - start + 1 };
}

/**
 * Whether a weight can keep a re-laid-out device copy for this call: it takes no gradient, or no
 * gradient is being recorded (inference under `noGrad` on a trainable model). The copy stays valid
 * because every in-place write (optimizer steps, uploads, `into` writes) invalidates it.
 */
export function frozenWeight(weight: Tensor): boolean {
  return !weight.requiresGrad || !isGradEnabled();
}
