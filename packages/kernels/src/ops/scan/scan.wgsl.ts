/**
 * The chunked SSD form of the Mamba2 scan (spec §2.3.5) as WGSL kernels. Per chunk of Q positions:
 *
 *   acs_i  = Σ_{t≤i} dt_t·A                     (cumsum of the log-decay inside the chunk)
 *   CB     = C · Bᵀ                              (per group, lower-triangular blocks only)
 *   state  = Σ_j exp(acs_last − acs_j) · B_jᵀ ⊗ (dt_j·x_j)      → [N, P] per head
 *   S_c    = exp(acs_last of c−1) · S_{c−1} + state_{c−1}       (sequential over chunks)
 *   y_i    = exp(acs_i) · C_i·S_c + Σ_{j≤i} CB_ij · exp(acs_i − acs_j) · dt_j·x_j + D·x_i
 *
 * Launch order: `ssd_prep_x` and `ssd_prep_bc` copy x·dt, B and C into zero-padded chunk-major
 * layouts (rows padded to a multiple of 8 per chunk, P and N to multiples of 8), so the heavy
 * kernels are branch-free vec4 loops over 8×8 register tiles; `ssd_cumsum` writes acs (and, with
 * seqIdx, per-chunk document numbers); `ssd_cb`, `ssd_chunk_state`, `ssd_state_pass` (in place:
 * each chunk's slot ends up holding the state entering it) and `ssd_output`.
 *
 * Grids are (tiles, chunk, batch). The dimensions are uniforms, so one compiled pipeline serves
 * every shape; index decomposition divides by them once per invocation (llvmpipe divides by a
 * runtime value lane by lane, so no kernel does it per element).
 *
 * Stability: every exponent is a difference acs_i − acs_j with j ≤ i (≤ 0 for decaying A), so no
 * exp overflows and masked pairs never reach exp. The output kernel factors
 * exp(acs_i − acs_j) = exp(acs_i − acs_i0) · exp(acs_i0 − acs_j) only for j < i0 ≤ i (both factors
 * ≤ 1); the diagonal 8×8 block takes the difference directly.
 *
 * seqIdx (spec §4): `seg` numbers the documents inside each chunk, counting from the document of
 * the position just before the chunk (0 = continues it). Pairs in different documents are masked,
 * the carried state reaches only rows with seg = 0, and a chunk's state keeps only positions of its
 * last document. Document numbers grow along a chunk, so these masks factor per row and per column.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { KernelBinding } from '../../runtime/batch';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import type { Tensor } from '../../tensor';
import type { SsdScanOperands } from './scan.cpu';
import { TextureOperands, bindTextureOperand, textureOperandWgsl } from '../../runtime/texture-operands';
import { kernelOverrides } from '../../runtime/kernel-overrides';
import { flatCapacity, storageReads, type FlatTexture } from '../../runtime/texture-pool';

const WG = 64;
/** Register tile edge: 8 rows × 8 columns (two vec4) per invocation. */
const T = 8;

function R(n: number, f: (i: number) => string, sep = '\n  '): string {
  return Array.from({ length: n }, (_, i) => f(i)).join(sep);
}

function roundUp(n: number, m: number): number {
  return Math.ceil(n / m) * m;
}

export interface SsdScanLaunch extends SsdScanOperands {
  chunkSize: number;
  y: Tensor; // [B, L, H, P] f32
  finalState: Tensor; // [B, H, P, N] f32
}

interface Dims {
  batch: number;
  length: number;
  heads: number;
  headDim: number;
  groups: number;
  stateDim: number;
  chunk: number;
  chunks: number;
  /** Whether an initial state is given (a runtime flag, so it costs no extra pipeline). */
  carryIn: boolean;
  /** Rows per chunk in the padded layouts. */
  QP: number;
  PP: number;
  NP: number;
}

