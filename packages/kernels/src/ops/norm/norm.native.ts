/** Native (gated) group RMSNorm forward (packages/kernels/native/norm.c) on dense host rows. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { NormLayout } from './norm.wgsl';

const floatCode = (t: Tensor | null) => (t ? nativeDTypeCode(t.dtype) ?? 0 : 0);

/** Same contract as normCpu (out is dense f32). */
export function normNative(lib: NativeKernels, x: Tensor, z: Tensor | null, w: Tensor, l: NormLayout, out: Tensor): boolean {
  const params = new Float64Array([l.rows, l.d, l.groups, l.eps, x.offset, z?.offset ?? 0, w.offset, out.offset, floatCode(x), floatCode(z), floatCode(w), z ? 1 : 0]);
  return lib.symbols.nt_norm(params, x.storage.cpu, z?.storage.cpu ?? null, w.storage.cpu, out.storage.cpu) === 0;
}
