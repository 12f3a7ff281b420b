/**
 * Dense f32 operands read by a kernel through pooled flat-texture copies instead of their storage
 * buffers. Software rasterizers turn every storage-buffer load into a per-lane loop but compile
 * texture loads inline, so the heavy loops of the SSD scan and of attention (forward and backward)
 * read their hottest operands this way there. One binder for every kernel family: the copy, the
 * `P.<param>Mask` / `P.<param>Shift` addressing parameters, the binding and the WGSL reader.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import type { KernelBinding } from './batch';
import type { Tensor } from '../tensor';
import type { Params } from './params';
import { acquireTexture, copyDenseToFlat, flatCapacity, releaseTexture, type FlatTexture } from './texture-pool';

/** Whether `tensor` can be read through a texture copy: dense f32 of whole vec4s from a 16-byte offset, within one texture. */
export function textureCopyFits(device: WebGpuDevice, tensor: Tensor): boolean {
  return tensor.dtype === 'f32' && tensor.isContiguous && tensor.offset % 4 === 0 && tensor.size % 4 === 0 && tensor.size / 4 <= flatCapacity(device);
}

/** The texture copies some launches read; `release` once every launch that reads them is recorded. */
export class TextureOperands {
  private readonly textures: FlatTexture[] = [];

  constructor(private readonly device: WebGpuDevice) {}

  /** Copies `tensor` (see {@link textureCopyFits}) into a pooled texture now, in queue order. */
  copy(tensor: Tensor): FlatTexture {
    const flat = acquireTexture(this.device, 'rgba32float', tensor.size / 4);
    copyDenseToFlat(this.device, tensor, flat);
    this.textures.push(flat);
    return flat;
  }

  release(): void {
    for (const t of this.textures.splice(0)) releaseTexture(this.device, t);
  }
}

/**
 * Binds a texture copy for one launch: sets `P.<param>Off` = 0 (the copy starts at the tensor's first
 * element), `P.<param>Mask` and `P.<param>Shift`, and returns the binding to add at the position
 * {@link textureOperandWgsl} declares.
 */
export function bindTextureOperand(texture: FlatTexture, params: Params, param: string): KernelBinding {
  params
    .u32(`${param}Off`, 0)
    .u32(`${param}Mask`, texture.width - 1)
    .u32(`${param}Shift`, texture.shift);
  return { texture: texture.view };
}

/**
 * WGSL for a texture operand at `binding`: the texture `<name>T` and `fn <name>_at(i) -> vec4<f32>`
 * reading vec4 number i. `storage`: read as a read-only storage texture (the source then needs
 * `requires readonly_and_readwrite_storage_textures;`), else as a sampled texture.
 */
export function textureOperandWgsl(binding: number, name: string, param: string, storage: boolean): string {
  const at = `vec2<u32>(i & P.${param}Mask, i >> P.${param}Shift)`;
  return storage
    ? `@group(0) @binding(${binding}) var ${name}T: texture_storage_2d<rgba32float, read>;\nfn ${name}_at(i: u32) -> vec4<f32> { return textureLoad(${name}T, ${at}); }`
    : `@group(0) @binding(${binding}) var ${name}T: texture_2d<f32>;\nfn ${name}_at(i: u32) -> vec4<f32> { return textureLoad(${name}T, ${at}, 0); }`;
}
