/** Native Mamba2 scan (scan.c, its backward scan_backward.c) and decode state update on dense host operands. */
import { hostBuffer as buf, type Buffers, type NativeKernels, type ScanInputs } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { SsdScanGrads, SsdScanOperands, StateUpdateArgs } from './scan.cpu';

const isF32 = (t: Tensor | null) => !t || t.dtype === 'f32';
const floatCode = (t: Tensor | null) => (t ? (nativeDTypeCode(t.dtype) ?? 0) : 0);

/** The scan's sizes, offsets and flags as nt_ssd_scan* read them; `outOffsets` are y's / dy's and the final state's. */
function scanParams(a: SsdScanOperands, outOffsets: [number, number]): Float64Array {
  const [batch, length, heads, headDim] = a.x.shape as [number, number, number, number];
  const [, , groups, stateDim] = a.B.shape as [number, number, number, number];
  return new Float64Array([
    batch,
    length,
    heads,
    headDim,
    groups,
    stateDim,
    a.x.offset,
    a.dt.offset,
    a.A.offset,
    a.B.offset,
    a.C.offset,
    a.D?.offset ?? 0,
    a.initialState?.offset ?? 0,
    a.seqIdx?.offset ?? 0,
    ...outOffsets,
    floatCode(a.A),
    floatCode(a.D),
    a.D ? 1 : 0,
    a.initialState ? 1 : 0,
    a.seqIdx ? 1 : 0,
  ]);
}

/** The scan's input buffers in nt_ssd_scan*'s argument order: x, dt, A, B, C, D, initial state, seq ids. */
const scanInputs = (a: SsdScanOperands): ScanInputs => [buf(a.x), buf(a.dt), buf(a.A), buf(a.B), buf(a.C), buf(a.D), buf(a.initialState), buf(a.seqIdx)];

/** Writes y and finalState like ssdScanCpu; false when an activation operand is not f32. */
export function ssdScanNative(lib: NativeKernels, a: SsdScanOperands, y: Tensor, finalState: Tensor): boolean {
  if (![a.x, a.dt, a.B, a.C, a.initialState].every(isF32)) return false;
  const params = scanParams(a, [y.offset, finalState.offset]);
  const rc = lib.symbols.nt_ssd_scan(params, ...scanInputs(a), buf(y), buf(finalState));
  if (rc !== 0) throw new Error('ssdScan: the native kernel could not allocate its chunk buffers');
  return true;
}

/** Writes the gradients like ssdScanBackwardCpu (outputs dense f32 from offset 0); false when it does not apply. */
export function ssdScanBackwardNative(lib: NativeKernels, a: SsdScanOperands, dy: Tensor, out: SsdScanGrads): boolean {
  if (![a.x, a.dt, a.B, a.C, a.initialState, dy].every(isF32)) return false;
  const grads = [out.dx, out.ddt, out.dA, out.dB, out.dC, out.dD, out.dInitialState];
  if (grads.some((t) => t && t.offset !== 0)) return false;
  const rc = lib.symbols.nt_ssd_scan_backward(
    scanParams(a, [dy.offset, 0]),
    ...scanInputs(a),
    buf(dy),
    ...(grads.map(buf) as [Buffers, Buffers, Buffers, Buffers, Buffers, Buffers, Buffers]),
  );
  if (rc !== 0) throw new Error('ssdScan backward: the native kernel could not allocate its state buffers');
  return true;
}

/** One decode step like selectiveStateUpdateCpu; false when an activation operand is not f32. */
export function stateUpdateNative(
  lib: NativeKernels,
  a: StateUpdateArgs,
  transform: { softplus: boolean; limit: readonly [number, number] | null; aIsLog: boolean },
  y: Tensor,
): boolean {
  if (![a.x, a.dt, a.B, a.C].every(isF32)) return false;
  const [batch, heads, headDim, stateDim] = a.state.shape as [number, number, number, number];
  const groups = a.B.shape[1]!;
  const limit = transform.limit;
  const params = new Float64Array([
    batch,
    heads,
    headDim,
    groups,
    stateDim,
    a.state.offset,
    a.x.offset,
    a.dt.offset,
    a.A.offset,
    a.B.offset,
    a.C.offset,
    a.D?.offset ?? 0,
    a.dtBias?.offset ?? 0,
    y.offset,
    floatCode(a.A),
    floatCode(a.D),
    floatCode(a.dtBias),
    a.D ? 1 : 0,
    a.dtBias ? 1 : 0,
    transform.softplus ? 1 : 0,
    limit ? 1 : 0,
    limit?.[0] ?? 0,
    limit?.[1] ?? 0,
    transform.aIsLog ? 1 : 0,
  ]);
  lib.symbols.nt_state_update(params, buf(a.state), buf(a.x), buf(a.dt), buf(a.A), buf(a.B), buf(a.C), buf(a.D), buf(a.dtBias), buf(y));
  return true;
}
