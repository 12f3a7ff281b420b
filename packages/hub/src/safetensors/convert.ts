/**
 * Turning stored little-endian bytes into typed arrays: the device dtypes (with f32 ↔ bf16 and
 * F16 → f32/bf16 conversion) and plain host arrays for every stored type.
 */
import { fromBf16, toBf16, type FloatDType, type TypedArray } from '@nemotron-ts/kernels';
import type { SafetensorsDType, StoredFloatDType } from './dtype';

// Typed arrays use the platform's byte order; safetensors is little-endian, as is every platform
// Bun runs on. Fail loudly rather than load byte-swapped weights.
if (new Uint8Array(Uint16Array.of(1).buffer)[0] !== 1) throw new Error('@nemotron-ts/hub needs a little-endian platform');

/** A typed array of a host tensor read from a file: floats widened to f32 (F64 kept), integers in their own width. */
export type HostArray =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

let f16Table: Uint32Array | null = null;

/** f32 bit patterns of all 65536 half-precision values (exact: every f16 is an f32). */
function f16ToF32Table(): Uint32Array {
  if (f16Table) return f16Table;
  const table = new Uint32Array(65536);
  const scratch = new Float32Array(1);
  const scratchBits = new Uint32Array(scratch.buffer);
  for (let h = 0; h < 65536; h++) {
    const sign = (h & 0x8000) << 16;
    const exponent = (h >>> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    if (exponent === 0) {
      // Zero and subnormals: m · 2^-24 is exact in f32.
      scratch[0] = mantissa * 2 ** -24;
      table[h] = (scratchBits[0]! | sign) >>> 0;
    } else if (exponent === 31) {
      table[h] = (sign | 0x7f800000 | (mantissa << 13)) >>> 0;
    } else {
      table[h] = (sign | ((exponent + 112) << 23) | (mantissa << 13)) >>> 0;
    }
  }
  return (f16Table = table);
}

/** Widens half-precision words to f32. */
export function f16ToF32(words: Uint16Array): Float32Array {
  const table = f16ToF32Table();
  const out = new Float32Array(words.length);
  const bits = new Uint32Array(out.buffer);
  for (let i = 0; i < words.length; i++) bits[i] = table[words[i]!]!;
  return out;
}

/** `bytes` viewed through `make`, copying only when the start is not aligned for it. */
function view<T>(bytes: Uint8Array, elementBytes: number, make: (buffer: ArrayBuffer, offset: number, length: number) => T): T {
  const aligned = bytes.byteOffset % elementBytes === 0 ? bytes : bytes.slice();
  return make(aligned.buffer as ArrayBuffer, aligned.byteOffset, aligned.byteLength / elementBytes);
}

const u16 = (b: Uint8Array) => view(b, 2, (buf, o, n) => new Uint16Array(buf, o, n));
const f32 = (b: Uint8Array) => view(b, 4, (buf, o, n) => new Float32Array(buf, o, n));

/** Stored float bytes as the values of a float device dtype (bf16 as its words). */
export function decodeFloat(bytes: Uint8Array, stored: StoredFloatDType, target: FloatDType): Float32Array | Uint16Array {
  switch (stored) {
    case 'F32':
      return target === 'f32' ? f32(bytes) : toBf16(f32(bytes));
    case 'BF16':
      return target === 'bf16' ? u16(bytes) : fromBf16(u16(bytes));
    case 'F16': {
      const wide = f16ToF32(u16(bytes));
      return target === 'f32' ? wide : toBf16(wide);
    }
  }
}

/** Stored bytes of any dtype as a host array (F16/BF16 widened to f32, F8 types as raw bytes). */
export function decodeHost(bytes: Uint8Array, stored: SafetensorsDType): HostArray {
  switch (stored) {
    case 'F32':
      return f32(bytes);
    case 'F16':
      return f16ToF32(u16(bytes));
    case 'BF16':
      return fromBf16(u16(bytes));
    case 'F64':
      return view(bytes, 8, (buf, o, n) => new Float64Array(buf, o, n));
    case 'I64':
      return view(bytes, 8, (buf, o, n) => new BigInt64Array(buf, o, n));
    case 'U64':
      return view(bytes, 8, (buf, o, n) => new BigUint64Array(buf, o, n));
    case 'I32':
      return view(bytes, 4, (buf, o, n) => new Int32Array(buf, o, n));
    case 'U32':
      return view(bytes, 4, (buf, o, n) => new Uint32Array(buf, o, n));
    case 'I16':
      return view(bytes, 2, (buf, o, n) => new Int16Array(buf, o, n));
    case 'U16':
      return u16(bytes);
    case 'I8':
      return new Int8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    case 'U8':
    case 'BOOL':
    case 'F8_E5M2':
    case 'F8_E4M3':
    case 'F8_E8M0':
      return bytes;
  }
}

/** Stored I32/U32 bytes as the matching integer device array. */
export function decodeInteger(bytes: Uint8Array, stored: 'I32' | 'U32'): TypedArray {
  return stored === 'I32' ? view(bytes, 4, (buf, o, n) => new Int32Array(buf, o, n)) : view(bytes, 4, (buf, o, n) => new Uint32Array(buf, o, n));
}
