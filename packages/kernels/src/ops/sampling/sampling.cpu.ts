/**
 * CPU reference for token choice: the processors by sorting (top-k, top-p) with f64 probabilities,
 * then the inverse-CDF draw in vocabulary order.
 */
import { storageReader } from '../cpu-values';
import { bf16BitsToF32 } from '../../dtype';
import { cpuView, type Tensor } from '../../tensor';
import { uniformHash } from './counter-random';
import { NON_FINITE_TOKEN } from './non-finite-token';
import type { RecordTokensArgs, SamplingProblem } from './sampling';

/**
 * Row b of the logits after the repetition penalty and temperature, as the kernel's f32 math gives
 * them, in `out` (one buffer reused across rows and steps: a fresh one per step was garbage the GC
 * left lying for many generations).
 */
function scores(p: SamplingProblem, b: number, out: Float32Array): Float32Array {
  const read = storageReader(p.logits);
  const seen = p.seen ? (cpuView(p.seen) as Int32Array) : null;
  for (let i = 0; i < p.vocab; i++) {
    let s = read(p.logits.offset + b * p.vocab + i);
    if (seen && seen[p.seen!.offset + b * p.vocab + i] !== 0) s = Math.fround(s < 0 ? s * p.penalty : s / p.penalty);
    if (p.doSample) s = Math.fround(s / p.temperature);
    out[i] = s;
  }
  return out;
}

let scoreScratch = new Float32Array(0);

/** Lowest index of the largest value. */
function argmax(s: Float32Array): number {
  let best = 0;
  for (let i = 1; i < s.length; i++) if (s[i]! > s[best]!) best = i;
  return best;
}

/** Which tokens survive top-k, top-p and min-p (HF's warpers, in order), for scores `s` with maximum `m`. */
export function keptTokens(p: Pick<SamplingProblem, 'topK' | 'topP' | 'minP'>, s: Float32Array): Uint8Array {
  const n = s.length;
  const kept = new Uint8Array(n).fill(1);
  const m = s[argmax(s)]!;
  if (p.topK > 0 && p.topK < n) {
    const kth = Float32Array.from(s).sort().reverse()[p.topK - 1]!;
    for (let i = 0; i < n; i++) if (s[i]! < kth) kept[i] = 0;
  }
  if (p.topP < 1) {
    // HF sorts ascending and drops tokens while the cumulative probability stays ≤ 1 − p: a token is
    // kept when the mass of the tokens above it is below p. Tokens tied in value go together (HF's
    // order among ties is unspecified), as in the kernel.
    const order = Array.from({ length: n }, (_, i) => i)
      .filter((i) => kept[i])
      .sort((a, b) => s[b]! - s[a]!);
    const total = order.reduce((acc, i) => acc + Math.exp(s[i]! - m), 0);
    let above = 0;
    for (let r = 0; r < order.length; ) {
      let end = r;
      let group = 0;
      while (end < order.length && s[order[end]!] === s[order[r]!]) group += Math.exp(s[order[end++]!]! - m);
      if (above / total >= p.topP) for (let q = r; q < end; q++) kept[order[q]!] = 0;
      above += group;
      r = end;
    }
  }
  if (p.minP > 0) for (let i = 0; i < n; i++) if (kept[i] && Math.exp(s[i]! - m) < p.minP) kept[i] = 0;
  return kept;
}

/** Whether row b of the logits (as stored, before any processor) holds NaN or ±Infinity. */
function rowNonFinite(p: SamplingProblem, b: number): boolean {
  const data = cpuView(p.logits);
  for (let i = 0; i < p.vocab; i++) {
    const raw = data[p.logits.offset + b * p.vocab + i]!;
    if (!Number.isFinite(p.logits.dtype === 'bf16' ? bf16BitsToF32(raw) : raw)) return true;
  }
  return false;
}

export function sampleTokensCpu(p: SamplingProblem, out: Tensor): void {
  const dst = cpuView(out) as Int32Array;
  const counter = (p.counter ? (cpuView(p.counter) as Int32Array)[p.counter.offset]! : 0) + p.counterOffset;
  for (let b = 0; b < p.rows; b++) {
    if (rowNonFinite(p, b)) {
      dst[out.offset + b] = NON_FINITE_TOKEN;
      continue;
    }
    if (scoreScratch.length !== p.vocab) scoreScratch = new Float32Array(p.vocab);
    const s = scores(p, b, scoreScratch);
    if (!p.doSample) {
      dst[out.offset + b] = argmax(s);
      continue;
    }
    const kept = keptTokens(p, s);
    const m = s[argmax(s)]!;
    const weights = Float64Array.from(s, (v, i) => (kept[i] ? Math.exp(v - m) : 0));
    const total = weights.reduce((a, v) => a + v, 0);
    const target = uniformHash(p.seed, b, counter >>> 0) * total;
    let chosen = -1;
    let running = 0;
    for (let i = 0; i < p.vocab; i++) {
      if (!kept[i]) continue;
      running += weights[i]!;
      chosen = i;
      if (running > target) break;
    }
    dst[out.offset + b] = chosen;
  }
}

export function recordTokensCpu(a: RecordTokensArgs): void {
  const view = (t: Tensor) => cpuView(t) as Int32Array;
  const sampled = view(a.sampled);
  const ids = view(a.ids);
  const finished = view(a.finished);
  const history = view(a.history);
  const eos = a.eos ? Array.from(view(a.eos).subarray(a.eos.offset, a.eos.offset + a.eos.size)) : [];
  const column = view(a.position)[a.position.offset]! - a.base;
  const [rows, steps] = a.history.shape as [number, number];
  for (let b = 0; b < rows; b++) {
    const done = finished[a.finished.offset + b] !== 0;
    const token = done ? a.padId : sampled[a.sampled.offset + b]!;
    ids[a.ids.offset + b] = token;
    if (column >= 0 && column < steps) history[a.history.offset + b * steps + column] = token;
    if (done) continue;
    if (a.seen) {
      const vocab = a.seen.shape[1]!;
      if (token >= 0 && token < vocab) view(a.seen)[a.seen.offset + b * vocab + token] = 1;
    }
    if (eos.includes(token)) finished[a.finished.offset + b] = 1;
  }
}
