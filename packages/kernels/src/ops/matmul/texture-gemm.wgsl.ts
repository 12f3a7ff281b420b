/**
 * The software-rasterizer matmul kernel: A and B read from packed textures (see packed-texture.ts),
 * no workgroup memory. Each invocation owns a register tile of `rows` output rows × `texelsPerLane`
 * B texels (32 columns); the 8 lanes of a workgroup take interleaved texels, so one `textureLoad`
 * brings adjacent columns to adjacent lanes. On llvmpipe every load costs far more than the FMAs it
 * feeds, so the tile is as large as the registers (spilled to L1) allow: 16 rows × 32 columns for
 * prefill; for decode (M ≤ 8) the tile holds all M rows, so each weight texel is read once.
 *
 * K runs in whole steps of 4 (one A texel per row): the packed A rows end in zeros and B has zero
 * rows up to a multiple of 4, so there is no tail to mask (and half the code to compile).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import type { KernelBinding } from '../../runtime/batch';
import { Params } from '../../runtime/params';
import { declareStorage } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import { GEMV_MAX_ROWS } from './gemm.wgsl';
import { elementsPerTexel, layerTexels, panelBase, panelCount, panelWidth, type FlatTexture, type PackedLayout, type TexelFormat } from './packed-texture';
import type { MatmulProblem } from './problem';
import { cachedSource } from './sources';
import { bindingBudget } from './split';

/** Lanes per workgroup (llvmpipe's SIMD width for 32-bit values). */
const LANES = 8;

export interface TextureTile {
  rows: number;
  texelsPerLane: number;
}

/**
 * The register tile for `m` rows × 32 columns: for decode shapes all rows (rounded up to 1, 2, 4
 * or 8 to bound the number of shader variants); otherwise 16 rows, or 32 rows for f32 B with
 * M ≥ 64 (f32 needs twice the B fetches per FMA of bf16; the taller tile measured ~15 % faster on
 * llvmpipe, but takes several times longer to compile, so only large products use it).
 */
export function textureTile(m: number, bFormat: TexelFormat): TextureTile {
  const texelsPerLane = 32 / elementsPerTexel(bFormat);
  if (m <= GEMV_MAX_ROWS) return { rows: 2 ** Math.ceil(Math.log2(m)), texelsPerLane };
  return { rows: bFormat === 'rgba32float' && m >= 64 ? 32 : 16, texelsPerLane };
}

/** Texel columns of B one workgroup covers (its strip): 256 columns. */
export function stripTexels(bFormat: TexelFormat): number {
  return LANES * (32 / elementsPerTexel(bFormat));
}

export interface PackedOperand {
  texture: FlatTexture;
  layout: PackedLayout;
}

/**
 * Runs `p` from packed A ([layers, M, K]) and B ([layers, K, N]) into the dense f32 `out`. The bias
 * is always bound (one shader for both cases): a dense f32 [N], or a one-element placeholder.
 */
