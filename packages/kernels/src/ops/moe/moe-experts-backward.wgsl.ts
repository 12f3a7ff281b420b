/**
 * The grouped experts' backward on the GPU, recorded without a readback, in the forward's token
 * passes. Per pass: group the pairs by expert (the forward's kernels), recompute the pre-activations
 * a = x·upᵀ + b_up with the forward's grouped GEMM, then
 *
 * - hidden:   u = down_eᵀ·g_t per grouped row (the grouped GEMM, gathering g by token, against the
 *             down weights transposed once per call), and ∂a = w·u·2·relu(a);
 * - weights:  ∂w[t,s] = u·relu(a)² + g_t·b_down,e (= g_t·y, without re-running the down GEMM);
 * - input:    v = up_eᵀ·∂a per grouped row (the grouped GEMM against the transposed up weights),
 *             then ∂x_t = Σ_s v[row of (t, s)], a gather over the token's k rows (no scatter, no
 *             float atomics);
 * - experts:  ∂down_e = Σ_rows w·g_t ⊗ relu(a)², ∂up_e = Σ_rows ∂a ⊗ x_t, and the bias sums, each
 *             gradient element summed over its expert's segment by one invocation.
 *
 * The hidden activations are recomputed rather than saved: keeping them would hold T·k·I floats
 * per layer from the forward to the backward (more than the layer's input), for one grouped GEMM.
 * Sums run in a fixed order (segments in (token, slot) order, passes and expert ranges in turn),
 * so results are deterministic. Stacked tensors above one storage binding go in expert ranges.
 */
import { noGrad } from '../../autograd/graph';
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { BindingTooLargeError } from '../../runtime/bindings';
import { bytesPerElement } from '../../dtype';
import type { BufferRange } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { GRID_ARGS, NAN_SAFE_F32, declareStorage, flatIndex, inputF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { copyInto, narrow, transpose } from '../layout/layout';
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

/** `grad` [T, Hout] contiguous f32 (T, Hout > 0); writes the non-null gradients of `out` (f32, shaped like their operands). */
export function moeExpertsBackwardGpu(device: WebGpuDevice, o: MoeExpertOperands, grad: Tensor, out: MoeExpertGrads): void {
  const [tokens, hin] = o.x.shape as [number, number];
  const slots = o.indices.shape[1]!;
  const [experts, inter] = o.upProj.shape as [number, number];
  const hout = o.downProj.shape[1]!;
  const z: Sizes = { tokens, slots, experts, hin, inter, hout };
  // The input gradient rows are f32 whatever x's dtype, and the grouped input-gradient rows are Hin wide.
  const perPass = tokensPerPass(device, tokens, slots, experts, hin * 4, inter, Math.max(hin, hout));
  // Checked before anything is recorded, so a failure leaves no half-built pass behind (the grouped
  // GEMMs bind the weights, and their transposed copies, in ranges of the same size).
  const upRange = expertRange(device, inter * hin * bytesPerElement(o.upProj.dtype), 'moe_up');
  const downRange = expertRange(device, hout * inter * bytesPerElement(o.downProj.dtype), 'moe_grad_hidden');
  const upGradRange = expertRange(device, inter * hin * 4, 'moeExperts backward up gradient');
  const downGradRange = expertRange(device, hout * inter * 4, 'moeExperts backward down gradient');
  const downT = transposedExperts(o.downProj, downRange);
  const upT = out.x ? transposedExperts(o.upProj, upRange) : null;
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
    const gemm = (name: string, a: Tensor, aFirst: number, aRows: number, gather: boolean, weight: Tensor, bias: Tensor | null, result: Tensor) =>
      groupedGemm(device, { name, grouping, a, aFirst, aRows, gather: gather ? { slots } : null, weight, bias, relu2: false, out: result });
    gemm('moe_up', o.x, t0 * hin, count, true, o.upProj, o.upBias, pass.pre);
    gemm('moe_grad_hidden', grad, t0 * hout, count, true, downT, null, pass.u);
    preActivationGrad(device, z, o, pass);
    if (out.weights) weightGrad(device, z, o, grad, pass, out.weights);
    if (out.x && upT) {
      const v = empty([rows, hin], { device });
      gemm('moe_grad_input', pass.gradPre, 0, rows, false, upT, null, v);
      inputGrad(device, z, pass, v, out.x);
      v.dispose();
    }
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
  downT.dispose();
  upT?.dispose();
}

/**
 * [E, N, K] → a contiguous [E, K, N] copy in the same dtype, for the grouped GEMM (which reads its
 * weight with K contiguous). Copied `range` experts at a time, so each copy fits one binding.
 */
function transposedExperts(w: Tensor, range: number): Tensor {
  const [experts, n, k] = w.shape as [number, number, number];
  const out = empty([experts, k, n], { dtype: w.dtype, device: w.device });
  noGrad(() => {
    for (let e0 = 0; e0 < experts; e0 += range) {
      const count = Math.min(range, experts - e0);
      const dst = narrow(out, 0, e0, count);
      const src = narrow(w, 0, e0, count);
      const srcT = transpose(src, 1, 2);
      copyInto(dst, srcT);
      for (const view of [dst, src, srcT]) view.dispose();
    }
  });
  return out;
}

/** Experts per binding for a stacked tensor of `expertBytes` per expert; throws when not even one fits. */
function expertRange(device: WebGpuDevice, expertBytes: number, what: string): number {
  const perBinding = Math.floor(bindingBudget(device) / Math.max(expertBytes, 1));
  if (perBinding < 1) {
    throw new BindingTooLargeError(
      `${what}: one expert (${expertBytes} bytes) exceeds maxStorageBufferBindingSize (${device.limits.maxStorageBufferBindingSize})`,
    );
  }
  return perBinding;
}

/**
 * ∂a[r, i] = w·u·2·relu(a) over every grouped row (zero for padding rows and rows past the last
 * segment, which the input-gradient GEMM may read).
 */
function preActivationGrad(device: WebGpuDevice, z: Sizes, o: MoeExpertOperands, pass: Pass): void {
  const g = pass.grouping;
  const size = g.rowCapacity * z.inter;
  const starts = device.bind(g.segmentStarts.storage, 0, z.experts + 1, 'moeExperts backward segment starts');
  const rowPairs = device.bind(g.rowPairs.storage, 0, g.rowCapacity, 'moeExperts backward row pairs');
  const w = device.bind(o.weights.storage, o.weights.offset + pass.t0 * z.slots, g.pairs, 'moeExperts backward routing weights');
  const grouped = (t: Tensor, what: string) => device.bind(t.storage, t.offset, size, what);
  const pre = grouped(pass.pre, 'moeExperts backward pre-activations');
  const u = grouped(pass.u, 'moeExperts backward u');
  const ga = grouped(pass.gradPre, 'moeExperts backward pre-activation gradient');
  const p = new Params()
    .u32('size', size)
    .u32('inter', z.inter)
    .u32('experts', z.experts)
    .u32('wOff', w.elementOffset)
    .u32('preOff', pre.elementOffset)
    .u32('uOff', u.elementOffset)
    .u32('gaOff', ga.elementOffset);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'starts', 'u32', 'read')}
