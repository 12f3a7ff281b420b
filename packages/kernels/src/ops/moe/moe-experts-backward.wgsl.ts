/**
 * The grouped experts' backward on the GPU, recorded without a readback, in the forward's token
 * passes. Per pass: group the pairs by expert (the forward's kernels), recompute the pre-activations
 * a = x·upᵀ + b_up with the forward's grouped GEMM, then
 *
 * - hidden:   u = down_eᵀ·g_t per grouped row, and ∂a = w·u·2·relu(a);
 * - weights:  ∂w[t,s] = u·relu(a)² + g_t·b_down,e (= g_t·y, without re-running the down GEMM);
 * - input:    ∂x_t = Σ_s up_eᵀ·∂a, a gather over the token's k rows (no scatter, no float atomics);
 * - experts:  ∂down_e = Σ_rows w·g_t ⊗ relu(a)², ∂up_e = Σ_rows ∂a ⊗ x_t, and the bias sums, each
 *             gradient element summed over its expert's segment by one invocation.
 *
 * The hidden activations are recomputed rather than saved: keeping them would hold T·k·I floats
 * per layer from the forward to the backward (more than the layer's input), for one grouped GEMM.
 * Sums run in a fixed order (segments in (token, slot) order, passes and expert ranges in turn),
 * so results are deterministic. Stacked tensors above one storage binding go in expert ranges.
 */
import { empty } from '../../creation';
import { BindingTooLargeError, type WebGpuDevice } from '../../device/webgpu-device';
import type { BufferRange } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { GRID_ARGS, declareStorage, flatIndex, inputF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MoeExpertGrads, MoeExpertOperands } from './moe-experts';
import { tokensPerPass } from './moe-experts.wgsl';
import { bindingBudget, groupedGemm } from './moe-gemm.wgsl';
import { NO_ROW, disposeGrouping, groupByExpert, type ExpertGrouping } from './moe-grouping.wgsl';

const WG = 64;

/** One pass's operands: tokens [t0, t0 + count) and their grouped rows. */
interface Pass {
  t0: number;
  count: number;
  grouping: ExpertGrouping;
  /** [rowCapacity, I] f32 pre-activations a. */
  pre: Tensor;
  /** [rowCapacity, I] f32 u = down_eᵀ·g_t. */
  u: Tensor;
  /** [rowCapacity, I] f32 ∂L/∂a. */
  gradPre: Tensor;
  /** Later passes add to the expert gradients the earlier ones wrote. */
  accumulate: boolean;
}

interface Sizes {
  tokens: number;
  slots: number;
  experts: number;
  hin: number;
  inter: number;
  hout: number;
}

