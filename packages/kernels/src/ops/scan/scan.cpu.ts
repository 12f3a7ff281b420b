/**
 * CPU reference for the Mamba2 SSM scan: the plain sequential recurrence of spec §2.3.4 in f64, one
 * token at a time (no chunking), so it checks the chunked GPU form rather than mirroring it.
 *
 *   S_t = exp(dt_t·A_h)·S_{t-1} + dt_t · x_t ⊗ B_t[g(h)],   y_t = S_t · C_t[g(h)] + D_h · x_t
 *
 * With seqIdx the state restarts from zero wherever the id changes (spec §4).
 */
import { cpuView, type Tensor } from '../../tensor';
import { valuesF64 as host } from '../cpu-values';

/** The scan's operands, as every backend's forward and backward take them. */
export interface SsdScanOperands {
  x: Tensor; // [B, L, H, P]
  dt: Tensor; // [B, L, H]
  A: Tensor; // [H]
  B: Tensor; // [B, L, G, N]
  C: Tensor; // [B, L, G, N]
  D: Tensor | null; // [H]
  initialState: Tensor | null; // [B, H, P, N]
  seqIdx: Tensor | null; // i32 [B, L]
}

/** The operands' sizes and their values in f64 (null for absent optional ones). */
function hostOperands(a: SsdScanOperands) {
  const [batch, length, heads, headDim] = a.x.shape as [number, number, number, number];
  const [, , groups, stateDim] = a.B.shape as [number, number, number, number];
  return {
    batch,
    length,
    heads,
    headDim,
    groups,
    stateDim,
    headsPerGroup: heads / groups,
    x: host(a.x),
    dt: host(a.dt),
    A: host(a.A),
    Bm: host(a.B),
    Cm: host(a.C),
    D: a.D ? host(a.D) : null,
    init: a.initialState ? host(a.initialState) : null,
    seq: a.seqIdx ? host(a.seqIdx) : null,
  };
}

/** Writes y [B, L, H, P] and finalState [B, H, P, N] (dense f32 on the CPU). */
export function ssdScanCpu(a: SsdScanOperands, y: Tensor, finalState: Tensor): void {
  const { batch, length, heads, headDim, groups, stateDim, headsPerGroup, x, dt, A, Bm, Cm, D, init, seq } = hostOperands(a);
  const out = cpuView(y) as Float32Array;
  const fin = cpuView(finalState) as Float32Array;
  const stateSize = heads * headDim * stateDim;
  const S = new Float64Array(stateSize);
  for (let b = 0; b < batch; b++) {
    if (init) S.set(init.subarray(b * stateSize, (b + 1) * stateSize));
    else S.fill(0);
    for (let t = 0; t < length; t++) {
      if (seq && t > 0 && seq[b * length + t] !== seq[b * length + t - 1]) S.fill(0);
      for (let h = 0; h < heads; h++) {
        const g = Math.floor(h / headsPerGroup);
        const step = dt[(b * length + t) * heads + h]!;
        const decay = Math.exp(step * A[h]!);
        const bc = ((b * length + t) * groups + g) * stateDim;
        for (let p = 0; p < headDim; p++) {
          const xi = ((b * length + t) * heads + h) * headDim + p;
          const xv = x[xi]!;
          const row = (h * headDim + p) * stateDim;
          let acc = 0;
          for (let n = 0; n < stateDim; n++) {
            const s = decay * S[row + n]! + step * xv * Bm[bc + n]!;
            S[row + n] = s;
            acc += s * Cm[bc + n]!;
          }
          out[y.offset + xi] = acc + (D ? D[h]! * xv : 0);
        }
      }
    }
    for (let i = 0; i < stateSize; i++) fin[finalState.offset + b * stateSize + i] = S[i]!;
  }
}

