/**
 * RMSNorm and the grouped, gated RMSNorm of Nemotron-H's Mamba mixer as one kernel family: the
 * last dim of x is cut into `groups` contiguous blocks normalised separately (plain RMSNorm is one
 * group); the gated form first multiplies by silu(z). One invocation per (row, group) with plain
 * loops — statistic, normalisation and weight multiply in f32, fused in one dispatch.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import { rowBinding, rowBlocks, type RowBlock, type RowOperand } from '../../runtime/row-blocks';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { bindTensors, startsOnVec4, type NamedBinding, type NamedTensor } from '../../runtime/bindings';

const WG = 64;

/** Rows summed per invocation of the weight-gradient kernel (partials are then reduced over blocks). */
export const WEIGHT_GRAD_ROWS = 64;

/** The shape of one normalisation: `rows` rows of `d` channels in `groups` blocks of d / groups. */
export interface NormLayout {
  rows: number;
  d: number;
  groups: number;
  eps: number;
}

/** WGSL: the overflow-free logistic function and v = y · silu(z). */
const GATE_WGSL = `
fn sigmoid_f32(z: f32) -> f32 {
  if (z >= 0.0) { return 1.0 / (1.0 + exp(-z)); }
  let e = exp(z);
  return e / (1.0 + e);
}
fn gated(y: f32, z: f32) -> f32 { return y * (z * sigmoid_f32(z)); }`;

/** WGSL expression of the normalised quantity v at element index expression `i` (z shares x's layout). */
function valueAt(gated: boolean, xi: string, zi: string): string {
  return gated ? `gated(load_x(${xi}), load_z(${zi}))` : `load_x(${xi})`;
}

/** The weight's d channels, bound whole for every row block. */
function weightBinding(w: Tensor, d: number, op: string): NamedTensor {
  return { name: 'w', tensor: w, window: { start: 0, length: d }, what: `${op} weight` };
}

/** out = w ⊙ v / sqrt(mean over the group of v² + eps), v = x or x · silu(z); `out` is f32. */
export function normGpu(device: WebGpuDevice, x: Tensor, z: Tensor | null, w: Tensor, l: NormLayout, out: Tensor, op: string): void {
  const gsize = l.d / l.groups;
  const xs: RowOperand = { tensor: x, perRow: l.d, what: `${op} input` };
  const os: RowOperand = { tensor: out, perRow: l.d, what: `${op} output` };
  const zs: RowOperand | null = z ? { tensor: z, perRow: l.d, what: `${op} gate` } : null;
  const operands = zs ? [xs, os, zs] : [xs, os];
  for (const block of rowBlocks(device, l.rows, operands)) {
    const rows = { x: rowBinding('x', xs, block), out: rowBinding('out', os, block, true), z: zs ? rowBinding('z', zs, block) : null };
    // Whole vec4s (a quarter of the storage accesses, each a per-lane loop on llvmpipe) when every
    // row operand is f32 with groups and offsets of whole vec4s.
    const vec4 = gsize % 4 === 0 && [rows.x, rows.out, ...(rows.z ? [rows.z] : [])].every((r) => r.tensor.dtype === 'f32' && startsOnVec4(r));
    if (vec4) {
      normVec4(device, rows, w, l, block, op);
      continue;
    }
    const p = new Params().u32('rows', block.count).u32('d', l.d).u32('groups', l.groups).u32('gsize', gsize).f32('eps', l.eps);
    const list: NamedBinding[] = [rows.x, weightBinding(w, l.d, op), rows.out];
    if (rows.z) list.push(rows.z);
    const bound = bindTensors(device, op, list, p);
    const v = valueAt(z !== null, 'xb + j', 'zb + j');
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${z ? GATE_WGSL : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.groups) { return; }
  let start = (t / P.groups) * P.d + (t % P.groups) * P.gsize;
  let xb = P.xOff + start;
  ${z ? 'let zb = P.zOff + start;' : ''}
  let wb = P.wOff + (t % P.groups) * P.gsize;
  let ob = P.outOff + start;
  var ss = 0.0;
  for (var j = 0u; j < P.gsize; j++) { let v = ${v}; ss += v * v; }
  let r = 1.0 / sqrt(ss / f32(P.gsize) + P.eps);
  for (var j = 0u; j < P.gsize; j++) { out[ob + j] = load_w(wb + j) * (${v} * r); }
}`;
    device.run({
      name: op,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * l.groups, WG),
      detail: `[${l.rows},${l.d}]/${l.groups} ${x.dtype}`,
    });
  }
}

/** {@link normGpu} on whole vec4s of x, z and out (the weight is read as vec4s when it is f32 and aligned). */
function normVec4(
  device: WebGpuDevice,
  rows: { x: NamedTensor; out: NamedTensor; z: NamedTensor | null },
  w: Tensor,
  l: NormLayout,
  block: RowBlock,
  op: string,
): void {
  const gsize = l.d / l.groups;
  const z = rows.z;
  const p = new Params()
    .u32('rows', block.count)
    .u32('d4', l.d / 4)
    .u32('groups', l.groups)
    .u32('gsize4', gsize / 4)
    .f32('eps', l.eps);
  const weight = weightBinding(w, l.d, op);
  const wVec = w.dtype === 'f32' && startsOnVec4(weight);
  const list: NamedBinding[] = [
    { ...rows.x, vec4: true },
    { ...weight, vec4: wVec },
    { ...rows.out, vec4: true },
  ];
  if (z) list.push({ ...z, vec4: true });
  const bound = bindTensors(device, op, list, p);
  const v = z ? 'gated4(x[xb + j], z[zb + j])' : 'x[xb + j]';
  const weightAt = wVec ? 'w[wb + j]' : 'vec4<f32>(load_w(wb + 4u * j), load_w(wb + 4u * j + 1u), load_w(wb + 4u * j + 2u), load_w(wb + 4u * j + 3u))';
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${
  z
    ? `${GATE_WGSL}
fn gated4(y: vec4<f32>, g: vec4<f32>) -> vec4<f32> { return vec4<f32>(gated(y.x, g.x), gated(y.y, g.y), gated(y.z, g.z), gated(y.w, g.w)); }`
    : ''
}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.groups) { return; }
  let start = (t / P.groups) * P.d4 + (t % P.groups) * P.gsize4;
  let xb = P.xOff + start;
  ${z ? 'let zb = P.zOff + start;' : ''}
  let wb = P.wOff + (t % P.groups) * P.gsize4${wVec ? '' : ' * 4u'};
  let ob = P.outOff + start;
  var ss = vec4<f32>(0.0);
  for (var j = 0u; j < P.gsize4; j++) { let v = ${v}; ss += v * v; }
  let r = 1.0 / sqrt((ss.x + ss.y + ss.z + ss.w) / f32(P.gsize4 * 4u) + P.eps);
  for (var j = 0u; j < P.gsize4; j++) { out[ob + j] = ${weightAt} * (${v} * r); }
}`;
  device.run({
    name: op,
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(block.count * l.groups, WG),
    detail: `[${l.rows},${l.d}]/${l.groups} ${rows.x.tensor.dtype} vec4`,
  });
}

