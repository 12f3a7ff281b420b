/**
 * One decode step of the Mamba2 SSM (spec §3.3) as one kernel: a workgroup per (row, head), an
 * invocation per head channel p (looping when P exceeds the workgroup) walks its N state entries,
 * decays and updates them in place and contracts them with C — four at a time (vec4) when N is a
 * multiple of 4 and B, C are f32. Row and head come from the workgroup id, so dt, A and the B and
 * C vectors are the same for every lane and their loads are uniform (llvmpipe then loads once per
 * workgroup instead of once per lane: ~6× faster there). The raw time step's bias, softplus and
 * clamp are applied in the kernel when asked for (the same f32 math as the elementwise ops).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { MATH_F32, NAN_SAFE_F32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';

/** Lanes per workgroup: P rounded up to a power of two, 8 to 64. */
function workgroupSize(headDim: number): number {
  return Math.min(64, Math.max(8, 2 ** Math.ceil(Math.log2(headDim))));
}

export interface StateUpdateLaunch {
  state: Tensor; // [B, H, P, N] f32, in place
  x: Tensor; // [B, H, P]
  dt: Tensor; // [B, H]
  A: Tensor; // [H]
  B: Tensor; // [B, G, N]
  C: Tensor; // [B, G, N]
  D: Tensor | null; // [H]
  dtBias: Tensor | null; // [H]
  softplus: boolean;
  limit: readonly [number, number] | null;
  aIsLog: boolean;
  y: Tensor; // [B, H, P] f32
}

/** Shader compilers may assume finite math: an infinite clamp bound becomes the largest f32. */
function finiteBound(v: number): number {
  return Math.max(-3.4028234663852886e38, Math.min(3.4028234663852886e38, v));
}

export function selectiveStateUpdateGpu(device: WebGpuDevice, a: StateUpdateLaunch): void {
  const [batch, heads, headDim, stateDim] = a.state.shape as [number, number, number, number];
  const groups = a.B.shape[1]!;
  const WG = workgroupSize(headDim);
  const p = new Params()
    .u32('H', heads)
    .u32('HD', headDim)
    .u32('G', groups)
    .u32('N', stateDim)
    .u32('HPG', heads / groups);
  const aligned = (t: Tensor) => t.dtype === 'f32' && t.offset % 4 === 0;
  const vec = stateDim % 4 === 0 && aligned(a.state) && aligned(a.B) && aligned(a.C);
  const list: NamedBinding[] = [
    { name: 'state', tensor: a.state, writable: true, vec4: vec },
    { name: 'x', tensor: a.x },
    { name: 'dt', tensor: a.dt },
    { name: 'A', tensor: a.A },
    { name: 'B', tensor: a.B, vec4: vec },
    { name: 'C', tensor: a.C, vec4: vec },
    { name: 'y', tensor: a.y, writable: true },
  ];
  if (a.D) list.push({ name: 'D', tensor: a.D });
  if (a.dtBias) list.push({ name: 'dtBias', tensor: a.dtBias });
  if (a.limit) p.f32('dtLo', finiteBound(a.limit[0])).f32('dtHi', finiteBound(a.limit[1]));
  const bound = bindTensors(device, 'selectiveStateUpdate', list, p);
  const stepLines = [`var step = load_dt(P.dtOff + bh)${a.dtBias ? ' + load_dtBias(P.dtBiasOff + h)' : ''};`];
  if (a.softplus) stepLines.push('step = softplus_f32(step);');
  if (a.limit) stepLines.push('step = clamp_nan(step, P.dtLo, P.dtHi);');
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${a.softplus ? MATH_F32 : a.limit ? NAN_SAFE_F32 : ''}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let h = wg.x;
  let b = wg.y;
  let bh = b * P.H + h;
  let bc = (b * P.G + h / P.HPG) * P.N;
  ${stepLines.join('\n  ')}
  let decay = exp(step * ${a.aIsLog ? '-exp(load_A(P.AOff + h))' : 'load_A(P.AOff + h)'});
  for (var p = lane; p < P.HD; p += ${WG}u) {
  let idx = bh * P.HD + p;
  let xv = load_x(P.xOff + idx);
  let sx = step * xv;
  ${
    vec
      ? `let row = P.stateOff + idx * P.N / 4u;
  var acc = vec4<f32>(0.0);
  for (var n4 = 0u; n4 < P.N / 4u; n4++) {
    let s = decay * state[row + n4] + sx * B[P.BOff + bc / 4u + n4];
    state[row + n4] = s;
    acc += s * C[P.COff + bc / 4u + n4];
  }
  let total = acc.x + acc.y + acc.z + acc.w;`
      : `let row = P.stateOff + idx * P.N;
  var total = 0.0;
  for (var n = 0u; n < P.N; n++) {
    let s = decay * state[row + n] + sx * load_B(P.BOff + bc + n);
    state[row + n] = s;
    total += s * load_C(P.COff + bc + n);
  }`
  }
  y[P.yOff + idx] = total${a.D ? ' + load_D(P.DOff + h) * xv' : ''};
  }
}`;
  device.run({
    name: 'selective_state_update',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: [heads, batch, 1],
    detail: `state [${a.state.shape.join(',')}], G=${groups}`,
  });
}
