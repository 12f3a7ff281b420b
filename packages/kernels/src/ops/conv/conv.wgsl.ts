/**
 * WGSL kernels of the depthwise causal conv1d. The tap count K is baked into the source (it is fixed
 * per model), so the sliding window lives in named registers rather than an indexed private array.
 *
 * - `causal_conv1d`: one invocation per (row, run of TILE positions, channel), channel fastest; it
 *   slides a K-wide window down the run, so each input is read once per run instead of K times.
 * - `causal_conv1d_final_state`: one invocation per (row, channel, tap) gathers the last K inputs.
 *
 * With seqIdx, a document is a maximal run of equal ids; `run_start` tracks where the current one
 * began (or -K while the row is still in its first document, which owns the initial state), and a
 * tap at position s contributes only when s >= run_start.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

const WG = 64;
/** Positions per invocation of the prefill kernel. */
const TILE = 16;

function range(n: number): number[] {
  return Array.from({ length: n }, (_, i) => i);
}

export interface CausalConv1dLaunch {
  x: Tensor;
  weight: Tensor;
  bias: Tensor | null;
  initialState: Tensor | null;
  seqIdx: Tensor | null;
  silu: boolean;
  y: Tensor;
  finalState: Tensor;
}

/** `fn input(b, c, s) -> f32`: input at position s (i32) of row b, channel c; s < 0 reads the initial state. */
function inputFn(K: number, hasInit: boolean): string {
  return `fn input(b: u32, c: u32, s: i32) -> f32 {
  if (s >= 0) { return load_x(P.xOff + (b * P.L + u32(s)) * P.C + c); }
  return ${hasInit ? `load_init(P.initOff + (b * P.C + c) * ${K}u + u32(${K} + s))` : '0.0'};
}`;
}

