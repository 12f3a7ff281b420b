/**
 * The software-rasterizer matmul kernel: A and B read from packed textures (see packed-texture.ts),
 * no workgroup memory. Each invocation owns a register tile of `rows` output rows × `texelsPerLane`
 * B texels (32 columns); the 8 lanes of a workgroup take interleaved texels, so one `textureLoad`
 * brings adjacent columns to adjacent lanes. On llvmpipe every load costs far more than the FMAs it
 * feeds, so the tile is as large as the registers (spilled to L1) allow: 16 rows × 32 columns for
 * prefill; for decode (M ≤ 8) the tile holds all M rows, so each weight texel is read once.
 *
 * K runs in whole steps of 4 or 8 (one or two A texels per row): the packed A rows end in zeros
 * up to a whole step and B has zero rows up to a multiple of 8, so there is no tail to mask (and
 * half the code to compile).
 */
import type { WebGpuDevice } from '../../device/webgpu-device';
import { bindTensors, type NamedTensor } from '../../runtime/bindings';
import { Params } from '../../runtime/params';
import { empty } from '../../creation';
import type { Tensor } from '../../tensor';
import { copyInto, narrow, reshape } from '../layout/layout';
import { GEMV_MAX_ROWS } from './gemm.wgsl';
import { directlyCopyable, layerTexels, packedLayout, panelBase, panelCount, panelWidth, stripLayout, type PackedLayout } from './packed-texture';
import { elementsPerTexel, type FlatTexture, type TexelFormat } from '../../runtime/texture-pool';
import { narrowApplies, narrowMatmul } from './narrow-gemm.wgsl';
import type { MatmulProblem } from './problem';
import { cachedSource } from '../../runtime/source-cache';
import { bindingBudget } from './split';

/** Lanes per workgroup (llvmpipe's SIMD width for 32-bit values). */
const LANES = 8;

export interface TextureTile {
  rows: number;
  texelsPerLane: number;
  /** K values per loop step: 4 (one A texel per row) or 8 (two). */
  kStep: 4 | 8;
  /** Operands bound as read-only storage textures rather than sampled ones (see `storageReads`). */
  storage: boolean;
  /**
   * Whole vec4 stores (~15 % less time than scalar ones at K = 512 on llvmpipe): the output row
   * stride, its offset and each panel's first column must be multiples of 4.
   */
  vecStores: boolean;
}

/**
 * The register tile for `m` rows × 32 columns. Decode shapes: all rows (rounded up to 1, 2, 4 or
 * 8 to bound the number of shader variants), 4 K values per step, sampled textures. Otherwise 16
 * rows (taller tiles spill more than they save, and take several times longer to compile); with
 * storage reads, 8 K values per step (llvmpipe loads, masks and stores every accumulator once per
 * step, so longer steps halve that work: ~15 % faster with storage reads, slower with sampled
 * ones) and vec4 stores.
 */
export function textureTile(m: number, bFormat: TexelFormat, storage: boolean): TextureTile {
  const texelsPerLane = 32 / elementsPerTexel(bFormat);
  if (m <= GEMV_MAX_ROWS) return { rows: 2 ** Math.ceil(Math.log2(m)), texelsPerLane, kStep: 4, storage: false, vecStores: false };
  return { rows: 16, texelsPerLane, kStep: storage ? 8 : 4, storage, vecStores: storage };
}

/** B rows are padded to this multiple (the longest K step), so every tile reads whole steps. */
export const B_ROW_STEP = 8;

/**
 * How B is packed for the texture kernels: rows padded to whole K steps of every tile (one cached
 * layout serves them all); one contiguous strip per workgroup unless B copies in as it is.
 */
