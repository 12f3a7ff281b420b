/**
 * The tensor: a typed, shaped view (shape, strides, element offset) of reference-counted storage on
 * one device. Views (reshape, permute, narrow, expand) share storage; kernels that need dense input
 * make a contiguous copy. Data leaves the device only through `data()`.
 */
import type { GradNode } from './autograd/graph';
import type { Device } from './device/device';
import { allocArray, bf16BitsToF32, bytesPerElement, type DType, type DTypeArray, type TypedArray } from './dtype';
import type { Storage } from './runtime/storage';
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
    const device = this.device;
    const n = this.size;
    // A strided view reads the storage range it spans and gathers on the host (no kernel: ops are built on tensors, not the reverse).
    const span = this.isContiguous ? n : viewSpan(this.shape, this.strides);
    let source: TypedArray;
    let base: number;
    if (device.kind === 'cpu') {
      source = cpuView(this);
      base = this.offset;
    } else {
      const bpe = bytesPerElement(this.dtype);
      const bytes = await device.read(this.storage, this.offset * bpe, span * bpe);
      source = typedArrayFrom(this.dtype, bytes.buffer as ArrayBuffer, span);
      base = 0;
    }
    const out = allocArray(this.dtype, n);
    if (this.isContiguous) out.set(source.subarray(base, base + n) as never);
    else gatherStrided(source, base, this.shape, this.strides, out);
    return out as DTypeArray[D];
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

/** Elements from a view's first element to its last (strides are non-negative). */
function viewSpan(shape: readonly number[], strides: readonly number[]): number {
  if (sizeOf(shape) === 0) return 0;
  let last = 0;
  for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * strides[i]!;
  return last + 1;
}

/** Copies the view (shape, strides) of `source` starting at `base` into the dense `out`, in row-major order. */
function gatherStrided(source: TypedArray, base: number, shape: readonly number[], strides: readonly number[], out: TypedArray): void {
  const rank = shape.length;
  const index = new Array<number>(rank).fill(0);
  const inner = rank > 0 ? shape[rank - 1]! : 1;
  const innerStride = rank > 0 ? strides[rank - 1]! : 0;
  let at = base;
  for (let o = 0; o < out.length; o += inner) {
    for (let j = 0; j < inner; j++) out[o + j] = source[at + j * innerStride]!;
    // Advance the outer index like an odometer.
    for (let d = rank - 2; d >= 0; d--) {
      index[d]!++;
      at += strides[d]!;
      if (index[d]! < shape[d]!) break;
      at -= index[d]! * strides[d]!;
      index[d] = 0;
    }
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
