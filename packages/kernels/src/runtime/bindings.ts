/**
 * Binding a list of named tensors for one kernel: each gets storage binding 1, 2, ... in order, a
 * `<name>Off` element offset in the Params (bindings start on aligned bytes, see `device.bind`), and
 * for read-only float tensors a `load_<name>(i) -> f32` loader. Kernels then index
 * `<name>[P.<name>Off + i]` or call `load_<name>(P.<name>Off + i)`.
 */
import type { WebGpuDevice } from '../device/webgpu-device';
import type { Tensor } from '../tensor';
import type { BufferRange } from './batch';
import type { Params } from './params';
import { declareStorage, loaderF32 } from './wgsl';

/** A slice of a storage buffer bound for a kernel, plus the element offset of the first element inside it. */
export interface BoundRange {
  range: BufferRange;
  /** Elements between the (aligned) start of the binding and the first element requested. */
  elementOffset: number;
}

export class BindingTooLargeError extends Error {
  override name = 'BindingTooLargeError';
}

export interface NamedBinding {
  name: string;
  tensor: Tensor;
  /** Written by the kernel (declared read_write, no loader). */
  writable?: boolean;
  /**
   * Declared `array<vec4<f32>>` with `<name>Off` in vec4 units (f32 only; the tensor's first element
   * must fall on a 16-byte boundary of its binding, as it does for freshly allocated tensors).
   */
  vec4?: boolean;
}

export interface BoundTensors {
  /** WGSL declarations of the storage bindings and loaders. */
  decls: string;
  /** Buffer ranges in binding order, for `device.run`. */
  ranges: BufferRange[];
}

/** Binds the dense extent of each tensor and adds its `<name>Off` field to `params`. */
export function bindTensors(device: WebGpuDevice, op: string, list: readonly NamedBinding[], params: Params): BoundTensors {
  const decls: string[] = [];
  const ranges: BufferRange[] = [];
  list.forEach(({ name, tensor, writable, vec4 }, i) => {
    const bound = device.bind(tensor.storage, tensor.offset, tensor.size, `${op}: ${name}`);
    ranges.push(bound.range);
    const access = writable ? 'read_write' : 'read';
    if (vec4) {
      if (tensor.dtype !== 'f32' || bound.elementOffset % 4 !== 0) throw new Error(`${op}: ${name} (${tensor.dtype}) cannot be bound as vec4<f32>`);
      params.u32(`${name}Off`, bound.elementOffset / 4);
      decls.push(`@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<vec4<f32>>;`);
      return;
    }
    params.u32(`${name}Off`, bound.elementOffset);
    decls.push(declareStorage(i + 1, name, tensor.dtype, access));
    if (!writable && (tensor.dtype === 'f32' || tensor.dtype === 'bf16')) decls.push(loaderF32(name, tensor.dtype));
  });
  return { decls: decls.join('\n'), ranges };
}
