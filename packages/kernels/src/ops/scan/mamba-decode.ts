/**
 * `mambaDecodeStep`: the core of a Mamba2 mixer's decode step (spec §3.3) after in_proj, in one
 * kernel on WebGPU — split of z | x | B | C | dt, the conv update + SiLU over x | B | C, dt bias,
 * softplus and clamp, A = −exp(A_log), the selective state update with the D skip, the gate
 * y · silu(z) and the grouped RMSNorm. Separately these are five or more dispatches per layer and
 * token, each costing more on llvmpipe than its math.
 *
 * The norm groups must be whole B/C groups (Nemotron-H: both are n_groups): one workgroup owns a
 * (row, group) — its B and C channels, its heads' x channels and output channels — so nothing is
 * shared between workgroups. The host path composes the separate steps (mamba-decode-host.ts, then
 * the grouped gated RMSNorm op), which is what the kernel is checked against. Forward only.
 */
import { empty } from '../../creation';
import { tidy } from '../../runtime/scope';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { narrow, reshape } from '../layout/layout';
import { groupedGatedRmsNorm } from '../norm/norm';
import { checkInputs, expectFloat, expectRank, expectShape } from '../op-args';
import { causalConv1dUpdate, selectiveStateUpdate } from './mamba-decode-host';
import { mambaDecodeGpu } from './mamba-decode.wgsl';

export interface MambaDecodeOptions {
  /** [conv_dim, K] depthwise conv weight and [conv_dim] bias (or null). */
  convWeight: Tensor;
  convBias: Tensor | null;
  /** [H] each. */
  dtBias: Tensor;
  aLog: Tensor;
  D: Tensor | null;
  /** [d_inner] gated RMSNorm weight. */
  normWeight: Tensor;
  /** B/C groups, also the norm's groups. */
  groups: number;
  eps: number;
  /** dt clamp after softplus, or null. */
  dtLimit: readonly [number, number] | null;
}

/** The shapes of one call, derived from the states. */
export interface MambaDecodeDims {
  batch: number;
  heads: number;
  headDim: number;
  groups: number;
  stateDim: number;
  taps: number;
  dInner: number;
  convDim: number;
}

/**
 * zxbcdt [B, d_inner + conv_dim + H] (in_proj's output: z | x | B | C | dt) → f32 [B, d_inner], the
 * gated, normalised output for out_proj. Updates `convState` [B, conv_dim, K] and `ssmState`
 * [B, H, P, N] (dense f32) in place.
 */
export function mambaDecodeStep(zxbcdt: Tensor, convState: Tensor, ssmState: Tensor, o: MambaDecodeOptions): Tensor {
  const op = 'mambaDecodeStep';
  const device = checkInputs(
    op,
    { zxbcdt, convState, ssmState, convWeight: o.convWeight, convBias: o.convBias, dtBias: o.dtBias, aLog: o.aLog, D: o.D, normWeight: o.normWeight },
    { differentiable: false },
  );
  expectRank(op, 'ssmState', ssmState, ['B', 'H', 'P', 'N']);
  const [batch, heads, headDim, stateDim] = ssmState.shape as [number, number, number, number];
  const groups = o.groups;
  if (!Number.isInteger(groups) || groups < 1 || heads % groups !== 0) throw new Error(`${op}: H=${heads} heads must be a multiple of ${groups} groups`);
  const dInner = heads * headDim;
  const convDim = dInner + 2 * groups * stateDim;
  expectRank(op, 'convState', convState, ['B', 'C', 'K']);
  const taps = convState.shape[2]!;
  expectShape(op, 'convState', convState, [batch, convDim, taps]);
  expectShape(op, 'zxbcdt', zxbcdt, [batch, dInner + convDim + heads]);
  expectShape(op, 'convWeight', o.convWeight, [convDim, taps]);
  if (o.convBias) expectShape(op, 'convBias', o.convBias, [convDim]);
  for (const [name, t] of [
    ['dtBias', o.dtBias],
    ['aLog', o.aLog],
    ['D', o.D],
  ] as const)
    if (t) expectShape(op, name, t, [heads]);
  expectShape(op, 'normWeight', o.normWeight, [dInner]);
  for (const [name, t] of Object.entries({
    zxbcdt,
    convWeight: o.convWeight,
    convBias: o.convBias,
    dtBias: o.dtBias,
    aLog: o.aLog,
    D: o.D,
    normWeight: o.normWeight,
  }))
    if (t) expectFloat(op, name, t);
  for (const [name, t] of [
    ['convState', convState],
    ['ssmState', ssmState],
  ] as const) {
    if (t.dtype !== 'f32' || !t.isContiguous)
      throw new Error(`${op}: ${name} is updated in place and must be a dense f32 tensor, got ${t.dtype} ${formatShape(t.shape)}`);
  }
  if (!Number.isFinite(o.eps) || o.eps < 0) throw new Error(`${op}: eps must be a finite number ≥ 0, got ${o.eps}`);
  if (o.dtLimit && !(o.dtLimit[0] <= o.dtLimit[1])) throw new Error(`${op}: dtLimit [${o.dtLimit[0]}, ${o.dtLimit[1]}] is not a range`);
  const dims: MambaDecodeDims = { batch, heads, headDim, groups, stateDim, taps, dInner, convDim };
  if (device.kind === 'webgpu') {
    const out = empty([batch, dInner], { device });
    mambaDecodeGpu(device, { zxbcdt, convState, ssmState, options: o, dims, out });
    return out;
  }
  // The host path: the separate steps, in the order the kernel fuses them.
  return tidy(() => {
    const xBC = causalConv1dUpdate(convState, narrow(zxbcdt, 1, dInner, convDim), o.convWeight, o.convBias, { activation: 'silu' });
    const part = (start: number, size: number, shape: number[]) => reshape(narrow(xBC, 1, start, size), shape);
    const y = selectiveStateUpdate(
      ssmState,
      part(0, dInner, [batch, heads, headDim]),
      narrow(zxbcdt, 1, dInner + convDim, heads),
      o.aLog,
      part(dInner, groups * stateDim, [batch, groups, stateDim]),
      part(dInner + groups * stateDim, groups * stateDim, [batch, groups, stateDim]),
      o.D,
      { dtBias: o.dtBias, dtSoftplus: true, dtLimit: o.dtLimit, aIsLog: true },
    );
    return groupedGatedRmsNorm(reshape(y, [batch, dInner]), narrow(zxbcdt, 1, 0, dInner), o.normWeight, { groups, eps: o.eps });
  });
}
