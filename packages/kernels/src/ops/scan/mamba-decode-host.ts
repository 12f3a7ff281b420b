/**
 * The host path of `mambaDecodeStep` (cpu and cpu:native): its conv update and selective state
 * update as two steps, each the native kernel where it applies and the TS reference otherwise.
 * WebGPU runs the whole decode as one fused kernel (mamba-decode.wgsl.ts), checked against these.
 * Internal to the decode: `mambaDecodeStep` validates the tensors before calling them.
 */
import type { CpuDevice } from '../../device/cpu-device';
import { empty } from '../../creation';
import type { Tensor } from '../../tensor';
import type { ConvActivation } from '../conv/conv';
import { causalConv1dUpdateCpu } from '../conv/conv.cpu';
import { causalConv1dUpdateNative } from '../conv/conv.native';
import { DenseInputs } from '../op-args';
import { selectiveStateUpdateCpu } from './scan.cpu';
import { stateUpdateNative } from './scan.native';

/**
 * How a decode step turns the raw time step into dt (mamba_ssm's `dt_bias` / `dt_softplus`, plus
 * the `time_step_limit` clamp): dt = clamp(softplus(dt_raw + dtBias), lo, hi), each part optional,
 * applied in that order, with the same f32 math as the elementwise ops a prefill uses.
 */
export interface StateUpdateOptions {
  /** [H] added to the raw time step. */
  dtBias?: Tensor | null;
  /** Apply softplus (threshold 20) after the bias (default false: dt arrives ready). */
  dtSoftplus?: boolean;
  /** Clamp range `[lo, hi]` after softplus (null: no clamp). */
  dtLimit?: readonly [number, number] | null;
  /** A is given as A_log: A = −exp(A_log) (default false). */
  aIsLog?: boolean;
}

function hostDevice(op: string, t: Tensor): CpuDevice {
  const device = t.device;
  if (device.kind !== 'cpu') throw new Error(`${op} runs on host devices; on WebGPU the Mamba decode is one fused kernel (mambaDecodeStep)`);
  return device;
}

/**
 * One conv decode step: rolls `state` [B, C, K] (f32, dense, updated in place) left by one, puts
 * x [B, C] in column K-1, and returns the conv output for this token [B, C] (f32).
 */
export function causalConv1dUpdate(state: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, options: { activation?: ConvActivation } = {}): Tensor {
  const device = hostDevice('causalConv1dUpdate', state);
  const silu = (options.activation === undefined ? 'silu' : options.activation) === 'silu';
  const [batch, channels] = state.shape as [number, number, number];
  const dense = new DenseInputs();
  const [dx, dw, db] = [dense.of(x), dense.of(weight), dense.maybe(bias)];
  const out = empty([batch, channels], { device });
  try {
    if (!device.native || !causalConv1dUpdateNative(device.native, state, dx, dw, db, silu, out)) causalConv1dUpdateCpu(state, dx, dw, db, silu, out);
  } finally {
    dense.dispose();
  }
  return out;
}

/**
 * One SSM decode step on `state` [B, H, P, N] (dense f32, updated in place) with x [B, H, P],
 * dt [B, H], A [H], B and C [B, G, N] and optional D [H]. Returns y [B, H, P] (f32). With
 * `options`, dt is the raw time step and is transformed (see {@link StateUpdateOptions}), and A
 * may be given as A_log.
 */
export function selectiveStateUpdate(
  state: Tensor,
  x: Tensor,
  dt: Tensor,
  A: Tensor,
  B: Tensor,
  C: Tensor,
  D?: Tensor | null,
  options: StateUpdateOptions = {},
): Tensor {
  const device = hostDevice('selectiveStateUpdate', state);
  const [batch, heads, headDim] = state.shape as [number, number, number, number];
  const transform = { softplus: options.dtSoftplus ?? false, limit: options.dtLimit ?? null, aIsLog: options.aIsLog ?? false };
  const dense = new DenseInputs();
  const args = {
    state,
    x: dense.of(x),
    dt: dense.of(dt),
    A: dense.of(A),
    B: dense.of(B),
    C: dense.of(C),
    D: dense.maybe(D),
    dtBias: dense.maybe(options.dtBias),
  };
  const y = empty([batch, heads, headDim], { device });
  try {
    if (!device.native || !stateUpdateNative(device.native, args, transform, y)) selectiveStateUpdateCpu(args, transform, y);
  } finally {
    dense.dispose();
  }
  return y;
}
