/**
 * The routing kernel: one invocation per token keeps its E biased scores in private memory, picks
 * the kept groups and then the top-k experts by repeated passes ("best item ranked after the
 * previous pick"), which needs no sorting network and handles ties and NaN deterministically.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import type { Tensor } from '../../tensor';
import type { MoeRouteOptions } from './moe-route';

const WG = 64;

/** Ordering and scoring helpers shared by the group and expert selection. */
const SELECTION_HELPERS = `
const NONE: u32 = 0xffffffffu;
fn sigmoid_f32(x: f32) -> f32 { return 1.0 / (1.0 + exp(-x)); }
// Tested on the bits: compilers may fold x != x away.
fn is_nan(x: f32) -> bool { return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }
// True when (v1, i1) comes before (v2, i2): higher score first, lower index first on ties. NaN ranks
// above everything (torch.topk's convention), so a NaN score reaches the weights.
fn ranks_before(v1: f32, i1: u32, v2: f32, i2: u32) -> bool {
  let n1 = is_nan(v1);
  let n2 = is_nan(v2);
  if (n1 || n2) { return n1 && (!n2 || i1 < i2); }
  return v1 > v2 || (v1 == v2 && i1 < i2);
}`;

function groupSelection(nGroup: number): string {
  return `
  // Group score = sum of the group's two best biased scores; only the best topkGroup groups stay.
  var group_score: array<f32, ${nGroup}>;
  for (var g = 0u; g < P.groups; g++) {
    var b1 = NONE;
    var b2 = NONE;
    for (var e = g * P.groupSize; e < (g + 1u) * P.groupSize; e++) {
      if (b1 == NONE || ranks_before(sel[e], e, sel[b1], b1)) { b2 = b1; b1 = e; }
      else if (b2 == NONE || ranks_before(sel[e], e, sel[b2], b2)) { b2 = e; }
    }
    group_score[g] = sel[b1] + sel[b2];
  }
  var kept: array<u32, ${nGroup}>;
  var prev_g = NONE;
  for (var j = 0u; j < P.topkGroup; j++) {
    var best = NONE;
    for (var g = 0u; g < P.groups; g++) {
      if (prev_g != NONE && !ranks_before(group_score[prev_g], prev_g, group_score[g], g)) { continue; }
      if (best == NONE || ranks_before(group_score[g], g, group_score[best], best)) { best = g; }
    }
    kept[best] = 1u;
    prev_g = best;
  }`;
}

export function moeRouteGpu(device: WebGpuDevice, logits: Tensor, bias: Tensor | null, o: MoeRouteOptions, weights: Tensor, indices: Tensor): void {
  const [tokens, experts] = logits.shape as [number, number];
  const k = o.topK;
  const groupSize = experts / o.nGroup;
  const p = new Params()
    .u32('tokens', tokens)
    .f32('scale', o.routedScalingFactor)
    // Loop bounds come from the uniform so the compiler does not unroll E-long loops; only the
    // private array sizes are baked into the source.
    .u32('experts', experts)
    .u32('k', k)
    .u32('groups', o.nGroup)
    .u32('groupSize', groupSize)
    .u32('topkGroup', o.topkGroup);
  const list: NamedBinding[] = [{ name: 'logits', tensor: logits, window: { start: 0, length: tokens * experts }, what: 'moeRoute logits' }];
  let biasTerm = '0.0';
  if (bias) {
    list.push({ name: 'bias', tensor: bias, window: { start: 0, length: experts }, what: 'moeRoute correction bias' });
    biasTerm = 'load_bias(P.biasOff + e)';
  }
  list.push(
    { name: 'weights', tensor: weights, window: { start: 0, length: tokens * k }, what: 'moeRoute weights', writable: true },
    { name: 'indices', tensor: indices, window: { start: 0, length: tokens * k }, what: 'moeRoute indices', writable: true },
  );
  const bound = bindTensors(device, 'moeRoute', list, p);
  const grouped = o.nGroup > 1;
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${SELECTION_HELPERS}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.tokens) { return; }
  let row = P.logitsOff + t * P.experts;
  var sel: array<f32, ${experts}>;
  for (var e = 0u; e < P.experts; e++) { sel[e] = sigmoid_f32(load_logits(row + e)) + ${biasTerm}; }
  ${grouped ? groupSelection(o.nGroup) : ''}
  var w: array<f32, ${k}>;
  var total = 0.0;
  var prev = NONE;
  for (var j = 0u; j < P.k; j++) {
    var best = NONE;
    for (var e = 0u; e < P.experts; e++) {
      ${grouped ? 'if (kept[e / P.groupSize] == 0u) { continue; }' : ''}
      if (prev != NONE && !ranks_before(sel[prev], prev, sel[e], e)) { continue; }
      if (best == NONE || ranks_before(sel[e], e, sel[best], best)) { best = e; }
    }
    // The host checked that the kept groups hold at least k experts, so best is set.
    prev = best;
    w[j] = sigmoid_f32(load_logits(row + best));
    total += w[j];
    indices[P.indicesOff + t * P.k + j] = i32(best);
  }
  for (var j = 0u; j < P.k; j++) {
    ${o.normTopkProb ? 'let s = w[j] / (total + 1e-20);' : 'let s = w[j];'}
    weights[P.weightsOff + t * P.k + j] = s * P.scale;
  }
}`;
  device.run({
    name: 'moe_route',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(tokens, WG),
    detail: `[${tokens},${experts}] k=${k} groups=${o.topkGroup}/${o.nGroup} ${logits.dtype}`,
  });
}
