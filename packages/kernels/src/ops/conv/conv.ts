/**
 * Depthwise causal conv1d of the Mamba2 mixer (spec §2.3.2, §3.2, §3.3, §4): the prefill form over a
 * whole sequence, which also returns the decode cache (the last K pre-conv inputs). The
 * single-token update that rolls that cache is part of the Mamba decode (scan/mamba-decode-host.ts).
 *
 *   y[b,t,c] = act(bias[c] + Σ_k W[c,k] · x[b, t-(K-1)+k, c])     (tap K-1 is the current token)
 *
 * Positions before the sequence read the initial state's last K-1 columns (zeros without one).
 * With `seqIdx` a document is a maximal run of equal ids: taps from an earlier document read zero,
 * and only the first document sees the initial state. The final state is zeroed where its columns
 * belong to an earlier document than the last token's, so chunked prefill of packed rows continues
 * the last document correctly.
 *
 * Differentiable in x, weight, bias and initialState through y (SiLU or no activation; taps never
 * cross a document). `finalState` is not differentiable: it only feeds the decode cache, and a
 * gradient reaching it is dropped. The backward saves only the inputs and recomputes the
 * pre-activation; under noGrad (or with no input requiring grad) nothing is saved.
 */
import { record } from '../../autograd/graph';
import { empty } from '../../creation';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { DenseInputs, checkInputs, expectFloat, expectRank, expectShape } from '../op-args';
import { contiguous } from '../layout/layout';
import { causalConv1dBackwardCpu, causalConv1dCpu, type CausalConv1dCpuArgs } from './conv.cpu';
import { causalConv1dBackwardNative, causalConv1dNative } from './conv.native';
import { causalConv1dBackwardGpu, causalConv1dGpu } from './conv.wgsl';

export type ConvActivation = 'silu' | null;

export interface CausalConv1dOptions {
  /** Applied to every output channel (default 'silu'); null for the plain conv. */
  activation?: ConvActivation;
  /** The last K pre-conv inputs of a previous call, [B, C, K], oldest first (f32 or bf16). */
  initialState?: Tensor;
  /** i32 [B, L]: document ids of packed rows. */
  seqIdx?: Tensor;
}

export interface CausalConv1dResult {
  /** [B, L, C] f32. */
  y: Tensor;
  /** [B, C, K] f32: the last K pre-conv inputs (the decode cache). */
  finalState: Tensor;
}

function checkWeights(op: string, weight: Tensor, bias: Tensor | null, channels: number): number {
  if (weight.rank !== 2 || weight.shape[0] !== channels || weight.shape[1]! < 1) {
    throw new Error(`${op}: weight must be [C=${channels}, K] (reshape a [C, 1, K] conv weight), got ${formatShape(weight.shape)}`);
  }
  expectFloat(op, 'weight', weight);
  if (bias) {
    expectShape(op, 'bias', bias, [channels]);
    expectFloat(op, 'bias', bias);
  }
  return weight.shape[1]!;
}

function checkActivation(op: string, activation: unknown): boolean {
  if (activation !== 'silu' && activation !== null) throw new Error(`${op}: activation must be 'silu' or null, got ${String(activation)}`);
  return activation === 'silu';
}

/** Depthwise causal conv over x [B, L, C] with weight [C, K] (f32 or bf16) and optional bias [C]. */
export function causalConv1d(x: Tensor, weight: Tensor, bias: Tensor | null, options: CausalConv1dOptions = {}): CausalConv1dResult {
  const op = 'causalConv1d';
  const { initialState, seqIdx } = options;
  const device = checkInputs(op, { x, weight, bias, initialState, seqIdx }, { differentiable: true });
  expectRank(op, 'x', x, ['B', 'L', 'C']);
  expectFloat(op, 'x', x);
  const [batch, length, channels] = x.shape as [number, number, number];
  if (length < 1 || channels < 1 || batch < 1) throw new Error(`${op}: x ${formatShape(x.shape)} must not be empty`);
  const taps = checkWeights(op, weight, bias, channels);
  if (initialState) {
    expectShape(op, 'initialState', initialState, [batch, channels, taps]);
    expectFloat(op, 'initialState', initialState);
  }
  if (seqIdx) {
    expectShape(op, 'seqIdx', seqIdx, [batch, length]);
    if (seqIdx.dtype !== 'i32') throw new Error(`${op}: seqIdx must be i32, got ${seqIdx.dtype}`);
  }
  const silu = checkActivation(op, options.activation === undefined ? 'silu' : options.activation);

  const dense = new DenseInputs();
  const args = {
    x: dense.of(x),
    weight: dense.of(weight),
    bias: dense.maybe(bias),
    initialState: dense.maybe(initialState),
    seqIdx: dense.maybe(seqIdx),
    silu,
  };
  const y = empty([batch, length, channels], { device });
  const finalState = empty([batch, channels, taps], { device });
  try {
    if (device.kind === 'cpu') {
      if (!device.native || !causalConv1dNative(device.native, args, y, finalState)) causalConv1dCpu(args, y, finalState);
    } else causalConv1dGpu(device, { ...args, y, finalState });
    const inputs = [x, weight, ...(bias ? [bias] : []), ...(initialState ? [initialState] : [])];
    const saved = [args.x, args.weight, args.bias, args.initialState, args.seqIdx].filter((t): t is Tensor => t !== null);
    record(op, y, inputs, (g, kept) => causalConv1dGrads(restore(args, kept), g), saved);
  } finally {
    dense.dispose();
  }
  return { y, finalState };
}

/** The saved dense inputs back in their places (the saved list skips the absent ones, in order). */
function restore(args: CausalConv1dCpuArgs, kept: readonly Tensor[]): CausalConv1dCpuArgs {
  let i = 0;
  const next = (present: boolean): Tensor | null => (present ? kept[i++]! : null);
  return {
    x: next(true)!,
    weight: next(true)!,
    bias: next(args.bias !== null),
    initialState: next(args.initialState !== null),
    seqIdx: next(args.seqIdx !== null),
    silu: args.silu,
  };
}

/** Gradients of y for [x, weight, bias?, initialState?] (the recorded inputs, in order). */
function causalConv1dGrads(a: CausalConv1dCpuArgs, grad: Tensor): Tensor[] {
  const device = a.x.device;
  const [batch, length, channels] = a.x.shape as [number, number, number];
  const taps = a.weight.shape[1]!;
  const dy = contiguous(grad);
  const out = {
    dx: empty([batch, length, channels], { device }),
    dWeight: empty([channels, taps], { device }),
    dBias: a.bias ? empty([channels], { device }) : null,
    dInitialState: a.initialState ? empty([batch, channels, taps], { device }) : null,
  };
  if (device.kind === 'cpu') {
    if (!device.native || !causalConv1dBackwardNative(device.native, a, dy, out)) causalConv1dBackwardCpu(a, dy, out);
  } else causalConv1dBackwardGpu(device, { ...a, dy, ...out });
  return [out.dx, out.dWeight, ...(out.dBias ? [out.dBias] : []), ...(out.dInitialState ? [out.dInitialState] : [])];
}