export function causalConv1dGpu(device: WebGpuDevice, a: CausalConv1dLaunch): void {
  const [batch, length, channels] = a.x.shape as [number, number, number];
  const K = a.weight.shape[1]!;
  const detail = `x [${a.x.shape.join(',')}] ${a.x.dtype}, w ${a.weight.dtype}, K=${K}${a.seqIdx ? ', seqIdx' : ''}`;
  const optional: NamedBinding[] = [];
  if (a.initialState) optional.push({ name: 'init', tensor: a.initialState });
  if (a.seqIdx) optional.push({ name: 'seq', tensor: a.seqIdx });
  const seq = a.seqIdx !== null;

  // Outputs. Four channels per invocation (vec4 loads and stores) when C allows it and x is dense
  // f32; window registers v0..v(K-2) hold positions t-K+1 .. t-1, `cur` is position t.
  const V = channels % 4 === 0 && a.x.dtype === 'f32' && a.x.offset % 4 === 0 ? 4 : 1;
  const vt = V === 4 ? 'vec4<f32>' : 'f32';
  const tiles = Math.ceil(length / TILE);
  const total = batch * tiles * (channels / V);
  const p = new Params().u32('L', length).u32('C', channels).u32('tiles', tiles).u32('total', total);
  const list: NamedBinding[] = [
    { name: 'x', tensor: a.x, vec4: V === 4 },
    { name: 'w', tensor: a.weight },
    ...optional,
    { name: 'y', tensor: a.y, writable: true, vec4: V === 4 },
  ];
  if (a.bias) list.splice(2, 0, { name: 'bias', tensor: a.bias });
  const bound = bindTensors(device, 'causalConv1d', list, p);
  // Channel c..c+V-1 of a per-channel array with `stride` elements between channels.
  const gather = (load: string, index: (q: number) => string) =>
    V === 4
      ? `vec4<f32>(${range(4)
          .map((q) => `${load}(${index(q)})`)
          .join(', ')})`
      : `${load}(${index(0)})`;
  const zero = `${vt}(0.0)`;
  const tap = (k: number, v: string) => (seq ? `select(${zero}, ${v}, t - ${K - 1 - k} >= run_start)` : v);
  const terms = range(K).map((k) => `w${k} * ${tap(k, k === K - 1 ? 'cur' : `v${k}`)}`);
  const shift = [...range(K - 2).map((k) => `v${k} = v${k + 1};`), K > 1 ? `v${K - 2} = cur;` : ''].join(' ');
  const xAt = (t: string) => (V === 4 ? `x[P.xOff + ((b * P.L + u32(${t})) * P.C + c) / 4u]` : `load_x(P.xOff + (b * P.L + u32(${t})) * P.C + c)`);
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
fn silu(v: ${vt}) -> ${vt} { return v / (1.0 + exp(-v)); }
// Input at position s (i32) of row b, channels c..; s < 0 reads the initial state.
fn input(b: u32, c: u32, s: i32) -> ${vt} {
  if (s >= 0) { return ${xAt('s')}; }
  return ${a.initialState ? gather('load_init', (q) => `P.initOff + (b * P.C + c + ${q}u) * ${K}u + u32(${K} + s)`) : zero};
}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  let groups = P.C / ${V}u;
  let c = (idx % groups) * ${V}u;
  let rest = idx / groups;
  let t0 = i32((rest % P.tiles) * ${TILE}u);
  let b = rest / P.tiles;
  ${range(K)
    .map((k) => `let w${k} = ${gather('load_w', (q) => `P.wOff + (c + ${q}u) * ${K}u + ${k}u`)};`)
    .join('\n  ')}
  let bias = ${a.bias ? gather('load_bias', (q) => `P.biasOff + c + ${q}u`) : zero};
  ${range(K - 1)
    .map((k) => `var v${k} = input(b, c, t0 - ${K - 1 - k});`)
    .join('\n  ')}
  ${
    seq
      ? `let row = P.seqOff + b * P.L;
  var run_start = -${K};
  for (var s = max(1, t0 - ${K - 2}); s < t0; s++) {
    if (seq[row + u32(s)] != seq[row + u32(s - 1)]) { run_start = s; }
  }`
      : ''
  }
  let t1 = min(t0 + ${TILE}, i32(P.L));
  for (var t = t0; t < t1; t++) {
    ${seq ? 'if (t > 0 && seq[row + u32(t)] != seq[row + u32(t - 1)]) { run_start = t; }' : ''}
    let cur = input(b, c, t);
    let acc = bias + ${terms.join(' + ')};
    let out = (b * P.L + u32(t)) * P.C + c;
    y[P.yOff + ${V === 4 ? 'out / 4u' : 'out'}] = ${a.silu ? 'silu(acc)' : 'acc'};
    ${shift}
  }
}`;
  device.run({ name: 'causal_conv1d', source, params: p, bindings: bound.ranges, workgroups: device.grid(total, WG), detail });

  // Final state: the last K inputs, zeroed where they belong to an earlier document than the last token.
  const stateCount = batch * channels * K;
  const sp = new Params().u32('L', length).u32('C', channels).u32('total', stateCount);
  const stateBound = bindTensors(
    device,
    'causalConv1d final state',
    [{ name: 'x', tensor: a.x }, ...optional, { name: 'state', tensor: a.finalState, writable: true }],
    sp,
  );
  const stateSource = `${sp.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${stateBound.decls}
${inputFn(K, a.initialState !== null)}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  let k = idx % ${K}u;
  let c = (idx / ${K}u) % P.C;
  let b = idx / (${K}u * P.C);
  let s = i32(P.L) - ${K} + i32(k);
  var keep = true;
  ${
    seq
      ? `let row = P.seqOff + b * P.L;
  for (var u = max(1, s + 1); u < i32(P.L); u++) {
    if (seq[row + u32(u)] != seq[row + u32(u - 1)]) { keep = false; }
  }`
      : ''
  }
  state[P.stateOff + idx] = select(0.0, input(b, c, s), keep);
}`;
  device.run({
    name: 'causal_conv1d_final_state',
    source: stateSource,
    params: sp,
    bindings: stateBound.ranges,
    workgroups: device.grid(stateCount, WG),
    detail,
  });
}

export interface CausalConv1dBackwardLaunch {
  x: Tensor;
  weight: Tensor;
  bias: Tensor | null;
  initialState: Tensor | null;
  seqIdx: Tensor | null;
  silu: boolean;
  /** Dense f32 [B, L, C]: the gradient of y. */
  dy: Tensor;
  dx: Tensor;
  dWeight: Tensor;
  dBias: Tensor | null;
  dInitialState: Tensor | null;
}

/** Flattened positions per partial sum of the weight gradient (its second pass adds the partials). */
const ROWS_PER_PARTIAL = 64;

/**
 * `fn reach(b, s, t) -> bool`: whether the tap at position s (i32, may be negative) reaches the
 * output at t >= s, i.e. no document starts in (s, t]. Always true without seqIdx.
 */
function reachFn(seq: boolean): string {
  if (!seq) return 'fn reach(b: u32, s: i32, t: i32) -> bool { return true; }';
  return `fn reach(b: u32, s: i32, t: i32) -> bool {
  let row = P.seqOff + b * P.L;
  for (var u = max(1, s + 1); u <= t; u++) {
    if (seq[row + u32(u)] != seq[row + u32(u - 1)]) { return false; }
  }
  return true;
}`;
}

/**
 * Backward of `causal_conv1d` (gradients of y only): `causal_conv1d_dz` recomputes z and applies
 * SiLU' (skipped without activation: dz = dy); `causal_conv1d_dx` gathers, per input position
 * (including the initial state's columns, s < 0), the K outputs it feeds; the weight and bias
 * gradients are sums over every (b, t): partial sums over runs of positions, then one pass adding them.
 */
export function causalConv1dBackwardGpu(device: WebGpuDevice, a: CausalConv1dBackwardLaunch): void {
  const [batch, length, channels] = a.x.shape as [number, number, number];
  const K = a.weight.shape[1]!;
  const detail = `x [${a.x.shape.join(',')}] ${a.x.dtype}, w ${a.weight.dtype}, K=${K}${a.seqIdx ? ', seqIdx' : ''}`;
  const seq = a.seqIdx !== null;
  const sources: NamedBinding[] = [{ name: 'x', tensor: a.x }];
  if (a.initialState) sources.push({ name: 'init', tensor: a.initialState });
  if (a.seqIdx) sources.push({ name: 'seq', tensor: a.seqIdx });
  const header = (p: Params, decls: string) => `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
