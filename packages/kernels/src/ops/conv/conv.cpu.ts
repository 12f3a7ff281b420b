/**
 * CPU reference for the depthwise causal conv1d of the Mamba2 mixer: f64 loops over dense tensors,
 * written to read like the definition (one output at a time, every tap spelled out).
 */
import { cpuView, type Tensor } from '../../tensor';
import { valuesF64 as host } from '../cpu-values';

function silu(v: number): number {
  return v / (1 + Math.exp(-v));
}

/**
 * For each position of one row, where its document starts: the last position whose seqIdx differs
 * from its predecessor's, or -Infinity while the row is still in its first document (which owns the
 * initial state). A tap at position s reaches position t only when s >= runStart[t].
 */
function documentStarts(seqIdx: Float64Array | null, row: number, length: number): number[] {
  const starts = new Array<number>(length);
  let start = -Infinity;
  for (let t = 0; t < length; t++) {
    if (seqIdx && t > 0 && seqIdx[row * length + t] !== seqIdx[row * length + t - 1]) start = t;
    starts[t] = start;
  }
  return starts;
}

export interface CausalConv1dCpuArgs {
  x: Tensor; // [B, L, C]
  weight: Tensor; // [C, K]
  bias: Tensor | null; // [C]
  initialState: Tensor | null; // [B, C, K]
  seqIdx: Tensor | null; // i32 [B, L]
  silu: boolean;
}

/** The operands' sizes, the weights, bias and seqIdx in f64 (null when absent), and the conv's input (x, then the initial state). */
function hostOperands(a: CausalConv1dCpuArgs) {
  const [batch, length, channels] = a.x.shape as [number, number, number];
  const taps = a.weight.shape[1]!;
  const x = host(a.x);
  const init = a.initialState ? host(a.initialState) : null;
  // Input at position s of row b, channel c; s < 0 reads the initial state (its last column is s = -1).
  const input = (b: number, s: number, c: number): number => {
    if (s >= 0) return x[(b * length + s) * channels + c]!;
    return init ? init[(b * channels + c) * taps + taps + s]! : 0;
  };
  return {
    batch,
    length,
    channels,
    taps,
    w: host(a.weight),
    bias: a.bias ? host(a.bias) : null,
    seq: a.seqIdx ? host(a.seqIdx) : null,
    input,
  };
}

/** z[b,t,c] = bias[c] + Σ_k W[c,k]·input(b, t-(K-1)+k, c), over the taps in t's document (it starts at `start`). */
function preActivation(o: ReturnType<typeof hostOperands>, b: number, t: number, c: number, start: number): number {
  const { taps, w, bias, input } = o;
  let z = bias ? bias[c]! : 0;
  for (let k = 0; k < taps; k++) {
    const s = t - (taps - 1) + k;
    if (s >= start) z += w[c * taps + k]! * input(b, s, c);
  }
  return z;
}

/** y [B, L, C] and finalState [B, C, K], both dense f32 on the CPU. */
export function causalConv1dCpu(a: CausalConv1dCpuArgs, y: Tensor, finalState: Tensor): void {
  const o = hostOperands(a);
  const { batch, length, channels, taps, seq, input } = o;
  const out = cpuView(y) as Float32Array;
  const state = cpuView(finalState) as Float32Array;
  for (let b = 0; b < batch; b++) {
    const starts = documentStarts(seq, b, length);
    for (let t = 0; t < length; t++) {
      for (let c = 0; c < channels; c++) {
        const acc = preActivation(o, b, t, c, starts[t]!);
        out[y.offset + (b * length + t) * channels + c] = a.silu ? silu(acc) : acc;
      }
    }
    for (let c = 0; c < channels; c++) {
      for (let k = 0; k < taps; k++) {
        const s = length - taps + k;
        state[finalState.offset + (b * channels + c) * taps + k] = s >= starts[length - 1]! ? input(b, s, c) : 0;
      }
    }
  }
}

/** One decode step: rolls `state` [B, C, K] left, appends x [B, C], writes the conv output to `out` [B, C]. */
export function causalConv1dUpdateCpu(state: Tensor, x: Tensor, weight: Tensor, bias: Tensor | null, applySilu: boolean, out: Tensor): void {
  const [batch, channels, taps] = state.shape as [number, number, number];
  const xs = host(x);
  const w = host(weight);
  const bs = bias ? host(bias) : null;
  const st = cpuView(state) as Float32Array;
  const dst = cpuView(out) as Float32Array;
  for (let b = 0; b < batch; b++) {
    for (let c = 0; c < channels; c++) {
      const row = state.offset + (b * channels + c) * taps;
      for (let k = 0; k < taps - 1; k++) st[row + k] = st[row + k + 1]!;
      st[row + taps - 1] = xs[b * channels + c]!;
      let acc = bs ? bs[c]! : 0;
      for (let k = 0; k < taps; k++) acc += w[c * taps + k]! * st[row + k]!;
      dst[out.offset + b * channels + c] = applySilu ? silu(acc) : acc;
    }
  }
}

/** Gradients of y (not of finalState) written by {@link causalConv1dBackwardCpu}; null where not wanted. */
export interface CausalConv1dGrads {
  dx: Tensor; // [B, L, C]
  dWeight: Tensor; // [C, K]
  dBias: Tensor | null; // [C]
  dInitialState: Tensor | null; // [B, C, K]
}

/**
 * Backward of y = act(z), z[b,t,c] = bias[c] + Σ_k W[c,k]·in(b, t-(K-1)+k, c): dz = dy·act'(z), then
 * every tap that reached an output sends dz·W to its input and dz·input to its weight.
 */
export function causalConv1dBackwardCpu(a: CausalConv1dCpuArgs, dy: Tensor, out: CausalConv1dGrads): void {
  const o = hostOperands(a);
  const { batch, length, channels, taps, w, seq, input } = o;
  const g = host(dy);
  const dx = new Float64Array(batch * length * channels);
  const dw = new Float64Array(channels * taps);
  const db = new Float64Array(channels);
  const dinit = new Float64Array(batch * channels * taps);
  for (let b = 0; b < batch; b++) {
    const starts = documentStarts(seq, b, length);
    for (let t = 0; t < length; t++) {
      for (let c = 0; c < channels; c++) {
        const i = (b * length + t) * channels + c;
        let dz = g[i]!;
        if (a.silu) {
          const z = preActivation(o, b, t, c, starts[t]!);
          const sig = 1 / (1 + Math.exp(-z));
          dz *= sig * (1 + z * (1 - sig));
        }
        db[c] += dz;
        for (let k = 0; k < taps; k++) {
          const s = t - (taps - 1) + k;
          if (s < starts[t]!) continue;
          dw[c * taps + k] += dz * input(b, s, c);
          if (s >= 0) dx[(b * length + s) * channels + c] += dz * w[c * taps + k]!;
          else dinit[(b * channels + c) * taps + taps + s] += dz * w[c * taps + k]!;
        }
      }
    }
  }
  const write = (t: Tensor | null, v: Float64Array) => {
    if (t) (cpuView(t) as Float32Array).set(v, t.offset);
  };
  write(out.dx, dx);
  write(out.dWeight, dw);
  write(out.dBias, db);
  write(out.dInitialState, dinit);
}