/** `grad` [T, Hout] contiguous f32; writes the non-null gradients of `out` (f32, shaped like their operands). */
export function moeExpertsBackwardGpu(device: WebGpuDevice, o: MoeExpertOperands, grad: Tensor, out: MoeExpertGrads): void {
  const [tokens, hin] = o.x.shape as [number, number];
  const slots = o.indices.shape[1]!;
  const [experts, inter] = o.upProj.shape as [number, number];
  const hout = o.downProj.shape[1]!;
  const z: Sizes = { tokens, slots, experts, hin, inter, hout };
  if (tokens === 0 || hout === 0) {
    for (const t of Object.values(out)) if (t) fill(device, t, 0);
    return;
  }
  // The input gradient rows are f32 whatever x's dtype, so passes are sized for 4-byte rows.
  const perPass = tokensPerPass(device, tokens, slots, experts, hin * 4, inter, hout);
  // Checked before anything is recorded, so a failure leaves no half-built pass behind.
  const upRange = expertRange(device, inter * hin * bytesOf(o.upProj), 'moeExperts backward up weight');
  const downRange = expertRange(device, hout * inter * bytesOf(o.downProj), 'moeExperts backward down weight');
  const upGradRange = expertRange(device, inter * hin * 4, 'moeExperts backward up gradient');
  const downGradRange = expertRange(device, hout * inter * 4, 'moeExperts backward down gradient');
  for (let t0 = 0; t0 < tokens; t0 += perPass) {
    const count = Math.min(perPass, tokens - t0);
    const grouping = groupByExpert(device, o.indices, t0 * slots, count * slots, experts);
    const rows = grouping.rowCapacity;
    const pass: Pass = {
      t0,
      count,
      grouping,
      pre: empty([rows, inter], { device }),
      u: empty([rows, inter], { device }),
      gradPre: empty([rows, inter], { device }),
      accumulate: t0 > 0,
    };
    groupedGemm(device, {
      name: 'moe_up',
      grouping,
      a: o.x,
      aFirst: t0 * hin,
      aRows: count,
      gather: { slots },
      weight: o.upProj,
      bias: o.upBias,
      relu2: false,
      out: pass.pre,
    });
    for (let e0 = 0; e0 < experts; e0 += downRange) hiddenGrad(device, z, o, grad, pass, e0, Math.min(experts, e0 + downRange));
    if (out.weights) weightGrad(device, z, o, grad, pass, out.weights);
    if (out.x) for (let e0 = 0; e0 < experts; e0 += upRange) inputGrad(device, z, o, pass, e0, Math.min(experts, e0 + upRange), out.x);
    const sums: [ExpertSum, Tensor | null, number][] = [
      ['down', out.downProj, downGradRange],
      ['up', out.upProj, upGradRange],
      ['downBias', out.downBias, experts],
      ['upBias', out.upBias, experts],
    ];
    for (const [kind, target, range] of sums) {
      if (!target) continue;
      for (let e0 = 0; e0 < experts; e0 += range) expertSum(device, kind, z, o, grad, pass, e0, Math.min(experts, e0 + range), target);
    }
    pass.pre.dispose();
    pass.u.dispose();
    pass.gradPre.dispose();
    disposeGrouping(grouping);
  }
}

function bytesOf(t: Tensor): number {
  return t.dtype === 'bf16' ? 2 : 4;
}

/** Experts per binding for a stacked tensor of `expertBytes` per expert; throws when not even one fits. */
function expertRange(device: WebGpuDevice, expertBytes: number, what: string): number {
  const perBinding = Math.floor(bindingBudget(device) / Math.max(expertBytes, 1));
  if (perBinding < 1) {
    throw new BindingTooLargeError(`${what}: one expert (${expertBytes} bytes) exceeds maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`);
  }
  return perBinding;
}

/** Sets every element of an f32 tensor (gradients of a call with no tokens). */
function fill(device: WebGpuDevice, t: Tensor, value: number): void {
  if (t.size === 0) return;
  const dst = device.bind(t.storage, t.offset, t.size, 'moeExperts backward gradient');
  const p = new Params().u32('n', t.size).u32('off', dst.elementOffset).f32('value', value);
  device.run({
    name: 'moe_grad_fill',
    source: `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'out', 'f32', 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(WG)};
  if (i < P.n) { out[P.off + i] = P.value; }
}`,
    params: p,
    bindings: [dst.range],
    workgroups: device.grid(t.size, WG),
    detail: `${t.size}`,
  });
}

/** The expert whose segment holds `row`: the last e in [lo, hi) with starts[e] <= row. */
const EXPERT_OF = `
fn expert_of(row: u32, first: u32, end: u32) -> u32 {
  var lo = first;
  var hi = end;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (starts[mid] <= row) { lo = mid; } else { hi = mid; }
  }
  return lo;
}`;

/**
 * u[r, i] = Σ_n down[e, n, i]·g[t, n] and ∂a[r, i] = w·u·2·relu(a) for the grouped rows of experts
 * [e0, e1); padding rows are skipped (nothing reads them).
 */