${declareStorage(2, 'row_pairs', 'u32', 'read')}
${inputF32(3, 'w', o.weights.dtype)}
${declareStorage(4, 'pre', 'f32', 'read')}
${declareStorage(5, 'u', 'f32', 'read')}
${declareStorage(6, 'ga', 'f32', 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.size) { return; }
  let r = idx / P.inter;
  var value = 0.0;
  if (r < starts[P.experts]) {
    let pair = row_pairs[r];
    if (pair != ${NO_ROW}u) { value = load_w(P.wOff + pair) * u[P.uOff + idx] * 2.0 * max(pre[P.preOff + idx], 0.0); }
  }
  ga[P.gaOff + idx] = value;
}`;
  device.run({
    name: 'moe_grad_pre',
    source,
    params: p,
    bindings: [starts.range, rowPairs.range, w.range, pre.range, u.range, ga.range],
    workgroups: device.grid(size, WG),
    detail: `[${g.rowCapacity},${z.inter}]`,
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
 * ∂x[t, j] = Σ_s v[row of (t, s), j]: a gather per token, in slot order; NaN when a slot's expert
 * index is out of range.
 */
function inputGrad(device: WebGpuDevice, z: Sizes, pass: Pass, v: Tensor, out: Tensor): void {
  const g = pass.grouping;
  const pairRows = device.bind(g.pairRows.storage, 0, g.pairs, 'moeExperts backward pair rows');
  const rows = device.bind(v.storage, v.offset, g.rowCapacity * z.hin, 'moeExperts backward grouped input gradient');
  const dst = device.bind(out.storage, out.offset + pass.t0 * z.hin, pass.count * z.hin, 'moeExperts backward input gradient');
  const p = new Params()
    .u32('size', pass.count * z.hin)
    .u32('hin', z.hin)
    .u32('slots', z.slots)
    .u32('rowsOff', rows.elementOffset)
    .u32('outOff', dst.elementOffset)
    .u32('nanBits', 0x7fc00000);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'pair_rows', 'u32', 'read')}
${declareStorage(2, 'rows', 'f32', 'read')}
${declareStorage(3, 'out', 'f32', 'read_write')}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.size) { return; }
  let t = idx / P.hin;
  let j = idx % P.hin;
  var acc = 0.0;
  for (var s = 0u; s < P.slots; s++) {
    let r = pair_rows[t * P.slots + s];
    if (r == ${NO_ROW}u) {
      acc = bitcast<f32>(P.nanBits);
      break;
    }
    acc += rows[P.rowsOff + r * P.hin + j];
  }
  out[P.outOff + idx] = acc;
}`;
  device.run({
    name: 'moe_grad_input_gather',
    source,
    params: p,
    bindings: [pairRows.range, rows.range, dst.range],
    workgroups: device.grid(pass.count * z.hin, WG),
    detail: `[${pass.count},${z.hin}] k=${z.slots}`,
  });
}