/** The model dimensions by name (`HD` is the head dim P; `QP`, `PP`, `NP` the padded sizes, `*4` in vec4s). */
function dimValues(d: Dims): [string, number][] {
  return [
    ['H', d.heads],
    ['HD', d.headDim],
    ['G', d.groups],
    ['N', d.stateDim],
    ['Q', d.chunk],
    ['HPG', d.heads / d.groups],
    ['QP', d.QP],
    ['PP', d.PP],
    ['NP', d.NP],
    ['QP4', d.QP / 4],
    ['PP4', d.PP / 4],
    ['NP4', d.NP / 4],
  ];
}

/**
 * A read-only vec4 operand of the heavy kernels, read as `<name>_at(i)` (i in vec4 units, offset
 * included): from its storage buffer, or from a flat texture copy of it.
 */
interface VecOperand {
  name: string;
  tensor: Tensor;
  /** Its texture copy, or null: read from its storage buffer. */
  texture: FlatTexture | null;
}

/**
 * Records one kernel over a (ceil(inner / WG), chunks, batch) grid. The body sees `i` (its index
 * inside one (chunk, row) slice, < inner), `c` (the chunk), `b` (the batch row), the dimensions of
 * `dimValues` by name, P.L, P.NC (chunk count) and P.carryIn, and `<name>_at(i)` for each vec4
 * operand in `reads`.
 */
function launch(
  device: WebGpuDevice,
  name: string,
  d: Dims,
  list: readonly NamedBinding[],
  inner: number,
  chunks: number,
  body: string,
  reads: readonly VecOperand[] = [],
): void {
  const p = new Params()
    .u32('L', d.length)
    .u32('NC', d.chunks)
    .u32('inner', inner)
    .u32('carryIn', d.carryIn ? 1 : 0);
  const dims = dimValues(d);
  for (const [k, v] of dims) p.u32(k, v);
  const buffers = reads.filter((r) => r.texture === null).map((r): NamedBinding => ({ name: r.name, tensor: r.tensor, vec4: true }));
  const bound = bindTensors(device, name, [...list, ...buffers], p);
  const bindings: KernelBinding[] = [...bound.ranges];
  const decls = [bound.decls];
  const textureCount = reads.filter((r) => r.texture !== null).length;
  const storage = storageReads(device) && textureCount <= device.gpu.limits.maxStorageTexturesPerShaderStage;
  for (const r of reads) {
    if (r.texture === null) {
      decls.push(`fn ${r.name}_at(i: u32) -> vec4<f32> { return ${r.name}[i]; }`);
      continue;
    }
    bindings.push(bindTextureOperand(r.texture, p, r.name));
    decls.push(textureOperandWgsl(bindings.length, r.name, r.name, storage));
  }
  const source = `${textureCount > 0 && storage ? 'requires readonly_and_readwrite_storage_textures;\n' : ''}${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls.join('\n')}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let i = wid.x * ${WG}u + lid;
  if (i >= P.inner) { return; }
  ${dims.map(([k]) => `let ${k} = P.${k};`).join(' ')}
  let c = wid.y;
  let b = wid.z;
  ${body}
}`;
  const groups = Math.ceil(inner / WG);
  const max = device.limits.maxComputeWorkgroupsPerDimension;
  if (groups > max || chunks > max || d.batch > max) {
    throw new Error(`ssdScan: grid ${groups}×${chunks}×${d.batch} exceeds ${max} workgroups per dimension; split the batch or the sequence`);
  }
  device.run({
    name,
    source,
    params: p,
    bindings,
    workgroups: [groups, chunks, d.batch],
    detail: `B=${d.batch} L=${d.length} H=${d.heads} P=${d.headDim} G=${d.groups} N=${d.stateDim} Q=${d.chunk}`,
  });
}