export function textureMatmul(
  device: WebGpuDevice,
  p: MatmulProblem,
  out: Tensor,
  a: PackedOperand,
  b: PackedOperand,
  bias: { tensor: Tensor; present: boolean },
  tile: TextureTile,
): void {
  const maxWg = device.limits.maxComputeWorkgroupsPerDimension;
  const limit = bindingBudget(device);
  const layerElements = p.m * p.n;
  // Output chunks (batch entries, then rows) whose binding fits.
  let zChunk = Math.min(p.batch, maxWg, Math.max(1, Math.floor(limit / 4 / Math.max(layerElements, 1))));
  let mChunk = p.m;
  if (zChunk === 1 && layerElements * 4 > limit) mChunk = Math.max(1, Math.floor(limit / 4 / p.n));
  mChunk = Math.min(mChunk, maxWg * tile.rows);
  if (mChunk < p.m) zChunk = 1;
  const cpt = elementsPerTexel(b.layout.format);
  const wgTexels = LANES * tile.texelsPerLane;
  for (let z0 = 0; z0 < p.batch; z0 += zChunk) {
    const zc = Math.min(zChunk, p.batch - z0);
    for (let m0 = 0; m0 < p.m; m0 += mChunk) {
      const mc = Math.min(mChunk, p.m - m0);
      const outBound = device.bind(out.storage, out.offset + z0 * layerElements + m0 * p.n, (zc - 1) * layerElements + (mc - 1) * p.n + p.n, 'matmul output');
      for (let panel = 0; panel < panelCount(b.layout); panel++) {
        const w = panelWidth(b.layout, panel);
        const col0 = panel * b.layout.panelTexels * cpt;
        // Workgroup x reads its strip of B: a column range of the panel's rows, or its own block.
        const strips = b.layout.strip > 0;
        if (strips && b.layout.strip !== wgTexels) throw new Error(`matmul: B strips of ${b.layout.strip} texels do not match the ${wgTexels}-texel tile`);
        const stripCount = Math.ceil(w / wgTexels);
        const nCols = Math.min(w * cpt, p.n - col0);
        const aLayerTexels = a.layout.layers > 1 ? layerTexels(a.layout) : 0;
        const bLayerTexels = b.layout.layers > 1 ? layerTexels(b.layout) : 0;
        const params = new Params()
          .u32('m', mc)
          .u32('kPad', b.layout.paddedRows)
          .u32('nCols', nCols)
          .u32('aBase', z0 * aLayerTexels + m0 * a.layout.rowTexels)
          .u32('aLayer', aLayerTexels)
          .u32('aRow', a.layout.rowTexels)
          .u32('aMask', a.texture.width - 1)
          .u32('aShift', a.texture.shift)
          .u32('bBase', z0 * bLayerTexels + panelBase(b.layout, panel))
          .u32('bLayer', bLayerTexels)
          .u32('bStrip', strips ? wgTexels * b.layout.paddedRows : wgTexels)
          .u32('bRow', strips ? wgTexels : w)
          .u32('bRowLast', strips ? w - (stripCount - 1) * wgTexels : w)
          .u32('lastStrip', stripCount - 1)
          .u32('bMask', b.texture.width - 1)
          .u32('bShift', b.texture.shift)
          .u32('outOff', outBound.elementOffset + col0)
          .u32('outLayer', layerElements)
          .u32('outRow', p.n);
        const biasBound = bias.present
          ? device.bind(bias.tensor.storage, bias.tensor.offset + col0, nCols, 'matmul bias')
          : device.bind(bias.tensor.storage, bias.tensor.offset, 1, 'matmul bias placeholder');
        params.u32('biasOff', biasBound.elementOffset).u32('hasBias', bias.present ? 1 : 0);
        const bindings: KernelBinding[] = [{ texture: a.texture.view }, { texture: b.texture.view }, biasBound.range, outBound.range];
        device.run({
          name: 'matmul_texture',
          source: cachedSource(`texture|${params.wgsl()}|${tile.rows}|${tile.texelsPerLane}|${b.layout.format}`, () => textureSource(params, tile, b.layout.format)),
          params,
          bindings,
          workgroups: [stripCount, Math.ceil(mc / tile.rows), zc],
          detail: `[${zc}×${mc}×${p.k}]·[${p.k}×${nCols}] tile ${tile.rows}×${tile.texelsPerLane * cpt} ${b.layout.format}`,
        });
      }
    }
  }
}

