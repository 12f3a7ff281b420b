/**
 * The element types a safetensors header may name, their sizes, and how they map onto the kernels'
 * dtypes (f32, bf16, i32, u32).
 */
import type { DType } from '@nemotron-ts/kernels';

/** Every dtype name the safetensors format defines with a whole number of bytes per element. */
export const SAFETENSORS_DTYPES = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E5M2: 1,
  F8_E4M3: 1,
  F8_E8M0: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
} as const;

/** A dtype name as safetensors headers spell it. */
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPES;

/** The stored float types a device tensor can be loaded from (F16 is converted on load). */
export type StoredFloatDType = 'F32' | 'BF16' | 'F16';

/** Whether `value` is a dtype name this package understands. */
export function isSafetensorsDType(value: unknown): value is SafetensorsDType {
  return typeof value === 'string' && Object.hasOwn(SAFETENSORS_DTYPES, value);
}

/** Bytes per element of a stored dtype. */
export function safetensorsBytesPerElement(dtype: SafetensorsDType): number {
  return SAFETENSORS_DTYPES[dtype];
}

/** Whether the stored dtype loads as a float device tensor. */
export function isStoredFloat(dtype: SafetensorsDType): dtype is StoredFloatDType {
  return dtype === 'F32' || dtype === 'BF16' || dtype === 'F16';
}

/** The safetensors name under which a kernels dtype is written. */
export function safetensorsDTypeOf(dtype: DType): SafetensorsDType {
  switch (dtype) {
    case 'f32':
      return 'F32';
    case 'bf16':
      return 'BF16';
    case 'i32':
      return 'I32';
    case 'u32':
      return 'U32';
  }
}
