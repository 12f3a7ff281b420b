/**
 * Backward of the SSD scan (gradients of y only) as plain recurrence kernels, sequential over L.
 * The state gradient runs backwards without needing the forward states,
 *
 *   dS_t = dy_t ⊗ C_t + exp(dt_{t+1}·A)·dS_{t+1}     (zero across a document start),
 *
 * so each gradient comes from one recurrence whose per-thread state is a single row or column of
 * S or dS, contracted locally:
 *
 * - `ssd_bwd_dc`: per (b, h, n), S[:, n] forwards → Σ_p dy_t·S_t        (per head, for dC)
 * - `ssd_bwd_db`: per (b, h, n), dS[:, n] backwards → dt_t Σ_p dS_t·x_t (per head, for dB); dInitialState
 * - `ssd_bwd_dx`: per (b, h, p), dS[p, :] backwards → u_t = Σ_n dS_t·B_t, dx = dt·u + D·dy
 * - `ssd_bwd_group`: dB, dC = the per-head terms summed over the heads of each group
 * - `ssd_bwd_rows`: per (b, t, h): Σ_p x·u, q_t − z_t and Σ_p dy·x (below)
 * - `ssd_bwd_dt`: per (b, h), backwards over t: ddt, and per-row partial sums of dA and dD
 * - `ssd_bwd_heads`: dA, dD = the partial sums over b
 *
 * The decay's gradient: ∂L/∂(dt_t·A) = Σ dS_t ⊙ exp(dt_t·A)·S_{t−1}, which is the sum over every
 * (source σ < t, output τ ≥ t) pair in one document. With q_τ = Σ_{p,n} dy_τ·C_τ·S_τ (all pairs
 * ending at τ, = Σ_n C_τ·(Σ_p dy_τ·S_τ)) and z_σ = dt_σ Σ_p x_σ·u_σ (all pairs starting at σ), it
 * is E_t = Σ_{τ≥t} (q_τ − z_τ) over t's document (within a later document the pairs cancel), a
 * reverse running sum restarted at each document end.
 * Then ddt_t = Σ_p x_t·u_t + A·E_t and dA = Σ_{b,t} dt_t·E_t.
 *
 * Memory beyond the gradients: [B, L, H, N] twice, [B, L, H, P] and [B, L, H, 3] f32 scratch,
 * nothing of size L·P·N. Per-thread private arrays hold P (or N) floats.
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { SsdScanOperands } from './scan.cpu';

const WG = 64;
/** Largest per-thread private array (P or N floats); shader compilers handle a few KiB per thread. */
const MAX_PRIVATE = 1024;

export interface SsdScanBackwardLaunch extends SsdScanOperands {
  /** Dense [B, L, H, P]: the gradient of y. */
  dy: Tensor;
  dx: Tensor;
  ddt: Tensor;
  dA: Tensor;
  dB: Tensor;
  dC: Tensor;
  dD: Tensor | null;
  dInitialState: Tensor | null;
}

interface Dims {
  batch: number;
  length: number;
  heads: number;
  headDim: number;
  groups: number;
  stateDim: number;
}

/**
 * Records one kernel with one invocation per index < total. The body sees `idx`, the dimensions as
 * `P.B`, `P.L`, `P.H`, `P.HD`, `P.G`, `P.N`, `P.HPG`, and `continues(b, t)` when `seq` is bound: whether
 * position t (u32) is in the document of t − 1 (always for t = 0, which continues the initial state).
 */
