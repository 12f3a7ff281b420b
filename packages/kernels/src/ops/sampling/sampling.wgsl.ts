/**
 * Token choice kernels. `sample_tokens`: one workgroup per row; lane l owns a contiguous chunk of
 * the vocabulary and every pass recomputes its scores from the logits (penalty, temperature) rather
 * than storing them. Pass 1 finds the maximum and its lowest index (the greedy answer). Sampling
 * then finds thresholds by bisection over the f32 order keys (ORDER_WGSL), one counting pass per
 * step: the k-th largest key for top-k, the smallest key whose mass above stays below p·total for
 * top-p; min-p is a plain bound. The draw sums each lane's kept weight, one lane locates the chunk
 * holding u · total, and that chunk's lane scans it. Workgroup sums go through shared memory.
 *
 * `record_tokens`: one invocation per row (rows are independent, so nothing races).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { ORDER_WGSL } from '../topk/order';
import { COUNTER_RANDOM_WGSL } from './counter-random';
import { NON_FINITE_TOKEN } from './non-finite-token';
import type { RecordTokensArgs, SamplingProblem } from './sampling';

const WG = 64;

export function sampleTokensGpu(device: WebGpuDevice, p: SamplingProblem, out: Tensor): void {
  const chunk = Math.ceil(p.vocab / WG);
  const params = new Params()
    .u32('vocab', p.vocab)
    .u32('chunk', chunk)
    .u32('topK', p.topK)
    .u32('seed', p.seed)
    .i32('counterOffset', p.counterOffset)
    .f32('invTemperature', 1 / p.temperature)
    .f32('temperature', p.temperature)
    .f32('topP', p.topP)
    .f32('minP', p.minP)
    .f32('penalty', p.penalty);
  const list: NamedBinding[] = [{ name: 'logits', tensor: p.logits }];
  if (p.seen) list.push({ name: 'seen', tensor: p.seen });
  if (p.counter) list.push({ name: 'counter', tensor: p.counter });
  list.push({ name: 'out', tensor: out, writable: true });
  const bound = bindTensors(device, 'sampleTokens', list, params);
  const sample = p.doSample;
  const source = `${params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${ORDER_WGSL}
${COUNTER_RANDOM_WGSL}
var<workgroup> sharedF: array<f32, ${WG}>;
var<workgroup> sharedU: array<u32, ${WG}>;
var<workgroup> pick: vec2<u32>;

fn score(row: u32, i: u32) -> f32 {
  return processed(row, i, load_logits(P.logitsOff + row * P.vocab + i));
}

/** The logit after the repetition penalty and temperature. */
fn processed(row: u32, i: u32, logit: f32) -> f32 {
  var s = logit;
  ${p.seen ? 'if (seen[P.seenOff + row * P.vocab + i] != 0) { s = select(s / P.penalty, s * P.penalty, s < 0.0); }' : ''}
  ${sample ? 's = s / P.temperature;' : ''}
  return s;
}

/** Workgroup sum of one f32 per lane (every lane gets it). */
fn sum_f32(lane: u32, v: f32) -> f32 {
  workgroupBarrier();
  sharedF[lane] = v;
  workgroupBarrier();
  var total = 0.0;
  for (var l = 0u; l < ${WG}u; l++) { total += sharedF[l]; }
  return total;
}

/** Workgroup sum of one u32 per lane (every lane gets it). */
fn sum_u32(lane: u32, v: u32) -> u32 {
  workgroupBarrier();
  sharedU[lane] = v;
  workgroupBarrier();
  var total = 0u;
  for (var l = 0u; l < ${WG}u; l++) { total += sharedU[l]; }
  return total;
}