export function bTextureLayout(device: WebGpuDevice, p: MatmulProblem): PackedLayout {
  const bFormat: TexelFormat = p.b.tensor.dtype === 'bf16' ? 'rgba32uint' : 'rgba32float';
  const bLayers = p.b.batchStride === 0 ? 1 : p.batch;
  const wide = packedLayout(device, p.b, bFormat, bLayers, p.k, p.n, B_ROW_STEP);
  return directlyCopyable(p.b, wide) ? wide : (stripLayout(device, p.b, bFormat, bLayers, p.k, p.n, B_ROW_STEP, stripTexels(bFormat)) ?? wide);
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
  if (tile.storage && narrowApplies(p, a.layout, b.layout)) return narrowMatmul(device, p, out, a, b, bias);
  if (!tile.vecStores || (p.n % 4 === 0 && out.offset % 4 === 0)) return dispatchTiles(device, p, out, p.n, a, b, bias, tile);
  // Vec4 stores need rows of whole vec4s: write padded rows, then copy the N columns out, in blocks
  // of rows whose bindings fit.
  const rowPad = Math.ceil(p.n / 4) * 4;
  const rows = p.batch * p.m;
  const padded = empty([rows, rowPad], { device });
  dispatchTiles(device, p, padded, rowPad, a, b, bias, tile);
  const dst = reshape(out, [rows, p.n]);
  const block = Math.max(1, Math.floor(bindingBudget(device) / 4 / rowPad));
  for (let r0 = 0; r0 < rows; r0 += block) {
    const count = Math.min(block, rows - r0);
    const from = narrow(narrow(padded, 0, r0, count), 1, 0, p.n);
    const to = narrow(dst, 0, r0, count);
    copyInto(to, from);
    from.dispose();
    to.dispose();
  }
  dst.dispose();
  padded.dispose();
}

/** The kernel launches: `out` is dense f32 [batch, M, outRow], outRow ≥ N (vec4 stores may write junk past N). */
function dispatchTiles(
  device: WebGpuDevice,
  p: MatmulProblem,
  out: Tensor,
  outRow: number,
  a: PackedOperand,
  b: PackedOperand,
  bias: { tensor: Tensor; present: boolean },
  tile: TextureTile,
): void {
  const maxWg = device.limits.maxComputeWorkgroupsPerDimension;
  const limit = bindingBudget(device);
  const layerElements = p.m * outRow;
  // Output chunks (batch entries, then rows) whose binding fits.
  let zChunk = Math.min(p.batch, maxWg, Math.max(1, Math.floor(limit / 4 / Math.max(layerElements, 1))));
  let mChunk = p.m;
  if (zChunk === 1 && layerElements * 4 > limit) mChunk = Math.max(1, Math.floor(limit / 4 / outRow));
  mChunk = Math.min(mChunk, maxWg * tile.rows);
  if (mChunk < p.m) zChunk = 1;
  const cpt = elementsPerTexel(b.layout.format);
  const wgTexels = LANES * tile.texelsPerLane;
  for (let z0 = 0; z0 < p.batch; z0 += zChunk) {
    const zc = Math.min(zChunk, p.batch - z0);
    for (let m0 = 0; m0 < p.m; m0 += mChunk) {
      const mc = Math.min(mChunk, p.m - m0);
      // Vec4 stores count P.outOff in vec4s (the binder's unit for a vec4 entry).
      const outRows: NamedTensor = {
        name: 'out',
        tensor: out,
        window: { start: z0 * layerElements + m0 * outRow, length: (zc - 1) * layerElements + mc * outRow },
        what: 'matmul output',
        writable: true,
        vec4: tile.vecStores,
      };
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
          .u32('col0', col0)
          .u32('outLayer', layerElements)
          .u32('outRow', outRow)
          .u32('hasBias', bias.present ? 1 : 0);
        const bound = bindTensors(
          device,
          'matmul',
          [
            { name: 'A', texture: a.texture.view, type: tile.storage ? 'texture_storage_2d<rgba32float, read>' : 'texture_2d<f32>' },
            { name: 'B', texture: b.texture.view, type: bTextureType(tile, b.layout.format) },
            bias.present
              ? { name: 'bias', tensor: bias.tensor, window: { start: col0, length: nCols }, what: 'matmul bias' }
              : { name: 'bias', tensor: bias.tensor, window: { start: 0, length: 1 }, what: 'matmul bias placeholder' },
            outRows,
          ],
          params,
        );
        device.run({
          name: 'matmul_texture',
          source: cachedSource(`texture|${params.wgsl()}|${bound.decls}|${JSON.stringify(tile)}`, () =>
            textureSource(params, bound.decls, tile, b.layout.format),
          ),
          params,
          bindings: bound.ranges,
          workgroups: [stripCount, Math.ceil(mc / tile.rows), zc],
          detail: `[${zc}×${mc}×${p.k}]·[${p.k}×${nCols}] tile ${tile.rows}×${tile.texelsPerLane * cpt}×${tile.kStep}${tile.storage ? ' storage' : ''} ${b.layout.format}`,
        });
      }
    }
  }
}