/** Gradients of y (not of finalState) written by {@link ssdScanBackwardCpu}; null where the input is absent. */
export interface SsdScanGrads {
  dx: Tensor; // [B, L, H, P]
  ddt: Tensor; // [B, L, H]
  dA: Tensor; // [H]
  dB: Tensor; // [B, L, G, N]
  dC: Tensor; // [B, L, G, N]
  dD: Tensor | null; // [H]
  dInitialState: Tensor | null; // [B, H, P, N]
}

/**
 * Backward of the recurrence above, in f64: the forward states are kept for the whole row, then the
 * state gradient runs backwards, dS_t = dy_t ⊗ C_t + exp(dt_{t+1}·A)·dS_{t+1} (zero across a
 * document start), and each input collects its terms of S_t = exp(dt_t·A)·S_{t−1} + dt_t·x_t ⊗ B_t.
 */
export function ssdScanBackwardCpu(a: SsdScanOperands, dy: Tensor, out: SsdScanGrads): void {
  const { batch, length, heads, headDim, groups, stateDim, headsPerGroup, x, dt, A, Bm, Cm, D, init, seq } = hostOperands(a);
  const g = host(dy);
  const dx = new Float64Array(x.length);
  const ddt = new Float64Array(dt.length);
  const dA = new Float64Array(heads);
  const dB = new Float64Array(Bm.length);
  const dC = new Float64Array(Cm.length);
  const dD = new Float64Array(heads);
  const dinit = new Float64Array(batch * heads * headDim * stateDim);
  const stateSize = heads * headDim * stateDim;
  // Whether position t continues the document of t − 1 (t = 0 continues the initial state).
  const continues = (b: number, t: number): boolean => t === 0 || !seq || seq[b * length + t] === seq[b * length + t - 1];
  for (let b = 0; b < batch; b++) {
    // states[t + 1] is S_t; states[0] the state before the row.
    const states = Array.from({ length: length + 1 }, () => new Float64Array(stateSize));
    if (init) states[0]!.set(init.subarray(b * stateSize, (b + 1) * stateSize));
    for (let t = 0; t < length; t++) {
      const prev = continues(b, t) ? states[t]! : new Float64Array(stateSize);
      for (let h = 0; h < heads; h++) {
        const bc = ((b * length + t) * groups + Math.floor(h / headsPerGroup)) * stateDim;
        const step = dt[(b * length + t) * heads + h]!;
        const decay = Math.exp(step * A[h]!);
        for (let p = 0; p < headDim; p++) {
          const xv = x[((b * length + t) * heads + h) * headDim + p]!;
          for (let n = 0; n < stateDim; n++) {
            const i = (h * headDim + p) * stateDim + n;
            states[t + 1]![i] = decay * prev[i]! + step * xv * Bm[bc + n]!;
          }
        }
      }
    }
    let dS = new Float64Array(stateSize);
    for (let t = length - 1; t >= 0; t--) {
      const next = dS;
      dS = new Float64Array(stateSize);
      const prev = continues(b, t) ? states[t]! : new Float64Array(stateSize);
      for (let h = 0; h < heads; h++) {
        const bc = ((b * length + t) * groups + Math.floor(h / headsPerGroup)) * stateDim;
        const ti = (b * length + t) * heads + h;
        const step = dt[ti]!;
        const decay = Math.exp(step * A[h]!);
        // exp(dt_{t+1}·A) carries dS_{t+1} back unless t + 1 starts a new document.
        const carry = t + 1 < length && continues(b, t + 1) ? Math.exp(dt[ti + heads]! * A[h]!) : 0;
        for (let p = 0; p < headDim; p++) {
          const xi = ti * headDim + p;
          const xv = x[xi]!;
          const gy = g[xi]!;
          if (D) {
            dx[xi] += D[h]! * gy;
            dD[h] += gy * xv;
          }
          for (let n = 0; n < stateDim; n++) {
            const i = (h * headDim + p) * stateDim + n;
            const ds = gy * Cm[bc + n]! + carry * next[i]!;
            dS[i] = ds;
            dC[bc + n] += gy * states[t + 1]![i]!;
            dB[bc + n] += ds * step * xv;
            dx[xi] += ds * step * Bm[bc + n]!;
            ddt[ti] += ds * (xv * Bm[bc + n]! + A[h]! * decay * prev[i]!);
            dA[h] += ds * step * decay * prev[i]!;
            if (t === 0) dinit[b * stateSize + i] = decay * ds;
          }
        }
      }
    }
  }
  const write = (t: Tensor | null, v: Float64Array) => {
    if (t) (cpuView(t) as Float32Array).set(v, t.offset);
  };
  write(out.dx, dx);
  write(out.ddt, ddt);
  write(out.dA, dA);
  write(out.dB, dB);
  write(out.dC, dC);
  write(out.dD, dD);
  write(out.dInitialState, dinit);
}

