/**
 * Plain-TypeScript f64 references of the Mamba2 and MoE mixers, written from the spec (§2.3, §2.6)
 * with no kernel in the loop: the sequential recurrence instead of the chunked scan, explicit loops
 * for the conv, routing and experts. Tests compare the mixers' forward against them.
 */
import type { NemotronHConfig } from '../../src';

type Weights = (name: string) => Float32Array;

const silu = (v: number) => v / (1 + Math.exp(-v));
const softplus = (v: number) => (v > 20 ? v : Math.log1p(Math.exp(v)));
const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

/** y = W x (+ b) for W [out, in] row-major. */
function linear(w: Float32Array, b: Float32Array | null, x: ArrayLike<number>, outDim: number, inDim: number): Float64Array {
  const y = new Float64Array(outDim);
  for (let o = 0; o < outDim; o++) {
    let acc = b ? b[o]! : 0;
    for (let i = 0; i < inDim; i++) acc += w[o * inDim + i]! * x[i]!;
    y[o] = acc;
  }
  return y;
}

/**
 * The Mamba2 mixer on x [B, L, H] (row-major), weights by name relative to the mixer. `mask` [B][L]
 * zeroes the input before in_proj and the conv output (HF's padding semantics).
 */
export function mambaReference(c: NemotronHConfig, w: Weights, x: Float32Array, batch: number, length: number, mask?: number[][]): Float64Array {
  const { hiddenSize: H, dInner, convDim, dInProj, mambaNumHeads: nh, mambaHeadDim: p, ssmStateSize: N, nGroups: G, convKernel: K } = c;
  const inW = w('in_proj.weight');
  const inB = c.useBias ? w('in_proj.bias') : null;
  const convW = w('conv1d.weight');
  const convB = c.useConvBias ? w('conv1d.bias') : null;
  const [dtBias, aLog, D, normW, outW] = [w('dt_bias'), w('A_log'), w('D'), w('norm.weight'), w('out_proj.weight')];
  const outB = c.useBias ? w('out_proj.bias') : null;
  const out = new Float64Array(batch * length * H);
  for (let b = 0; b < batch; b++) {
    const keep = (t: number) => (mask ? mask[b]![t]! : 1);
    const proj: Float64Array[] = [];
    for (let t = 0; t < length; t++) {
      const u = Array.from(x.subarray((b * length + t) * H, (b * length + t + 1) * H), (v) => v * keep(t));
      proj.push(linear(inW, inB, u, dInProj, H));
    }
    const state = new Float64Array(nh * p * N);
    for (let t = 0; t < length; t++) {
      // Causal depthwise conv: tap K-1 is the current token; before the sequence reads zero.
      const xbc = new Float64Array(convDim);
      for (let ch = 0; ch < convDim; ch++) {
        let acc = convB ? convB[ch]! : 0;
        for (let k = 0; k < K; k++) {
          const s = t - (K - 1) + k;
          if (s >= 0) acc += convW[ch * K + k]! * proj[s]![dInner + ch]!;
        }
        xbc[ch] = silu(acc) * keep(t);
      }
      const y = new Float64Array(dInner);
      for (let h = 0; h < nh; h++) {
        let dt = softplus(proj[t]![dInner + convDim + h]! + dtBias[h]!);
        if (c.clampsDt) dt = Math.min(Math.max(dt, c.timeStepLimit[0]), c.timeStepLimit[1]);
        const decay = Math.exp(dt * -Math.exp(aLog[h]!));
        const g = Math.floor(h / (nh / G));
        for (let j = 0; j < p; j++) {
          const xv = xbc[h * p + j]!;
          let acc = 0;
          for (let n = 0; n < N; n++) {
            const i = (h * p + j) * N + n;
            state[i] = decay * state[i]! + dt * xv * xbc[dInner + g * N + n]!;
            acc += state[i]! * xbc[dInner + G * N + g * N + n]!;
          }
          y[h * p + j] = acc + D[h]! * xv;
        }
      }
      // Gate first, then RMS-normalise each group of d_inner / G channels.
      const z = proj[t]!;
      const v = Array.from(y, (yv, i) => yv * silu(z[i]!));
      const size = dInner / G;
      for (let g = 0; g < G; g++) {
        let ms = 0;
        for (let i = g * size; i < (g + 1) * size; i++) ms += v[i]! ** 2;
        const r = 1 / Math.sqrt(ms / size + c.layerNormEpsilon);
        for (let i = g * size; i < (g + 1) * size; i++) v[i] = v[i]! * r * normW[i]!;
      }
      out.set(linear(outW, outB, v, H, dInner), (b * length + t) * H);
    }
  }
  return out;
}