function hiddenGrad(device: WebGpuDevice, z: Sizes, o: MoeExpertOperands, grad: Tensor, pass: Pass, e0: number, e1: number): void {
  const g = pass.grouping;
  const pairs = g.pairs;
  // Worst case for this range: every pair, plus padding for each of its experts that gets a pair.
  const rows = pairs + Math.min(e1 - e0, pairs) * (g.rowTile - 1);
  const starts = device.bind(g.segmentStarts.storage, 0, z.experts + 1, 'moeExperts backward segment starts');
  const rowPairs = device.bind(g.rowPairs.storage, 0, g.rowCapacity, 'moeExperts backward row pairs');
  const gr = device.bind(grad.storage, grad.offset + pass.t0 * z.hout, pass.count * z.hout, 'moeExperts backward output gradient');
  const w = device.bind(o.weights.storage, o.weights.offset + pass.t0 * z.slots, pairs, 'moeExperts backward routing weights');
  const down = device.bind(o.downProj.storage, o.downProj.offset + e0 * z.hout * z.inter, (e1 - e0) * z.hout * z.inter, 'moeExperts backward down weight');
  const grouped = (t: Tensor, what: string) => device.bind(t.storage, t.offset, g.rowCapacity * z.inter, what);
  const pre = grouped(pass.pre, 'moeExperts backward pre-activations');
  const u = grouped(pass.u, 'moeExperts backward u');
  const ga = grouped(pass.gradPre, 'moeExperts backward pre-activation gradient');
  const p = new Params()
    .u32('e0', e0)
    .u32('e1', e1)
    .u32('rows', rows)
    .u32('inter', z.inter)
    .u32('hout', z.hout)
    .u32('slots', z.slots)
    .u32('gOff', gr.elementOffset)
    .u32('wOff', w.elementOffset)
    .u32('downOff', down.elementOffset)
    .u32('preOff', pre.elementOffset)
    .u32('uOff', u.elementOffset)
    .u32('gaOff', ga.elementOffset);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'starts', 'u32', 'read')}