/**
 * Input gradients of the (gated) group RMSNorm from upstream `g`: writes dx (and dz when gated),
 * both f32, and each (row, group)'s 1/rms into `rstd` [rows, groups] for {@link normWeightGradGpu}.
 */
export function normGradGpu(
  device: WebGpuDevice,
  x: Tensor,
  z: Tensor | null,
  w: Tensor,
  g: Tensor,
  l: NormLayout,
  dx: Tensor,
  dz: Tensor | null,
  rstd: Tensor,
  op: string,
): void {
  const gsize = l.d / l.groups;
  const row = (tensor: Tensor, what: string): RowOperand => ({ tensor, perRow: l.d, what: `${op} ${what}` });
  const [xs, gs, dxs, rs] = [row(x, 'input'), row(g, 'gradient'), row(dx, 'input gradient'), { tensor: rstd, perRow: l.groups, what: `${op} rstd` }];
  const gate = z && dz ? { z: row(z, 'gate'), dz: row(dz, 'gate gradient') } : null;
  const operands = gate ? [xs, gs, dxs, rs, gate.z, gate.dz] : [xs, gs, dxs, rs];
  const v = valueAt(z !== null, 'xb + j', 'zb + j');
  // dv = r·(g⊙w) − v·r³·Σ(g⊙w⊙v)/n; through the gate: dy = dv·silu(z), dz = dv·y·σ(z)(1 + z(1 − σ(z))).
  const write = z
    ? `let y = load_x(xb + j);
    let zv = load_z(zb + j);
    let s = sigmoid_f32(zv);
    let dv = r * load_g(gb + j) * load_w(wb + j) - gated(y, zv) * c;
    dx[db + j] = dv * (zv * s);
    dz[P.dzOff + start + j] = dv * y * s * (1.0 + zv * (1.0 - s));`
    : `dx[db + j] = r * load_g(gb + j) * load_w(wb + j) - load_x(xb + j) * c;`;
  for (const block of rowBlocks(device, l.rows, operands)) {
    const p = new Params().u32('rows', block.count).u32('d', l.d).u32('groups', l.groups).u32('gsize', gsize).f32('eps', l.eps);
    const list: NamedBinding[] = [
      rowBinding('x', xs, block),
      weightBinding(w, l.d, op),
      rowBinding('g', gs, block),
      rowBinding('dx', dxs, block, true),
      rowBinding('rstd', rs, block, true),
    ];
    if (gate) list.push(rowBinding('z', gate.z, block), rowBinding('dz', gate.dz, block, true));
    const bound = bindTensors(device, `${op} backward`, list, p);
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${z ? GATE_WGSL : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.rows * P.groups) { return; }
  let start = (t / P.groups) * P.d + (t % P.groups) * P.gsize;
  let xb = P.xOff + start;
  let gb = P.gOff + start;
  let db = P.dxOff + start;
  ${z ? 'let zb = P.zOff + start;' : ''}
  let wb = P.wOff + (t % P.groups) * P.gsize;
  var ss = 0.0;
  var sgv = 0.0;
  for (var j = 0u; j < P.gsize; j++) {
    let v = ${v};
    ss += v * v;
    sgv += load_g(gb + j) * load_w(wb + j) * v;
  }
  let n = f32(P.gsize);
  let r = 1.0 / sqrt(ss / n + P.eps);
  let c = r * r * r * sgv / n;
  for (var j = 0u; j < P.gsize; j++) {
    ${write}
  }
  rstd[P.rstdOff + t] = r;
}`;
    device.run({
      name: `${op}_grad`,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(block.count * l.groups, WG),
      detail: `[${l.rows},${l.d}]/${l.groups}`,
    });
  }
}

/**
 * Partial weight gradients Σ g ⊙ v · rstd over runs of {@link WEIGHT_GRAD_ROWS} rows, one
 * invocation per (run, channel); returns the partials [runs, d] for the caller to sum.
 */
export function normWeightGradGpu(device: WebGpuDevice, x: Tensor, z: Tensor | null, g: Tensor, rstd: Tensor, l: NormLayout, op: string): Tensor {
  const row = (tensor: Tensor, what: string): RowOperand => ({ tensor, perRow: l.d, what: `${op} ${what}` });
  const [xs, gs, rs] = [row(x, 'input'), row(g, 'gradient'), { tensor: rstd, perRow: l.groups, what: `${op} rstd` }];
  const zs = z ? row(z, 'gate') : null;
  const operands = zs ? [xs, gs, rs, zs] : [xs, gs, rs];
  const blocks = rowBlocks(device, l.rows, operands);
  const runs = blocks.reduce((n, b) => n + Math.ceil(b.count / WEIGHT_GRAD_ROWS), 0);
  const partial = empty([runs, l.d], { device });
  let firstRun = 0;
  for (const block of blocks) {
    const blockRuns = Math.ceil(block.count / WEIGHT_GRAD_ROWS);
    const partials: NamedTensor = {
      name: 'partial',
      tensor: partial,
      window: { start: firstRun * l.d, length: blockRuns * l.d },
      what: `${op} weight-gradient partials`,
      writable: true,
    };
    firstRun += blockRuns;
    const p = new Params()
      .u32('rows', block.count)
      .u32('d', l.d)
      .u32('groups', l.groups)
      .u32('gsize', l.d / l.groups)
      .u32('runs', blockRuns);
    const list: NamedBinding[] = [rowBinding('x', xs, block), rowBinding('g', gs, block), rowBinding('rstd', rs, block), partials];
    if (zs) list.push(rowBinding('z', zs, block));
    const bound = bindTensors(device, `${op} backward`, list, p);
    const v = valueAt(z !== null, 'P.xOff + e', 'P.zOff + e');
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${z ? GATE_WGSL : ''}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let t = ${flatIndex(WG)};
  if (t >= P.runs * P.d) { return; }
  let col = t % P.d;
  let r0 = (t / P.d) * ${WEIGHT_GRAD_ROWS}u;
  let r1 = min(r0 + ${WEIGHT_GRAD_ROWS}u, P.rows);
  let grp = col / P.gsize;
  var acc = 0.0;
  for (var r = r0; r < r1; r++) {
    let e = r * P.d + col;
    acc += load_g(P.gOff + e) * ${v} * rstd[P.rstdOff + r * P.groups + grp];
  }
  partial[P.partialOff + t] = acc;
}`;
    device.run({
      name: `${op}_weight_grad`,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(blockRuns * l.d, WG),
      detail: `[${l.rows},${l.d}]/${l.groups}`,
    });
  }
  return partial;
}

