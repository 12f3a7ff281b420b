/**
 * Element types. Floating-point math always happens in f32; `bf16` is a storage format
 * (two values packed per 32-bit word on the GPU, a `Uint16Array` on the CPU — the same bytes).
 */
import { OutOfMemoryError } from './device/errors';

export type DType = 'f32' | 'bf16' | 'i32' | 'u32';

export type FloatDType = 'f32' | 'bf16';

/** The typed array a tensor of each dtype reads back as (bf16 comes back as its raw 16-bit words). */
export interface DTypeArray {
  f32: Float32Array;
  bf16: Uint16Array;
  i32: Int32Array;
  u32: Uint32Array;
}
export type TypedArray = DTypeArray[DType];

export const DTYPES: readonly DType[] = ['f32', 'bf16', 'i32', 'u32'];

export function bytesPerElement(dtype: DType): number {
  return dtype === 'bf16' ? 2 : 4;
}

export function isFloat(dtype: DType): dtype is FloatDType {
  return dtype === 'f32' || dtype === 'bf16';
}

export function isDType(value: unknown): value is DType {
  return typeof value === 'string' && (DTYPES as readonly string[]).includes(value);
}

/** Allocates a zeroed typed array for `length` elements of `dtype`. */
export function allocArray<D extends DType>(dtype: D, length: number): DTypeArray[D] {
  try {
    return allocTyped(dtype, length);
  } catch (e) {
    // The engine's bare "Out of memory" / "Array length" RangeError names nothing: say what was being allocated.
    if (e instanceof RangeError)
      throw new OutOfMemoryError(
        `a ${dtype} array of ${length} elements (${length * bytesPerElement(dtype)} bytes) cannot be allocated on the host (${e.message})`,
      );
    throw e;
  }
}

function allocTyped<D extends DType>(dtype: D, length: number): DTypeArray[D] {
  switch (dtype) {
    case 'f32':
      return new Float32Array(length) as DTypeArray[D];
    case 'bf16':
      return new Uint16Array(length) as DTypeArray[D];
    case 'i32':
      return new Int32Array(length) as DTypeArray[D];
    case 'u32':
      return new Uint32Array(length) as DTypeArray[D];
  }
  throw new Error(`unknown dtype '${String(dtype)}'`);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** Rounds an f32 value to bf16 (round to nearest even, NaN kept quiet) and returns its 16 bits. */
export function f32ToBf16Bits(value: number): number {
  f32Scratch[0] = value;
  const bits = u32Scratch[0]!;
  if ((bits & 0x7f800000) === 0x7f800000 && (bits & 0x007fffff) !== 0) return ((bits >>> 16) | 0x0040) & 0xffff;
  const rounded = bits + 0x7fff + ((bits >>> 16) & 1);
  return (rounded >>> 16) & 0xffff;
}

/** Widens bf16 bits to the f32 value they encode (exact). */
export function bf16BitsToF32(bits: number): number {
  u32Scratch[0] = (bits & 0xffff) << 16;
  return f32Scratch[0]!;
}

/** Converts a float array to bf16 words (round to nearest even). */
export function toBf16(values: ArrayLike<number>): Uint16Array {
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) out[i] = f32ToBf16Bits(values[i]!);
  return out;
}

/** Widens bf16 words to f32. */
export function fromBf16(words: Uint16Array): Float32Array {
  const out = new Float32Array(words.length);
  const outBits = new Uint32Array(out.buffer);
  for (let i = 0; i < words.length; i++) outBits[i] = words[i]! << 16;
  return out;
}