${declareStorage(2, 'row_pairs', 'u32', 'read')}
${declareStorage(3, 'g', 'f32', 'read')}
${inputF32(4, 'w', o.weights.dtype)}
${inputF32(5, 'down', o.downProj.dtype)}
${declareStorage(6, 'pre', 'f32', 'read')}
${declareStorage(7, 'u', 'f32', 'read_write')}
${declareStorage(8, 'ga', 'f32', 'read_write')}
${EXPERT_OF}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  let local_row = idx / P.inter;
  let i = idx % P.inter;
  let r = starts[P.e0] + local_row;
  if (local_row >= P.rows || r >= starts[P.e1]) { return; }
  let pair = row_pairs[r];
  if (pair == ${NO_ROW}u) { return; }
  let e = expert_of(r, P.e0, P.e1);
  let g_row = P.gOff + (pair / P.slots) * P.hout;
  let w_col = P.downOff + (e - P.e0) * P.hout * P.inter + i;
  var acc = 0.0;
  for (var n = 0u; n < P.hout; n++) { acc += g[g_row + n] * load_down(w_col + n * P.inter); }
  let at = r * P.inter + i;
  u[P.uOff + at] = acc;
  ga[P.gaOff + at] = load_w(P.wOff + pair) * acc * 2.0 * max(pre[P.preOff + at], 0.0);
}`;
  device.run({
    name: 'moe_grad_hidden',
    source,
    params: p,
    bindings: [starts.range, rowPairs.range, gr.range, w.range, down.range, pre.range, u.range, ga.range],
    workgroups: device.grid(rows * z.inter, WG),
    detail: `experts ${e0}..${e1 - 1} of ${z.experts} [${z.hout},${z.inter}] ${o.downProj.dtype}`,
  });
}

/** ∂w[t, s] = u·relu(a)² (+ g_t·b_down,e) per pair; NaN for an out-of-range expert index. */
function weightGrad(device: WebGpuDevice, z: Sizes, o: MoeExpertOperands, grad: Tensor, pass: Pass, out: Tensor): void {
  const g = pass.grouping;
  const pairs = g.pairs;
  const pairRows = device.bind(g.pairRows.storage, 0, pairs, 'moeExperts backward pair rows');
  const pre = device.bind(pass.pre.storage, pass.pre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activations');
  const u = device.bind(pass.u.storage, pass.u.offset, g.rowCapacity * z.inter, 'moeExperts backward u');
  const dst = device.bind(out.storage, out.offset + pass.t0 * z.slots, pairs, 'moeExperts backward weight gradient');
  const p = new Params()
    .u32('pairs', pairs)
    .u32('inter', z.inter)
    .u32('hout', z.hout)
    .u32('slots', z.slots)
    .u32('preOff', pre.elementOffset)
    .u32('uOff', u.elementOffset)
    .u32('outOff', dst.elementOffset)
    // NaN cannot be a WGSL constant; it comes in as bits.
    .u32('nanBits', 0x7fc00000);
  const bindings: BufferRange[] = [pairRows.range, pre.range, u.range];
  const decls = [declareStorage(1, 'pair_rows', 'u32', 'read'), declareStorage(2, 'pre', 'f32', 'read'), declareStorage(3, 'u', 'f32', 'read')];
  let biasTerm = '';
  if (o.downBias) {
    const ix = device.bind(o.indices.storage, o.indices.offset + pass.t0 * z.slots, pairs, 'moeExperts backward indices');
    const gr = device.bind(grad.storage, grad.offset + pass.t0 * z.hout, pass.count * z.hout, 'moeExperts backward output gradient');
    const b = device.bind(o.downBias.storage, o.downBias.offset, z.experts * z.hout, 'moeExperts backward down bias');
    p.u32('idxOff', ix.elementOffset).u32('gOff', gr.elementOffset).u32('bOff', b.elementOffset);
    bindings.push(ix.range, gr.range, b.range);
    decls.push(declareStorage(4, 'indices', 'i32', 'read'), declareStorage(5, 'g', 'f32', 'read'), inputF32(6, 'bias', o.downBias.dtype));
    biasTerm = `
    let e = u32(indices[P.idxOff + q]);
    let g_row = P.gOff + (q / P.slots) * P.hout;
    for (var n = 0u; n < P.hout; n++) { acc += g[g_row + n] * load_bias(P.bOff + e * P.hout + n); }`;
  }
  const outBinding = bindings.length + 1;
  decls.push(declareStorage(outBinding, 'out', 'f32', 'read_write'));
  bindings.push(dst.range);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let q = ${flatIndex(WG)};
  if (q >= P.pairs) { return; }
  let r = pair_rows[q];
  if (r == ${NO_ROW}u) {
    out[P.outOff + q] = bitcast<f32>(P.nanBits);
    return;
  }
  var acc = 0.0;
  for (var i = 0u; i < P.inter; i++) {
    let h = max(pre[P.preOff + r * P.inter + i], 0.0);
    acc += u[P.uOff + r * P.inter + i] * h * h;
  }${biasTerm}
  out[P.outOff + q] = acc;
}`;
  device.run({
    name: 'moe_grad_weights',
    source,
    params: p,
    bindings,
    workgroups: device.grid(pairs, WG),
    detail: `pairs=${pairs} I=${z.inter}${o.downBias ? ' bias' : ''}`,
  });
}

/**
 * ∂x[t, j] (+)= Σ_s Σ_i up[e_s, i, j]·∂a[r_s, i] over the token's slots whose expert is in [e0, e1):
 * a gather per token, in slot order; NaN when a slot's expert index is out of range.
 */
