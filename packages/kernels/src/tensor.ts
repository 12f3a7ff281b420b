/**
 * The tensor: a typed, shaped view (shape, strides, element offset) of reference-counted storage on
 * one device. Views (reshape, permute, narrow, expand) share storage; kernels that need dense input
 * make a contiguous copy. Data leaves the device only through `data()`.
 */
import type { GradNode } from './autograd/graph';
import type { Device } from './device/device';
import { allocArray, bf16BitsToF32, bytesPerElement, type DType, type DTypeArray, type TypedArray } from './dtype';
import { contiguous } from './ops/layout/layout';
import { Storage } from './runtime/storage';
import { trackTensor } from './runtime/scope';
import { contiguousStrides, formatShape, sizeOf, type Shape } from './shape';

export class Tensor {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
  private disposed = false;

  /** Whether gradients flow to this tensor (leaves: set by the user; results: set by autograd). */
  requiresGrad = false;
  /** Accumulated gradient of a leaf after `backward()`. */
  grad: Tensor | null = null;
  /** The autograd node that produced this tensor, if it was computed from tensors that require grad. */
  gradFn: GradNode | null = null;
  /** Optional name (parameters), used in error messages. */
  name: string | undefined;

  /** Low-level: wraps storage (the new tensor takes over one reference). Use the creation functions instead. */
  constructor(
    readonly storage: Storage,
    shape: Shape,
    strides: readonly number[] = contiguousStrides(shape),
    /** Offset of element [0, ..., 0] in the storage, in elements. */
    readonly offset = 0,
  ) {
    this.shape = Object.freeze([...shape]);
    this.strides = Object.freeze([...strides]);
    trackTensor(this);
  }

  get dtype(): DType {
    return this.storage.dtype;
  }

  get device(): Device {
    return this.storage.owner as Device;
  }

  get rank(): number {
    return this.shape.length;
  }

  /** Number of elements. */
  get size(): number {
    return sizeOf(this.shape);
  }

  get isDisposed(): boolean {
    return this.disposed;
  }

  /** True when elements are laid out densely in row-major order from `offset`. */
  get isContiguous(): boolean {
    let expected = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      const d = this.shape[i]!;
      if (d !== 1 && this.strides[i] !== expected) return false;
      expected *= d;
    }
    return true;
  }

  /** Releases this handle's reference to the storage (idempotent). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.storage.release();
  }

  /** `using t = …` disposes the handle at the end of the block. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  /** Throws a clear error when the tensor was disposed. */
  assertAlive(what = 'tensor'): void {
    if (this.disposed || !this.storage.alive) {
      throw new Error(`${what}${this.name ? ` '${this.name}'` : ''} ${formatShape(this.shape)} was used after dispose()`);
    }
  }

  /** A new handle to the same view, holding its own reference to the storage. */
  share(): Tensor {
    this.assertAlive();
    this.storage.retain();
    return new Tensor(this.storage, this.shape, this.strides, this.offset);
  }

  /** Marks a leaf tensor as requiring gradients. */
  requiresGrad_(flag = true): this {
    if (this.gradFn && !flag) throw new Error('requiresGrad_(false) on a non-leaf tensor: use detach()');
    this.requiresGrad = flag;
    return this;
  }

  /** Copies the elements to the host (waits for the device). bf16 comes back as its 16-bit words. */
  async data<D extends DType = DType>(): Promise<DTypeArray[D]> {
    this.assertAlive();
    if (!this.isContiguous) {
      const dense = contiguous(this);
      try {
        return await dense.data<D>();
      } finally {
        dense.dispose();
      }
    }
    const device = this.device;
    const n = this.size;
    if (device.kind === 'cpu') {
      const src = cpuView(this);
      const out = allocArray(this.dtype, n);
      out.set(src.subarray(this.offset, this.offset + n) as never);
      return out as DTypeArray[D];
    }
    const bpe = bytesPerElement(this.dtype);
    const bytes = await device.read(this.storage, this.offset * bpe, n * bpe);
    return typedArrayFrom(this.dtype, bytes.buffer as ArrayBuffer, n) as DTypeArray[D];
  }

  /** Copies the elements to the host as f32 (bf16 widened, integers converted). */
  async toFloat32(): Promise<Float32Array> {
    const d = await this.data();
    if (d instanceof Float32Array) return d;
    if (this.dtype === 'bf16') {
      const out = new Float32Array(d.length);
      for (let i = 0; i < d.length; i++) out[i] = bf16BitsToF32(d[i]!);
      return out;
    }
    return Float32Array.from(d);
  }

  /** The single value of a one-element tensor. */
  async item(): Promise<number> {
    if (this.size !== 1) throw new Error(`item(): tensor ${formatShape(this.shape)} has ${this.size} elements, not 1`);
    return (await this.toFloat32())[0]!;
  }

  toString(): string {
    return `Tensor(${formatShape(this.shape)}, ${this.dtype}, ${this.device.kind}${this.name ? `, '${this.name}'` : ''})`;
  }
}

function typedArrayFrom(dtype: DType, buffer: ArrayBuffer, length: number): TypedArray {
  switch (dtype) {
    case 'f32':
      return new Float32Array(buffer, 0, length);
    case 'bf16':
      return new Uint16Array(buffer, 0, length);
    case 'i32':
      return new Int32Array(buffer, 0, length);
    case 'u32':
      return new Uint32Array(buffer, 0, length);
  }
}

/** The whole CPU storage as a typed array of the tensor's dtype (index with offset and strides). */
export function cpuView<D extends DType>(t: Tensor & { dtype: D }): DTypeArray[D];
export function cpuView(t: Tensor): TypedArray;
export function cpuView(t: Tensor): TypedArray {
  const buffer = t.storage.cpu;
  if (!buffer) throw new Error(`${t} is not on the CPU`);
  return typedArrayFrom(t.dtype, buffer, t.storage.length);
}
