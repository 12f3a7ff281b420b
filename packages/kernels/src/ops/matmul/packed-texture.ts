/**
 * Matrices packed into flat textures (runtime/texture-pool.ts) for the software-rasterizer matmul
 * kernels: llvmpipe vectorizes `textureLoad` but turns each storage-buffer load into a per-lane loop.
 *
 * A matrix of [layers, rows, cols] is laid out per layer either in panels of at most `panelTexels`
 * texel columns, each panel [rows][width] (panels exist so that the part of a huge weight packed by
 * one dispatch fits one storage binding), or in strips of `strip` texel columns, each strip
 * [rows][width] — one strip per workgroup of the kernel, which then streams through contiguous memory
 * (measured 15–35 % faster for decode than rows thousands of texels apart, most for weights of a GiB,
 * where page walks dominate). Frozen weights keep their packed texture, attached to the weight's
 * storage as a derived resource (released with it, dropped when it is written).
 */
import { bytesPerElement } from '../../dtype';
import { empty, zeros } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import type { DerivedResource } from '../../runtime/storage';
import { F32_TO_BF16, GRID_ARGS, flatIndex } from '../../runtime/wgsl';
import { bindTensors, type NamedTensor } from '../../runtime/bindings';
import type { Tensor } from '../../tensor';
import type { MatrixView } from './problem';
import { cachedSource } from '../../runtime/source-cache';
import { TEXEL_BYTES, copyFlat, elementsPerTexel, texturePool, type FlatTexture, type TexelFormat } from '../../runtime/texture-pool';
import { bindingBudget } from './split';

/** Where the texels of a logical [layers, rows, cols] matrix live in a flat texture. */
export interface PackedLayout {
  format: TexelFormat;
  layers: number;
  rows: number;
  /** Rows stored per panel: `rows` and then zero rows (so kernels can run K in whole steps). */
  paddedRows: number;
  cols: number;
  /** Texels per matrix row: ceil(cols / elements per texel). */
  rowTexels: number;
  /** Texel columns per panel (all of them in a strip layout). */
  panelTexels: number;
  /** Texel columns per strip, or 0 for row-major panels. */
  strip: number;
}

export function layoutTexels(l: PackedLayout): number {
  return l.layers * layerTexels(l);
}

/** Texels between consecutive layers. */
export function layerTexels(l: PackedLayout): number {
  return l.paddedRows * l.rowTexels;
}

export function stripCount(l: PackedLayout): number {
  return Math.ceil(l.rowTexels / l.strip);
}

export function panelCount(l: PackedLayout): number {
  return Math.ceil(l.rowTexels / l.panelTexels);
}

export function panelWidth(l: PackedLayout, panel: number): number {
  return Math.min(l.panelTexels, l.rowTexels - panel * l.panelTexels);
}

/** First texel of `panel` in layer 0. */
export function panelBase(l: PackedLayout, panel: number): number {
  return panel * l.panelTexels * l.paddedRows;
}

/**
 * Layout for `view` read as [layers, rows, cols], rows padded with zeros to a multiple of `rowStep`
 * and to a multiple of `texelStep` texels, with panels narrow enough that one matrix row of a panel
 * fits a storage binding (only matters when columns are far apart, as in a transposed [N, K] weight
 * read as [K, N]).
 */
export function packedLayout(
  device: WebGpuDevice,
  view: MatrixView,
  format: TexelFormat,
  layers: number,
  rows: number,
  cols: number,
  rowStep = 1,
  texelStep = 1,
): PackedLayout {
  const cpt = elementsPerTexel(format);
  const rowTexels = Math.ceil(cols / cpt / texelStep) * texelStep;
  const limitElements = Math.floor(bindingBudget(device) / bytesPerElement(view.tensor.dtype));
  const maxCols = view.colStride === 0 ? cols : Math.floor((limitElements - 1) / view.colStride) + 1;
  const panelTexels = Math.max(1, Math.min(rowTexels, Math.floor(maxCols / cpt)));
  return { format, layers, rows, paddedRows: Math.ceil(rows / rowStep) * rowStep, cols, rowTexels, panelTexels, strip: 0 };
}

