/**
 * Splitting a matmul into chunks whose storage bindings each fit `maxStorageBufferBindingSize`
 * (e.g. an lm_head weight of 1 GiB against 128 MiB bindings) and whose grids fit the per-dimension
 * workgroup limit. Chunks along K accumulate into the output.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bytesPerElement } from '../../dtype';
import { viewExtent, type MatmulProblem, type MatrixView } from './problem';

export interface MatmulChunk {
  z0: number;
  z1: number;
  m0: number;
  m1: number;
  n0: number;
  n1: number;
  k0: number;
  k1: number;
}

/**
 * Bytes of data one storage binding holds wherever the data starts: `device.bind` starts a binding
 * up to one offset alignment below the first element and pads its end to 4 bytes.
 */
export function bindingBudget(device: WebGpuDevice): number {
  return device.limits.maxStorageBufferBindingSize - device.limits.minStorageBufferOffsetAlignment - 4;
}

export interface ChunkLimits {
  /** Bytes each binding may span ({@link bindingBudget}). */
  budget: number;
  maxBatch: number;
  maxRows: number;
  maxCols: number;
}

type Dim = 'z' | 'm' | 'n' | 'k';

interface Binding {
  /** Bytes of the binding for chunk sizes `s`. */
  bytes(s: Record<Dim, number>): number;
  /** The dimensions it spans, with the elements one step along each covers. */
  dims: [Dim, number][];
}

function viewBinding(v: MatrixView, dims: [Dim, Dim, Dim]): Binding {
  const bpe = bytesPerElement(v.tensor.dtype);
  const [dz, dr, dc] = dims;
  return {
    bytes: (s) => viewExtent(v, 0, s[dz], 0, s[dr], 0, s[dc]).count * bpe,
    dims: [
      [dz, v.batchStride],
      [dr, v.rowStride],
      [dc, v.colStride],
    ],
  };
}

/** Chunk sizes (then the chunks) such that every binding of every chunk fits. */
export function planChunks(p: MatmulProblem, limits: ChunkLimits): MatmulChunk[] {
  const full: Record<Dim, number> = { z: p.batch, m: p.m, n: p.n, k: p.k };
  const size: Record<Dim, number> = {
    z: Math.min(p.batch, limits.maxBatch),
    m: Math.min(p.m, limits.maxRows),
    n: Math.min(p.n, limits.maxCols),
    k: p.k,
  };
  const out: MatrixView = { tensor: null as never, offset: 0, batchStride: p.m * p.n, rowStride: p.n, colStride: 1 };
  const bindings: Binding[] = [
    viewBinding(p.a, ['z', 'm', 'k']),
    viewBinding(p.b, ['z', 'k', 'n']),
    {
      bytes: (s) => viewExtent(out, 0, s.z, 0, s.m, 0, s.n).count * 4,
      dims: [
        ['z', p.m * p.n],
        ['m', p.n],
        ['n', 1],
      ],
    },
  ];
  if (p.bias) {
    const bias = p.bias;
    const bpe = bytesPerElement(bias.tensor.dtype);
    bindings.push({ bytes: (s) => ((s.n - 1) * bias.stride + 1) * bpe, dims: [['n', bias.stride]] });
  }
  const limit = limits.budget;
  for (;;) {
    let worst: Binding | null = null;
    let worstBytes = limit;
    for (const b of bindings) {
      const bytes = b.bytes(size);
      if (bytes > worstBytes) {
        worst = b;
        worstBytes = bytes;
      }
    }
    if (!worst) break;
    // Halve the dimension that spans the most elements of the offending binding.
    let pick: Dim | null = null;
    let span = 0;
    for (const [d, stride] of worst.dims) {
      const s = (size[d] - 1) * stride;
      if (size[d] > 1 && s >= span) {
        pick = d;
        span = s;
      }
    }
    if (!pick) throw new Error(`matmul: a single element does not fit a binding of ${limits.budget} bytes`);
    size[pick] = Math.ceil(size[pick] / 2);
  }
  const chunks: MatmulChunk[] = [];
  for (let z0 = 0; z0 < full.z; z0 += size.z) {
    for (let m0 = 0; m0 < full.m; m0 += size.m) {
      for (let n0 = 0; n0 < full.n; n0 += size.n) {
        for (let k0 = 0; k0 < Math.max(full.k, 1); k0 += Math.max(size.k, 1)) {
          chunks.push({
            z0,
            z1: Math.min(full.z, z0 + size.z),
            m0,
            m1: Math.min(full.m, m0 + size.m),
            n0,
            n1: Math.min(full.n, n0 + size.n),
            k0,
            k1: Math.min(full.k, k0 + size.k),
          });
        }
      }
    }
  }
  return chunks;
}