/** The WGSL of a register tile's main loop, shared by the kernels built on this tile. */
export interface TileCode {
  /** `at` (flat texel index → coordinates), and `lo` / `hi` (bf16 halves) for packed B. */
  helpers: string;
  /** `var c{r}_{v}`: the accumulators, row r, column group v (vec4). */
  accumulators: string;
  /**
   * The K loop. Expects locals kPad, aMask, aShift, bMask, bShift, bRow (texels between B rows) and
   * bCol0 (the lane's first B texel), plus whatever `aRowStart` refers to.
   */
  loop: string;
  /** `let col{v}`: the first output column of group v (needs t0, the lane's first texel column). */
  columns: string;
  /** Column groups per row. */
  groups: number;
}

/**
 * The tile loop of `tile` over B texels of `bFormat`; `aRowStart(r)` is the WGSL expression of
 * row r's first A texel (q, the step's texel offset, is added to it).
 */
export function tileCode(tile: TextureTile, bFormat: TexelFormat, aRowStart: (r: number) => string): TileCode {
  const R = tile.rows;
  const CT = tile.texelsPerLane;
  const K = tile.kStep;
  const packed = bFormat === 'rgba32uint';
  const perTexel = packed ? 2 : 1; // vec4 column groups per B texel
  const V = CT * perTexel;
  const rows = [...Array(R).keys()];
  const vecs = [...Array(V).keys()];
  // Storage textures have a single level: no level argument.
  const load = (texture: string, coords: string) => (tile.storage ? `textureLoad(${texture}, ${coords})` : `textureLoad(${texture}, ${coords}, 0)`);

  /** Loads B rows k + 0..K-1 as vec4 column groups b{kk}_{v}. */
  const loadB = (): string[] => {
    const lines: string[] = [];
    for (let kk = 0; kk < K; kk++) {
      for (let j = 0; j < CT; j++) {
        const fetch = load('B', `at(bCol0 + (k + ${kk}u) * bRow + ${j * LANES}u, bMask, bShift)`);
        if (packed) {
          lines.push(`let w${kk}_${j} = ${fetch};`);
          lines.push(`let b${kk}_${2 * j} = vec4<f32>(lo(w${kk}_${j}.x), hi(w${kk}_${j}.x), lo(w${kk}_${j}.y), hi(w${kk}_${j}.y));`);
          lines.push(`let b${kk}_${2 * j + 1} = vec4<f32>(lo(w${kk}_${j}.z), hi(w${kk}_${j}.z), lo(w${kk}_${j}.w), hi(w${kk}_${j}.w));`);
        } else lines.push(`let b${kk}_${j} = ${fetch};`);
      }
    }
    return lines;
  };
  // A row's K values of one step: texel a (k..k+3), or a0 and a1 (k..k+7) for 8-wide steps.
  const aTexels = K === 4 ? [''] : ['0', '1'];
  const fmaRows = (): string[] => {
    const lines: string[] = [];
    for (const r of rows) {
      lines.push(
        `{ ${aTexels.map((t) => `let a${t} = ${load('A', `at(${aRowStart(r)} + q${t === '' || t === '0' ? '' : ` + ${t}u`}, aMask, aShift)`)};`).join(' ')}`,
      );
      for (const v of vecs) {
        const terms = aTexels.flatMap((t, ti) => ['x', 'y', 'z', 'w'].map((c, e) => `a${t}.${c} * b${4 * ti + e}_${v}`));
        lines.push(`  c${r}_${v} = c${r}_${v} + ${terms.join(' + ')};`);
      }
      lines.push('}');
    }
    return lines;
  };
  const columns = vecs.map((v) => {
    const j = Math.floor(v / perTexel);
    return `let col${v} = (t0 + ${j * LANES}u) * ${perTexel * 4}u + ${(v % perTexel) * 4}u;`;
  });
  return {
    helpers: `fn at(i: u32, mask: u32, shift: u32) -> vec2<u32> { return vec2<u32>(i & mask, i >> shift); }
${packed ? 'fn lo(w: u32) -> f32 { return bitcast<f32>(w << 16u); }\nfn hi(w: u32) -> f32 { return bitcast<f32>(w & 0xffff0000u); }' : ''}`,
    accumulators: rows.flatMap((r) => vecs.map((v) => `var c${r}_${v} = vec4<f32>(0.0);`)).join(' '),
    loop: `for (var k = 0u; k < kPad; k = k + ${K}u) {
    let q = k >> 2u;
    ${loadB().join('\n    ')}
    ${fmaRows().join('\n    ')}
  }`,
    columns: columns.join('\n  '),
    groups: V,
  };
}