export function ssdScanGpu(device: WebGpuDevice, a: SsdScanLaunch): void {
  const [batch, length, heads, headDim] = a.x.shape as [number, number, number, number];
  const [, , groups, stateDim] = a.B.shape as [number, number, number, number];
  const chunk = a.chunkSize;
  const d: Dims = {
    batch,
    length,
    heads,
    headDim,
    groups,
    stateDim,
    chunk,
    chunks: Math.ceil(length / chunk),
    carryIn: a.initialState !== null,
    QP: roundUp(chunk, T),
    PP: roundUp(headDim, T),
    NP: roundUp(stateDim, T),
  };
  const { chunks: NC, QP, PP, NP } = d;
  const xdt = empty([batch, heads, NC, QP, PP], { device });
  const bp = empty([batch, groups, NC, QP, NP], { device });
  const cp = empty([batch, groups, NC, QP, NP], { device });
  const acs = empty([batch, heads, NC, QP], { device });
  const seg = a.seqIdx ? empty([batch, NC, QP], { device, dtype: 'i32' }) : null;
  const cb = empty([batch, groups, NC, QP, QP], { device });
  const st = empty([batch, heads, NC, NP, PP], { device });
  // The heavy kernels read their operands through texture copies when the tuning says so and they fit.
  const fits = [xdt, bp, cp, acs, cb, st].every((t) => t.size / 4 <= flatCapacity(device));
  const useTextures = fits && (kernelOverrides().ssdOperandReads ?? (device.tuning.textureOperands ? 'textures' : 'buffers')) === 'textures';
  const textures = new TextureOperands(device);
  const operand = (name: string, tensor: Tensor): VecOperand => ({ name, tensor, texture: useTextures ? textures.copy(tensor) : null });
  try {
    prepX(device, d, a, xdt);
    prepBC(device, d, a, bp, cp);
    cumsum(device, d, a, acs, seg);
    const xdtIn = operand('xdt', xdt);
    const bpIn = operand('bp', bp);
    const cpIn = operand('cp', cp);
    chunkCB(device, d, bpIn, cpIn, cb);
    const acsIn = operand('acs', acs);
    chunkState(device, d, xdtIn, bpIn, acsIn, seg, st);
    statePass(device, d, a.initialState, acs, seg, st, a.finalState);
    output(device, d, a, xdtIn, cpIn, acsIn, seg, operand('cb', cb), operand('st', st));
  } finally {
    textures.release();
    for (const t of [xdt, bp, cp, acs, seg, cb, st]) t?.dispose();
  }
}

/** xdt[b,h,c,i,p] = dt·x at position c·Q+i, zero on padding. One padded row of P per invocation. */
function prepX(device: WebGpuDevice, d: Dims, a: SsdScanLaunch, xdt: Tensor): void {
  // Whole vec4s of x when its rows allow (a quarter of the loads, each a per-lane loop on llvmpipe).
  const vec = d.headDim % 4 === 0 && a.x.dtype === 'f32' && a.x.offset % 4 === 0;
  const body = `
  let h = i / QP;
  let row = i % QP;
  let t = c * Q + row;
  let valid = row < Q && t < P.L;
  let tc = min(t, P.L - 1u);
  let step = select(0.0, load_dt(P.dtOff + (b * P.L + tc) * H + h), valid);
  let src = P.xOff + ((b * P.L + tc) * H + h) * HD${vec ? ' / 4u' : ''};
  let dst = P.xdtOff + (((b * H + h) * P.NC + c) * QP + row) * PP4;
  for (var p4 = 0u; p4 < PP4; p4++) {
    var v = vec4<f32>(0.0);
    if (valid) {
      ${vec ? 'if (p4 * 4u < HD) { v = step * x[src + p4]; }' : R(4, (q) => `if (p4 * 4u + ${q}u < HD) { v[${q}] = step * load_x(src + p4 * 4u + ${q}u); }`, '\n      ')}
    }
    xdt[dst + p4] = v;
  }`;
  launch(
    device,
    'ssd_prep_x',
    d,
    [
      { name: 'x', tensor: a.x, vec4: vec },
      { name: 'dt', tensor: a.dt },
      { name: 'xdt', tensor: xdt, writable: true, vec4: true },
    ],
    d.heads * d.QP,
    d.chunks,
    body,
  );
}