/**
 * The strip layout of `view` ([layers, rows, cols], rows padded to `rowStep`) with strips of
 * `strip` texels, or null when the source of one strip (all rows) would not fit a storage binding.
 */
export function stripLayout(
  device: WebGpuDevice,
  view: MatrixView,
  format: TexelFormat,
  layers: number,
  rows: number,
  cols: number,
  rowStep: number,
  strip: number,
): PackedLayout | null {
  const rowTexels = Math.ceil(cols / elementsPerTexel(format));
  const layout: PackedLayout = { format, layers, rows, paddedRows: Math.ceil(rows / rowStep) * rowStep, cols, rowTexels, panelTexels: rowTexels, strip };
  return stripsPerPack(device, view, layout) > 0 ? layout : null;
}

/** Strips whose source and staging each fit one binding (0 when not even one does). */
function stripsPerPack(device: WebGpuDevice, view: MatrixView, l: PackedLayout): number {
  const budget = bindingBudget(device);
  const cpt = elementsPerTexel(l.format);
  const bpe = bytesPerElement(view.tensor.dtype);
  const fits = (strips: number) => {
    const cols = Math.min(strips * l.strip * cpt, l.cols);
    const source = ((l.rows - 1) * view.rowStride + (cols - 1) * view.colStride + 1) * bpe;
    return source <= budget && strips * l.strip * l.paddedRows * TEXEL_BYTES <= budget;
  };
  const total = stripCount(l);
  if (!fits(1)) return 0;
  let lo = 1;
  let hi = total;
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (fits(mid)) lo = mid;
    else hi = mid - 1;
  }
  return lo;
}

/** A frozen weight's packed texture, owned by the weight's storage. */
class WeightEntry implements DerivedResource {
  private released = false;

  constructor(
    private readonly device: WebGpuDevice,
    readonly texture: FlatTexture,
    readonly layout: PackedLayout,
  ) {}

  release(): void {
    if (this.released) return;
    this.released = true;
    texturePool(this.device).destroyPinned(this.texture);
  }
}

/**
 * The packed texture of a frozen operand, made on first use and kept with its storage, or null when
 * it would exceed the cache budget (`NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES`, default 8 GiB). Nothing
 * is evicted: a model that cycles through more weights than fit would re-pack every one of them on
 * every pass, slower than the storage-buffer kernels the rest fall back to.
 */
export function cachedTexture(device: WebGpuDevice, view: MatrixView, layout: PackedLayout): { texture: FlatTexture; layout: PackedLayout } | null {
  const pool = texturePool(device);
  const storage = view.tensor.storage;
  const key = `matmul-texture:${layout.format}:${view.offset}:${view.batchStride}:${view.rowStride}:${view.colStride}:${layout.layers}x${layout.paddedRows}x${layout.cols}:${layout.panelTexels}:${layout.strip}`;
  const hit = storage.getDerived(key);
  if (hit instanceof WeightEntry) return hit;
  const texels = layoutTexels(layout);
  const budget = Number(process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES ?? 8 * 1024 ** 3);
  if (pool.stats().cachedWeightBytes + pool.pinnedBytes(texels) > budget) return null;
  const texture = pool.createPinned(layout.format, texels, 'matmul-weight');
  uploadMatrix(device, view, layout, texture);
  const entry = new WeightEntry(device, texture, layout);
  storage.setDerived(key, entry);
  return entry;
}

/** A zero-filled staging buffer of `texels` texels. */
function zerosTensor(device: WebGpuDevice, texels: number): Tensor {
  return zeros([texels * 4], { dtype: 'u32', device });
}

/** True when the view's bytes already are the texel stream of each layer (dense rows of whole texels, one panel). */
export function directlyCopyable(view: MatrixView, l: PackedLayout): boolean {
  const dtype = view.tensor.dtype;
  const cpt = elementsPerTexel(l.format);
  if ((l.format === 'rgba32float') !== (dtype === 'f32')) return false;
  if (l.rowTexels * cpt !== l.cols || l.panelTexels < l.rowTexels || l.strip > 0) return false;
  if (view.colStride !== 1 && l.cols > 1) return false;
  if (l.rows > 1 && view.rowStride !== l.cols) return false;
  const bpe = bytesPerElement(dtype);
  if (l.layers > 1 && (view.batchStride * bpe) % TEXEL_BYTES !== 0) return false;
  return (view.offset * bpe) % TEXEL_BYTES === 0;
}

