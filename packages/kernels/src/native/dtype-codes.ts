/** DType codes shared with packages/kernels/native/native.h (enum DT_*). */
import type { DType } from '../dtype';

export function nativeDTypeCode(dtype: DType): number | null {
  switch (dtype) {
    case 'f32':
      return 0;
    case 'bf16':
      return 1;
    case 'i32':
      return 2;
    default:
      return null;
  }
}
