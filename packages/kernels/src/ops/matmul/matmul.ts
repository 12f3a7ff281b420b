/**
 * Matrix products: `matmul` (batched, NumPy-broadcast batch dimensions, optional transposes and
 * bias) and `linear` (x · weightᵀ + bias, the PyTorch nn.Linear layout every model layer uses).
 * Inputs are f32 or bf16 (storage only), math and results are f32. Transposed and broadcast views
 * are read through their strides: no contiguous copy is made (the software-rasterizer path packs
 * operands into textures, and a transposed view is packed as cheaply as a dense one).
 */
import { record, type GradTargets } from '../../autograd/graph';
import { empty } from '../../creation';
import { formatShape, sizeOf } from '../../shape';
import type { Tensor } from '../../tensor';
import { sumTo } from '../layout/broadcast';
import { sum } from '../reduce/reduce';
import { reshape } from '../layout/layout';
import { matmulCpu } from './matmul.cpu';
import { matmulNative } from './matmul.native';
import { matmulGpu } from './matmul.wgsl';
import { frozenWeight, normalizeMatmul, type MatmulOptions } from './problem';

export type { MatmulOptions } from './problem';

/** Runs the product without recording autograd. `frozenB` lets the GPU keep a re-laid-out copy of b. */
function product(op: string, a: Tensor, b: Tensor, options: MatmulOptions, frozenB: boolean): Tensor {
  const { problem, outShape, temporaries } = normalizeMatmul(op, a, b, options);
  const device = a.device;
  const out = empty(outShape, { device });
  if (out.size > 0) {
    if (device.kind === 'cpu') {
      if (!device.native || !matmulNative(device.native, problem, out)) matmulCpu(problem, out);
    } else matmulGpu(device, problem, out, { frozenB });
  }
  for (const t of temporaries) t.dispose();
  return out;
}

/**
 * `into` (f32, dense, the product's element count) = op(a) · op(b), or += with `accumulate`: a
 * backward's product written where it ends up, with no temporary and no separate sum. CPU devices
 * only (the native GEMM's beta = 1, or the reference's loop); records no autograd.
 */
function productInto(into: Tensor, a: Tensor, b: Tensor, options: MatmulOptions, accumulate: boolean): void {
  const { problem, outShape, temporaries } = normalizeMatmul('matmul', a, b, options);
  const device = a.device;
  if (device.kind !== 'cpu' || into.device !== device || into.dtype !== 'f32' || !into.isContiguous || into.size !== sizeOf(outShape)) {
    throw new Error(`matmul: cannot write a ${formatShape(outShape)} product into ${into} (needs a dense f32 CPU tensor of that size)`);
  }
  if (into.size > 0 && (!device.native || !matmulNative(device.native, problem, into, accumulate))) matmulCpu(problem, into, accumulate);
  for (const t of temporaries) t.dispose();
}

/**
 * A backward's product op(a) · op(b) as input `i`'s gradient (shaped `shape`): on CPU devices written
 * into the buffer `backward()` offers (see GradTargets) and null returned; otherwise returned.
 */
function gradProduct(targets: GradTargets, i: number, shape: readonly number[], a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor | null {
  const target = a.device.kind === 'cpu' ? targets.into(i) : null;
  if (!target) return reshape(matmul(a, b, options), shape);
  productInto(target.buffer, a, b, options, !target.fresh);
  return null;
}

/**
 * `a · b` over the last two dimensions: a [..., M, K] ([..., K, M] with `transA`), b [..., K, N]
 * ([..., N, K] with `transB`); batch dimensions broadcast; `bias` [N] is added to every row.
 * Returns f32 [...batch, M, N].
 */
export function matmul(a: Tensor, b: Tensor, options: MatmulOptions = {}): Tensor {
  const out = product('matmul', a, b, options, false);
  const transA = options.transA ?? false;
  const transB = options.transB ?? false;
  const bias = options.bias;
  const aShape = [...a.shape];
  const bShape = [...b.shape];
  const wants = [a.requiresGrad, b.requiresGrad, bias?.requiresGrad ?? false];
  record(
    'matmul',
    out,
    bias ? [a, b, bias] : [a, b],
    (g, [sa, sb]) => {
      const grads: (Tensor | null)[] = [
        wants[0] ? sumTo(gradA(g, sb!, transA, transB), aShape) : null,
        wants[1] ? gradB(g, sa!, bShape, transA, transB) : null,
      ];
      if (bias) grads.push(wants[2] ? sumTo(g, [bias.shape[0]!]) : null);
      return grads;
    },
    [a, b],
  );
  return out;
}

/** ∂L/∂op(A) = G · op(B)ᵀ, returned in A's own orientation. */
function gradA(g: Tensor, b: Tensor, transA: boolean, transB: boolean): Tensor {
  return transA ? matmul(b, g, { transA: transB, transB: true }) : matmul(g, b, { transB: !transB });
}

/** ∂L/∂op(B) = op(A)ᵀ · G in B's orientation, summed over the batch entries B was broadcast to. */
function gradB(g: Tensor, a: Tensor, bShape: number[], transA: boolean, transB: boolean): Tensor {
  // A 2-D B shared by a batched, untransposed A: fold the batch into rows (one product, no batch sum).
  if (bShape.length === 2 && a.rank > 2 && !transA) {
    const rows = reshape(a, [-1, a.shape[a.rank - 1]!]);
    const grads = reshape(g, [-1, g.shape[g.rank - 1]!]);
    return transB ? matmul(grads, rows, { transA: true }) : matmul(rows, grads, { transA: true });
  }
  const full = transB ? matmul(g, a, { transA: true, transB: transA }) : matmul(a, g, { transA: !transA });
  return sumTo(full, bShape);
}

/**
 * `x · weightᵀ (+ bias)`: x [..., in], weight [out, in] (PyTorch nn.Linear layout, f32 or bf16),
 * bias [out]. Returns f32 [..., out]. On software devices a weight that does not require gradients
 * is kept re-laid out for the fast kernels (released with the weight's storage).
 */
export function linear(x: Tensor, weight: Tensor, bias?: Tensor): Tensor {
  x.assertAlive('linear: x');
  weight.assertAlive('linear: weight');
  if (weight.rank !== 2) throw new Error(`linear: weight ${formatShape(weight.shape)} must be [out, in]`);
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (x.rank < 1 || x.shape[x.rank - 1] !== inFeatures) {
    throw new Error(`linear: x ${formatShape(x.shape)} must end in in_features=${inFeatures} to match weight ${formatShape(weight.shape)}`);
  }
  const x2 = x.rank === 1 ? reshape(x, [1, inFeatures]) : x;
  const y = product('linear', x2, weight, { transB: true, bias }, frozenWeight(weight));
  const out = x.rank === 1 ? reshape(y, [outFeatures]) : y;
  if (out !== y) y.dispose();
  if (x2 !== x) x2.dispose();
  const wants = [x.requiresGrad, weight.requiresGrad, bias?.requiresGrad ?? false];
  record(
    'linear',
    out,
    bias ? [x, weight, bias] : [x, weight],
    (g, [sx, sw], targets) => {
      const g2 = reshape(g, [-1, outFeatures]);
      const grads: (Tensor | null)[] = [
        wants[0] ? gradProduct(targets, 0, sx!.shape, g2, sw!) : null,
        wants[1] ? gradProduct(targets, 1, sw!.shape, g2, reshape(sx!, [-1, inFeatures]), { transA: true }) : null,
      ];
      if (bias) grads.push(wants[2] ? sum(g2, 0) : null);
      return grads;
    },
    [x, weight],
  );
  return out;
}