/** Writes the matrix `view` (read as [layers, rows, cols]) into `texture` with `layout`. */
export function uploadMatrix(device: WebGpuDevice, view: MatrixView, layout: PackedLayout, texture: FlatTexture): void {
  const bpe = bytesPerElement(view.tensor.dtype);
  if (directlyCopyable(view, layout)) {
    const padTexels = (layout.paddedRows - layout.rows) * layout.rowTexels;
    const zeros = padTexels > 0 ? zerosTensor(device, padTexels) : null;
    for (let z = 0; z < layout.layers; z++) {
      const start = z * layerTexels(layout);
      copyFlat(device, view.tensor.storage.gpu!, (view.offset + z * view.batchStride) * bpe, texture, start, layout.rows * layout.rowTexels);
      if (zeros) copyFlat(device, zeros.storage.gpu!, 0, texture, start + layout.rows * layout.rowTexels, padTexels);
    }
    zeros?.dispose();
    return;
  }
  const cpt = elementsPerTexel(layout.format);
  const limit = bindingBudget(device);
  const transposed = transposedBlocks(view, layout);
  if (layout.strip > 0) {
    // Groups of whole strips (all rows): each group is one contiguous range of texels.
    const group = stripsPerPack(device, view, layout);
    const strips = stripCount(layout);
    for (let z = 0; z < layout.layers; z++) {
      for (let s0 = 0; s0 < strips; s0 += group) {
        const w = Math.min(group * layout.strip, layout.rowTexels - s0 * layout.strip);
        const col0 = s0 * layout.strip * cpt;
        const cols = Math.min(w * cpt, layout.cols - col0);
        const start = z * layerTexels(layout) + s0 * layout.strip * layout.paddedRows;
        const srcStart = view.offset + z * view.batchStride + col0 * view.colStride;
        const srcCount = (layout.rows - 1) * view.rowStride + (cols - 1) * view.colStride + 1;
        const region = { rows: layout.paddedRows, validRows: layout.rows, w, cols, strip: layout.strip, format: layout.format };
        if (transposed) packTransposed(device, view, srcStart, srcCount, region, texture, start);
        else packRows(device, view, srcStart, srcCount, region, texture, start);
      }
    }
    return;
  }
  for (let z = 0; z < layout.layers; z++) {
    for (let p = 0; p < panelCount(layout); p++) {
      const w = panelWidth(layout, p);
      const col0 = p * layout.panelTexels * cpt;
      const cols = Math.min(w * cpt, layout.cols - col0);
      // Rows per dispatch: the source rows and the staging texels must each fit one binding.
      const rowSpan = (cols - 1) * view.colStride + 1;
      const bySource = view.rowStride === 0 ? layout.rows : Math.floor((Math.floor(limit / bpe) - rowSpan) / view.rowStride) + 1;
      let slab = Math.max(1, Math.min(layout.paddedRows, bySource, Math.floor(limit / (w * TEXEL_BYTES))));
      // The transposing kernel writes blocks of `cpt` rows.
      if (transposed && slab < layout.paddedRows) slab = Math.max(cpt, slab - (slab % cpt));
      for (let r0 = 0; r0 < layout.paddedRows; r0 += slab) {
        const rows = Math.min(slab, layout.paddedRows - r0);
        const validRows = Math.max(0, Math.min(rows, layout.rows - r0));
        const start = z * layerTexels(layout) + panelBase(layout, p) + r0 * w;
        const srcStart = view.offset + z * view.batchStride + Math.min(r0, layout.rows - 1) * view.rowStride + col0 * view.colStride;
        const srcCount = validRows > 0 ? (validRows - 1) * view.rowStride + rowSpan : 1;
        const region = { rows, validRows, w, cols, strip: 0, format: layout.format };
        if (transposed) packTransposed(device, view, srcStart, srcCount, region, texture, start);
        else packRows(device, view, srcStart, srcCount, region, texture, start);
      }
    }
  }
}

