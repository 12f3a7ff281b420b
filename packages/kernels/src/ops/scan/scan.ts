/**
 * The Mamba2 SSM scan (spec §2.3.4–2.3.5, §3.3, §4): `ssdScan` over a whole sequence (prefill,
 * training forward). One decode step is `mambaDecodeStep` (mamba-decode.ts).
 *
 *   S_t = exp(dt_t·A_h)·S_{t-1} + dt_t · x_t ⊗ B_t[g(h)],   y_t = S_t · C_t[g(h)] + D_h · x_t
 *
 * Head h reads group g(h) = floor(h / (H/G)) of B and C. dt arrives already softplus'd and clamped
 * (≥ 0) and A = −exp(A_log) (< 0), so every decay is in (0, 1]. With seqIdx, a document is a
 * maximal run of equal ids and the state restarts from zero at each new one (only the first
 * document continues the initial state); finalState is the state of the last document.
 *
 * On WebGPU the scan is the chunked SSD form (`scan.wgsl.ts`); on the CPU it is the sequential
 * reference. `ssdScan` is differentiable through y in x, dt, A, B, C, D and initialState (backward:
 * `scan-backward.wgsl.ts`, reference `ssdScanBackwardCpu`); it saves only its inputs, and nothing
 * under noGrad. `finalState` is not differentiable: it only feeds the decode cache, and a gradient
 * reaching it is dropped.
 */
import { record } from '../../autograd/graph';
import { empty } from '../../creation';
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { DenseInputs, checkInputs, expectFloat, expectRank, expectShape } from '../op-args';
import { contiguous } from '../layout/layout';
import { ssdScanBackwardGpu } from './scan-backward.wgsl';
import { ssdScanBackwardCpu, ssdScanCpu, type SsdScanOperands } from './scan.cpu';
import { ssdScanBackwardNative, ssdScanNative } from './scan.native';
import { ssdScanGpu } from './scan.wgsl';

export interface SsdScanOptions {
  /** Chunk length Q of the chunked form (the config's chunk_size; any positive integer). */
  chunkSize: number;
  /** [H] skip coefficient. */
  D?: Tensor | null;
  /** The state to continue from, [B, H, P, N] (chunked prefill, continuing after a cache). */
  initialState?: Tensor | null;
  /** i32 [B, L]: document ids of packed rows. */
  seqIdx?: Tensor | null;
}

export interface SsdScanResult {
  /** [B, L, H, P] f32. */
  y: Tensor;
  /** [B, H, P, N] f32: the state after the last position (the decode cache). */
  finalState: Tensor;
}

function checkHeads(op: string, A: Tensor, D: Tensor | null | undefined, heads: number, groups: number): void {
  expectShape(op, 'A', A, [heads]);
  expectFloat(op, 'A', A);
  if (D) {
    expectShape(op, 'D', D, [heads]);
    expectFloat(op, 'D', D);
  }
  if (groups < 1 || heads % groups !== 0) throw new Error(`${op}: H=${heads} heads must be a multiple of G=${groups} groups`);
}

/**
 * Prefill scan: x [B, L, H, P], dt [B, L, H], A [H], B and C [B, L, G, N] (float inputs may be
 * f32 or bf16; math in f32 on the GPU, f64 in the CPU reference).
 */
