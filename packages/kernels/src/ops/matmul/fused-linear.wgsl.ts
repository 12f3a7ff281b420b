/**
 * The fused decode GEMV for software rasterizers: `fusedLinear` with M ≤ 8 rows against a frozen
 * weight's cached texture (the layout and tiles of texture-gemm.wgsl.ts: 8 lanes, each owning 32
 * output columns of every row, B texels read once). Unlike the plain texture kernel, x is read
 * straight from its storage buffer — no per-call packing, whose texture copies would also end the
 * compute pass and cannot be recorded in a `StepProgram` — and the op's parts run inside:
 *
 * - prologue: the RMSNorm weight scales x as it is read; each row's Σx² is accumulated alongside,
 *   and its rsqrt(mean + eps) scales the row's results at the end;
 * - epilogue: bias, relu², residual, in that order.
 *
 * `fusedGemvGpu` returns null when the kernel does not apply (the caller then composes the ops).
 */
import { empty } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { BoundRange } from '../../runtime/bindings';
import type { KernelBinding } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { NAN_SAFE_F32, declareStorage, loaderF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { FusedLinearOptions } from './fused-linear';
import { GEMV_MAX_ROWS } from './gemm.wgsl';
import { bTextureLayout } from './texture-gemm.wgsl';
import { cachedTexture, layoutTexels, panelBase, panelCount, panelWidth, type PackedLayout } from './packed-texture';
import { elementsPerTexel, flatCapacity, type FlatTexture, type TexelFormat } from '../../runtime/texture-pool';
import { frozenWeight, normalizeMatmul } from './problem';
import { cachedSource } from '../../runtime/source-cache';

/** Lanes per workgroup (as the texture kernel: llvmpipe's SIMD width). */
const LANES = 8;

/**
 * Runs `fusedLinear` for x [M, K] (dense f32) as one kernel per B panel into a new f32 [M, N], when
 * the device reads operands from textures, M ≤ 8, the weight is frozen with a cached texture and the
 * residual (if any) is a dense f32 [M, N]. Returns null when it does not apply.
 */
export function fusedGemvGpu(device: WebGpuDevice, x: Tensor, weight: Tensor, options: FusedLinearOptions): Tensor | null {
  if (!device.tuning.textureOperands || !frozenWeight(weight)) return null;
  const [m, k] = x.shape as [number, number];
  const n = weight.shape[0]!;
  if (m > GEMV_MAX_ROWS || x.dtype !== 'f32' || !x.isContiguous || k === 0) return null;
  const residual = options.residual ?? null;
  if (residual && (residual.dtype !== 'f32' || !residual.isContiguous)) return null;
  const { problem, temporaries } = normalizeMatmul('fusedLinear', x, weight, { transB: true });
  for (const t of temporaries) t.dispose();
  const layout = bTextureLayout(device, problem);
  if (layout.layers !== 1 || layoutTexels(layout) > flatCapacity(device)) return null;
  const b = cachedTexture(device, problem.b, layout);
  if (!b) return null;
  const out = empty([m, n], { device });
  launchFusedGemv(device, { x: { tensor: x, offset: x.offset }, m, n, k, b, options, out });
  return out;
}

export interface GemvLaunch {
  /** Dense f32 rows [M, K] starting at element `offset` of the tensor's storage. */
  x: { tensor: Tensor; offset: number };
  m: number;
  n: number;
  k: number;
  b: { texture: FlatTexture; layout: PackedLayout };
  options: FusedLinearOptions;
  /** Dense f32 [M, N]. */
  out: Tensor;
}

/** Records the fused GEMV (also matmul's decode path against a cached weight texture, with no prologue). */
export function launchFusedGemv(device: WebGpuDevice, l: GemvLaunch): void {
  const { b, options } = l;
  const format = b.layout.format;
  const cpt = elementsPerTexel(format);
  const texelsPerLane = 32 / cpt;
  const wgTexels = LANES * texelsPerLane;
  const rows = 2 ** Math.ceil(Math.log2(l.m));
  const strips = b.layout.strip > 0;
  if (strips && b.layout.strip !== wgTexels) throw new Error(`fusedLinear: B strips of ${b.layout.strip} texels do not match the ${wgTexels}-texel tile`);
  const norm = options.norm ?? null;
  const bias = options.bias ?? null;
  const residual = options.residual ?? null;
  const xBound = device.bind(l.x.tensor.storage, l.x.offset, l.m * l.k, 'fusedLinear x');
  const xVec = l.k % 4 === 0 && xBound.elementOffset % 4 === 0;
  // x as a uniform (whole vec4s, within one uniform binding): every lane reads the same x, which
  // llvmpipe loads with one gather instead of a per-lane loop of scalar storage loads.
  const xUniform = xVec && uniformFits(device, xBound.range.size) ? xBound.range.size / 16 : null;
  const nwBound = norm ? device.bind(norm.weight.storage, norm.weight.offset, l.k, 'fusedLinear norm weight') : null;
  const nwPerVec = norm?.weight.dtype === 'bf16' ? 8 : 4;
  const nwUniform =
    norm &&
    nwBound &&
    xUniform !== null &&
    (norm.weight.dtype === 'f32' || norm.weight.dtype === 'bf16') &&
    nwBound.elementOffset % nwPerVec === 0 &&
    (nwBound.elementOffset + l.k) % nwPerVec === 0 &&
    uniformFits(device, nwBound.range.size)
      ? nwBound.range.size / 16
      : null;
  const outBound = device.bind(l.out.storage, l.out.offset, l.out.size, 'fusedLinear output');
  for (let panel = 0; panel < panelCount(b.layout); panel++) {
    const w = panelWidth(b.layout, panel);
    const col0 = panel * b.layout.panelTexels * cpt;
    const stripCount = Math.ceil(w / wgTexels);
    const nCols = Math.min(w * cpt, l.n - col0);
    const params = new Params()
      .u32('m', l.m)
      .u32('k', l.k)
      // K steps of 4 (B's layout may pad rows further for the prefill tiles; those stay unread).
      .u32('kPad', Math.ceil(l.k / 4) * 4)
      .u32('n', l.n)
      .u32('nCols', nCols)
      .u32('col0', col0)
      .u32('bBase', panelBase(b.layout, panel))
      .u32('bStrip', strips ? wgTexels * b.layout.paddedRows : wgTexels)
      .u32('bRow', strips ? wgTexels : w)
      .u32('bRowLast', strips ? w - (stripCount - 1) * wgTexels : w)
      .u32('lastStrip', stripCount - 1)
      .u32('bMask', b.texture.width - 1)
      .u32('bShift', b.texture.shift)
      .u32('xOff', xVec ? xBound.elementOffset / 4 : xBound.elementOffset)
      .u32('outOff', outBound.elementOffset)
      .f32('eps', norm?.eps ?? 0)
      .f32('invK', 1 / l.k);
    const bindings: KernelBinding[] = [{ texture: b.texture.view }, xBound.range, outBound.range];
    const extra: { name: string; tensor: Tensor; bound?: BoundRange }[] = [];
    if (norm) extra.push({ name: 'nw', tensor: norm.weight, bound: nwBound! });
    if (bias) extra.push({ name: 'bias', tensor: bias });
    if (residual) extra.push({ name: 'res', tensor: residual });
    for (const e of extra) {
      const bound = e.bound ?? device.bind(e.tensor.storage, e.tensor.offset, e.tensor.size, `fusedLinear ${e.name}`);
      bindings.push(bound.range);
      params.u32(`${e.name}Off`, e.name === 'nw' && nwUniform !== null ? bound.elementOffset / nwPerVec : bound.elementOffset);
    }
    const spec: SourceSpec = {
      rows,
      texelsPerLane,
      format,
      xVec,
      xUniform,
      norm: norm ? norm.weight.dtype : null,
      nwUniform,
      bias: bias ? bias.dtype : null,
      residual: residual !== null,
      relu2: options.activation === 'relu2',
    };
    device.run({
      name: 'fused_linear',
      source: cachedSource(`fused-gemv|${params.wgsl()}|${JSON.stringify(spec)}`, () => gemvSource(params, spec)),
      params,
      bindings,
      workgroups: [stripCount, 1, 1],
      detail: `[${l.m}×${l.k}]·[${l.k}×${nCols}] ${format}${norm ? ' norm' : ''}${bias ? ' bias' : ''}${spec.relu2 ? ' relu2' : ''}${residual ? ' residual' : ''}`,
    });
  }
}

/** True when a binding of `bytes` (whole vec4s) can be a uniform buffer on this device. */
function uniformFits(device: WebGpuDevice, bytes: number): boolean {
  return device.tuning.uniformOperands && bytes % 16 === 0 && bytes <= device.limits.maxUniformBufferBindingSize;
}

interface SourceSpec {
  rows: number;
  texelsPerLane: number;
  format: TexelFormat;
  /** x rows are whole, aligned vec4s (K a multiple of 4). */
  xVec: boolean;
  /** x is a uniform array of this many vec4s (else a storage buffer). */
  xUniform: number | null;
  norm: Tensor['dtype'] | null;
  /** The norm weight is a uniform array of this many vec4s (f32) or vec4<u32>s (bf16). */
  nwUniform: number | null;
  bias: Tensor['dtype'] | null;
  residual: boolean;
  relu2: boolean;
}

function gemvSource(p: Params, s: SourceSpec): string {
  const R = s.rows;
  const CT = s.texelsPerLane;
  const packed = s.format === 'rgba32uint';
  const perTexel = packed ? 2 : 1;
  const V = CT * perTexel;
  const rows = [...Array(R).keys()];
  const vecs = [...Array(V).keys()];
  let binding = 3;
  const decls: string[] = [];
  if (s.norm) {
    if (s.nwUniform !== null)
      decls.push(`@group(0) @binding(${++binding}) var<uniform> NW: array<vec4<${s.norm === 'bf16' ? 'u32' : 'f32'}>, ${s.nwUniform}>;`);
    else decls.push(`${declareStorage(++binding, 'nw', s.norm, 'read')}\n${loaderF32('nw', s.norm)}`);
  }
  if (s.bias) decls.push(`${declareStorage(++binding, 'bias', s.bias, 'read')}\n${loaderF32('bias', s.bias)}`);
  if (s.residual) decls.push(declareStorage(++binding, 'res', 'f32', 'read'));

  const loadB: string[] = [];
  for (let kk = 0; kk < 4; kk++) {
    for (let j = 0; j < CT; j++) {
      const fetch = `textureLoad(B, at(bCol0 + (k + ${kk}u) * bRow + ${j * LANES}u), 0)`;
      if (packed) {
        loadB.push(`let w${kk}_${j} = ${fetch};`);
        loadB.push(`let b${kk}_${2 * j} = vec4<f32>(lo(w${kk}_${j}.x), hi(w${kk}_${j}.x), lo(w${kk}_${j}.y), hi(w${kk}_${j}.y));`);
        loadB.push(`let b${kk}_${2 * j + 1} = vec4<f32>(lo(w${kk}_${j}.z), hi(w${kk}_${j}.z), lo(w${kk}_${j}.w), hi(w${kk}_${j}.w));`);
      } else loadB.push(`let b${kk}_${j} = ${fetch};`);
    }
  }
  // Rows past M repeat row M-1 (loads stay in range) and are not stored.
  const xRow = (r: number) => `min(${r}u, P.m - 1u)`;
  const loadX = (r: number) =>
    s.xUniform !== null
      ? `XU[P.xOff + ${xRow(r)} * (P.k >> 2u) + q]`
      : s.xVec
        ? `X[P.xOff + ${xRow(r)} * (P.k >> 2u) + q]`
        : `vec4<f32>(${[0, 1, 2, 3].map((e) => `xs(${xRow(r)} * P.k + k + ${e}u, k + ${e}u)`).join(', ')})`;
  const fma: string[] = [];
  if (s.norm) {
    if (s.nwUniform !== null && s.norm === 'bf16') {
      fma.push('let nwq = NW[P.nwOff + (k >> 3u)];');
      fma.push('let nwp = select(nwq.xy, nwq.zw, (k & 4u) != 0u);');
      fma.push('let g = vec4<f32>(lo(nwp.x), hi(nwp.x), lo(nwp.y), hi(nwp.y));');
    } else if (s.nwUniform !== null) fma.push('let g = NW[P.nwOff + q];');
    else fma.push(`let g = vec4<f32>(${[0, 1, 2, 3].map((e) => `nws(k + ${e}u)`).join(', ')});`);
  }
  for (const r of rows) {
    fma.push(`{ let raw = ${loadX(r)};`);
    if (s.norm) fma.push(`  ss${r} = fma(raw.x, raw.x, fma(raw.y, raw.y, fma(raw.z, raw.z, fma(raw.w, raw.w, ss${r}))));`);
    fma.push(`  let a = raw${s.norm ? ' * g' : ''};`);
    for (const v of vecs)
      fma.push(
        `  c${r}_${v} = fma(vec4<f32>(a.w), b3_${v}, fma(vec4<f32>(a.z), b2_${v}, fma(vec4<f32>(a.y), b1_${v}, fma(vec4<f32>(a.x), b0_${v}, c${r}_${v}))));`,
      );
    fma.push('}');
  }
  const columns = vecs.map((v) => {
    const j = Math.floor(v / perTexel);
    return `let col${v} = (t0 + ${j * LANES}u) * ${perTexel * 4}u + ${(v % perTexel) * 4}u;`;
  });
  const biases = s.bias
    ? vecs.map((v) => `let bias${v} = vec4<f32>(${[0, 1, 2, 3].map((e) => `load_bias(P.biasOff + P.col0 + min(col${v} + ${e}u, nCols - 1u))`).join(', ')});`)
    : [];
  const store = rows.map((r) => {
    const lines = [`if (${r}u < P.m) {`, `    let o = P.outOff + ${r}u * P.n + P.col0;`];
    if (s.norm) lines.push(`    let scale = inverseSqrt(ss${r} * P.invK + P.eps);`);
    for (const v of vecs) {
      let value = `c${r}_${v}${s.norm ? ' * scale' : ''}`;
      if (s.bias) value = `${value} + bias${v}`;
      lines.push(`    var v${v} = ${value};`);
      if (s.relu2) lines.push(`    v${v} = relu_nan_v4(v${v}) * relu_nan_v4(v${v});`);
      lines.push(`    put(o, ${r}u * P.n + P.col0, col${v}, v${v}, nCols);`);
    }
    lines.push('  }');
    return lines.join('\n');
  });
  const put = `fn put(o: u32, r: u32, c: u32, v: vec4<f32>, nCols: u32) {
  ${[0, 1, 2, 3].map((e) => `if (c + ${e}u < nCols) { out[o + c + ${e}u] = v[${e}]${s.residual ? ` + res[P.resOff + r + c + ${e}u]` : ''}; }`).join('\n  ')}
}`;
  const xDecl =
    s.xUniform !== null
      ? `@group(0) @binding(2) var<uniform> XU: array<vec4<f32>, ${s.xUniform}>;`
      : `@group(0) @binding(2) var<storage, read> X: array<${s.xVec ? 'vec4<f32>' : 'f32'}>;`;
  const unpack = packed || (s.norm === 'bf16' && s.nwUniform !== null);
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var B: texture_2d<${packed ? 'u32' : 'f32'}>;
${xDecl}
@group(0) @binding(3) var<storage, read_write> out: array<f32>;
${decls.join('\n')}
${put}
${s.relu2 ? NAN_SAFE_F32 : ''}
fn at(i: u32) -> vec2<u32> { return vec2<u32>(i & P.bMask, i >> P.bShift); }
${unpack ? 'fn lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }\nfn hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }' : ''}
${s.xVec ? '' : '// Element i of x (column kc), zero past K.\nfn xs(i: u32, kc: u32) -> f32 { return select(0.0, X[P.xOff + min(i, P.m * P.k - 1u)], kc < P.k); }'}
${s.norm && s.nwUniform === null ? 'fn nws(i: u32) -> f32 { return select(0.0, load_nw(P.nwOff + min(i, P.k - 1u)), i < P.k); }' : ''}
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let t0 = wg.x * ${LANES * CT}u + lane;
  let bRow = select(P.bRow, P.bRowLast, wg.x == P.lastStrip);
  let kPad = P.kPad;
  let bCol0 = P.bBase + wg.x * P.bStrip + lane;
  ${rows.flatMap((r) => vecs.map((v) => `var c${r}_${v} = vec4<f32>(0.0);`)).join(' ')}
  ${s.norm ? rows.map((r) => `var ss${r} = 0.0;`).join(' ') : ''}
  for (var k = 0u; k < kPad; k = k + 4u) {
    let q = k >> 2u;
    ${loadB.join('\n    ')}
    ${fma.join('\n    ')}
  }
  let nCols = P.nCols;
  ${columns.join('\n  ')}
  ${biases.join('\n  ')}
  ${store.join('\n  ')}
}`;
}
