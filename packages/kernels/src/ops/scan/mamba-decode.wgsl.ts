/**
 * The fused Mamba2 decode kernel (see mamba-decode.ts). Workgroup (group g, row b); its lanes:
 *  1. conv-update the group's 2N B and C channels (each lane some channels: roll the window in
 *     place, bias + taps, SiLU) into workgroup memory;
 *  2. after a barrier, take the group's (head, p) channels: conv-update the x channel, transform dt,
 *     update the state row with B and C from workgroup memory (uniform reads), add D·x, gate with
 *     silu(z), write the unnormalised value and sum its square;
 *  3. reduce the squares over the workgroup and scale the group's outputs by rsqrt(mean + eps)
 *     times the norm weight.
 * The tap count K is baked into the source (fixed per model); the rest are parameters.
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { MATH_F32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MambaDecodeDims, MambaDecodeOptions } from './mamba-decode';

const WG = 64;
/** Largest B/C state size held in workgroup memory (2N floats). */
export const MAMBA_DECODE_MAX_STATE = 1024;

export interface MambaDecodeLaunch {
  zxbcdt: Tensor;
  convState: Tensor;
  ssmState: Tensor;
  options: MambaDecodeOptions;
  dims: MambaDecodeDims;
  out: Tensor;
}

/** Shader compilers may assume finite math: an infinite clamp bound becomes the largest f32. */
function finite(v: number): number {
  return Math.max(-3.4028234663852886e38, Math.min(3.4028234663852886e38, v));
}

