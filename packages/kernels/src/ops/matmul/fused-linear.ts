/**
 * `fusedLinear`: the decode-step building block `residual + act(linear(rmsNorm(x), weight) + bias)`,
 * each part optional. With one token per row, a decoder layer is a handful of these, and every
 * separate elementwise op would cost a dispatch (tens of µs on llvmpipe, more than the math): a
 * software device with a frozen weight runs the whole thing as one GEMV kernel with the norm as its
 * prologue and the activation and residual as its epilogue (fused-linear.wgsl.ts); elsewhere it is
 * the composition of the separate ops, which is also what the fused kernel is checked against.
 *
 * The fused norm scales the product instead of the input — W·(w ⊙ x·r) = r·(W·(w ⊙ x)) — which is the
 * same math (f32 rounding aside). Not differentiable: inference only.
 */
import { needsGrad } from '../../autograd/graph';
import { isFloat } from '../../dtype';
import { tidy } from '../../runtime/scope';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { add, relu2 } from '../elementwise/elementwise';
import { reshape } from '../layout/layout';
import { rmsNorm } from '../norm/norm';
import { fusedGemvGpu } from './fused-linear.wgsl';
import { linear } from './matmul';

export type FusedActivation = 'relu2';

export interface FusedLinearOptions {
  bias?: Tensor | null;
  /** RMSNorm applied to x first: x / sqrt(mean(x²) + eps) ⊙ weight (weight [in]). */
  norm?: { weight: Tensor; eps: number } | null;
  /** Applied to the product (after the bias). */
  activation?: FusedActivation | null;
  /** [..., out], added last. */
  residual?: Tensor | null;
}

/** x [..., in] → f32 [..., out]: `residual + act(rmsNorm(x) · weightᵀ + bias)` (see the file header). */
export function fusedLinear(x: Tensor, weight: Tensor, options: FusedLinearOptions = {}): Tensor {
  const op = 'fusedLinear';
  const { bias, norm, activation, residual } = options;
  x.assertAlive(`${op}: x`);
  weight.assertAlive(`${op}: weight`);
  if (weight.rank !== 2 || !isFloat(weight.dtype))
    throw new Error(`${op}: weight must be a 2-D f32 or bf16 tensor [out, in], got ${weight.dtype} ${formatShape(weight.shape)}`);
  const [outFeatures, inFeatures] = weight.shape as [number, number];
  if (x.rank < 1 || x.shape[x.rank - 1] !== inFeatures) throw new Error(`${op}: x ${formatShape(x.shape)} must end in in_features=${inFeatures}`);
  if (norm) {
    norm.weight.assertAlive(`${op}: norm weight`);
    if (norm.weight.rank !== 1 || norm.weight.shape[0] !== inFeatures)
      throw new Error(`${op}: norm weight ${formatShape(norm.weight.shape)} must be [${inFeatures}]`);
  }
  const outShape = [...x.shape.slice(0, -1), outFeatures];
  if (residual) {
    residual.assertAlive(`${op}: residual`);
    if (residual.shape.length !== outShape.length || residual.shape.some((d, i) => d !== outShape[i])) {
      throw new Error(`${op}: residual ${formatShape(residual.shape)} must be ${formatShape(outShape)}`);
    }
  }
  if (activation && activation !== 'relu2') throw new Error(`${op}: unknown activation '${String(activation)}'`);
  if (needsGrad([x, weight, bias ?? null, norm?.weight ?? null, residual ?? null].filter((t): t is Tensor => t !== null))) {
    throw new Error(`${op} is inference only: run it under noGrad()`);
  }
  return tidy(() => {
    if (x.device.kind === 'webgpu') {
      const rows = x.size / inFeatures;
      const fused = fusedGemvGpu(x.device, reshape(x, [rows, inFeatures]), weight, {
        ...options,
        residual: residual ? reshape(residual, [rows, outFeatures]) : null,
      });
      if (fused) return reshape(fused, outShape);
    }
    const normed = norm ? rmsNorm(x, norm.weight, norm.eps) : x;
    const product = linear(normed, weight, bias ?? undefined);
    const activated = activation === 'relu2' ? relu2(product) : product;
    return residual ? add(residual, activated) : activated;
  });
}