/** bp / cp[b,g,c,i,n] = B / C at position c·Q+i, zero on padding. One padded row of N per invocation. */
function prepBC(device: WebGpuDevice, d: Dims, a: SsdScanLaunch, bp: Tensor, cp: Tensor): void {
  const vec = d.stateDim % 4 === 0 && [a.B, a.C].every((t) => t.dtype === 'f32' && t.offset % 4 === 0);
  const body = `
  let g = i / QP;
  let row = i % QP;
  let t = c * Q + row;
  let valid = row < Q && t < P.L;
  let src = ((b * P.L + min(t, P.L - 1u)) * G + g) * N${vec ? ' / 4u' : ''};
  let dst = (((b * G + g) * P.NC + c) * QP + row) * NP4;
  for (var n4 = 0u; n4 < NP4; n4++) {
    var vb = vec4<f32>(0.0);
    var vc = vec4<f32>(0.0);
    if (valid) {
      ${
        vec
          ? 'if (n4 * 4u < N) { vb = B[P.BOff + src + n4]; vc = C[P.COff + src + n4]; }'
          : R(
              4,
              (q) => `if (n4 * 4u + ${q}u < N) { vb[${q}] = load_B(P.BOff + src + n4 * 4u + ${q}u); vc[${q}] = load_C(P.COff + src + n4 * 4u + ${q}u); }`,
              '\n      ',
            )
      }
    }
    bp[P.bpOff + dst + n4] = vb;
    cp[P.cpOff + dst + n4] = vc;
  }`;
  launch(
    device,
    'ssd_prep_bc',
    d,
    [
      { name: 'B', tensor: a.B, vec4: vec },
      { name: 'C', tensor: a.C, vec4: vec },
      { name: 'bp', tensor: bp, writable: true, vec4: true },
      { name: 'cp', tensor: cp, writable: true, vec4: true },
    ],
    d.groups * d.QP,
    d.chunks,
    body,
  );
}

/** acs[b,h,c,i]: cumsum of dt·A inside each chunk (padding adds 0); seg: document number inside the chunk. */
function cumsum(device: WebGpuDevice, d: Dims, a: SsdScanLaunch, acs: Tensor, seg: Tensor | null): void {
  const list: NamedBinding[] = [
    { name: 'dt', tensor: a.dt },
    { name: 'A', tensor: a.A },
    { name: 'acs', tensor: acs, writable: true },
  ];
  if (a.seqIdx && seg) list.push({ name: 'seq', tensor: a.seqIdx }, { name: 'seg', tensor: seg, writable: true });
  const body = `
  let h = i;
  let decay = load_A(P.AOff + h);
  let out = P.acsOff + ((b * H + h) * P.NC + c) * QP;
  var s = 0.0;
  for (var row = 0u; row < QP; row++) {
    let t = c * Q + row;
    if (row < Q && t < P.L) { s += load_dt(P.dtOff + (b * P.L + t) * H + h) * decay; }
    acs[out + row] = s;
  }
  ${
    seg
      ? `if (h == 0u) {
    let first = P.seqOff + b * P.L;
    // The document of the position before the chunk (the first position for chunk 0) is number 0.
    var prev = seq[first + max(c * Q, 1u) - 1u];
    var count = 0;
    for (var row = 0u; row < QP; row++) {
      let t = c * Q + row;
      if (row < Q && t < P.L) {
        let id = seq[first + t];
        if (id != prev) { count++; }
        prev = id;
      }
      seg[P.segOff + (b * P.NC + c) * QP + row] = count;
    }
  }`
      : ''
  }`;
  launch(device, 'ssd_cumsum', d, list, d.heads, d.chunks, body);
}

