/**
 * Textures used as flat arrays of 16-byte texels, and the per-device pool they come from. Every
 * kernel family that reads operands through textures (matmul, MoE, the SSD scan, attention) takes
 * its scratch textures here; a frozen weight's packed copy is a pinned texture, counted separately.
 *
 * Texel i sits at (i mod W, i div W) with W a power of two, so any dense byte stream is copied in
 * with at most three copies and kernels address texels with a mask and a shift. A texel holds 4 f32
 * (`rgba32float`) or 8 bf16 (`rgba32uint`) consecutive elements.
 *
 * Creating a texture is slow on llvmpipe (its memory is faulted in at a few ms per MiB), so
 * transient textures are pooled by size bucket.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import type { Tensor } from '../tensor';

export type TexelFormat = 'rgba32float' | 'rgba32uint';

export const TEXEL_BYTES = 16;

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
  return texturePool(device).storageReads;
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

export class TexturePool {
  private readonly free = new Map<string, FlatTexture[]>();
  private pooledBytes = 0;
  private cachedWeightBytes = 0;
  private cachedWeights = 0;
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
    return createFlat(this.device, format, width, height, 'texture-scratch');
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

  stats(): TextureMemoryStats {
    return { cachedWeightBytes: this.cachedWeightBytes, cachedWeights: this.cachedWeights, pooledBytes: this.pooledBytes };
  }

  /** Bytes a pinned texture of `texels` texels takes. */
  pinnedBytes(texels: number): number {
    const { width, height } = textureShape(this.device, texels, false);
    return width * height * TEXEL_BYTES;
  }

  /** A long-lived texture of exactly `texels` (a frozen weight's copy), counted until `destroyPinned`. */
  createPinned(format: TexelFormat, texels: number, label: string): FlatTexture {
    const { width, height } = textureShape(this.device, texels, false);
    const t = createFlat(this.device, format, width, height, label);
    this.cachedWeightBytes += t.bytes;
    this.cachedWeights++;
    return t;
  }

  destroyPinned(t: FlatTexture): void {
    this.cachedWeightBytes -= t.bytes;
    this.cachedWeights--;
    destroyFlat(this.device, t);
  }
}

const states = new WeakMap<WebGpuDevice, TexturePool>();

/** The device's texture pool (made on first use). */
export function texturePool(device: WebGpuDevice): TexturePool {
  let s = states.get(device);
  if (!s) {
    s = new TexturePool(device, 512 * 1024 ** 2);
    states.set(device, s);
  }
  return s;
}

export function textureMemoryStats(device: WebGpuDevice): TextureMemoryStats {
  return texturePool(device).stats();
}

export function acquireTexture(device: WebGpuDevice, format: TexelFormat, texels: number): FlatTexture {
  return texturePool(device).acquire(format, texels);
}

export function releaseTexture(device: WebGpuDevice, t: FlatTexture): void {
  texturePool(device).release(t);
}

/** Copies texels [start, start + count) of `texture` from a dense byte stream at `byteOffset` of `buffer`. */
export function copyFlat(device: WebGpuDevice, buffer: GPUBuffer, byteOffset: number, texture: FlatTexture, start: number, count: number): void {
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
    throw new Error(
      `copyDenseToFlat: needs a dense f32 tensor of whole texels at a 16-byte offset (got ${tensor.dtype}, offset ${tensor.offset}, ${tensor.size} elements)`,
    );
  }
  copyFlat(device, tensor.storage.gpu!, tensor.offset * 4, texture, 0, tensor.size / 4);
}
