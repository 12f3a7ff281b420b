/** Native matmul (packages/kernels/native/gemm.c): the same strided problem as the CPU reference. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import type { Tensor } from '../../tensor';
import type { MatmulProblem, MatrixView } from './problem';

function viewParams(v: MatrixView): number[] | null {
  const code = nativeDTypeCode(v.tensor.dtype);
  if (code === null || code === 2) return null;
  return [code, v.offset, v.batchStride, v.rowStride, v.colStride];
}

/**
 * Writes `out` (dense f32 [batch, M, N] from its offset), or adds the product to it with
 * `accumulate`; false when the operands' dtypes are not supported.
 */
export function matmulNative(lib: NativeKernels, p: MatmulProblem, out: Tensor, accumulate = false): boolean {
  const a = viewParams(p.a);
  const b = viewParams(p.b);
  const biasCode = p.bias ? nativeDTypeCode(p.bias.tensor.dtype) : 0;
  if (!a || !b || biasCode === null || biasCode === 2) return false;
  const bias = p.bias ? [1, biasCode, p.bias.offset, p.bias.stride] : [0, 0, 0, 0];
  const params = new Float64Array([p.batch, p.m, p.n, p.k, ...a, ...b, ...bias, out.offset, accumulate ? 1 : 0]);
  const rc = lib.symbols.nt_gemm(params, p.a.tensor.storage.cpu, p.b.tensor.storage.cpu, p.bias?.tensor.storage.cpu ?? null, out.storage.cpu);
  if (rc !== 0) throw new Error(`matmul: native kernel failed (out of memory?) for [${p.batch}, ${p.m}, ${p.k}] · [${p.k}, ${p.n}]`);
  return true;
}