interface PackRegion {
  rows: number;
  /** Rows read from the source; the rest are zeros. */
  validRows: number;
  /** Texels per row. */
  w: number;
  /** Valid columns (the rest of the last texel is zero). */
  cols: number;
  /** Texels per strip when the region is stored strip by strip (each [rows][width]), 0 for row-major. */
  strip: number;
  format: TexelFormat;
}

/** `fn dest(r, t)`: where texel (row r, texel column t) of a pack region goes in its staging buffer. */
const PACK_DEST = `fn dest(r: u32, t: u32) -> u32 {
  if (P.strip == 0u) { return r * P.w + t; }
  let s = t / P.strip;
  let ws = min(P.strip, P.w - s * P.strip);
  return s * P.strip * P.rows + r * ws + (t - s * P.strip);
}`;

/** Packs a region of `rows × w` texels read from `view` at element `srcStart` into a staging buffer, then copies it to texel `start`. */
function packRows(device: WebGpuDevice, view: MatrixView, srcStart: number, srcCount: number, r: PackRegion, texture: FlatTexture, start: number): void {
  const count = r.rows * r.w;
  const staging = empty([count * 4], { dtype: 'u32', device });
  const params = new Params()
    .u32('count', count)
    .u32('w', r.w)
    .u32('rows', r.rows)
    .u32('strip', r.strip)
    .u32('validRows', r.validRows)
    .u32('cols', r.cols)
    .u32('rowStride', view.rowStride)
    .u32('colStride', view.colStride);
  const src: NamedTensor = { name: 'src', tensor: view.tensor, window: { start: srcStart - view.tensor.offset, length: srcCount }, what: 'matmul pack source' };
  const bound = bindTensors(device, 'matmul pack', [src, stagingBinding(staging, count)], params);
  device.run({
    name: 'matmul_pack',
    // The layout of `params` and the declarations are the same for every call with this key.
    source: cachedSource(`pack|${view.tensor.dtype}|${r.format}`, () => packSource(params, bound.decls, r.format)),
    params,
    bindings: bound.ranges,
    workgroups: device.grid(count, 64),
    detail: `${r.rows}×${r.cols} ${view.tensor.dtype}→${r.format}`,
  });
  copyFlat(device, staging.storage.gpu!, 0, texture, start, count);
  staging.dispose();
}

/**
 * True when the view is a transposed dense matrix (rows contiguous, e.g. an [N, K] weight read as
 * [K, N]) aligned so that one 16-byte load brings a texel's worth of consecutive rows of a column:
 * the transposing pack then needs one load per texel instead of one per element.
 */
function transposedBlocks(view: MatrixView, l: PackedLayout): boolean {
  const cpt = elementsPerTexel(l.format);
  if ((l.format === 'rgba32float') !== (view.tensor.dtype === 'f32')) return false;
  if (view.rowStride !== 1 || view.colStride < l.rows || view.colStride % cpt !== 0 || view.offset % cpt !== 0) return false;
  if (l.layers > 1 && view.batchStride % cpt !== 0) return false;
  // Whole 16-byte loads at the end of the last column must stay inside the buffer.
  const last = view.offset + (l.layers - 1) * view.batchStride + (l.cols - 1) * view.colStride + Math.ceil(l.rows / cpt) * cpt;
  return last * bytesPerElement(view.tensor.dtype) <= view.tensor.storage.gpu!.size;
}

/**
 * Packs a region of a transposed view (see {@link transposedBlocks}): each invocation loads `cpt`
 * consecutive rows of `cpt` columns (one 16-byte load per column) and writes the `cpt` texels they
 * transpose into.
 */