export function mambaDecodeGpu(device: WebGpuDevice, l: MambaDecodeLaunch): void {
  const { dims: d, options: o } = l;
  if (d.stateDim > MAMBA_DECODE_MAX_STATE) throw new Error(`mambaDecodeStep: state size ${d.stateDim} above ${MAMBA_DECODE_MAX_STATE}`);
  const K = d.taps;
  const vec = d.stateDim % 4 === 0;
  const p = new Params()
    .u32('H', d.heads)
    .u32('HD', d.headDim)
    .u32('G', d.groups)
    .u32('N', d.stateDim)
    .u32('HPG', d.heads / d.groups)
    .u32('dInner', d.dInner)
    .u32('convDim', d.convDim)
    .u32('width', d.dInner + d.convDim + d.heads)
    .f32('eps', o.eps)
    .f32('dtLo', finite(o.dtLimit?.[0] ?? 0))
    .f32('dtHi', finite(o.dtLimit?.[1] ?? Infinity));
  const list: NamedBinding[] = [
    { name: 'zx', tensor: l.zxbcdt },
    { name: 'conv', tensor: l.convState, writable: true },
    { name: 'ssm', tensor: l.ssmState, writable: true, vec4: vec && l.ssmState.offset % 4 === 0 },
    { name: 'cw', tensor: o.convWeight },
    { name: 'dtBias', tensor: o.dtBias },
    { name: 'aLog', tensor: o.aLog },
    { name: 'nw', tensor: o.normWeight },
    { name: 'y', tensor: l.out, writable: true },
  ];
  if (o.convBias) list.push({ name: 'cb', tensor: o.convBias });
  if (o.D) list.push({ name: 'D', tensor: o.D });
  const bound = bindTensors(device, 'mambaDecodeStep', list, p);
  const ssmVec = list[2]!.vec4 === true;
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  // Conv update of xBC channel `ch` of row b (state rolled in place): returns silu(bias + Σ w·window).
  const convFn = `fn conv_update(b: u32, ch: u32) -> f32 {
  let row = P.convOff + (b * P.convDim + ch) * ${K}u;
  ${range(K - 1).map((k) => `let s${k} = conv[row + ${k + 1}u];`).join('\n  ')}
  let s${K - 1} = load_zx(P.zxOff + b * P.width + P.dInner + ch);
  ${range(K).map((k) => `conv[row + ${k}u] = s${k};`).join('\n  ')}
  var acc = ${o.convBias ? 'load_cb(P.cbOff + ch)' : '0.0'};
  ${range(K).map((k) => `acc += load_cw(P.cwOff + ch * ${K}u + ${k}u) * s${k};`).join('\n  ')}
  return acc / (1.0 + exp(-acc));
}`;
  const stateLoop = ssmVec
    ? `let row4 = P.ssmOff + idx * (P.N / 4u);
    var acc = vec4<f32>(0.0);
    for (var n4 = 0u; n4 < P.N / 4u; n4++) {
      let s = decay * ssm[row4 + n4] + sx * bc4[n4];
      ssm[row4 + n4] = s;
      acc += s * bc4[P.N / 4u + n4];
    }
    let total = acc.x + acc.y + acc.z + acc.w;`
    : `let row = P.ssmOff + idx * P.N;
    var total = 0.0;
    for (var n = 0u; n < P.N; n++) {
      let s = decay * ssm[row + n] + sx * bc[n];
      ssm[row + n] = s;
      total += s * bc[P.N + n];
    }`;
  const source = `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${bound.decls}
${MATH_F32}
${ssmVec ? `var<workgroup> bc4: array<vec4<f32>, ${d.stateDim / 2}>;` : `var<workgroup> bc: array<f32, ${2 * d.stateDim}>;`}
var<workgroup> partial: array<f32, ${WG}>;
${convFn}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let g = wg.x;
  let b = wg.y;
  // 1. The group's B and C channels.
  ${
    ssmVec
      ? `// Four channels per lane, stored as one vec4.
  for (var c4 = lane; c4 < P.N / 2u; c4 += ${WG}u) {
    let c = 4u * c4;
    let base = P.dInner + select(0u, P.G * P.N, c >= P.N) + g * P.N + c % P.N;
    bc4[c4] = vec4<f32>(conv_update(b, base), conv_update(b, base + 1u), conv_update(b, base + 2u), conv_update(b, base + 3u));
  }`
      : `for (var c = lane; c < 2u * P.N; c += ${WG}u) {
    let part = select(0u, P.G * P.N, c >= P.N);
    bc[c] = conv_update(b, P.dInner + part + g * P.N + c % P.N);
  }`
  }
  workgroupBarrier();
  // 2. The group's (head, p) channels.
  let size = P.HPG * P.HD;
  var squares = 0.0;
  for (var j = lane; j < size; j += ${WG}u) {
    let h = g * P.HPG + j / P.HD;
    let ch = h * P.HD + j % P.HD;
    let xv = conv_update(b, ch);
    var step = load_zx(P.zxOff + b * P.width + P.dInner + P.convDim + h) + load_dtBias(P.dtBiasOff + h);
    step = softplus_f32(step);
    ${o.dtLimit ? 'step = min(max(step, P.dtLo), P.dtHi);' : ''}
    let decay = exp(step * -exp(load_aLog(P.aLogOff + h)));
    let sx = step * xv;
    let idx = (b * P.H + h) * P.HD + j % P.HD;
    ${stateLoop}
    let yv = total${o.D ? ' + load_D(P.DOff + h) * xv' : ''};
    let zv = load_zx(P.zxOff + b * P.width + ch);
    let v = yv * (zv / (1.0 + exp(-zv)));
    y[P.yOff + b * P.dInner + ch] = v;
    squares += v * v;
  }
  // 3. The group's RMS, then the scaled outputs.
  partial[lane] = squares;
  workgroupBarrier();
  var sum = 0.0;
  for (var l = 0u; l < ${WG}u; l++) { sum += partial[l]; }
  let scale = inverseSqrt(sum / f32(size) + P.eps);
  for (var j = lane; j < size; j += ${WG}u) {
    let ch = (g * P.HPG + j / P.HD) * P.HD + j % P.HD;
    let at = P.yOff + b * P.dInner + ch;
    y[at] = y[at] * scale * load_nw(P.nwOff + ch);
  }
}`;
  device.run({
    name: 'mamba_decode',
    source,
    params: p,
    bindings: bound.ranges,
    workgroups: [d.groups, d.batch, 1],
    detail: `state [${l.ssmState.shape.join(',')}], G=${d.groups}, K=${K}`,
  });
}