function inputGrad(device: WebGpuDevice, z: Sizes, o: MoeExpertOperands, pass: Pass, e0: number, e1: number, out: Tensor): void {
  const g = pass.grouping;
  const pairs = g.pairs;
  const pairRows = device.bind(g.pairRows.storage, 0, pairs, 'moeExperts backward pair rows');
  const ix = device.bind(o.indices.storage, o.indices.offset + pass.t0 * z.slots, pairs, 'moeExperts backward indices');
  const ga = device.bind(pass.gradPre.storage, pass.gradPre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activation gradient');
  const up = device.bind(o.upProj.storage, o.upProj.offset + e0 * z.inter * z.hin, (e1 - e0) * z.inter * z.hin, 'moeExperts backward up weight');
  const dst = device.bind(out.storage, out.offset + pass.t0 * z.hin, pass.count * z.hin, 'moeExperts backward input gradient');
  const p = new Params()
    .u32('tokens', pass.count)
    .u32('hin', z.hin)
    .u32('inter', z.inter)
    .u32('slots', z.slots)
    .u32('e0', e0)
    .u32('e1', e1)
    .u32('accumulate', e0 > 0 ? 1 : 0)
    .u32('idxOff', ix.elementOffset)
    .u32('gaOff', ga.elementOffset)
    .u32('upOff', up.elementOffset)
    .u32('outOff', dst.elementOffset)
    .u32('nanBits', 0x7fc00000);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'pair_rows', 'u32', 'read')}