function packTransposed(device: WebGpuDevice, view: MatrixView, srcStart: number, srcCount: number, r: PackRegion, texture: FlatTexture, start: number): void {
  const cpt = elementsPerTexel(r.format);
  const count = r.rows * r.w;
  const blocks = Math.ceil(r.rows / cpt) * r.w;
  const staging = empty([count * 4], { dtype: 'u32', device });
  const src = device.bind(view.tensor.storage, srcStart, Math.ceil(srcCount / cpt) * cpt, 'matmul pack source');
  const params = new Params()
    .u32('blocks', blocks)
    .u32('w', r.w)
    .u32('rows', r.rows)
    .u32('strip', r.strip)
    .u32('validRows', r.validRows)
    .u32('cols', r.cols)
    .u32('srcOff', src.elementOffset / cpt)
    .u32('colStride', view.colStride / cpt);
  // The source is read as 16-byte words of f32 or bf16 bits, P.srcOff counting them.
  const words = { name: 'src', binding: src.range, declare: (n: number) => `@group(0) @binding(${n}) var<storage, read> src: array<vec4<u32>>;` };
  const bound = bindTensors(device, 'matmul pack', [words, { ...stagingBinding(staging, count), vec4: true }], params);
  device.run({
    name: 'matmul_pack_transposed',
    source: cachedSource(`pack-t|${r.format}`, () => packTransposedSource(params, bound.decls, r.format)),
    params,
    bindings: bound.ranges,
    workgroups: device.grid(blocks, 64),
    detail: `${r.rows}×${r.cols} ${view.tensor.dtype}ᵀ→${r.format}`,
  });
  copyFlat(device, staging.storage.gpu!, 0, texture, start, count);
  staging.dispose();
}

/** The staging buffer a pack kernel writes (`count` texels from its start). */
function stagingBinding(staging: Tensor, count: number): NamedTensor {
  return { name: 'dst', tensor: staging, window: { start: 0, length: count * 4 }, what: 'matmul pack staging', writable: true };
}

function packTransposedSource(p: Params, decls: string, format: TexelFormat): string {
  const cpt = elementsPerTexel(format);
  const cols = [...Array(cpt).keys()];
  const loads = cols.map((e) => `var v${e} = vec4<u32>(0u); if (c0 + ${e}u < P.cols) { v${e} = src[base + ${e}u * P.colStride]; }`);
  const texels = cols.map((j) => {
    // Element (column e, row r + j): f32 bits are word j of v_e; bf16 bits are half j % 2 of word j / 2.
    const bits = (e: number) => (format === 'rgba32float' ? `v${e}[${j}]` : `((v${e}[${j >> 1}] >> ${16 * (j & 1)}u) & 0xffffu)`);
    const words = format === 'rgba32float' ? [0, 1, 2, 3].map((q) => bits(q)) : [0, 1, 2, 3].map((q) => `${bits(2 * q)} | (${bits(2 * q + 1)} << 16u)`);
    return `if (r + ${j}u < P.rows) { dst[dest(r + ${j}u, t)] = select(vec4<u32>(0u), vec4<u32>(${words.join(', ')}), r + ${j}u < P.validRows); }`;
  });
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
${PACK_DEST}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(64)};
  if (i >= P.blocks) { return; }
  let rb = i / P.w;
  let t = i - rb * P.w;
  let r = rb * ${cpt}u;
  let c0 = t * ${cpt}u;
  let base = P.srcOff + c0 * P.colStride + rb;
  ${loads.join('\n  ')}
  ${texels.join('\n  ')}
}`;
}

function packSource(p: Params, decls: string, format: TexelFormat): string {
  const cpt = elementsPerTexel(format);
  const loads: string[] = [];
  for (let e = 0; e < cpt; e++)
    loads.push(`var e${e} = 0.0; if (r < P.validRows && c0 + ${e}u < P.cols) { e${e} = load_src(base + (c0 + ${e}u) * P.colStride); }`);
  const words =
    format === 'rgba32float'
      ? [0, 1, 2, 3].map((e) => `dst[4u * d + ${e}u] = bitcast<u32>(e${e});`)
      : [0, 1, 2, 3].map((j) => `dst[4u * d + ${j}u] = f32_to_bf16(e${2 * j}) | (f32_to_bf16(e${2 * j + 1}) << 16u);`);
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${decls}
${format === 'rgba32uint' ? F32_TO_BF16 : ''}
${PACK_DEST}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${flatIndex(64)};
  if (i >= P.count) { return; }
  let r = i / P.w;
  let t = i - r * P.w;
  let c0 = t * ${cpt}u;
  let d = dest(r, t);
  let base = P.srcOff + r * P.rowStride;
  ${loads.join('\n  ')}
  ${words.join('\n  ')}
}`;
}
