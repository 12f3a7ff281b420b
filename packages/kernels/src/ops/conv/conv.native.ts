/** Native causal conv1d and its decode update (packages/kernels/native/conv.c) on dense host operands. */
import { hostBuffer as buf, type NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { CausalConv1dCpuArgs, CausalConv1dGrads } from './conv.cpu';

const floatCode = (t: Tensor | null) => (t ? (nativeDTypeCode(t.dtype) ?? 0) : 0);

function convParams(a: CausalConv1dCpuArgs, yOffset: number, finalOffset: number): Float64Array {
  const [batch, length, channels] = a.x.shape as [number, number, number];
  return new Float64Array([
    batch,
    length,
    channels,
    a.weight.shape[1]!,
    a.x.offset,
    a.weight.offset,
    a.bias?.offset ?? 0,
    a.initialState?.offset ?? 0,
    a.seqIdx?.offset ?? 0,
    yOffset,
    finalOffset,
    floatCode(a.weight),
    floatCode(a.bias),
    a.bias ? 1 : 0,
    a.initialState ? 1 : 0,
    a.seqIdx ? 1 : 0,
    a.silu ? 1 : 0,
  ]);
}

/** Same contract as causalConv1dCpu; false when x or the initial state is not f32. */
export function causalConv1dNative(lib: NativeKernels, a: CausalConv1dCpuArgs, y: Tensor, finalState: Tensor): boolean {
  if (a.x.dtype !== 'f32' || (a.initialState && a.initialState.dtype !== 'f32')) return false;
  const rc = lib.symbols.nt_causal_conv(
    convParams(a, y.offset, finalState.offset),
    buf(a.x),
    buf(a.weight),
    buf(a.bias),
    buf(a.initialState),
    buf(a.seqIdx),
    buf(y),
    buf(finalState),
  );
  if (rc !== 0) throw new Error(`causalConv1d: native kernel failed (out of memory?) for x ${a.x}`);
  return true;
}

/** Same contract as causalConv1dBackwardCpu (outputs dense f32 from offset 0); false when it does not apply. */
export function causalConv1dBackwardNative(lib: NativeKernels, a: CausalConv1dCpuArgs, dy: Tensor, out: CausalConv1dGrads): boolean {
  if (a.x.dtype !== 'f32' || dy.dtype !== 'f32' || (a.initialState && a.initialState.dtype !== 'f32')) return false;
  if ([out.dx, out.dWeight, out.dBias, out.dInitialState].some((t) => t && t.offset !== 0)) return false;
  lib.symbols.nt_causal_conv_backward(
    convParams(a, dy.offset, 0),
    buf(a.x),
    buf(a.weight),
    buf(a.bias),
    buf(a.initialState),
    buf(a.seqIdx),
    buf(dy),
    buf(out.dx),
    buf(out.dWeight),
    buf(out.dBias),
    buf(out.dInitialState),
  );
  return true;
}

/** Same contract as causalConv1dUpdateCpu (state dense f32, updated in place). */
export function causalConv1dUpdateNative(
  lib: NativeKernels,
  state: Tensor,
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null,
  silu: boolean,
  out: Tensor,
): boolean {
  const [batch, channels, taps] = state.shape as [number, number, number];
  const params = new Float64Array([
    batch,
    channels,
    taps,
    state.offset,
    x.offset,
    weight.offset,
    bias?.offset ?? 0,
    out.offset,
    floatCode(x),
    floatCode(weight),
    floatCode(bias),
    bias ? 1 : 0,
    silu ? 1 : 0,
  ]);
  lib.symbols.nt_causal_conv_update(params, buf(state), buf(x), buf(weight), buf(bias), buf(out));
  return true;
}