/** The MoE mixer on tokens x [T, H], weights by name relative to the mixer. */
export function moeReference(c: NemotronHConfig, w: Weights, x: Float32Array, tokens: number): Float64Array {
  const { hiddenSize: H, nRoutedExperts: E, numExpertsPerTok: k, moeIntermediateSize: I, expertHiddenSize: Hx, moeSharedExpertIntermediateSize: Is } = c;
  const [gateW, bias, up, down] = [w('gate.weight'), w('gate.e_score_correction_bias'), w('experts.up_proj'), w('experts.down_proj')];
  const mlpBias = (name: string) => (c.mlpBias ? w(name) : null);
  const out = new Float64Array(tokens * H);
  const relu2 = (v: Float64Array) => v.map((u) => Math.max(u, 0) ** 2);
  for (let t = 0; t < tokens; t++) {
    const xt = x.subarray(t * H, (t + 1) * H);
    const s = linear(gateW, null, xt, E, H).map(sigmoid);
    const sel = s.map((v, e) => v + bias[e]!);
    if (c.nGroup > 1) {
      const per = E / c.nGroup;
      const groupScore = Array.from({ length: c.nGroup }, (_, g) => {
        const sorted = Array.from(sel.subarray(g * per, (g + 1) * per)).sort((a, b) => b - a);
        return sorted[0]! + sorted[1]!;
      });
      const kept = new Set(
        groupScore
          .map((v, g) => [v, g] as const)
          .sort((a, b) => b[0] - a[0])
          .slice(0, c.topkGroup)
          .map(([, g]) => g),
      );
      for (let e = 0; e < E; e++) if (!kept.has(Math.floor(e / per))) sel[e] = -Infinity;
    }
    const chosen = Array.from(sel, (v, e) => [v, e] as const)
      .sort((a, b) => b[0] - a[0])
      .slice(0, k)
      .map(([, e]) => e);
    let weights = chosen.map((e) => s[e]!);
    if (c.normTopkProb) {
      const total = weights.reduce((a, b) => a + b, 0) + 1e-20;
      weights = weights.map((v) => v / total);
    }
    weights = weights.map((v) => v * c.routedScalingFactor);
    const xr = c.moeLatentSize === null ? Float64Array.from(xt) : linear(w('fc1_latent_proj.weight'), mlpBias('fc1_latent_proj.bias'), xt, Hx, H);
    const routed = new Float64Array(Hx);
    chosen.forEach((e, slot) => {
      const hidden = relu2(linear(up.subarray(e * I * Hx, (e + 1) * I * Hx), null, xr, I, Hx));
      const y = linear(down.subarray(e * Hx * I, (e + 1) * Hx * I), null, hidden, Hx, I);
      for (let i = 0; i < Hx; i++) routed[i] = routed[i]! + weights[slot]! * y[i]!;
    });
    const routedOut = c.moeLatentSize === null ? routed : linear(w('fc2_latent_proj.weight'), mlpBias('fc2_latent_proj.bias'), routed, H, Hx);
    const shared = linear(
      w('shared_experts.down_proj.weight'),
      mlpBias('shared_experts.down_proj.bias'),
      relu2(linear(w('shared_experts.up_proj.weight'), mlpBias('shared_experts.up_proj.bias'), xt, Is, H)),
      H,
      Is,
    );
    for (let i = 0; i < H; i++) out[t * H + i] = routedOut[i]! + shared[i]!;
  }
  return out;
}
