/**
 * Matrices packed into 2-D textures for the software-rasterizer matmul kernels (llvmpipe vectorizes
 * `textureLoad` but turns each storage-buffer load into a per-lane loop).
 *
 * A texture is used as a flat array of 16-byte texels: texel i sits at (i mod W, i div W) with W a
 * power of two, so any dense byte stream can be copied in with at most three copies and kernels
 * address texels with a mask and a shift. A texel holds 4 f32 (`rgba32float`) or 8 bf16
 * (`rgba32uint`) consecutive columns of a row. A matrix of [layers, rows, cols] is laid out per
 * layer either in panels of at most `panelTexels` texel columns, each panel [rows][width] (panels
 * exist so that the part of a huge weight packed by one dispatch fits one storage binding), or in
 * strips of `strip` texel columns, each strip [rows][width] — one strip per workgroup of the
 * kernel, which then streams through contiguous memory (measured 15–35 % faster for decode than
 * rows thousands of texels apart, most for weights of a GiB, where page walks dominate).
 *
 * Creating a texture is slow on llvmpipe (its memory is faulted in at a few ms per MiB), so
 * transient textures are pooled by size bucket, and frozen weights keep theirs, attached to the
 * weight's storage as a derived resource (released with it, dropped when it is written).
 */
import { bytesPerElement } from '../../dtype';
import { empty, zeros } from '../../creation';
import type { WebGpuDevice } from '../../device/webgpu-device';
import { Params } from '../../runtime/params';
import type { DerivedResource } from '../../runtime/storage';
import { F32_TO_BF16, GRID_ARGS, declareStorage, flatIndex, loaderF32 } from '../../runtime/wgsl';
import type { Tensor } from '../../tensor';
import type { MatrixView } from './problem';
import { cachedSource } from '../../runtime/source-cache';
import { bindingBudget } from './split';

export type TexelFormat = 'rgba32float' | 'rgba32uint';

const TEXEL_BYTES = 16;

/** Matrix elements per texel. */
export function elementsPerTexel(format: TexelFormat): number {
  return format === 'rgba32uint' ? 8 : 4;
}