/**
 * cb[b,g,c,i,j] = C_i · B_j for the 8×8 blocks with j-block ≤ i-block inside the sequence (the
 * others are never read): invocation k of a group enumerates the lower triangle row by row.
 */
function chunkCB(device: WebGpuDevice, d: Dims, bp: VecOperand, cp: VecOperand, cb: Tensor): void {
  const tiles = d.QP / T;
  const tri = (tiles * (tiles + 1)) / 2;
  const body = `
  let tiles = QP / 8u;
  let tri = tiles * (tiles + 1u) / 2u;
  let g = i / tri;
  let k = i % tri;
  // Row it of the triangle starts at it·(it+1)/2; the f32 estimate is corrected by one step either way.
  var it = u32((sqrt(f32(8u * k + 1u)) - 1.0) * 0.5);
  if ((it + 1u) * (it + 2u) / 2u <= k) { it++; }
  if (it * (it + 1u) / 2u > k) { it--; }
  let jt = k - it * (it + 1u) / 2u;
  // Rows past the end of the sequence are never read (their output tiles return early).
  if (c * Q + it * 8u >= P.L) { return; }
  let rows = ((b * G + g) * P.NC + c) * QP;
  let ci = P.cpOff + (rows + it * 8u) * NP4;
  let bj = P.bpOff + (rows + jt * 8u) * NP4;
  ${R(T, (r) => `var acc${r}a = vec4<f32>(0.0); var acc${r}b = vec4<f32>(0.0);`)}
  for (var n4 = 0u; n4 < NP4; n4++) {
    ${R(T, (k) => `let b${k} = bp_at(bj + ${k}u * NP4 + n4);`, '\n    ')}
    ${R(T, (r) => `{ let cr = cp_at(ci + ${r}u * NP4 + n4); acc${r}a += vec4<f32>(dot(cr, b0), dot(cr, b1), dot(cr, b2), dot(cr, b3)); acc${r}b += vec4<f32>(dot(cr, b4), dot(cr, b5), dot(cr, b6), dot(cr, b7)); }`, '\n    ')}
  }
  let out = P.cbOff + (rows + it * 8u) * QP4 + jt * 2u;
  ${R(T, (r) => `cb[out + ${r}u * QP4] = acc${r}a; cb[out + ${r}u * QP4 + 1u] = acc${r}b;`)}`;
  launch(device, 'ssd_cb', d, [{ name: 'cb', tensor: cb, writable: true, vec4: true }], d.groups * tri, d.chunks, body, [bp, cp]);
}

