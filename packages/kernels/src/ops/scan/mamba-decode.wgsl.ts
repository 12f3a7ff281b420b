/**
 * The fused Mamba2 decode kernel (see mamba-decode.ts). Workgroup (group g, row b); its lanes:
 *  1. conv-update the group's 2N B and C channels (each lane some channels: roll the window in
 *     place, bias + taps, SiLU) into workgroup memory;
 *  2. after a barrier, take the group's (head, p) rows, R per lane: conv-update the x channel,
 *     transform dt, update the state rows with B and C from workgroup memory — each B/C load serves
 *     the lane's R rows — add D·x, gate with silu(z) and sum the squares;
 *  3. reduce the squares over the workgroup and write the rows scaled by rsqrt(mean + eps) times
 *     the norm weight.
 *
 * The shapes are baked into the source (one per model), so every loop has a constant trip count and
 * needs no lane mask. On llvmpipe every storage load or store is a per-lane loop, so the kernel is
 * written for few memory operations: the state as vec4s (one load and one store per 4 elements), a
 * conv window of K = 4 taps as one vec4, B/C loads shared by R rows, each output written once.
 */
import { cachedSource } from '../../runtime/source-cache';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedBinding } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { MATH_F32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MambaDecodeDims, MambaDecodeOptions } from './mamba-decode';

/** Largest B/C state size held in workgroup memory (2N floats). */
export const MAMBA_DECODE_MAX_STATE = 1024;
/** Most state rows one lane updates (its registers hold one accumulator per row). */
const MAX_ROWS_PER_LANE = 8;
/** Lanes to aim for per workgroup: four 8-lane vectors on llvmpipe. */
const TARGET_LANES = 32;

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

interface KernelShape {
  /** (head, p) rows per group. */
  rows: number;
  rowsPerLane: number;
  lanes: number;
  /** Conv window as one vec4 (K = 4, aligned state) instead of K scalars. */
  convVec: boolean;
  /** State (and B/C) as vec4s (N a multiple of 4, aligned state). */
  stateVec: boolean;
}

function kernelShape(d: MambaDecodeDims, convAligned: boolean, ssmAligned: boolean): KernelShape {
  const rows = (d.heads / d.groups) * d.headDim;
  const rowsPerLane = Math.min(MAX_ROWS_PER_LANE, Math.max(1, Math.ceil(rows / TARGET_LANES)));
  const lanes = Math.ceil(Math.ceil(rows / rowsPerLane) / 8) * 8;
  return { rows, rowsPerLane, lanes, convVec: d.taps === 4 && convAligned, stateVec: d.stateDim % 4 === 0 && ssmAligned };
}

export function mambaDecodeGpu(device: WebGpuDevice, l: MambaDecodeLaunch): void {
  const { dims: d, options: o } = l;
  if (d.stateDim > MAMBA_DECODE_MAX_STATE) throw new Error(`mambaDecodeStep: state size ${d.stateDim} above ${MAMBA_DECODE_MAX_STATE}`);
  const shape = kernelShape(d, l.convState.offset % 4 === 0, l.ssmState.offset % 4 === 0);
  const p = new Params()
    .f32('eps', o.eps)
    .f32('dtLo', finite(o.dtLimit?.[0] ?? 0))
    .f32('dtHi', finite(o.dtLimit?.[1] ?? Infinity));
  const list: NamedBinding[] = [
    { name: 'zx', tensor: l.zxbcdt },
    { name: 'conv', tensor: l.convState, writable: true, vec4: shape.convVec },
    { name: 'ssm', tensor: l.ssmState, writable: true, vec4: shape.stateVec },
    { name: 'cw', tensor: o.convWeight },
    { name: 'dtBias', tensor: o.dtBias },
    { name: 'aLog', tensor: o.aLog },
    { name: 'nw', tensor: o.normWeight },
    { name: 'y', tensor: l.out, writable: true },
  ];
  if (o.convBias) list.push({ name: 'cb', tensor: o.convBias });
  if (o.D) list.push({ name: 'D', tensor: o.D });
  const bound = bindTensors(device, 'mambaDecodeStep', list, p);
  const spec = { d, shape, bias: o.convBias !== null, D: o.D !== null, clamp: o.dtLimit !== null, cw: o.convWeight.dtype };
  device.run({
    name: 'mamba_decode',
    source: cachedSource(`mamba-decode|${JSON.stringify(spec)}|${p.wgsl()}|${bound.decls}`, () => kernelSource(spec, p, bound.decls)),
    params: p,
    bindings: bound.ranges,
    workgroups: [d.groups, d.batch, 1],
    detail: `state [${l.ssmState.shape.join(',')}], G=${d.groups}, K=${d.taps}, ${shape.rowsPerLane} rows/lane`,
  });
}