/** A texture addressed as a flat array of texels. */
export interface FlatTexture {
  readonly texture: GPUTexture;
  readonly view: GPUTextureView;
  readonly format: TexelFormat;
  /** Texels per texture row (a power of two). */
  readonly width: number;
  /** log2(width). */
  readonly shift: number;
  readonly capacity: number;
  readonly bytes: number;
}

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
export function packedLayout(device: WebGpuDevice, view: MatrixView, format: TexelFormat, layers: number, rows: number, cols: number, rowStep = 1, texelStep = 1): PackedLayout {
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
export function stripLayout(device: WebGpuDevice, view: MatrixView, format: TexelFormat, layers: number, rows: number, cols: number, rowStep: number, strip: number): PackedLayout | null {
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

/** Largest texture side this device allows, as a power of two. */
function maxWidth(device: WebGpuDevice): number {
  return 2 ** Math.floor(Math.log2(device.gpu.limits.maxTextureDimension2D));
}

/** Tallest texture used: the largest height that is not a power of two (see `textureShape`). */
function maxHeight(device: WebGpuDevice): number {
  const h = device.gpu.limits.maxTextureDimension2D;
  return isPowerOfTwo(h) ? h - 1 : h;
}

/** Most texels a flat texture can hold on this device. */
export function flatCapacity(device: WebGpuDevice): number {
  return maxWidth(device) * maxHeight(device);
}

function isPowerOfTwo(n: number): boolean {
  return (n & (n - 1)) === 0;
}

/**
 * Width a power of two, height never a power of two: llvmpipe compiles a shader variant per
 * combination of power-of-two-ness of its textures' sides (seconds for the large tiles), so every
 * texture has the same kind of shape.
 */
function textureShape(device: WebGpuDevice, texels: number, bucketed: boolean): { width: number; height: number } {
  const wMax = maxWidth(device);
  let width = wMax;
  if (texels <= wMax * 3) width = Math.max(16, 2 ** Math.ceil(Math.log2(Math.max(Math.ceil(texels / 3), 1))));
  let height = Math.max(3, Math.ceil(texels / width));
  // Pooled textures come in height buckets at most 25 % apart, so shapes that vary a little share them.
  if (bucketed && height > 16) {
    const step = 2 ** (Math.floor(Math.log2(height)) - 2);
    height = Math.ceil(height / step) * step;
  }
  if (isPowerOfTwo(height)) height++;
  return { width, height: Math.min(height, maxHeight(device)) };
}

/**
 * Whether kernels can read the packed textures as read-only storage textures. llvmpipe compiles
 * those loads inline, while every `textureLoad` of a sampled 32-bit-channel texture becomes a call
 * into a generic fetch function (mip level, size and bounds recomputed lane by lane).
 */
export function storageReads(device: WebGpuDevice): boolean {
  return state(device).storageReads;
}

function createFlat(device: WebGpuDevice, format: TexelFormat, width: number, height: number, label: string): FlatTexture {
  const usage = GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.COPY_DST | (storageReads(device) ? GPUTextureUsage.STORAGE_BINDING : 0);
  const texture = device.gpu.createTexture({ size: [width, height], format, usage, label });
  return { texture, view: texture.createView(), format, width, shift: Math.log2(width), capacity: width * height, bytes: width * height * TEXEL_BYTES };
}

/** Destroys a texture after submitting the commands recorded so far (which may still use it). */
function destroyFlat(device: WebGpuDevice, t: FlatTexture): void {
  device.batch.flush();
  device.batch.invalidateBindGroups();
  t.texture.destroy();
}

export interface TextureMemoryStats {
  /** Bytes of weight textures kept for frozen weights. */
  cachedWeightBytes: number;
  cachedWeights: number;
  /** Bytes of transient textures kept for reuse. */
  pooledBytes: number;
}

class TextureState {
  private readonly free = new Map<string, FlatTexture[]>();
  pooledBytes = 0;
  cachedWeightBytes = 0;
  cachedWeights = 0;
  readonly storageReads: boolean;

  constructor(
    private readonly device: WebGpuDevice,
    readonly maxPooledBytes: number,
  ) {
    this.storageReads = device.handles.gpu.wgslLanguageFeatures?.has('readonly_and_readwrite_storage_textures') ?? false;
  }

  /** A transient texture holding at least `texels`; give it back with `release` once its uses are recorded. */
  acquire(format: TexelFormat, texels: number): FlatTexture {
    const { width, height } = textureShape(this.device, texels, true);
    const key = `${format}:${width}x${height}`;
    const hit = this.free.get(key)?.pop();
    if (hit) {
      this.pooledBytes -= hit.bytes;
      return hit;
    }
    return createFlat(this.device, format, width, height, 'matmul-scratch');
  }

  /** Returns a transient texture; commands already recorded keep their order before any reuse. */
  release(t: FlatTexture): void {
    if (this.pooledBytes + t.bytes > this.maxPooledBytes) return destroyFlat(this.device, t);
    const key = `${t.format}:${t.width}x${t.capacity / t.width}`;
    let list = this.free.get(key);
    if (!list) this.free.set(key, (list = []));
    list.push(t);
    this.pooledBytes += t.bytes;
  }
}

const states = new WeakMap<WebGpuDevice, TextureState>();

function state(device: WebGpuDevice): TextureState {
  let s = states.get(device);
  if (!s) {
    s = new TextureState(device, 512 * 1024 ** 2);
    states.set(device, s);
  }
  return s;
}

export function textureMemoryStats(device: WebGpuDevice): TextureMemoryStats {
  const s = state(device);
  return { cachedWeightBytes: s.cachedWeightBytes, cachedWeights: s.cachedWeights, pooledBytes: s.pooledBytes };
}

export function acquireTexture(device: WebGpuDevice, format: TexelFormat, texels: number): FlatTexture {
  return state(device).acquire(format, texels);
}

export function releaseTexture(device: WebGpuDevice, t: FlatTexture): void {
  state(device).release(t);
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
    const s = state(this.device);
    s.cachedWeightBytes -= this.texture.bytes;
    s.cachedWeights--;
    destroyFlat(this.device, this.texture);
  }
}

/**
 * The packed texture of a frozen operand, made on first use and kept with its storage, or null when
 * it would exceed the cache budget (`NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES`, default 8 GiB). Nothing
 * is evicted: a model that cycles through more weights than fit would re-pack every one of them on
 * every pass, slower than the storage-buffer kernels the rest fall back to.
 */
export function cachedTexture(device: WebGpuDevice, view: MatrixView, layout: PackedLayout): { texture: FlatTexture; layout: PackedLayout } | null {
  const s = state(device);
  const storage = view.tensor.storage;
  const key = `matmul-texture:${layout.format}:${view.offset}:${view.batchStride}:${view.rowStride}:${view.colStride}:${layout.layers}x${layout.paddedRows}x${layout.cols}:${layout.panelTexels}:${layout.strip}`;
  const hit = storage.getDerived(key);
  if (hit instanceof WeightEntry) return hit;
  const { width, height } = textureShape(device, layoutTexels(layout), false);
  const bytes = width * height * TEXEL_BYTES;
  const budget = Number(process.env.NEMOTRON_MATMUL_TEXTURE_CACHE_BYTES ?? 8 * 1024 ** 3);
  if (s.cachedWeightBytes + bytes > budget) return null;
  const texture = createFlat(device, layout.format, width, height, 'matmul-weight');
  uploadMatrix(device, view, layout, texture);
  const entry = new WeightEntry(device, texture, layout);
  storage.setDerived(key, entry);
  s.cachedWeightBytes += bytes;
  s.cachedWeights++;
  return entry;
}

/** A zero-filled staging buffer of `texels` texels. */
function zerosTensor(device: WebGpuDevice, texels: number): Tensor {
  return zeros([texels * 4], { dtype: 'u32', device });
}

/** Copies texels [start, start + count) of `texture` from a dense byte stream at `byteOffset` of `buffer`. */
function copyFlat(device: WebGpuDevice, buffer: GPUBuffer, byteOffset: number, texture: FlatTexture, start: number, count: number): void {
  const w = texture.width;
  let t = start;
  let src = byteOffset;
  const end = start + count;
  const piece = (width: number, height: number) => {
    device.batch.copyToTexture(buffer, src, height > 1 ? w * TEXEL_BYTES : undefined, texture.texture, t % w, Math.floor(t / w), width, height);
    t += width * height;
    src += width * height * TEXEL_BYTES;
  };
  if (t % w !== 0) piece(Math.min(end - t, w - (t % w)), 1);
  if (end - t >= w) piece(w, Math.floor((end - t) / w));
  if (end > t) piece(end - t, 1);
}

/** Copies the dense f32 `tensor` (its first element on a 16-byte boundary) into `texture` from texel 0. */
export function copyDenseToFlat(device: WebGpuDevice, tensor: Tensor, texture: FlatTexture): void {
  if (tensor.dtype !== 'f32' || !tensor.isContiguous || tensor.offset % 4 !== 0 || tensor.size % 4 !== 0) {
    throw new Error(`copyDenseToFlat: needs a dense f32 tensor of whole texels at a 16-byte offset (got ${tensor.dtype}, offset ${tensor.offset}, ${tensor.size} elements)`);
  }
  copyFlat(device, tensor.storage.gpu!, tensor.offset * 4, texture, 0, tensor.size / 4);
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
  const src = device.bind(view.tensor.storage, srcStart, srcCount, 'matmul pack source');
  const dst = device.bind(staging.storage, 0, count * 4, 'matmul pack staging');
  const params = new Params()
    .u32('count', count)
    .u32('w', r.w)
    .u32('rows', r.rows)
    .u32('strip', r.strip)
    .u32('validRows', r.validRows)
    .u32('cols', r.cols)
    .u32('srcOff', src.elementOffset)
    .u32('rowStride', view.rowStride)
    .u32('colStride', view.colStride);
  device.run({
    name: 'matmul_pack',
    source: cachedSource(`pack|${view.tensor.dtype}|${r.format}`, () => packSource(params, view.tensor.dtype, r.format)),
    params,
    bindings: [src.range, dst.range],
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
  const dst = device.bind(staging.storage, 0, count * 4, 'matmul pack staging');
  const params = new Params()
    .u32('blocks', blocks)
    .u32('w', r.w)
    .u32('rows', r.rows)
    .u32('strip', r.strip)
    .u32('validRows', r.validRows)
    .u32('cols', r.cols)
    .u32('srcOff', src.elementOffset / cpt)
    .u32('colStride', view.colStride / cpt);
  device.run({
    name: 'matmul_pack_transposed',
    source: cachedSource(`pack-t|${r.format}`, () => packTransposedSource(params, r.format)),
    params,
    bindings: [src.range, dst.range],
    workgroups: device.grid(blocks, 64),
    detail: `${r.rows}×${r.cols} ${view.tensor.dtype}ᵀ→${r.format}`,
  });
  copyFlat(device, staging.storage.gpu!, 0, texture, start, count);
  staging.dispose();
}

function packTransposedSource(p: Params, format: TexelFormat): string {
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
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;
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

function packSource(p: Params, dtype: MatrixView['tensor']['dtype'], format: TexelFormat): string {
  const cpt = elementsPerTexel(format);
  const loads: string[] = [];
  for (let e = 0; e < cpt; e++) loads.push(`var e${e} = 0.0; if (r < P.validRows && c0 + ${e}u < P.cols) { e${e} = load_src(base + (c0 + ${e}u) * P.colStride); }`);
  const words =
    format === 'rgba32float'
      ? [0, 1, 2, 3].map((e) => `dst[4u * d + ${e}u] = bitcast<u32>(e${e});`)
      : [0, 1, 2, 3].map((j) => `dst[4u * d + ${j}u] = f32_to_bf16(e${2 * j}) | (f32_to_bf16(e${2 * j + 1}) << 16u);`);
  return `${p.wgsl()}
@group(0) @binding(0) var<uniform> P: Params;
${declareStorage(1, 'src', dtype, 'read')}
${loaderF32('src', dtype)}
${declareStorage(2, 'dst', 'u32', 'read_write')}
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