/** Which per-expert gradient {@link expertSum} computes. */
type ExpertSum = 'down' | 'up' | 'downBias' | 'upBias';

/** Gradient rows (m) and columns (n) per expertSum invocation: each row's loads serve a TILE_M × TILE_N block. */
const TILE_M = 8;
const TILE_N = 4;

/**
 * out[e, m, n] (+)= Σ over expert e's rows of left(r, m)·right(r, n), for e in [e0, e1): ∂down
 * (left w·g_t over Hout, right relu(a)² over I), ∂up (left ∂a over I, right x_t over Hin) and the
 * bias gradients (right 1). Each invocation sums one TILE_M × TILE_N block over the segment's rows
 * in order; a later pass adds to what the earlier ones wrote.
 */
function expertSum(device: WebGpuDevice, kind: ExpertSum, z: Sizes, o: MoeExpertOperands, grad: Tensor, pass: Pass, e0: number, e1: number, out: Tensor): void {
  const g = pass.grouping;
  const fromOutput = kind === 'down' || kind === 'downBias';
  const bias = kind === 'downBias' || kind === 'upBias';
  const m = fromOutput ? z.hout : z.inter;
  const n = kind === 'down' ? z.inter : kind === 'up' ? z.hin : 1;
  const tileN = bias ? 1 : TILE_N;
  const tilesM = Math.ceil(m / TILE_M);
  const tilesN = Math.ceil(n / tileN);
  const invocations = (e1 - e0) * tilesM * tilesN;
  const starts = device.bind(g.segmentStarts.storage, 0, z.experts + 1, 'moeExperts backward segment starts');
  const counts = device.bind(g.counts.storage, 0, z.experts, 'moeExperts backward counts');
  const rowPairs = device.bind(g.rowPairs.storage, 0, g.rowCapacity, 'moeExperts backward row pairs');
  const dst = device.bind(out.storage, out.offset + e0 * m * n, (e1 - e0) * m * n, `moeExperts backward ${kind} gradient`);
  const p = new Params()
    .u32('e0', e0)
    .u32('invocations', invocations)
    .u32('m', m)
    .u32('n', n)
    .u32('tilesM', tilesM)
    .u32('tilesN', tilesN)
    .u32('inter', z.inter)
    .u32('hin', z.hin)
    .u32('hout', z.hout)
    .u32('slots', z.slots)
    .u32('accumulate', pass.accumulate ? 1 : 0)
    .u32('outOff', dst.elementOffset);
  const bindings: BufferRange[] = [starts.range, counts.range, rowPairs.range];
  const decls = [declareStorage(1, 'starts', 'u32', 'read'), declareStorage(2, 'counts', 'u32', 'read'), declareStorage(3, 'row_pairs', 'u32', 'read')];
  // Operand rows are read as vec4s where their length and binding offset allow (four loads fewer
  // in five); columns past the end are clamped to the row's last vector and not stored.
  const vec4Decl = (binding: number, name: string) => `@group(0) @binding(${binding}) var<storage, read> ${name}: array<vec4<f32>>;`;
  const ms = [...Array(TILE_M).keys()];
  const ns = [...Array(tileN).keys()];
  let leftRow: string;
  let leftArray: string;
  let leftScale = '';
  let leftOff: number;
  if (fromOutput) {
    const w = device.bind(o.weights.storage, o.weights.offset + pass.t0 * z.slots, g.pairs, 'moeExperts backward routing weights');
    const gr = device.bind(grad.storage, grad.offset + pass.t0 * z.hout, pass.count * z.hout, 'moeExperts backward output gradient');
    p.u32('wOff', w.elementOffset).u32('gOff', gr.elementOffset);
    bindings.push(w.range, gr.range);
    leftOff = gr.elementOffset;
    leftArray = 'g';
    leftScale = 'ws * ';
    decls.push(inputF32(4, 'w', o.weights.dtype));
    leftRow = 'let ws = load_w(P.wOff + pair); let left_row = P.gOff + t * P.hout;';
  } else {
    const ga = device.bind(pass.gradPre.storage, pass.gradPre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activation gradient');
    p.u32('gaOff', ga.elementOffset);
    bindings.push(ga.range);
    leftOff = ga.elementOffset;
    leftArray = 'ga';
    leftRow = 'let left_row = P.gaOff + r * P.inter;';
  }
  const vectorLeft = m % 4 === 0 && leftOff % 4 === 0;
  decls.push(vectorLeft ? vec4Decl(bindings.length, leftArray) : declareStorage(bindings.length, leftArray, 'f32', 'read'));
  const leftLoads = vectorLeft
    ? [
        `let left_last = (left_row + P.m) / 4u - 1u;`,
        ...Array.from({ length: TILE_M / 4 }, (_, c) => `let lv${c} = ${leftScale}${leftArray}[min((left_row + m_first) / 4u + ${c}u, left_last)];`),
        ...ms.map((a) => `let l${a} = lv${Math.floor(a / 4)}[${a % 4}];`),
      ]
    : ms.map((a) => `let l${a} = ${leftScale}${leftArray}[left_row + m${a}];`);
  let rightRow = '';
  let rightLoads = ns.map((b) => `let r${b} = 1.0;`);
  if (kind === 'down') {
    const pre = device.bind(pass.pre.storage, pass.pre.offset, g.rowCapacity * z.inter, 'moeExperts backward pre-activations');
    p.u32('preOff', pre.elementOffset);
    bindings.push(pre.range);
    const vector = n % 4 === 0 && pre.elementOffset % 4 === 0;
    decls.push(vector ? vec4Decl(bindings.length, 'pre') : declareStorage(bindings.length, 'pre', 'f32', 'read'));
    rightRow = 'let right_row = P.preOff + r * P.inter;';
    rightLoads = vector
      ? ['let rh = relu_nan_v4(pre[(right_row + n_first) / 4u]); let rv = rh * rh;', ...ns.map((b) => `let r${b} = rv[${b}];`)]
      : ns.map((b) => `let r${b} = relu2(pre[right_row + n${b}]);`);
  } else if (kind === 'up') {
    const x = device.bind(o.x.storage, o.x.offset + pass.t0 * z.hin, pass.count * z.hin, 'moeExperts backward x');
    p.u32('xOff', x.elementOffset);
    bindings.push(x.range);
    const vector = o.x.dtype === 'f32' && n % 4 === 0 && x.elementOffset % 4 === 0;
    decls.push(vector ? vec4Decl(bindings.length, 'x') : inputF32(bindings.length, 'x', o.x.dtype));
    rightRow = 'let right_row = P.xOff + t * P.hin;';
    rightLoads = vector
      ? ['let rv = x[(right_row + n_first) / 4u];', ...ns.map((b) => `let r${b} = rv[${b}];`)]
      : ns.map((b) => `let r${b} = load_x(right_row + n${b});`);
  }
  bindings.push(dst.range);
  decls.push(declareStorage(bindings.length, 'out', 'f32', 'read_write'));
  const body = [...leftLoads, ...rightLoads, ...ms.flatMap((a) => ns.map((b) => `acc${a}_${b} += l${a} * r${b};`))];
  const stores = ms.flatMap((a) =>
    ns.map(
      (b) => `if (m_first + ${a}u < P.m && n_first + ${b}u < P.n) {
    let at = P.outOff + (expert_row + m${a}) * P.n + n${b};
    if (P.accumulate != 0u) { acc${a}_${b} += out[at]; }
    out[at] = acc${a}_${b};
  }`,
    ),
  );
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
${NAN_SAFE_F32}
fn relu2(v: f32) -> f32 { let r = relu_nan(v); return r * r; }
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.invocations) { return; }
  let local_e = idx / (P.tilesM * P.tilesN);
  let e = P.e0 + local_e;
  let m_first = (idx / P.tilesN) % P.tilesM * ${TILE_M}u;
  let n_first = idx % P.tilesN * ${tileN}u;
  let expert_row = local_e * P.m;
  ${ms.map((a) => `let m${a} = min(m_first + ${a}u, P.m - 1u);`).join('\n  ')}
  ${ns.map((b) => `let n${b} = min(n_first + ${b}u, P.n - 1u);`).join('\n  ')}
  ${ms.flatMap((a) => ns.map((b) => `var acc${a}_${b} = 0.0;`)).join('\n  ')}
  let first = starts[e];
  let end = first + counts[e];
  for (var r = first; r < end; r++) {
    let pair = row_pairs[r];
    let t = pair / P.slots;
    ${leftRow}
    ${rightRow}
    ${body.join('\n    ')}
  }
  ${stores.join('\n  ')}
}`;
  device.run({
    name: `moe_grad_${kind}`,
    source,
    params: p,
    bindings,
    workgroups: device.grid(invocations, WG),
    detail: `experts ${e0}..${e1 - 1} of ${z.experts} [${m},${n}] tile ${TILE_M}×${tileN}`,
  });
}