@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let row = wg.x;
  let i0 = min(lane * P.chunk, P.vocab);
  let i1 = min(i0 + P.chunk, P.vocab);
  // Pass 1: the largest score and its lowest index.
  // Non-finite logits are caught here, by their bits (WGSL may assume no NaN in float compares).
  var best = -3.0e38;
  var bestAt = 0xffffffffu;
  var nonFinite = 0u;
  for (var i = i0; i < i1; i++) {
    let logit = load_logits(P.logitsOff + row * P.vocab + i);
    nonFinite |= select(0u, 1u, (bitcast<u32>(logit) & 0x7f800000u) == 0x7f800000u);
    let s = processed(row, i, logit);
    if (bestAt == 0xffffffffu || s > best) { best = s; bestAt = i; }
  }
  sharedF[lane] = best;
  sharedU[lane] = bestAt;
  workgroupBarrier();
  var m = -3.0e38;
  var arg = 0xffffffffu;
  for (var l = 0u; l < ${WG}u; l++) {
    let at = sharedU[l];
    if (at != 0xffffffffu && (arg == 0xffffffffu || sharedF[l] > m)) { m = sharedF[l]; arg = at; }
  }
  let rowNonFinite = sum_u32(lane, nonFinite) > 0u;
  ${
    sample
      ? `// Top-k: the largest key t with count(key ≥ t) ≥ k.
  var kKey = 0u;
  if (P.topK > 0u) {
    var lo = 0u;
    var hi = 0xffffffffu;
    // A fixed 32 steps (barriers need uniform control flow); settled ranges ignore the rest.
    for (var it = 0u; it < 32u; it++) {
      let mid = lo + ((hi - lo) >> 1u) + select(0u, 1u, lo < hi);
      var count = 0u;
      for (var i = i0; i < i1; i++) { count += select(0u, 1u, order_key(score(row, i)) >= mid); }
      let enough = sum_u32(lane, count) >= P.topK;
      if (lo < hi) { if (enough) { lo = mid; } else { hi = mid - 1u; } }
    }
    kKey = lo;
  }
  // Top-p: the smallest key t whose kept mass strictly above it is below p·total.
  var pKey = 0u;
  if (P.topP < 1.0) {
    var z = 0.0;
    for (var i = i0; i < i1; i++) {
      let s = score(row, i);
      if (order_key(s) >= kKey) { z += exp(s - m); }
    }
    let limit = P.topP * sum_f32(lane, z);
    var lo = 0u;
    var hi = 0xffffffffu;
    for (var it = 0u; it < 32u; it++) {
      let mid = lo + ((hi - lo) >> 1u);
      var above = 0.0;
      for (var i = i0; i < i1; i++) {
        let s = score(row, i);
        let key = order_key(s);
        if (key >= kKey && key > mid) { above += exp(s - m); }
      }
      let below = sum_f32(lane, above) < limit;
      if (lo < hi) { if (below) { hi = mid; } else { lo = mid + 1u; } }
    }
    pKey = lo;
  }
  let keyFloor = max(kKey, pKey);
  // The draw: kept weights per lane, the chunk holding u · total, then a scan of that chunk.
  var mine = 0.0;
  for (var i = i0; i < i1; i++) {
    let s = score(row, i);
    let w = exp(s - m);
    if (order_key(s) >= keyFloor && w >= P.minP) { mine += w; }
  }
  workgroupBarrier();
  sharedF[lane] = mine;
  workgroupBarrier();
  if (lane == 0u) {
    var total = 0.0;
    for (var l = 0u; l < ${WG}u; l++) { total += sharedF[l]; }
    let goal = uniform_hash(P.seed, row, ${p.counter ? 'u32(counter[P.counterOff] + P.counterOffset)' : 'u32(P.counterOffset)'}) * total;
    var before = 0.0;
    var owner = 0xffffffffu;
    var rest = 0.0;
    for (var l = 0u; l < ${WG}u; l++) {
      let w = sharedF[l];
      if (w > 0.0 && (owner == 0xffffffffu || before <= goal)) { owner = l; rest = goal - before; }
      before += w;
    }
    pick = vec2<u32>(owner, bitcast<u32>(rest));
  }
  workgroupBarrier();
  let chosen = pick;
  // No lane holds weight when the row's weights are NaN (a non-finite logit): lane 0 answers.
  if (chosen.x == 0xffffffffu && lane == 0u) { out[P.outOff + row] = select(i32(arg), ${NON_FINITE_TOKEN}, rowNonFinite); }
  if (lane == chosen.x) {
    let rest = bitcast<f32>(chosen.y);
    var running = 0.0;
    var at = 0xffffffffu;
    for (var i = i0; i < i1; i++) {
      let s = score(row, i);
      let w = exp(s - m);
      if (order_key(s) >= keyFloor && w >= P.minP) {
        running += w;
        at = i;
        if (running > rest) { break; }
      }
    }
    out[P.outOff + row] = select(i32(at), ${NON_FINITE_TOKEN}, rowNonFinite);
  }`
      : `if (lane == 0u) { out[P.outOff + row] = select(i32(arg), ${NON_FINITE_TOKEN}, rowNonFinite); }`
  }
}`;
  device.run({
    name: 'sample_tokens',
    source,
    params,
    bindings: bound.ranges,
    workgroups: [p.rows, 1, 1],
    detail: `[${p.rows}, ${p.vocab}] ${sample ? 'sample' : 'greedy'}`,
  });
}

export function recordTokensGpu(device: WebGpuDevice, a: RecordTokensArgs): void {
  const rows = a.sampled.size;
  const [, steps] = a.history.shape as [number, number];
  const params = new Params()
    .u32('rows', rows)
    .u32('steps', steps)
    .i32('padId', a.padId)
    .i32('base', a.base)
    .u32('eosCount', a.eos?.size ?? 0)
    .u32('vocab', a.seen?.shape[1] ?? 0);
  const list: NamedBinding[] = [
    { name: 'sampled', tensor: a.sampled },
    { name: 'ids', tensor: a.ids, writable: true },
    { name: 'finished', tensor: a.finished, writable: true },
    { name: 'history', tensor: a.history, writable: true },
    { name: 'position', tensor: a.position },
  ];
  if (a.eos) list.push({ name: 'eos', tensor: a.eos });
  if (a.seen) list.push({ name: 'seen', tensor: a.seen, writable: true });
  const bound = bindTensors(device, 'recordTokens', list, params);
  const source = `${params.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let b = ${flatIndex(64)};
  if (b >= P.rows) { return; }
  let done = finished[P.finishedOff + b] != 0;
  let token = select(sampled[P.sampledOff + b], P.padId, done);
  ids[P.idsOff + b] = token;
  let column = position[P.positionOff] - P.base;
  if (column >= 0 && u32(column) < P.steps) { history[P.historyOff + b * P.steps + u32(column)] = token; }
  if (done) { return; }
  ${a.seen ? 'if (token >= 0 && u32(token) < P.vocab) { seen[P.seenOff + b * P.vocab + u32(token)] = 1; }' : ''}
  ${a.eos ? 'for (var e = 0u; e < P.eosCount; e++) { if (eos[P.eosOff + e] == token) { finished[P.finishedOff + b] = 1; } }' : ''}
}`;
  device.run({ name: 'record_tokens', source, params, bindings: bound.ranges, workgroups: device.grid(rows, 64), detail: `[${rows}] history ${steps}` });
}