function textureSource(p: Params, tile: TextureTile, bFormat: TexelFormat): string {
  const R = tile.rows;
  const CT = tile.texelsPerLane;
  const packed = bFormat === 'rgba32uint';
  const perTexel = packed ? 2 : 1; // vec4 column groups per B texel
  const V = CT * perTexel;
  const rows = [...Array(R).keys()];
  const vecs = [...Array(V).keys()];

  /** Loads B rows k + 0..3 as vec4 column groups b{kk}_{v}. */
  const loadB = (): string[] => {
    const lines: string[] = [];
    for (let kk = 0; kk < 4; kk++) {
      for (let j = 0; j < CT; j++) {
        const fetch = `textureLoad(B, at(bCol0 + (k + ${kk}u) * bRow + ${j * LANES}u, bMask, bShift), 0)`;
        if (packed) {
          lines.push(`let w${kk}_${j} = ${fetch};`);
          lines.push(`let b${kk}_${2 * j} = vec4<f32>(lo(w${kk}_${j}.x), hi(w${kk}_${j}.x), lo(w${kk}_${j}.y), hi(w${kk}_${j}.y));`);
          lines.push(`let b${kk}_${2 * j + 1} = vec4<f32>(lo(w${kk}_${j}.z), hi(w${kk}_${j}.z), lo(w${kk}_${j}.w), hi(w${kk}_${j}.w));`);
        } else lines.push(`let b${kk}_${j} = ${fetch};`);
      }
    }
    return lines;
  };
  const fmaRows = (): string[] => {
    const lines: string[] = [];
    for (const r of rows) {
      lines.push(`{ let a = textureLoad(A, at(aRow0 + ${r}u * aRow + q, aMask, aShift), 0);`);
      for (const v of vecs) lines.push(`  c${r}_${v} = c${r}_${v} + a.x * b0_${v} + a.y * b1_${v} + a.z * b2_${v} + a.w * b3_${v};`);
      lines.push('}');
    }
    return lines;
  };
  // Epilogue: column indices and bias once per column group, then one store per row and group.
  const columns = vecs.map((v) => {
    const j = Math.floor(v / perTexel);
    return `let col${v} = (t0 + ${j * LANES}u) * ${perTexel * 4}u + ${(v % perTexel) * 4}u;`;
  });
  const biases = vecs.map((v) => `bias${v} = vec4<f32>(${[0, 1, 2, 3].map((e) => `bias[P.biasOff + min(col${v} + ${e}u, nCols - 1u)]`).join(', ')});`);
  const store = rows.map(
    (r) => `if (m0 + ${r}u < P.m) {
    let o = outBase + (m0 + ${r}u) * P.outRow;
    ${vecs.map((v) => `put(o, col${v}, c${r}_${v} + bias${v}, nCols);`).join('\n    ')}
  }`,
  );
  // Scalar stores (any N, any offset): measured no slower than vec4 stores, which would need a second shader variant.
  const put = `fn put(o: u32, c: u32, v: vec4<f32>, nCols: u32) {
  if (c < nCols) { out[o + c] = v.x; }
  if (c + 1u < nCols) { out[o + c + 1u] = v.y; }
  if (c + 2u < nCols) { out[o + c + 2u] = v.z; }
  if (c + 3u < nCols) { out[o + c + 3u] = v.w; }
}`;
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
@group(0) @binding(1) var A: texture_2d<f32>;
@group(0) @binding(2) var B: texture_2d<${packed ? 'u32' : 'f32'}>;
${declareStorage(3, 'bias', 'f32', 'read')}
@group(0) @binding(4) var<storage, read_write> out: array<f32>;
${put}
fn at(i: u32, mask: u32, shift: u32) -> vec2<u32> { return vec2<u32>(i & mask, i >> shift); }
${packed ? 'fn lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }\nfn hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }' : ''}
@compute @workgroup_size(${LANES})
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) lane: u32) {
  let z = wg.z;
  let t0 = wg.x * ${LANES * CT}u + lane;
  let m0 = wg.y * ${R}u;
  // Uniforms copied to locals once: the loop below must not reload them.
  let aRow = P.aRow;
  let bRow = select(P.bRow, P.bRowLast, wg.x == P.lastStrip);
  let aMask = P.aMask;
  let aShift = P.aShift;
  let bMask = P.bMask;
  let bShift = P.bShift;
  let kPad = P.kPad;
  let aRow0 = P.aBase + z * P.aLayer + m0 * aRow;
  let bCol0 = P.bBase + z * P.bLayer + wg.x * P.bStrip + lane;
  ${rows.flatMap((r) => vecs.map((v) => `var c${r}_${v} = vec4<f32>(0.0);`)).join(' ')}
  for (var k = 0u; k < kPad; k = k + 4u) {
    let q = k >> 2u;
    ${loadB().join('\n    ')}
    ${fmaRows().join('\n    ')}
  }
  let outBase = P.outOff + z * P.outLayer;
  let nCols = P.nCols;
  ${columns.join('\n  ')}
  ${vecs.map((v) => `var bias${v} = vec4<f32>(0.0);`).join(' ')}
  if (P.hasBias != 0u) {
    ${biases.join('\n    ')}
  }
  ${store.join('\n  ')}
}`;
}