function kernel(device: WebGpuDevice, name: string, d: Dims, list: NamedBinding[], total: number, body: string): void {
  const p = new Params()
    .u32('B', d.batch)
    .u32('L', d.length)
    .u32('H', d.heads)
    .u32('HD', d.headDim)
    .u32('G', d.groups)
    .u32('N', d.stateDim)
    .u32('HPG', d.heads / d.groups)
    .u32('total', total);
  const bound = bindTensors(device, name, list, p);
  const seq = list.some((b) => b.name === 'seq');
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
fn continues(b: u32, t: u32) -> bool {
  return ${seq ? 't == 0u || seq[P.seqOff + b * P.L + t] == seq[P.seqOff + b * P.L + t - 1u]' : 'true'};
}
@compute @workgroup_size(${WG})
fn main(${GRID_ARGS}) {
  let idx = ${flatIndex(WG)};
  if (idx >= P.total) { return; }
  ${body}
}`;
  device.run({
    name,
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: device.grid(total, WG),
    detail: `B=${d.batch} L=${d.length} H=${d.heads} P=${d.headDim} G=${d.groups} N=${d.stateDim}`,
  });
}

export function ssdScanBackwardGpu(device: WebGpuDevice, a: SsdScanBackwardLaunch): void {
  const [batch, length, heads, headDim] = a.x.shape as [number, number, number, number];
  const [, , groups, stateDim] = a.B.shape as [number, number, number, number];
  const d: Dims = { batch, length, heads, headDim, groups, stateDim };
  if (headDim > MAX_PRIVATE || stateDim > MAX_PRIVATE) {
    throw new Error(`ssdScan backward: P=${headDim} and N=${stateDim} must each be at most ${MAX_PRIVATE} (one thread holds a row or column of the state)`);
  }
  const seq: NamedBinding[] = a.seqIdx ? [{ name: 'seq', tensor: a.seqIdx }] : [];
  const dcHead = empty([batch, length, heads, stateDim], { device });
  const dbHead = empty([batch, length, heads, stateDim], { device });
  const u = empty([batch, length, heads, headDim], { device });
  const rows = empty([batch, length, heads, 3], { device });
  const headParts = empty([batch, heads, 2], { device });
  try {
    // Shared prologue of the per-(b, h, n) kernels.
    const perColumn = `let n = idx % P.N;
  let h = (idx / P.N) % P.H;
  let b = idx / (P.N * P.H);
  let g = h / P.HPG;
  let a_h = load_A(P.AOff + h);`;

    // Whole vec4s along the private dimension (P for the per-column kernels, N for dx) where rows are
    // dense f32 multiples of 4: a quarter of the loads and loop trips.
    const vec4Rows = (width: number, ...ts: Tensor[]) => width % 4 === 0 && ts.every((t) => t.dtype === 'f32' && t.offset % 4 === 0);
    const vp = vec4Rows(headDim, a.x, a.dy);
    const vn = vec4Rows(stateDim, a.B, a.C);
    // Element j4 (in lanes of 4 when vectorized) of a row starting at `row` (a multiple of 4 when vectorized).
    const lane = (vec: boolean, name: string, row: string, j: string) =>
      vec ? `${name}[P.${name}Off + ${row} / 4u + ${j}]` : `load_${name}(P.${name}Off + ${row} + ${j})`;
    const pw = vp ? 4 : 1;
    const pt = vp ? 'vec4<f32>' : 'f32';
    const pdot = (u: string, v: string) => (vp ? `dot(${u}, ${v})` : `${u} * ${v}`);
    const lanes = (vec: boolean, f: (q: number) => string) => (vec ? `vec4<f32>(${[0, 1, 2, 3].map(f).join(', ')})` : f(0));

    kernel(
      device,
      'ssd_bwd_dc',
      d,
      [
        { name: 'x', tensor: a.x, vec4: vp },
        { name: 'dt', tensor: a.dt },
        { name: 'A', tensor: a.A },
        { name: 'B', tensor: a.B },
        { name: 'dy', tensor: a.dy, vec4: vp },
        ...(a.initialState ? [{ name: 'init', tensor: a.initialState }] : []),
        ...seq,
        { name: 'dcHead', tensor: dcHead, writable: true },
      ],
      batch * heads * stateDim,
      `${perColumn}
  var s: array<${pt}, ${headDim / pw}>;
  for (var j = 0u; j < ${headDim / pw}u; j++) {
    s[j] = ${a.initialState ? lanes(vp, (q) => `load_init(P.initOff + ((b * P.H + h) * P.HD + j * ${pw}u + ${q}u) * P.N + n)`) : `${pt}(0.0)`};
  }
  for (var t = 0u; t < P.L; t++) {
    let bt = b * P.L + t;
    // A new document starts from zero: the decay multiplies a zero state.
    let decay = select(0.0, exp(load_dt(P.dtOff + bt * P.H + h) * a_h), continues(b, t));
    let in_n = load_dt(P.dtOff + bt * P.H + h) * load_B(P.BOff + (bt * P.G + g) * P.N + n);
    let row = (bt * P.H + h) * P.HD;
    var acc = 0.0;
    for (var j = 0u; j < ${headDim / pw}u; j++) {
      let v = decay * s[j] + in_n * ${lane(vp, 'x', 'row', 'j')};
      s[j] = v;
      acc += ${pdot(lane(vp, 'dy', 'row', 'j'), 'v')};
    }
    dcHead[P.dcHeadOff + (bt * P.H + h) * P.N + n] = acc;
  }`,
    );

    // exp(dt_{t+1}·A) carrying dS_{t+1} back to t, zero where t + 1 starts a document or is past the row.
    const carry = `var carry = 0.0;
    if (t + 1u < P.L && continues(b, t + 1u)) { carry = exp(load_dt(P.dtOff + (bt + 1u) * P.H + h) * a_h); }`;

    kernel(
      device,
      'ssd_bwd_db',
      d,
      [
        { name: 'x', tensor: a.x, vec4: vp },
        { name: 'dt', tensor: a.dt },
        { name: 'A', tensor: a.A },
        { name: 'C', tensor: a.C },
        { name: 'dy', tensor: a.dy, vec4: vp },
        ...seq,
        { name: 'dbHead', tensor: dbHead, writable: true },
        ...(a.dInitialState ? [{ name: 'dinit', tensor: a.dInitialState, writable: true }] : []),
      ],
      batch * heads * stateDim,
      `${perColumn}
  var ds: array<${pt}, ${headDim / pw}>;
  for (var j = 0u; j < ${headDim / pw}u; j++) { ds[j] = ${pt}(0.0); }
  for (var k = 0u; k < P.L; k++) {
    let t = P.L - 1u - k;
    let bt = b * P.L + t;
    ${carry}
    let c_n = load_C(P.COff + (bt * P.G + g) * P.N + n);
    let row = (bt * P.H + h) * P.HD;
    var acc = 0.0;
    for (var j = 0u; j < ${headDim / pw}u; j++) {
      let v = ${lane(vp, 'dy', 'row', 'j')} * c_n + carry * ds[j];
      ds[j] = v;
      acc += ${pdot('v', lane(vp, 'x', 'row', 'j'))};
    }
    dbHead[P.dbHeadOff + (bt * P.H + h) * P.N + n] = load_dt(P.dtOff + bt * P.H + h) * acc;
  }
  ${
    a.dInitialState
      ? `let decay0 = exp(load_dt(P.dtOff + b * P.L * P.H + h) * a_h);
  for (var j = 0u; j < ${headDim / pw}u; j++) {
    let v = decay0 * ds[j];
    ${(vp ? [0, 1, 2, 3] : [0]).map((q) => `dinit[P.dinitOff + ((b * P.H + h) * P.HD + j * ${pw}u + ${q}u) * P.N + n] = v${vp ? `[${q}]` : ''};`).join('\n    ')}
  }`
      : ''
  }`,
    );

    const nw = vn ? 4 : 1;
    const nt = vn ? 'vec4<f32>' : 'f32';
    kernel(
      device,
      'ssd_bwd_dx',
      d,
      [
        { name: 'dt', tensor: a.dt },
        { name: 'A', tensor: a.A },
        { name: 'B', tensor: a.B, vec4: vn },
        { name: 'C', tensor: a.C, vec4: vn },
        { name: 'dy', tensor: a.dy },
        ...(a.D ? [{ name: 'D', tensor: a.D }] : []),
        ...seq,
        { name: 'u', tensor: u, writable: true },
        { name: 'dx', tensor: a.dx, writable: true },
      ],
      batch * heads * headDim,
      `let p = idx % P.HD;
  let h = (idx / P.HD) % P.H;
  let b = idx / (P.HD * P.H);
  let g = h / P.HPG;
  let a_h = load_A(P.AOff + h);
  var ds: array<${nt}, ${stateDim / nw}>;
  for (var j = 0u; j < ${stateDim / nw}u; j++) { ds[j] = ${nt}(0.0); }
  for (var k = 0u; k < P.L; k++) {
    let t = P.L - 1u - k;
    let bt = b * P.L + t;
    ${carry}
    let xi = (bt * P.H + h) * P.HD + p;
    let gy = load_dy(P.dyOff + xi);
    let bc = (bt * P.G + g) * P.N;
    var acc = 0.0;
    for (var j = 0u; j < ${stateDim / nw}u; j++) {
      let v = gy * ${lane(vn, 'C', 'bc', 'j')} + carry * ds[j];
      ds[j] = v;
      acc += ${vn ? `dot(v, ${lane(vn, 'B', 'bc', 'j')})` : `v * ${lane(vn, 'B', 'bc', 'j')}`};
    }
    u[P.uOff + xi] = acc;
    dx[P.dxOff + xi] = load_dt(P.dtOff + bt * P.H + h) * acc${a.D ? ' + load_D(P.DOff + h) * gy' : ''};
  }`,
    );

    kernel(
      device,
      'ssd_bwd_group',
      d,
      [
        { name: 'dbHead', tensor: dbHead },
        { name: 'dcHead', tensor: dcHead },
        { name: 'dB', tensor: a.dB, writable: true },
        { name: 'dC', tensor: a.dC, writable: true },
      ],
      batch * length * groups * stateDim,
      `let n = idx % P.N;
  let g = (idx / P.N) % P.G;
  let bt = idx / (P.N * P.G);
  var sb = 0.0;
  var sc = 0.0;
  for (var k = 0u; k < P.HPG; k++) {
    let i = (bt * P.H + g * P.HPG + k) * P.N + n;
    sb += load_dbHead(P.dbHeadOff + i);
    sc += load_dcHead(P.dcHeadOff + i);
  }
  dB[P.dBOff + idx] = sb;
  dC[P.dCOff + idx] = sc;`,
    );

    // rows[b,t,h] = (Σ_p x·u, q − z, Σ_p dy·x) with q = Σ_n C·dcHead and z = dt·Σ_p x·u.
    kernel(
      device,
      'ssd_bwd_rows',
      d,
      [
        { name: 'x', tensor: a.x },
        { name: 'dt', tensor: a.dt },
        { name: 'C', tensor: a.C },
        { name: 'dy', tensor: a.dy },
        { name: 'u', tensor: u },
        { name: 'dcHead', tensor: dcHead },
        { name: 'rows', tensor: rows, writable: true },
      ],
      batch * length * heads,
      `let h = idx % P.H;
  let bt = idx / P.H;
  let g = h / P.HPG;
  var xu = 0.0;
  var dyx = 0.0;
  for (var p = 0u; p < P.HD; p++) {
    let xv = load_x(P.xOff + idx * P.HD + p);
    xu += xv * load_u(P.uOff + idx * P.HD + p);
    dyx += xv * load_dy(P.dyOff + idx * P.HD + p);
  }
  var q = 0.0;
  for (var n = 0u; n < P.N; n++) { q += load_C(P.COff + (bt * P.G + g) * P.N + n) * load_dcHead(P.dcHeadOff + idx * P.N + n); }
  rows[P.rowsOff + idx * 3u] = xu;
  rows[P.rowsOff + idx * 3u + 1u] = q - load_dt(P.dtOff + idx) * xu;
  rows[P.rowsOff + idx * 3u + 2u] = dyx;`,
    );

    kernel(
      device,
      'ssd_bwd_dt',
      d,
      [
        { name: 'dt', tensor: a.dt },
        { name: 'A', tensor: a.A },
        { name: 'rows', tensor: rows },
        ...seq,
        { name: 'ddt', tensor: a.ddt, writable: true },
        { name: 'headParts', tensor: headParts, writable: true },
      ],
      batch * heads,
      `let h = idx % P.H;
  let b = idx / P.H;
  let a_h = load_A(P.AOff + h);
  var e = 0.0;
  var da = 0.0;
  var dd = 0.0;
  for (var k = 0u; k < P.L; k++) {
    let t = P.L - 1u - k;
    let i = (b * P.L + t) * P.H + h;
    // Restart at each document end: a later document's terms sum to zero, but their rounding would not.
    if (t + 1u < P.L && !continues(b, t + 1u)) { e = 0.0; }
    e += load_rows(P.rowsOff + i * 3u + 1u);
    ddt[P.ddtOff + i] = load_rows(P.rowsOff + i * 3u) + a_h * e;
    da += load_dt(P.dtOff + i) * e;
    dd += load_rows(P.rowsOff + i * 3u + 2u);
  }
  headParts[P.headPartsOff + idx * 2u] = da;
  headParts[P.headPartsOff + idx * 2u + 1u] = dd;`,
    );

    kernel(
      device,
      'ssd_bwd_heads',
      d,
      [{ name: 'headParts', tensor: headParts }, { name: 'dA', tensor: a.dA, writable: true }, ...(a.dD ? [{ name: 'dD', tensor: a.dD, writable: true }] : [])],
      heads,
      `var da = 0.0;
  var dd = 0.0;
  for (var b = 0u; b < P.B; b++) {
    da += load_headParts(P.headPartsOff + (b * P.H + idx) * 2u);
    dd += load_headParts(P.headPartsOff + (b * P.H + idx) * 2u + 1u);
  }
  dA[P.dAOff + idx] = da;
  ${a.dD ? 'dD[P.dDOff + idx] = dd;' : ''}`,
    );
  } finally {
    for (const t of [dcHead, dbHead, u, rows, headParts]) t.dispose();
  }
}
