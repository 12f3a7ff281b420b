/**
 * Routed experts of a Nemotron-H MoE layer (spec §2.6): non-gated ReLU² experts, executed grouped
 * by expert, forward and backward (the backward regroups the pairs with the same kernels).
 */
import { noGrad, record } from '../../autograd/graph';
import { empty, zeros } from '../../creation';
import { isFloat } from '../../dtype';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { cast, contiguous } from '../layout/layout';
import { moeExpertsBackwardCpu } from './moe-experts-backward.cpu';
import { moeExpertsBackwardGpu } from './moe-experts-backward.wgsl';
import { moeExpertsCpu } from './moe-experts.cpu';
import { moeExpertsBackwardNative, moeExpertsNative } from './moe-experts.native';
import { moeExpertsGpu } from './moe-experts.wgsl';
import { MOE_MAX_EXPERTS } from './moe-route';

export interface MoeExpertsOptions {
  /** [E, I] bias of each expert's up projection. */
  upBias?: Tensor;
  /** [E, Hout] bias of each expert's down projection. */
  downBias?: Tensor;
}

/** The operands of one call, contiguous, as the backends take them. */
export interface MoeExpertOperands {
  /** [T, Hin] */
  x: Tensor;
  /** [T, k] i32 */
  indices: Tensor;
  /** [T, k] */
  weights: Tensor;
  /** [E, I, Hin] */
  upProj: Tensor;
  /** [E, Hout, I] */
  downProj: Tensor;
  /** [E, I] */
  upBias: Tensor | null;
  /** [E, Hout] */
  downBias: Tensor | null;
}

/** f32 gradients of the differentiable operands (null where none is wanted), shaped like them. */
export interface MoeExpertGrads {
  x: Tensor | null;
  weights: Tensor | null;
  upProj: Tensor | null;
  downProj: Tensor | null;
  upBias: Tensor | null;
  downBias: Tensor | null;
}

/**
 * out[t] = Σ_s weights[t,s] · (relu(x_t·up_eᵀ + b_up)² · down_eᵀ + b_down), e = indices[t,s]
 * (HF semantics: each expert output times its fp32 weight, accumulated in f32, in slot order).
 *
 * Weights are stacked like HF's in-memory layout: `upProj` [E, I, Hin], `downProj` [E, Hout, I],
 * f32 or bf16; expert tensors larger than one storage binding are split into expert ranges. On the
 * GPU nothing is read back and launch sizes do not depend on the routing; a decode step (T = 1)
 * reads only the k chosen experts' weights. The native CPU backend groups the token–expert pairs by
 * expert, runs each expert's rows as two GEMMs and adds them to the outputs in expert order (a
 * decode step: only the chosen experts' GEMVs, combined in slot order). An expert index outside
 * [0, E) throws on the CPU (both backends) and makes that token's output NaN on the GPU (it cannot be
 * checked there without a readback).
 *
 * Differentiable in x, weights, upProj, downProj and the biases (f32 gradients; indices get none).
 * The backward saves only the operands and recomputes the hidden activations.
 *
 * @returns [T, Hout] f32.
 */