interface Spec {
  d: MambaDecodeDims;
  shape: KernelShape;
  bias: boolean;
  D: boolean;
  clamp: boolean;
  cw: Tensor['dtype'];
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i);

function kernelSource(s: Spec, p: Params, decls: string): string {
  const { d, shape } = s;
  const K = d.taps;
  const N = d.stateDim;
  const HPG = d.heads / d.groups;
  const width = d.dInner + d.convDim + d.heads;
  const L = shape.lanes;
  const R = shape.rowsPerLane;
  // Conv update of xBC channel `ch` of row b (window rolled in place): silu(bias + Σ w·window).
  const convFn = shape.convVec
    ? `fn conv_update(b: u32, ch: u32) -> f32 {
  let at = P.convOff + b * ${d.convDim}u + ch;
  let old = conv[at];
  let win = vec4<f32>(old.y, old.z, old.w, load_zx(P.zxOff + b * ${width}u + ${d.dInner}u + ch));
  conv[at] = win;
  let w = vec4<f32>(${range(4)
    .map((k) => `load_cw(P.cwOff + ch * 4u + ${k}u)`)
    .join(', ')});
  let acc = dot(w, win)${s.bias ? ' + load_cb(P.cbOff + ch)' : ''};
  return acc / (1.0 + exp(-acc));
}`
    : `fn conv_update(b: u32, ch: u32) -> f32 {
  let row = P.convOff + (b * ${d.convDim}u + ch) * ${K}u;
  ${range(K - 1)
    .map((k) => `let s${k} = conv[row + ${k + 1}u];`)
    .join('\n  ')}
  let s${K - 1} = load_zx(P.zxOff + b * ${width}u + ${d.dInner}u + ch);
  ${range(K)
    .map((k) => `conv[row + ${k}u] = s${k};`)
    .join('\n  ')}
  var acc = ${s.bias ? 'load_cb(P.cbOff + ch)' : '0.0'};
  ${range(K)
    .map((k) => `acc += load_cw(P.cwOff + ch * ${K}u + ${k}u) * s${k};`)
    .join('\n  ')}
  return acc / (1.0 + exp(-acc));
}`;

  // 1. B then C channels of the group, four per lane step when the state is vec4s.
  const bcChannels = 2 * N;
  const bcBase = (c: string) => `${d.dInner}u + select(0u, ${d.groups * N}u, ${c} >= ${N}u) + g * ${N}u + ${c} % ${N}u`;
  let phase1: string;
  if (shape.stateVec) {
    const steps = Math.ceil(bcChannels / 4 / L);
    const guard = (bcChannels / 4) % L !== 0;
    phase1 = range(steps)
      .map((i) => {
        const body = `{ let c = 4u * (lane + ${i * L}u); let base = ${bcBase('c')};
    bc[lane + ${i * L}u] = vec4<f32>(conv_update(b, base), conv_update(b, base + 1u), conv_update(b, base + 2u), conv_update(b, base + 3u)); }`;
        return guard && i === steps - 1 ? `if (lane + ${i * L}u < ${bcChannels / 4}u) ${body}` : body;
      })
      .join('\n  ');
  } else {
    const steps = Math.ceil(bcChannels / L);
    const guard = bcChannels % L !== 0;
    phase1 = range(steps)
      .map((i) => {
        const body = `{ let c = lane + ${i * L}u; bc[c] = conv_update(b, ${bcBase('c')}); }`;
        return guard && i === steps - 1 ? `if (lane + ${i * L}u < ${bcChannels}u) ${body}` : body;
      })
      .join('\n  ');
  }

  // 2. The lane's rows j = lane + L·r of the group: x channel, dt, decay.
  const guardRows = shape.rows % L !== 0 || Math.ceil(shape.rows / L) !== R;
  const rowSetup = range(R).map((r) => {
    const lines = [
      `let j${r} = min(lane + ${r * L}u, ${shape.rows - 1}u);`,
      `let h${r} = g * ${HPG}u + j${r} / ${d.headDim}u;`,
      `let ch${r} = h${r} * ${d.headDim}u + j${r} % ${d.headDim}u;`,
      `var xv${r} = 0.0;`,
      guardRows ? `if (lane + ${r * L}u < ${shape.rows}u) { xv${r} = conv_update(b, ch${r}); }` : `xv${r} = conv_update(b, ch${r});`,
      `var step${r} = softplus_f32(load_zx(P.zxOff + b * ${width}u + ${d.dInner + d.convDim}u + h${r}) + load_dtBias(P.dtBiasOff + h${r}));`,
      s.clamp ? `step${r} = clamp_nan(step${r}, P.dtLo, P.dtHi);` : '',
      `let decay${r} = exp(step${r} * -exp(load_aLog(P.aLogOff + h${r})));`,
      `let sx${r} = step${r} * xv${r};`,
      `let row${r} = (b * ${d.heads}u + h${r}) * ${d.headDim}u + j${r} % ${d.headDim}u;`,
      shape.stateVec ? `var acc${r} = vec4<f32>(0.0);` : `var acc${r} = 0.0;`,
    ];
    return lines.filter(Boolean).join('\n  ');
  });
  // Rows past the group's end (only when the lanes do not divide it) repeat the last row's reads
  // and write nothing: the state update of a repeated row must not run twice.
  const update = (r: number, sv: string, bv: string, cv: string) => {
    const body = `let s = decay${r} * ssm[${sv}] + sx${r} * ${bv}; ssm[${sv}] = s; acc${r} = fma(s, ${cv}, acc${r});`;
    return guardRows ? `if (lane + ${r * L}u < ${shape.rows}u) { ${body} }` : `{ ${body} }`;
  };
  const stateLoop = shape.stateVec
    ? `for (var n4 = 0u; n4 < ${N / 4}u; n4++) {
    let bv = bc[n4];
    let cv = bc[${N / 4}u + n4];
    ${range(R)
      .map((r) => update(r, `P.ssmOff + row${r} * ${N / 4}u + n4`, 'bv', 'cv'))
      .join('\n    ')}
  }`
    : `for (var n = 0u; n < ${N}u; n++) {
    let bv = bc[n];
    let cv = bc[${N}u + n];
    ${range(R)
      .map((r) => update(r, `P.ssmOff + row${r} * ${N}u + n`, 'bv', 'cv'))
      .join('\n    ')}
  }`;
  const outputs = range(R).map((r) => {
    const total = shape.stateVec ? `acc${r}.x + acc${r}.y + acc${r}.z + acc${r}.w` : `acc${r}`;
    const lines = [
      `let z${r} = load_zx(P.zxOff + b * ${width}u + ch${r});`,
      `let v${r} = (${total}${s.D ? ` + load_D(P.DOff + h${r}) * xv${r}` : ''}) * (z${r} / (1.0 + exp(-z${r})));`,
      guardRows ? `if (lane + ${r * L}u < ${shape.rows}u) { squares += v${r} * v${r}; }` : `squares += v${r} * v${r};`,
    ];
    return lines.join('\n  ');
  });
  const stores = range(R).map((r) => {
    const st = `y[P.yOff + b * ${d.dInner}u + ch${r}] = v${r} * scale * load_nw(P.nwOff + ch${r});`;
    return guardRows ? `if (lane + ${r * L}u < ${shape.rows}u) { ${st} }` : st;
  });

  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
${MATH_F32}
var<workgroup> bc: array<${shape.stateVec ? `vec4<f32>, ${bcChannels / 4}` : `f32, ${bcChannels}`}>;
var<workgroup> partial: array<f32, ${L}>;
${convFn}
@compute @workgroup_size(${L})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let g = wg.x;
  let b = wg.y;
  ${phase1}
  workgroupBarrier();
  ${rowSetup.join('\n  ')}
  ${stateLoop}
  var squares = 0.0;
  ${outputs.join('\n  ')}
  partial[lane] = squares;
  workgroupBarrier();
  var sum = 0.0;
  for (var i = 0u; i < ${L}u; i++) { sum += partial[i]; }
  let scale = inverseSqrt(sum / ${shape.rows}.0 + P.eps);
  ${stores.join('\n  ')}
}`;
}