${declareStorage(2, 'indices', 'i32', 'read')}
${declareStorage(3, 'ga', 'f32', 'read')}
${inputF32(4, 'up', o.upProj.dtype)}
${declareStorage(5, 'out', 'f32', 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  let t = idx / P.hin;
  let j = idx % P.hin;
  if (t >= P.tokens) { return; }
  var acc = 0.0;
  for (var s = 0u; s < P.slots; s++) {
    let q = t * P.slots + s;
    let r = pair_rows[q];
    if (r == ${NO_ROW}u) {
      acc = bitcast<f32>(P.nanBits);
      break;
    }
    let e = u32(indices[P.idxOff + q]);
    if (e < P.e0 || e >= P.e1) { continue; }
    let w_col = P.upOff + (e - P.e0) * P.inter * P.hin + j;
    let ga_row = P.gaOff + r * P.inter;
    for (var i = 0u; i < P.inter; i++) { acc += load_up(w_col + i * P.hin) * ga[ga_row + i]; }
  }
  let at = P.outOff + idx;
  if (P.accumulate != 0u) { acc = out[at] + acc; }
  out[at] = acc;
}`;
  device.run({
    name: 'moe_grad_input',
    source,
    params: p,
    bindings: [pairRows.range, ix.range, ga.range, up.range, dst.range],
    workgroups: device.grid(pass.count * z.hin, WG),
    detail: `experts ${e0}..${e1 - 1} of ${z.experts} [${z.inter},${z.hin}] ${o.upProj.dtype}`,
  });
}

/** Which per-expert gradient {@link expertSum} computes. */
type ExpertSum = 'down' | 'up' | 'downBias' | 'upBias';

/**
 * out[e, m, n] (+)= Σ over expert e's rows of left(r, m)·right(r, n), for e in [e0, e1): ∂down
 * (left w·g_t over Hout, right relu(a)² over I), ∂up (left ∂a over I, right x_t over Hin) and the
 * bias gradients (right 1). One invocation per gradient element, rows in segment order; a later
 * pass adds to what the earlier ones wrote.
 */
function expertSum(device: WebGpuDevice, kind: ExpertSum, z: Sizes, o: MoeExpertOperands, grad: Tensor, pass: Pass, e0: number, e1: number, out: Tensor): void {
  const g = pass.grouping;
  const fromOutput = kind === 'down' || kind === 'downBias';
  const m = fromOutput ? z.hout : z.inter;
  const n = kind === 'down' ? z.inter : kind === 'up' ? z.hin : 1;
  const starts = device.bind(g.segmentStarts.storage, 0, z.experts + 1, 'moeExperts backward segment starts');
  const counts = device.bind(g.counts.storage, 0, z.experts, 'moeExperts backward counts');
  const rowPairs = device.bind(g.rowPairs.storage, 0, g.rowCapacity, 'moeExperts backward row pairs');
  const dst = device.bind(out.storage, out.offset + e0 * m * n, (e1 - e0) * m * n, `moeExperts backward ${kind} gradient`);
  const p = new Params()
    .u32('e0', e0)
    .u32('size', (e1 - e0) * m * n)
    .u32('m', m)
    .u32('n', n)
    .u32('inter', z.inter)
    .u32('hin', z.hin)
    .u32('hout', z.hout)
    .u32('slots', z.slots)
    .u32('accumulate', pass.accumulate ? 1 : 0)
    .u32('outOff', dst.elementOffset);
  const bindings: BufferRange[] = [starts.range, counts.range, rowPairs.range];
  const decls = [declareStorage(1, 'starts', 'u32', 'read'), declareStorage(2, 'counts', 'u32', 'read'), declareStorage(3, 'row_pairs', 'u32', 'read')];
  let left: string;
  if (fromOutput) {
    const w = device.bind(o.weights.storage, o.weights.offset + pass.t0 * z.slots, g.pairs, 'moeExperts backward routing weights');
    const gr = device.bind(grad.storage, grad.offset + pass.t0 * z.hout, pass.count * z.hout, 'moeExperts backward output gradient');
    p.u32('wOff', w.elementOffset).u32('gOff', gr.elementOffset);
    bindings.push(w.range, gr.range);
    decls.push(inputF32(4, 'w', o.weights.dtype), declareStorage(5, 'g', 'f32', 'read'));
    left = 'load_w(P.wOff + pair) * g[P.gOff + t * P.hout + mi]';
  } else {
    const ga = device.bind(pass.gradPre.storage, pass.gradPre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activation gradient');
    p.u32('gaOff', ga.elementOffset);
    bindings.push(ga.range);
    decls.push(declareStorage(4, 'ga', 'f32', 'read'));
    left = 'ga[P.gaOff + r * P.inter + mi]';
  }
  let right = '1.0';
  if (kind === 'down') {
    const pre = device.bind(pass.pre.storage, pass.pre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activations');
    p.u32('preOff', pre.elementOffset);
    bindings.push(pre.range);
    decls.push(declareStorage(bindings.length, 'pre', 'f32', 'read'));
    right = 'relu2(pre[P.preOff + r * P.inter + ni])';
  } else if (kind === 'up') {
    const x = device.bind(o.x.storage, o.x.offset + pass.t0 * z.hin, pass.count * z.hin, 'moeExperts backward x');
    p.u32('xOff', x.elementOffset);
    bindings.push(x.range);
    decls.push(inputF32(bindings.length, 'x', o.x.dtype));
    right = 'load_x(P.xOff + t * P.hin + ni)';
  }
  bindings.push(dst.range);
  decls.push(declareStorage(bindings.length, 'out', 'f32', 'read_write'));
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
fn relu2(v: f32) -> f32 { let r = max(v, 0.0); return r * r; }
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.size) { return; }
  let e = P.e0 + idx / (P.m * P.n);
  let mi = (idx / P.n) % P.m;
  let ni = idx % P.n;
  let first = starts[e];
  let end = first + counts[e];
  var acc = 0.0;
  for (var r = first; r < end; r++) {
    let pair = row_pairs[r];
    let t = pair / P.slots;
    acc += ${left} * ${right};
  }
  let at = P.outOff + idx;
  if (P.accumulate != 0u) { acc = out[at] + acc; }
  out[at] = acc;
}`;
  device.run({
    name: `moe_grad_${kind}`,
    source,
    params: p,
    bindings,
    workgroups: device.grid((e1 - e0) * m * n, WG),
    detail: `experts ${e0}..${e1 - 1} of ${z.experts} [${m},${n}]`,
  });
}
