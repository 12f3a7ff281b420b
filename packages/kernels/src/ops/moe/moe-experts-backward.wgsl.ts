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
import { BindingTooLargeError, bindTensors, startsOnVec4, type NamedBinding, type NamedTensor } from '../../runtime/bindings';
import { bytesPerElement } from '../../dtype';
import { Params } from '../../runtime/params';
import { GRID_ARGS, NAN_SAFE_F32, flatIndex } from '../../runtime/wgsl';
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

const segmentStarts = (g: ExpertGrouping): NamedTensor => ({ name: 'starts', tensor: g.segmentStarts, what: 'moeExperts backward segment starts' });
const rowPairs = (g: ExpertGrouping): NamedTensor => ({ name: 'row_pairs', tensor: g.rowPairs, what: 'moeExperts backward row pairs' });
const pairRowsOf = (g: ExpertGrouping): NamedTensor => ({ name: 'pair_rows', tensor: g.pairRows, what: 'moeExperts backward pair rows' });

function routingWeights(z: Sizes, o: MoeExpertOperands, pass: Pass): NamedTensor {
  return { name: 'w', tensor: o.weights, window: { start: pass.t0 * z.slots, length: pass.grouping.pairs }, what: 'moeExperts backward routing weights' };
}

function outputGradient(z: Sizes, grad: Tensor, pass: Pass): NamedTensor {
  return { name: 'g', tensor: grad, window: { start: pass.t0 * z.hout, length: pass.count * z.hout }, what: 'moeExperts backward output gradient' };
}

function preActivations(z: Sizes, pass: Pass): NamedTensor {
  return { name: 'pre', tensor: pass.pre, window: { start: 0, length: pass.grouping.rowCapacity * z.inter }, what: 'moeExperts backward pre-activations' };
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
  const p = new Params().u32('size', size).u32('inter', z.inter).u32('experts', z.experts);
  const bound = bindTensors(
    device,
    'moeExperts backward',
    [
      segmentStarts(g),
      rowPairs(g),
      routingWeights(z, o, pass),
      preActivations(z, pass),
      { name: 'u', tensor: pass.u, window: { start: 0, length: size }, what: 'moeExperts backward u' },
      { name: 'ga', tensor: pass.gradPre, window: { start: 0, length: size }, what: 'moeExperts backward pre-activation gradient', writable: true },
    ],
    p,
  );
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
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
    bindings: bound.ranges,
    workgroups: device.grid(size, WG),
    detail: `[${g.rowCapacity},${z.inter}]`,
  });
}