export function ssdScan(x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, options: SsdScanOptions): SsdScanResult {
  const op = 'ssdScan';
  const { D, initialState, seqIdx, chunkSize } = options;
  const device = checkInputs(op, { x, dt, A, B, C, D, initialState, seqIdx }, { differentiable: true });
  expectRank(op, 'x', x, ['B', 'L', 'H', 'P']);
  const [batch, length, heads, headDim] = x.shape as [number, number, number, number];
  if (x.size === 0) throw new Error(`${op}: x ${formatShape(x.shape)} must not be empty`);
  expectRank(op, 'B', B, ['B', 'L', 'G', 'N']);
  const [, , groups, stateDim] = B.shape as [number, number, number, number];
  expectShape(op, 'B', B, [batch, length, groups, stateDim]);
  if (stateDim < 1) throw new Error(`${op}: B ${formatShape(B.shape)} has an empty state dimension`);
  expectShape(op, 'C', C, [batch, length, groups, stateDim]);
  expectShape(op, 'dt', dt, [batch, length, heads]);
  checkHeads(op, A, D, heads, groups);
  for (const [what, t] of [
    ['x', x],
    ['dt', dt],
    ['B', B],
    ['C', C],
  ] as const)
    expectFloat(op, what, t);
  if (initialState) {
    expectShape(op, 'initialState', initialState, [batch, heads, headDim, stateDim]);
    expectFloat(op, 'initialState', initialState);
  }
  if (seqIdx) {
    expectShape(op, 'seqIdx', seqIdx, [batch, length]);
    if (seqIdx.dtype !== 'i32') throw new Error(`${op}: seqIdx must be i32, got ${seqIdx.dtype}`);
  }
  if (!Number.isInteger(chunkSize) || chunkSize < 1) throw new Error(`${op}: chunkSize must be a positive integer, got ${chunkSize}`);

  const dense = new DenseInputs();
  const args = {
    x: dense.of(x),
    dt: dense.of(dt),
    A: dense.of(A),
    B: dense.of(B),
    C: dense.of(C),
    D: dense.maybe(D),
    initialState: dense.maybe(initialState),
    seqIdx: dense.maybe(seqIdx),
  };
  const y = empty([batch, length, heads, headDim], { device });
  const finalState = empty([batch, heads, headDim, stateDim], { device });
  try {
    if (device.kind === 'cpu') {
      if (!device.native || !ssdScanNative(device.native, args, y, finalState)) ssdScanCpu(args, y, finalState);
    } else ssdScanGpu(device, { ...args, chunkSize, y, finalState });
    const inputs = [x, dt, A, B, C, ...(D ? [D] : []), ...(initialState ? [initialState] : [])];
    const saved = [args.x, args.dt, args.A, args.B, args.C, args.D, args.initialState, args.seqIdx].filter((t): t is Tensor => t !== null);
    record(op, y, inputs, (g, kept) => ssdScanGrads(restore(args, kept), g), saved);
  } finally {
    dense.dispose();
  }
  return { y, finalState };
}

/** The saved dense inputs back in their places (the saved list skips the absent ones, in order). */
function restore(args: SsdScanOperands, kept: readonly Tensor[]): SsdScanOperands {
  let i = 0;
  const next = (present: boolean): Tensor | null => (present ? kept[i++]! : null);
  const [x, dt, A, B, C] = [next(true)!, next(true)!, next(true)!, next(true)!, next(true)!];
  return { x, dt, A, B, C, D: next(args.D !== null), initialState: next(args.initialState !== null), seqIdx: next(args.seqIdx !== null) };
}

/** Gradients of y for [x, dt, A, B, C, D?, initialState?] (the recorded inputs, in order), all f32. */
function ssdScanGrads(a: SsdScanOperands, grad: Tensor): Tensor[] {
  const device = a.x.device;
  const f32 = (t: Tensor) => empty(t.shape, { device });
  const dy = contiguous(grad);
  const out = {
    dx: f32(a.x),
    ddt: f32(a.dt),
    dA: f32(a.A),
    dB: f32(a.B),
    dC: f32(a.C),
    dD: a.D ? f32(a.D) : null,
    dInitialState: a.initialState ? f32(a.initialState) : null,
  };
  if (device.kind === 'cpu') {
    if (!device.native || !ssdScanBackwardNative(device.native, a, dy, out)) ssdScanBackwardCpu(a, dy, out);
  } else ssdScanBackwardGpu(device, { ...a, dy, ...out });
  return [out.dx, out.ddt, out.dA, out.dB, out.dC, ...(out.dD ? [out.dD] : []), ...(out.dInitialState ? [out.dInitialState] : [])];
}
