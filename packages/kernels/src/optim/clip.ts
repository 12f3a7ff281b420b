/**
 * `clipGradNorm`: rescales the gradients of `params` so their global L2 norm (over all parameters
 * together) is at most `maxNorm`, like `torch.nn.utils.clip_grad_norm_`: each gradient is
 * multiplied by min(1, maxNorm / (norm + eps)). Returns the norm before clipping as a 0-d f32
 * tensor and never reads it back: the scale is applied on the device.
 *
 * Each parameter's `grad` is replaced by a new, scaled tensor rather than scaled in place, because
 * autograd may hand several parameters handles to one gradient storage.
 */
import { noGrad } from '../autograd/graph';
import { empty, tensor, zeros } from '../creation';
import { sqrt } from '../ops/elementwise/elementwise';
import { contiguous } from '../ops/layout/layout';
import { sumAll } from '../ops/reduce/reduce';
import { bindingWindows } from '../runtime/binding-windows';
import type { Tensor } from '../tensor';
import { scaleCpu, sumSquaresCpu } from './clip.cpu';
import { scaleNative, sumSquaresNative } from './clip.native';
import { partialsFor, scaleByNormGpu, sumSquaresGpu } from './clip.wgsl';

export interface ClipOptions {
  /** Added to the norm before dividing (default 1e-6, as in PyTorch). */
  eps?: number;
  /**
   * false: only measure: the gradients stay as they are, and the caller applies
   * {@link clipCoefficient} of the returned norm itself, e.g. as the optimizer's `gradScale`, which
   * saves a pass writing scaled copies. Default true.
   */
  scale?: boolean;
}

/** The factor clipGradNorm scales the gradients by: min(1, maxNorm / (norm + eps)). */
export function clipCoefficient(norm: number, maxNorm: number, eps = 1e-6): number {
  return Math.min(1, maxNorm / (norm + eps));
}

export function clipGradNorm(params: Iterable<Tensor>, maxNorm: number, options: ClipOptions = {}): Tensor {
  const eps = options.eps ?? 1e-6;
  if (!(maxNorm > 0)) throw new Error(`clipGradNorm: maxNorm must be > 0, got ${maxNorm}`);
  const all = [...params];
  if (all.length === 0) throw new Error('clipGradNorm: no parameters');
  const device = all[0]!.device;
  const withGrad = all.filter((p) => p.grad !== null);
  for (const p of withGrad) {
    const g = p.grad!;
    g.assertAlive('clipGradNorm gradient');
    if (g.device !== device || g.dtype !== 'f32') throw new Error(`clipGradNorm: gradient ${g} of ${p} must be f32 on ${device.kind}`);
  }
  return noGrad(() => {
    if (withGrad.length === 0) return zeros([], { device });
    const grads = withGrad.map((p) => (p.grad!.isContiguous ? p.grad! : contiguous(p.grad!)));
    let norm: Tensor;
    /** Writes a gradient scaled by the clip coefficient into `out`. */
    let scaled: (g: Tensor, out: Tensor) => void;
    if (device.kind === 'cpu') {
      const lib = device.native;
      const total = Math.sqrt(grads.reduce((s, g) => s + (lib ? sumSquaresNative(lib, g) : sumSquaresCpu(g)), 0));
      norm = tensor([total], [], { device });
      const coef = clipCoefficient(total, maxNorm, eps);
      scaled = (g, out) => (lib ? scaleNative(lib, g, out, coef) : scaleCpu(g, out, coef));
    } else {
      const count = grads.reduce((n, g) => n + bindingWindows(device, g.size, 4).reduce((k, w) => k + partialsFor(w), 0), 0);
      const partials = empty([count], { device });
      let at = 0;
      for (const g of grads) at += sumSquaresGpu(device, g, partials, at);
      const squared = sumAll(partials);
      norm = sqrt(squared);
      partials.dispose();
      squared.dispose();
      scaled = (g, out) => scaleByNormGpu(device, g, norm, out, maxNorm, eps);
    }
    if (options.scale === false) grads.forEach((g, i) => g !== withGrad[i]!.grad && g.dispose());
    else withGrad.forEach((p, i) => replaceGrad(p, grads[i]!, scaled));
    return norm;
  });
}

/** Sets p.grad to a new tensor written by `write` from the dense gradient `dense`, releasing the old one. */
function replaceGrad(p: Tensor, dense: Tensor, write: (g: Tensor, out: Tensor) => void): void {
  const out = empty(p.shape, { device: p.device });
  write(dense, out);
  if (dense !== p.grad) dense.dispose();
  p.grad!.dispose();
  p.grad = out;
}