/** ∂w[t, s] = u·relu(a)² (+ g_t·b_down,e) per pair; NaN for an out-of-range expert index. */
function weightGrad(device: WebGpuDevice, z: Sizes, o: MoeExpertOperands, grad: Tensor, pass: Pass, out: Tensor): void {
  const g = pass.grouping;
  const pairs = g.pairs;
  const p = new Params()
    .u32('pairs', pairs)
    .u32('inter', z.inter)
    .u32('hout', z.hout)
    .u32('slots', z.slots)
    // NaN cannot be a WGSL constant; it comes in as bits.
    .u32('nanBits', 0x7fc00000);
  const list: NamedBinding[] = [
    pairRowsOf(g),
    preActivations(z, pass),
    { name: 'u', tensor: pass.u, window: { start: 0, length: g.rowCapacity * z.inter }, what: 'moeExperts backward u' },
  ];
  let biasTerm = '';
  if (o.downBias) {
    list.push(
      { name: 'indices', tensor: o.indices, window: { start: pass.t0 * z.slots, length: pairs }, what: 'moeExperts backward indices' },
      outputGradient(z, grad, pass),
      { name: 'bias', tensor: o.downBias, window: { start: 0, length: z.experts * z.hout }, what: 'moeExperts backward down bias' },
    );
    biasTerm = `
    let e = u32(indices[P.indicesOff + q]);
    let g_row = P.gOff + (q / P.slots) * P.hout;
    for (var n = 0u; n < P.hout; n++) { acc += g[g_row + n] * load_bias(P.biasOff + e * P.hout + n); }`;
  }
  list.push({ name: 'out', tensor: out, window: { start: pass.t0 * z.slots, length: pairs }, what: 'moeExperts backward weight gradient', writable: true });
  const bound = bindTensors(device, 'moeExperts backward', list, p);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
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
    bindings: bound.ranges,
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
  const p = new Params()
    .u32('size', pass.count * z.hin)
    .u32('hin', z.hin)
    .u32('slots', z.slots)
    .u32('nanBits', 0x7fc00000);
  const bound = bindTensors(
    device,
    'moeExperts backward',
    [
      pairRowsOf(g),
      { name: 'rows', tensor: v, window: { start: 0, length: g.rowCapacity * z.hin }, what: 'moeExperts backward grouped input gradient' },
      { name: 'out', tensor: out, window: { start: pass.t0 * z.hin, length: pass.count * z.hin }, what: 'moeExperts backward input gradient', writable: true },
    ],
    p,
  );
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
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
    bindings: bound.ranges,
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
    .u32('accumulate', pass.accumulate ? 1 : 0);
  const list: NamedBinding[] = [segmentStarts(g), { name: 'counts', tensor: g.counts, what: 'moeExperts backward counts' }, rowPairs(g)];
  // Operand rows are read as vec4s (P.<name>Off then counts vec4s) where their length and first
  // element allow (four loads fewer in five); columns past the end are clamped to the row's last
  // vector and not stored.
  const ms = [...Array(TILE_M).keys()];
  const ns = [...Array(tileN).keys()];
  let leftRow: string;
  let leftArray: string;
  let leftScale = '';
  let left: NamedTensor;
  if (fromOutput) {
    list.push(routingWeights(z, o, pass));
    left = outputGradient(z, grad, pass);
    leftArray = 'g';
    leftScale = 'ws * ';
    leftRow = 'let ws = load_w(P.wOff + pair); let left_row = t * P.hout;';
  } else {
    left = { name: 'ga', tensor: pass.gradPre, window: { start: 0, length: g.rowCapacity * z.inter }, what: 'moeExperts backward pre-activation gradient' };
    leftArray = 'ga';
    leftRow = 'let left_row = r * P.inter;';
  }
  const vectorLeft = m % 4 === 0 && startsOnVec4(left);
  list.push({ ...left, vec4: vectorLeft });
  const leftLoads = vectorLeft
    ? [
        `let left_last = P.${leftArray}Off + (left_row + P.m) / 4u - 1u;`,
        ...Array.from(
          { length: TILE_M / 4 },
          (_, c) => `let lv${c} = ${leftScale}${leftArray}[min(P.${leftArray}Off + (left_row + m_first) / 4u + ${c}u, left_last)];`,
        ),
        ...ms.map((a) => `let l${a} = lv${Math.floor(a / 4)}[${a % 4}];`),
      ]
    : ms.map((a) => `let l${a} = ${leftScale}${leftArray}[P.${leftArray}Off + left_row + m${a}];`);
  let rightRow = '';
  let rightLoads = ns.map((b) => `let r${b} = 1.0;`);
  if (kind === 'down') {
    const pre = preActivations(z, pass);
    const vector = n % 4 === 0 && startsOnVec4(pre);
    list.push({ ...pre, vec4: vector });
    rightRow = 'let right_row = r * P.inter;';
    rightLoads = vector
      ? ['let rh = relu_nan_v4(pre[P.preOff + (right_row + n_first) / 4u]); let rv = rh * rh;', ...ns.map((b) => `let r${b} = rv[${b}];`)]
      : ns.map((b) => `let r${b} = relu2(pre[P.preOff + right_row + n${b}]);`);
  } else if (kind === 'up') {
    const x: NamedTensor = { name: 'x', tensor: o.x, window: { start: pass.t0 * z.hin, length: pass.count * z.hin }, what: 'moeExperts backward x' };
    const vector = o.x.dtype === 'f32' && n % 4 === 0 && startsOnVec4(x);
    list.push({ ...x, vec4: vector });
    rightRow = 'let right_row = t * P.hin;';
    rightLoads = vector
      ? ['let rv = x[P.xOff + (right_row + n_first) / 4u];', ...ns.map((b) => `let r${b} = rv[${b}];`)]
      : ns.map((b) => `let r${b} = load_x(P.xOff + right_row + n${b});`);
  }
  list.push({
    name: 'out',
    tensor: out,
    window: { start: e0 * m * n, length: (e1 - e0) * m * n },
    what: `moeExperts backward ${kind} gradient`,
    writable: true,
  });
  const bound = bindTensors(device, 'moeExperts backward', list, p);
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
${bound.decls}
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
    bindings: bound.ranges,
    workgroups: device.grid(invocations, WG),
    detail: `experts ${e0}..${e1 - 1} of ${z.experts} [${m},${n}] tile ${TILE_M}×${tileN}`,
  });
}