/** The tensors of a decode step (see `selectiveStateUpdate`); dtBias is null when not given. */
export interface StateUpdateArgs {
  state: Tensor;
  x: Tensor;
  dt: Tensor;
  A: Tensor;
  B: Tensor;
  C: Tensor;
  D: Tensor | null;
  dtBias: Tensor | null;
}

/** f32 softplus with PyTorch's threshold, in f64 then rounded like the elementwise reference. */
function softplus(v: number): number {
  return v > 20 ? v : Math.log1p(Math.exp(v));
}

/**
 * One decode step (spec §3.3) on `state` [B, H, P, N] (f32, updated in place): returns y [B, H, P]
 * into `y`, with x [B, H, P], dt [B, H] (transformed: bias, softplus, clamp), B and C [B, G, N].
 */
export function selectiveStateUpdateCpu(
  a: StateUpdateArgs,
  transform: { softplus: boolean; limit: readonly [number, number] | null; aIsLog: boolean },
  y: Tensor,
): void {
  const { state } = a;
  const [batch, heads, headDim, stateDim] = state.shape as [number, number, number, number];
  const groups = a.B.shape[1]!;
  const headsPerGroup = heads / groups;
  const xs = host(a.x);
  const dts = host(a.dt);
  const As = host(a.A);
  const Bs = host(a.B);
  const Cs = host(a.C);
  const Ds = a.D ? host(a.D) : null;
  const bias = a.dtBias ? host(a.dtBias) : null;
  const st = cpuView(state) as Float32Array;
  const out = cpuView(y) as Float32Array;
  // dt as the prefill's elementwise ops compute it: each step rounded to f32.
  const stepOf = (raw: number, h: number): number => {
    let v = bias ? Math.fround(raw + bias[h]!) : raw;
    if (transform.softplus) v = Math.fround(softplus(v));
    if (transform.limit) v = Math.min(Math.max(v, transform.limit[0]), transform.limit[1]);
    return v;
  };
  for (let b = 0; b < batch; b++) {
    for (let h = 0; h < heads; h++) {
      const g = Math.floor(h / headsPerGroup);
      const step = stepOf(dts[b * heads + h]!, h);
      // A = −exp(A_log) rounded to f32, as neg(exp(A_log)) gives it.
      const decay = Math.exp(step * (transform.aIsLog ? -Math.fround(Math.exp(As[h]!)) : As[h]!));
      const bc = (b * groups + g) * stateDim;
      for (let p = 0; p < headDim; p++) {
        const xi = (b * heads + h) * headDim + p;
        const xv = xs[xi]!;
        const row = state.offset + xi * stateDim;
        let acc = 0;
        for (let n = 0; n < stateDim; n++) {
          const s = decay * st[row + n]! + step * xv * Bs[bc + n]!;
          st[row + n] = s;
          // The state is stored in f32; the output uses the stored value, as the GPU kernel does.
          acc += st[row + n]! * Cs[bc + n]!;
        }
        out[y.offset + xi] = acc + (Ds ? Ds[h]! * xv : 0);
      }
    }
  }
}