export function moeExperts(x: Tensor, indices: Tensor, weights: Tensor, upProj: Tensor, downProj: Tensor, options: MoeExpertsOptions = {}): Tensor {
  const named: [string, Tensor | undefined][] = [
    ['x', x],
    ['indices', indices],
    ['weights', weights],
    ['upProj', upProj],
    ['downProj', downProj],
    ['upBias', options.upBias],
    ['downBias', options.downBias],
  ];
  for (const [name, t] of named) t?.assertAlive(`moeExperts ${name}`);
  const shape = (t: Tensor) => `${formatShape(t.shape)} ${t.dtype}`;
  const fail = (msg: string): never => {
    throw new Error(
      `moeExperts: ${msg} (x ${shape(x)}, indices ${shape(indices)}, weights ${shape(weights)}, upProj ${shape(upProj)}, downProj ${shape(downProj)})`,
    );
  };
  if (x.rank !== 2 || !isFloat(x.dtype)) fail('x must be a [tokens, hidden] float tensor');
  if (upProj.rank !== 3 || !isFloat(upProj.dtype)) fail('upProj must be a [experts, intermediate, hidden] float tensor');
  if (downProj.rank !== 3 || !isFloat(downProj.dtype)) fail('downProj must be a [experts, outHidden, intermediate] float tensor');
  const [tokens, hin] = x.shape as [number, number];
  const [experts, inter] = upProj.shape as [number, number];
  const hout = downProj.shape[1]!;
  if (upProj.shape[2] !== hin) fail(`upProj's last dimension must match x's hidden size ${hin}`);
  if (downProj.shape[0] !== experts || downProj.shape[2] !== inter) fail(`downProj must be [${experts}, outHidden, ${inter}]`);
  if (experts > MOE_MAX_EXPERTS) fail(`${experts} experts; at most ${MOE_MAX_EXPERTS} are supported`);
  if (indices.rank !== 2 || indices.dtype !== 'i32' || indices.shape[0] !== tokens) fail(`indices must be a [${tokens}, k] i32 tensor`);
  const slots = indices.shape[1]!;
  if (slots < 1) fail('indices must have at least one slot per token');
  if (weights.rank !== 2 || !isFloat(weights.dtype) || weights.shape[0] !== tokens || weights.shape[1] !== slots)
    fail(`weights must be a [${tokens}, ${slots}] float tensor`);
  const { upBias, downBias } = options;
  if (upBias && (upBias.rank !== 2 || upBias.shape[0] !== experts || upBias.shape[1] !== inter || !isFloat(upBias.dtype))) {
    fail(`upBias must be a [${experts}, ${inter}] float tensor, got ${shape(upBias)}`);
  }
  if (downBias && (downBias.rank !== 2 || downBias.shape[0] !== experts || downBias.shape[1] !== hout || !isFloat(downBias.dtype))) {
    fail(`downBias must be a [${experts}, ${hout}] float tensor, got ${shape(downBias)}`);
  }
  const device = x.device;
  for (const [name, t] of named) if (t && t.device !== device) fail(`${name} is on another device than x`);

  const out = empty([tokens, hout], { device });
  const dense = (t: Tensor | undefined) => (t ? contiguous(t) : null);
  const operands: MoeExpertOperands = noGrad(() => ({
    x: contiguous(x),
    indices: contiguous(indices),
    weights: contiguous(weights),
    upProj: contiguous(upProj),
    downProj: contiguous(downProj),
    upBias: dense(upBias),
    downBias: dense(downBias),
  }));
  try {
    if (tokens > 0 && hout > 0) {
      if (device.kind === 'cpu') {
        if (!device.native || !moeExpertsNative(device.native, operands, out)) moeExpertsCpu(operands, out);
      } else moeExpertsGpu(device, operands, out);
    }
    const inputs = [x, weights, upProj, downProj, upBias, downBias].filter((t): t is Tensor => t !== undefined);
    const saved = Object.values(operands).filter((t): t is Tensor => t !== null);
    const biases = { up: upBias !== undefined, down: downBias !== undefined };
    // Saves nothing unless an input requires grad (and recording is on).
    record('moeExperts', out, inputs, (g, kept) => moeExpertsBackward(kept, biases, g, inputs), saved);
  } catch (e) {
    out.dispose();
    throw e;
  } finally {
    for (const t of Object.values(operands)) t?.dispose();
  }
  return out;
}

/**
 * The gradients for `inputs` ([x, weights, upProj, downProj, upBias?, downBias?], those given) from
 * the saved contiguous operands ([x, indices, weights, upProj, downProj, upBias?, downBias?]).
 */
function moeExpertsBackward(saved: readonly Tensor[], biases: { up: boolean; down: boolean }, grad: Tensor, inputs: readonly Tensor[]): (Tensor | null)[] {
  const [x, indices, weights, upProj, downProj] = saved as [Tensor, Tensor, Tensor, Tensor, Tensor];
  const upBias = biases.up ? saved[5]! : null;
  const downBias = biases.down ? saved[biases.up ? 6 : 5]! : null;
  const o: MoeExpertOperands = { x, indices, weights, upProj, downProj, upBias, downBias };
  const device = x.device;
  // Without tokens or outputs every gradient is zero and there is nothing to run.
  const trivial = x.shape[0] === 0 || downProj.shape[1] === 0;
  const wanted = (t: Tensor | undefined) => (t?.requiresGrad ? (trivial ? zeros : empty)(t.shape, { device }) : null);
  const [xIn, weightsIn, upIn, downIn] = inputs as [Tensor, Tensor, Tensor, Tensor];
  const grads: MoeExpertGrads = {
    x: wanted(xIn),
    weights: wanted(weightsIn),
    upProj: wanted(upIn),
    downProj: wanted(downIn),
    upBias: biases.up ? wanted(inputs[4]) : null,
    downBias: biases.down ? wanted(inputs[biases.up ? 5 : 4]) : null,
  };
  if (trivial) return gradientList(grads, biases);
  // The kernels read the upstream gradient as f32.
  const g = grad.dtype === 'f32' ? contiguous(grad) : cast(grad, 'f32');
  try {
    if (device.kind === 'cpu') {
      if (!device.native || !moeExpertsBackwardNative(device.native, o, g, grads)) moeExpertsBackwardCpu(o, g, grads);
    } else moeExpertsBackwardGpu(device, o, g, grads);
  } finally {
    g.dispose();
  }
  return gradientList(grads, biases);
}

/** The gradients in the order of the node's inputs. */
function gradientList(grads: MoeExpertGrads, biases: { up: boolean; down: boolean }): (Tensor | null)[] {
  const out = [grads.x, grads.weights, grads.upProj, grads.downProj];
  if (biases.up) out.push(grads.upBias);
  if (biases.down) out.push(grads.downBias);
  return out;
}
