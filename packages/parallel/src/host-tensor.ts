/**
 * Tensors as they cross a worker boundary: dtype, shape and a typed array that owns its whole
 * ArrayBuffer, so the buffer can be transferred (moved, not copied) with the message.
 */
import { bytesPerElement, formatShape, tensor, type Device, type DType, type Tensor, type TypedArray } from '@nemotron-ts/kernels';

export class HostTensor {
  readonly shape: readonly number[];

  constructor(
    readonly dtype: DType,
    shape: readonly number[],
    readonly data: TypedArray,
  ) {
    this.shape = [...shape];
    const size = this.shape.reduce((n, d) => n * d, 1);
    if (size !== data.length) throw new Error(`HostTensor: ${data.length} values do not fill ${formatShape(this.shape)}`);
  }

  get byteLength(): number {
    return this.data.length * bytesPerElement(this.dtype);
  }

  /** The values widened to f32 (bf16 words converted). */
  toFloat32(): Float32Array {
    if (this.data instanceof Float32Array) return this.data;
    if (this.dtype === 'bf16') {
      const words = this.data as Uint16Array;
      const bits = new Uint32Array(words.length);
      for (let i = 0; i < words.length; i++) bits[i] = words[i]! << 16;
      return new Float32Array(bits.buffer);
    }
    return Float32Array.from(this.data);
  }

  /** A copy with a buffer of its own (sending a tensor moves its buffer: send a copy to each further worker). */
  clone(): HostTensor {
    return new HostTensor(this.dtype, this.shape, this.data.slice());
  }

  static fromF32(values: Float32Array, shape: readonly number[]): HostTensor {
    return new HostTensor('f32', shape, values);
  }

  static fromI32(values: Int32Array, shape: readonly number[]): HostTensor {
    return new HostTensor('i32', shape, values);
  }
}

/** Reads a device tensor back into a {@link HostTensor} with a buffer of its own. */
export async function toHost(t: Tensor): Promise<HostTensor> {
  const data = await t.data();
  return new HostTensor(t.dtype, t.shape, ownBuffer(data));
}

/** A device tensor with the host values (a fresh leaf). */
export function fromHost(h: HostTensor, device: Device): Tensor {
  return tensor(h.data, h.shape, { dtype: h.dtype, device });
}

/** `data` itself when it spans its whole buffer, else a copy that does (so transferring it moves nothing else). */
export function ownBuffer<T extends TypedArray>(data: T): T {
  if (data.byteOffset === 0 && data.byteLength === data.buffer.byteLength && data.buffer instanceof ArrayBuffer) return data;
  return data.slice() as T;
}
