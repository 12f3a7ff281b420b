/** Native (gated) group RMSNorm forward and backward (packages/kernels/native/norm.c) on dense host rows. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { NormLayout } from './norm.wgsl';

const floatCode = (t: Tensor | null) => (t ? (nativeDTypeCode(t.dtype) ?? 0) : 0);

/**
 * The params both kernels take (norm.c): the layout, the offsets of x, z, w and `fourth` (the
 * forward's output, the backward's upstream gradient), the dtypes of x, z, w, and whether z gates.
 */
function normParams(l: NormLayout, x: Tensor, z: Tensor | null, w: Tensor, fourth: Tensor): number[] {
  return [l.rows, l.d, l.groups, l.eps, x.offset, z?.offset ?? 0, w.offset, fourth.offset, floatCode(x), floatCode(z), floatCode(w), z ? 1 : 0];
}

/** Same contract as normCpu (out is dense f32). */
export function normNative(lib: NativeKernels, x: Tensor, z: Tensor | null, w: Tensor, l: NormLayout, out: Tensor): boolean {
  const params = new Float64Array(normParams(l, x, z, w, out));
  return lib.symbols.nt_norm(params, x.storage.cpu, z?.storage.cpu ?? null, w.storage.cpu, out.storage.cpu) === 0;
}

/** Same contract as normGradCpu (dx, dz, dw dense f32); false when an output does not start at offset 0. */
export function normGradNative(
  lib: NativeKernels,
  x: Tensor,
  z: Tensor | null,
  w: Tensor,
  g: Tensor,
  l: NormLayout,
  dx: Tensor,
  dz: Tensor | null,
  dw: Tensor,
): boolean {
  if ([dx, dz, dw].some((t) => t && t.offset !== 0)) return false;
  const params = new Float64Array([...normParams(l, x, z, w, g), floatCode(g)]);
  const rc = lib.symbols.nt_norm_backward(
    params,
    x.storage.cpu,
    z?.storage.cpu ?? null,
    w.storage.cpu,
    g.storage.cpu,
    dx.storage.cpu,
    dz?.storage.cpu ?? null,
    dw.storage.cpu,
  );
  if (rc !== 0) throw new Error('norm backward: the native kernel could not allocate its buffers');
  return true;
}