/** st[b,h,c,n,p] = Σ_j exp(acs_last − acs_j) · B_j[n] · xdt_j[p] over the chunk (its last document only). */
function chunkState(device: WebGpuDevice, d: Dims, xdt: VecOperand, bp: VecOperand, acs: VecOperand, seg: Tensor | null, st: Tensor): void {
  const pt = d.PP / T;
  const nt = d.NP / T;
  const list: NamedBinding[] = [{ name: 'st', tensor: st, writable: true, vec4: true }];
  if (seg) list.push({ name: 'seg', tensor: seg });
  const body = `
  let pt = PP / 8u;
  let nt = NP / 8u;
  let h = i / (nt * pt);
  let n0 = ((i / pt) % nt) * 8u;
  let p0 = (i % pt) * 8u;
  let g = h / HPG;
  let bhc = (b * H + h) * P.NC + c;
  let arow = P.acsOff + bhc * QP4;
  let a_last = acs_at(arow + QP4 - 1u)[3];
  ${seg ? 'let srow = P.segOff + (b * P.NC + c) * QP;\n  let seg_last = seg[srow + QP - 1u];' : ''}
  let brow = P.bpOff + ((b * G + g) * P.NC + c) * QP * NP4 + n0 / 4u;
  let xrow = P.xdtOff + bhc * QP * PP4 + p0 / 4u;
  ${R(T, (r) => `var acc${r}a = vec4<f32>(0.0); var acc${r}b = vec4<f32>(0.0);`)}
  // Rows past the end of the sequence are zero padding: stop at the last group of 4 holding data.
  let j4max = (min(Q, P.L - c * Q) + 3u) / 4u;
  for (var j4 = 0u; j4 < j4max; j4++) {
    var w = exp(vec4<f32>(a_last) - acs_at(arow + j4));
    ${seg ? R(4, (q) => `w[${q}] = select(0.0, w[${q}], seg[srow + j4 * 4u + ${q}u] == seg_last);`, '\n    ') : ''}
    ${R(
      4,
      (q) => `{
      let j = j4 * 4u + ${q}u;
      let b_lo = bp_at(brow + j * NP4) * w[${q}];
      let b_hi = bp_at(brow + j * NP4 + 1u) * w[${q}];
      let xa = xdt_at(xrow + j * PP4);
      let xb = xdt_at(xrow + j * PP4 + 1u);
      ${R(T, (r) => `acc${r}a += ${r < 4 ? 'b_lo' : 'b_hi'}[${r % 4}] * xa; acc${r}b += ${r < 4 ? 'b_lo' : 'b_hi'}[${r % 4}] * xb;`, '\n      ')}
    }`,
      '\n    ',
    )}
  }
  let out = P.stOff + (bhc * NP + n0) * PP4 + p0 / 4u;
  ${R(T, (r) => `st[out + ${r}u * PP4] = acc${r}a; st[out + ${r}u * PP4 + 1u] = acc${r}b;`)}`;
  launch(device, 'ssd_chunk_state', d, list, d.heads * nt * pt, d.chunks, body, [xdt, bp, acs]);
}

/**
 * The inter-chunk pass, sequential over chunks: each slot of `st` is replaced by the state entering
 * its chunk, and the state after the last chunk goes to finalState [B, H, P, N].
 */
function statePass(device: WebGpuDevice, d: Dims, init: Tensor | null, acs: Tensor, seg: Tensor | null, st: Tensor, finalState: Tensor): void {
  const list: NamedBinding[] = [
    { name: 'acs', tensor: acs },
    { name: 'st', tensor: st, writable: true, vec4: true },
    { name: 'fin', tensor: finalState, writable: true },
  ];
  if (init) list.push({ name: 'init', tensor: init });
  if (seg) list.push({ name: 'seg', tensor: seg });
  const body = `
  let h = i / (NP * PP4);
  let n = (i / PP4) % NP;
  let p4 = i % PP4;
  let bh = b * H + h;
  var s = vec4<f32>(0.0);
  ${init ? R(4, (q) => `if (p4 * 4u + ${q}u < HD && n < N) { s[${q}] = load_init(P.initOff + (bh * HD + p4 * 4u + ${q}u) * N + n); }`) : ''}
  for (var k = 0u; k < P.NC; k++) {
    let slot = P.stOff + ((bh * P.NC + k) * NP + n) * PP4 + p4;
    let v = st[slot];
    st[slot] = s;
    ${
      seg
        ? 'let carry = select(0.0, exp(acs[P.acsOff + (bh * P.NC + k + 1u) * QP - 1u]), seg[P.segOff + (b * P.NC + k + 1u) * QP - 1u] == 0);'
        : 'let carry = exp(acs[P.acsOff + (bh * P.NC + k + 1u) * QP - 1u]);'
    }
    s = carry * s + v;
  }
  ${R(4, (q) => `if (p4 * 4u + ${q}u < HD && n < N) { fin[P.finOff + (bh * HD + p4 * 4u + ${q}u) * N + n] = s[${q}]; }`)}`;
  launch(device, 'ssd_state_pass', d, list, d.heads * d.NP * (d.PP / 4), 1, body);
}