${inputFn(K, a.initialState !== null)}
${reachFn(seq)}`;
  const positions = batch * length * channels;

  let dz = a.dy;
  if (a.silu) {
    dz = empty([batch, length, channels], { device });
    const p = new Params().u32('L', length).u32('C', channels).u32('total', positions);
    const list: NamedBinding[] = [...sources, { name: 'w', tensor: a.weight }, { name: 'dy', tensor: a.dy }, { name: 'dz', tensor: dz, writable: true }];
    if (a.bias) list.push({ name: 'bias', tensor: a.bias });
    const bound = bindTensors(device, 'causalConv1d backward', list, p);
    const source = `${header(p, bound.decls)}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  let c = idx % P.C;
  let t = i32((idx / P.C) % P.L);
  let b = idx / (P.C * P.L);
  var z = ${a.bias ? 'load_bias(P.biasOff + c)' : '0.0'};
  ${range(K)
    .map((k) => `if (reach(b, t - ${K - 1 - k}, t)) { z += load_w(P.wOff + c * ${K}u + ${k}u) * input(b, c, t - ${K - 1 - k}); }`)
    .join('\n  ')}
  let sig = 1.0 / (1.0 + exp(-z));
  dz[P.dzOff + idx] = load_dy(P.dyOff + idx) * sig * (1.0 + z * (1.0 - sig));
}`;
    device.run({ name: 'causal_conv1d_dz', source, params: p, bindings: bound.ranges, workgroups: device.grid(positions, WG), detail });
  }

  try {
    // dx (s >= 0) and the initial state's gradient (s in [-K, 0)): Σ over the outputs t = s + j the tap reaches.
    const lead = a.dInitialState ? K : 0;
    const total = batch * (length + lead) * channels;
    const p = new Params().u32('L', length).u32('C', channels).u32('total', total);
    const list: NamedBinding[] = [
      { name: 'w', tensor: a.weight },
      { name: 'dz', tensor: dz },
      { name: 'dx', tensor: a.dx, writable: true },
    ];
    if (a.seqIdx) list.push({ name: 'seq', tensor: a.seqIdx });
    if (a.dInitialState) list.push({ name: 'dinit', tensor: a.dInitialState, writable: true });
    const bound = bindTensors(device, 'causalConv1d backward', list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${reachFn(seq)}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  let c = idx % P.C;
  let s = i32((idx / P.C) % (P.L + ${lead}u)) - ${lead};
  let b = idx / (P.C * (P.L + ${lead}u));
  var acc = 0.0;
  ${range(K)
    .map(
      (j) =>
        `if (s + ${j} >= 0 && s + ${j} < i32(P.L) && reach(b, s, s + ${j})) { acc += load_w(P.wOff + c * ${K}u + ${K - 1 - j}u) * load_dz(P.dzOff + (b * P.L + u32(s + ${j})) * P.C + c); }`,
    )
    .join('\n  ')}
  if (s >= 0) { dx[P.dxOff + (b * P.L + u32(s)) * P.C + c] = acc; }
  ${a.dInitialState ? `else { dinit[P.dinitOff + (b * P.C + c) * ${K}u + u32(${K} + s)] = acc; }` : ''}
}`;
    device.run({ name: 'causal_conv1d_dx', source, params: p, bindings: bound.ranges, workgroups: device.grid(total, WG), detail });

    // Weight and bias: partial sums over runs of ROWS_PER_PARTIAL flattened (b, t) positions, K + 1 per channel.
    const rows = batch * length;
    const runs = Math.ceil(rows / ROWS_PER_PARTIAL);
    const partial = empty([runs, channels, K + 1], { device });
    try {
      const pp = new Params()
        .u32('L', length)
        .u32('C', channels)
        .u32('rows', rows)
        .u32('total', runs * channels);
      const plist: NamedBinding[] = [...sources, { name: 'dz', tensor: dz }, { name: 'partial', tensor: partial, writable: true }];
      const pbound = bindTensors(device, 'causalConv1d backward', plist, pp);
      const psource = `${header(pp, pbound.decls)}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  let c = idx % P.C;
  let part = idx / P.C;
  ${range(K + 1)
    .map((k) => `var acc${k} = 0.0;`)
    .join(' ')}
  let end = min((part + 1u) * ${ROWS_PER_PARTIAL}u, P.rows);
  for (var r = part * ${ROWS_PER_PARTIAL}u; r < end; r++) {
    let b = r / P.L;
    let t = i32(r % P.L);
    let g = load_dz(P.dzOff + r * P.C + c);
    ${range(K)
      .map((k) => `if (reach(b, t - ${K - 1 - k}, t)) { acc${k} += g * input(b, c, t - ${K - 1 - k}); }`)
      .join('\n    ')}
    acc${K} += g;
  }
  let out = P.partialOff + idx * ${K + 1}u;
  ${range(K + 1)
    .map((k) => `partial[out + ${k}u] = acc${k};`)
    .join(' ')}
}`;
      device.run({
        name: 'causal_conv1d_dw_partial',
        source: psource,
        params: pp,
        bindings: pbound.ranges,
        workgroups: device.grid(runs * channels, WG),
        detail,
      });

      const sp = new Params()
        .u32('C', channels)
        .u32('runs', runs)
        .u32('total', channels * (K + 1));
      const slist: NamedBinding[] = [
        { name: 'partial', tensor: partial },
        { name: 'dw', tensor: a.dWeight, writable: true },
      ];
      if (a.dBias) slist.push({ name: 'dbias', tensor: a.dBias, writable: true });
      const sbound = bindTensors(device, 'causalConv1d backward', slist, sp);
      const ssource = `${sp.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${sbound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  var acc = 0.0;
  for (var part = 0u; part < P.runs; part++) { acc += load_partial(P.partialOff + part * P.C * ${K + 1}u + idx); }
  let k = idx % ${K + 1}u;
  let c = idx / ${K + 1}u;
  if (k < ${K}u) { dw[P.dwOff + c * ${K}u + k] = acc; }
  ${a.dBias ? 'else { dbias[P.dbiasOff + c] = acc; }' : ''}
}`;
      device.run({
        name: 'causal_conv1d_dw_sum',
        source: ssource,
        params: sp,
        bindings: sbound.ranges,
        workgroups: device.grid(channels * (K + 1), WG),
        detail,
      });
    } finally {
      partial.dispose();
    }
  } finally {
    if (dz !== a.dy) dz.dispose();
  }
}
