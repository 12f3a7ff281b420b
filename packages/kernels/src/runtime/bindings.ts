/**
 * Binding the operands of one kernel from one list: entry i gets binding i + 1 (the uniform `P` is
 * binding 0), and the binder writes its WGSL declaration and its buffer range, so the numbering in
 * the source and in the bind group can never disagree. A storage entry also gets a `<name>Off`
 * element offset in the Params (bindings start on aligned bytes, see `device.bind`), and a read-only
 * float one a `load_<name>(i) -> f32` loader. Kernels then index `<name>[P.<name>Off + i]` or call
 * `load_<name>(P.<name>Off + i)`.
 *
 * A tensor entry binds the tensor's dense extent or a window of it (a block of rows, a slice of a
 * scratch buffer); a texture entry binds a texture view with its WGSL type; a custom entry brings
 * its own declaration.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import { bytesPerElement, type DType } from '../dtype';
import type { Tensor } from '../tensor';
import type { BufferRange, KernelBinding } from './batch';
import type { BindingWindow } from './binding-windows';
import type { Params } from './params';
import { declareStorage, loaderF32, storageElement } from './wgsl';

/** A slice of a storage buffer bound for a kernel, plus the element offset of the first element inside it. */
export interface BoundRange {
  range: BufferRange;
  /** Elements between the (aligned) start of the binding and the first element requested. */
  elementOffset: number;
}

export class BindingTooLargeError extends Error {
  override name = 'BindingTooLargeError';
}

/** A tensor's dense extent, or `window` of it (elements relative to its offset), as a storage array. */
export interface NamedTensor {
  /** Declared as `<name>`, with `P.<name>Off`. */
  name: string;
  tensor: Tensor;
  window?: BindingWindow;
  /** Names the operand in binding errors (default `<op>: <name>`). */
  what?: string;
  /** Written by the kernel (declared read_write, no loader). */
  writable?: boolean;
  /**
   * Declared `array<vec4<…>>` with `<name>Off` in vec4 units (f32, i32 or u32; the first element
   * must fall on a 16-byte boundary of its binding, as it does for freshly allocated tensors). No loader.
   */
  vec4?: boolean;
  /** Declared `array<vec2<…>>`, like `vec4` with two lanes (e.g. (key, index) pairs). */
  vec2?: boolean;
  /**
   * The dtype the array is declared with, when it differs from the operand's (e.g. `u32` to move f32
   * bits unchanged); same element size. The loader, if any, follows it.
   */
  as?: DType;
}

/** A texture view, declared `var <name>: <type>;` (e.g. `texture_storage_2d<rgba32float, read>`). */
export interface NamedTexture {
  name: string;
  texture: GPUTextureView;
  type: string;
}

/**
 * A binding a kernel family declares its own way (attention's head vectors: vec4s, packed bf16 or a
 * texture, with offsets in elements): `declare(n)` is its WGSL at binding n; no Params field.
 */
export interface NamedCustom {
  name: string;
  binding: KernelBinding;
  declare: (binding: number) => string;
}

export type NamedBinding = NamedTensor | NamedTexture | NamedCustom;

/**
 * Whether an entry's first element falls on a vec4 of its binding, so it can be bound `vec4` (given
 * an f32 / i32 / u32 tensor): bindings start on multiples of 16 bytes.
 */
export function startsOnVec4(entry: NamedTensor): boolean {
  return (entry.tensor.offset + (entry.window?.start ?? 0)) % 4 === 0;
}

export interface BoundTensors {
  /** WGSL declarations of the bindings and loaders. */
  decls: string;
  /** Bindings in order, for `device.run`. */
  ranges: KernelBinding[];
}

/** Binds every entry of `list` in order and adds the `<name>Off` field of each storage entry to `params`. */
export function bindTensors(device: WebGpuDevice, op: string, list: readonly NamedBinding[], params: Params): BoundTensors {
  const decls: string[] = [];
  const ranges: KernelBinding[] = [];
  list.forEach((entry, i) => {
    const binding = i + 1;
    if ('declare' in entry) {
      ranges.push(entry.binding);
      decls.push(entry.declare(binding));
      return;
    }
    if ('texture' in entry) {
      ranges.push({ texture: entry.texture });
      decls.push(`@group(0) @binding(${binding}) var ${entry.name}: ${entry.type};`);
      return;
    }
    const { name, writable, tensor, window } = entry;
    const bound = device.bind(tensor.storage, tensor.offset + (window?.start ?? 0), window ? window.length : tensor.size, entry.what ?? `${op}: ${name}`);
    const dtype = tensor.dtype;
    const declared = entry.as ?? dtype;
    if (bytesPerElement(declared) !== bytesPerElement(dtype)) throw new Error(`${op}: ${name} (${dtype}) cannot be declared as ${declared}`);
    ranges.push(bound.range);
    const access = writable ? 'read_write' : 'read';
    const lanes = entry.vec4 ? 4 : entry.vec2 ? 2 : 1;
    if (entry.vec4 && entry.vec2) throw new Error(`${op}: ${name} cannot be bound both vec4 and vec2`);
    if (lanes > 1) {
      if (declared === 'bf16' || bound.elementOffset % lanes !== 0) throw new Error(`${op}: ${name} (${declared}) cannot be bound as vec${lanes}`);
      params.u32(`${name}Off`, bound.elementOffset / lanes);
      decls.push(`@group(0) @binding(${binding}) var<storage, ${access}> ${name}: array<vec${lanes}<${storageElement(declared)}>>;`);
      return;
    }
    params.u32(`${name}Off`, bound.elementOffset);
    decls.push(declareStorage(binding, name, declared, access));
    if (!writable && (declared === 'f32' || declared === 'bf16')) decls.push(loaderF32(name, declared));
  });
  return { decls: decls.join('\n'), ranges };
}