/** The WGSL type B is read through: a read-only storage texture, or a sampled one. */
function bTextureType(tile: TextureTile, bFormat: TexelFormat): string {
  return tile.storage ? `texture_storage_2d<${bFormat}, read>` : `texture_2d<${bFormat === 'rgba32uint' ? 'u32' : 'f32'}>`;
}

function textureSource(p: Params, decls: string, tile: TextureTile, bFormat: TexelFormat): string {
  const R = tile.rows;
  const CT = tile.texelsPerLane;
  const rows = [...Array(R).keys()];
  const code = tileCode(tile, bFormat, (r) => `aRow0 + ${r}u * aRow`);
  const vecs = [...Array(code.groups).keys()];
  // Epilogue: column indices and bias once per column group, then one store per row and group.
  const biases = vecs.map((v) => `bias${v} = vec4<f32>(${[0, 1, 2, 3].map((e) => `bias[P.biasOff + min(col${v} + ${e}u, nCols - 1u)]`).join(', ')});`);
  const store = rows.map(
    (r) => `if (m0 + ${r}u < P.m) {
    let o = outBase + (m0 + ${r}u) * P.outRow;
    ${vecs.map((v) => `put(o, col${v}, c${r}_${v} + bias${v}, nCols);`).join('\n    ')}
  }`,
  );
  // Vec4 stores write the whole group holding the last column; scalar stores take any N and offset.
  const put = tile.vecStores
    ? `fn put(o: u32, c: u32, v: vec4<f32>, nCols: u32) {
  if (c < nCols) { out[(o + c) / 4u] = v; }
}`
    : `fn put(o: u32, c: u32, v: vec4<f32>, nCols: u32) {
  if (c < nCols) { out[o + c] = v.x; }
  if (c + 1u < nCols) { out[o + c + 1u] = v.y; }
  if (c + 2u < nCols) { out[o + c + 2u] = v.z; }
  if (c + 3u < nCols) { out[o + c + 3u] = v.w; }
}`;
  return `${tile.storage ? 'requires readonly_and_readwrite_storage_textures;\n' : ''}${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
${put}
${code.helpers}
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
  ${code.accumulators}
  ${code.loop}
  let outBase = ${tile.vecStores ? 'P.outOff * 4u' : 'P.outOff'} + P.col0 + z * P.outLayer;
  let nCols = P.nCols;
  ${code.columns}
  ${vecs.map((v) => `var bias${v} = vec4<f32>(0.0);`).join(' ')}
  if (P.hasBias != 0u) {
    ${biases.join('\n    ')}
  }
  ${store.join('\n  ')}
}`;
}