/** y = exp(acs_i)·C_i·S_c (inter-chunk) + causal CB-weighted sum over the chunk (intra-chunk) + D·x. */
function output(
  device: WebGpuDevice,
  d: Dims,
  a: SsdScanLaunch,
  xdt: VecOperand,
  cp: VecOperand,
  acs: VecOperand,
  seg: Tensor | null,
  cb: VecOperand,
  st: VecOperand,
): void {
  const pt = d.PP / T;
  const tiles = d.QP / T;
  // Whole vec4 rows of y (and of x for the D term) when P is a multiple of 8 and x is dense f32.
  const vecRows = d.headDim % T === 0;
  const vecX = vecRows && a.x.dtype === 'f32' && a.x.offset % 4 === 0;
  const list: NamedBinding[] = [{ name: 'y', tensor: a.y, writable: true, vec4: vecRows }];
  if (a.D) list.push({ name: 'x', tensor: a.x, vec4: vecX }, { name: 'D', tensor: a.D });
  if (seg) list.push({ name: 'seg', tensor: seg });
  // Row r of the tile accumulates columns p0..p0+3 in acc{r}a and p0+4..p0+7 in acc{r}b.
  const fma = (r: number, w: string, xa: string, xb: string) => `acc${r}a += ${w} * ${xa}; acc${r}b += ${w} * ${xb};`;
  const store = (r: number): string => {
    const t = `c * Q + i0 + ${r}u`;
    const guard = `if (i0 + ${r}u < Q && ${t} < P.L)`;
    if (vecRows) {
      const skip = (half: number) =>
        a.D ? ` + skip * ${vecX ? `x[P.xOff + base / 4u + ${half}u]` : `vec4<f32>(${R(4, (q) => `load_x(P.xOff + base + ${half * 4 + q}u)`, ', ')})`}` : '';
      return `${guard} {
    let base = ((b * P.L + ${t}) * H + h) * HD + p0;
    y[P.yOff + base / 4u] = acc${r}a${skip(0)};
    y[P.yOff + base / 4u + 1u] = acc${r}b${skip(1)};
  }`;
    }
    const cols = R(
      T,
      (q) => {
        const v = `acc${r}${q < 4 ? 'a' : 'b'}[${q % 4}]`;
        return `if (p0 + ${q}u < HD) { y[P.yOff + base + ${q}u] = ${v}${a.D ? ` + skip * load_x(P.xOff + base + ${q}u)` : ''}; }`;
      },
      '\n    ',
    );
    return `${guard} {
    let base = ((b * P.L + ${t}) * H + h) * HD + p0;
    ${cols}
  }`;
  };
  const body = `
  let pt = PP / 8u;
  let tiles = QP / 8u;
  let h = i / (tiles * pt);
  let it = (i / pt) % tiles;
  let p0 = (i % pt) * 8u;
  let i0 = it * 8u;
  if (i0 >= Q || c * Q + i0 >= P.L) { return; }
  let g = h / HPG;
  let bhc = (b * H + h) * P.NC + c;
  let gc = (b * G + g) * P.NC + c;
  let arow = P.acsOff + bhc * QP4;
  let a_i0 = acs_at(arow + it * 2u)[0];
  ${seg ? 'let srow = P.segOff + (b * P.NC + c) * QP;\n  let seg_i0 = seg[srow + i0];' : ''}
  let crow = P.cpOff + (gc * QP + i0) * NP4;
  let cbrow = P.cbOff + (gc * QP + i0) * QP4;
  let xrow = P.xdtOff + bhc * QP * PP4 + p0 / 4u;
  ${R(T, (r) => `var acc${r}a = vec4<f32>(0.0); var acc${r}b = vec4<f32>(0.0);`)}

  // Inter-chunk: C_i · S_c, with S_c = st[b,h,c] ([N, P] after the state pass).
  // Skipped for the first chunk without an initial state (S_0 = 0).
  if (c > 0u || P.carryIn != 0u) {
    let srow_st = P.stOff + bhc * NP * PP4 + p0 / 4u;
    for (var n4 = 0u; n4 < NP4; n4++) {
      ${R(4, (q) => `let s${q}a = st_at(srow_st + (n4 * 4u + ${q}u) * PP4); let s${q}b = st_at(srow_st + (n4 * 4u + ${q}u) * PP4 + 1u);`, '\n      ')}
      ${R(T, (r) => `{ let cr = cp_at(crow + ${r}u * NP4 + n4); ${R(4, (q) => fma(r, `cr[${q}]`, `s${q}a`, `s${q}b`), ' ')} }`, '\n      ')}
    }
    let carried = ${seg ? 'select(0.0, exp(a_i0), seg_i0 == 0)' : 'exp(a_i0)'};
    ${R(T, (r) => `acc${r}a *= carried; acc${r}b *= carried;`, '\n    ')}
  }

  // Intra-chunk, earlier 8-row blocks (j < i0): weights CB_ij · exp(acs_i0 − acs_j), rescaled per row below.
  for (var j4 = 0u; j4 < it * 2u; j4++) {
    var e = exp(vec4<f32>(a_i0) - acs_at(arow + j4));
    ${seg ? R(4, (q) => `e[${q}] = select(0.0, e[${q}], seg[srow + j4 * 4u + ${q}u] == seg_i0);`, '\n    ') : ''}
    ${R(4, (q) => `let x${q}a = xdt_at(xrow + (j4 * 4u + ${q}u) * PP4); let x${q}b = xdt_at(xrow + (j4 * 4u + ${q}u) * PP4 + 1u);`, '\n    ')}
    ${R(T, (r) => `{ let w = cb_at(cbrow + ${r}u * QP4 + j4) * e; ${R(4, (q) => fma(r, `w[${q}]`, `x${q}a`, `x${q}b`), ' ')} }`, '\n    ')}
  }
  let ai_lo = acs_at(arow + it * 2u);
  let ai_hi = acs_at(arow + it * 2u + 1u);
  ${R(T, (r) => `let ar${r} = ai_${r < 4 ? 'lo' : 'hi'}[${r % 4}];`)}
  ${seg ? R(T, (r) => `let sr${r} = seg[srow + i0 + ${r}u];`) : ''}
  ${R(T - 1, (m) => {
    const r = m + 1;
    const f = seg ? `select(0.0, exp(ar${r} - a_i0), sr${r} == seg_i0)` : `exp(ar${r} - a_i0)`;
    return `{ let f = ${f}; acc${r}a *= f; acc${r}b *= f; }`;
  })}

  // The diagonal block, j = i0 + k ≤ i: the decay difference is taken directly, and pairs above the
  // diagonal are dropped before exp (min) and after it (select).
  for (var k = 0u; k < 8u; k++) {
    let ak = acs_at(arow + it * 2u + k / 4u)[k % 4u];
    ${seg ? 'let sk = seg[srow + i0 + k];' : ''}
    let xa = xdt_at(xrow + (i0 + k) * PP4);
    let xb = xdt_at(xrow + (i0 + k) * PP4 + 1u);
    ${R(
      T,
      (r) => {
        const keep = seg ? `${r}u >= k && sr${r} == sk` : `${r}u >= k`;
        return `{ let w = select(0.0, cb_at(cbrow + ${r}u * QP4 + it * 2u + k / 4u)[k % 4u] * exp(min(ar${r} - ak, 0.0)), ${keep}); ${fma(r, 'w', 'xa', 'xb')} }`;
      },
      '\n    ',
    )}
  }

  // y = acc + D·x for the rows inside the sequence and the columns inside P.
  ${a.D ? 'let skip = load_D(P.DOff + h);' : ''}
  ${R(T, store)}`;
  launch(device, 'ssd_output', d, list, d.heads * tiles * pt, d.chunks, body, [xdt, cp, acs, cb, st]);
}