/**
 * dw[c] = Σ over runs of partial[run, c]: one invocation per channel, over blocks of runs that fit
 * a binding (each block after the first adds to what dw holds).
 */
export function sumRunsGpu(device: WebGpuDevice, partial: Tensor, d: number, dw: Tensor, op: string): void {
  const ps: RowOperand = { tensor: partial, perRow: d, what: `${op} weight-gradient partials` };
  for (const block of rowBlocks(device, partial.shape[0]!, [ps])) {
    const p = new Params().u32('runs', block.count).u32('d', d);
    const dwBinding: NamedTensor = { name: 'dw', tensor: dw, window: { start: 0, length: d }, what: `${op} weight gradient`, writable: true };
    const bound = bindTensors(device, `${op} backward`, [rowBinding('partial', ps, block), dwBinding], p);
    const accumulate = block.start > 0;
    const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let col = ${flatIndex(WG)};
  if (col >= P.d) { return; }
  var acc = ${accumulate ? 'dw[P.dwOff + col]' : '0.0'};
  for (var k = 0u; k < P.runs; k++) { acc += partial[P.partialOff + k * P.d + col]; }
  dw[P.dwOff + col] = acc;
}`;
    device.run({
      name: `${op}_weight_grad_sum`,
      source,
      params: p,
      bindings: bound.ranges,
      workgroups: device.grid(d, WG),
      detail: `[${partial.shape[0]},${d}]`,
    });
  }
}
