/** Native fused cross-entropy (packages/kernels/native/cross_entropy.c): same contracts as cross-entropy.cpu.ts. */
import type { NativeKernels } from '../../native/library';
import { nativeDTypeCode } from '../../native/dtype-codes';
import { cpuView, type Tensor } from '../../tensor';
import { assertLabelsInRange } from './cross-entropy.cpu';
import type { CrossEntropyRows } from './cross-entropy.wgsl';

function logitsCode(logits: Tensor): number | null {
  const code = nativeDTypeCode(logits.dtype);
  return code === 0 || code === 1 ? code : null;
}

/** The params both kernels start with (cross_entropy.c's ce_params): sizes, ignore index, logits dtype, then the logits', labels' and lse's offsets. */
function rowParams(r: CrossEntropyRows, code: number, logits: Tensor, labels: Tensor, lse: Tensor): number[] {
  return [r.rows, r.classes, r.ignoreIndex, code, logits.offset, labels.offset, lse.offset];
}

/** Per-row log-sum-exp and loss from dense logits and labels; false when the logits' dtype has no kernel. */
export function crossEntropyNative(lib: NativeKernels, logits: Tensor, labels: Tensor, r: CrossEntropyRows, lse: Tensor, loss: Tensor): boolean {
  const code = logitsCode(logits);
  if (code === null) return false;
  assertLabelsInRange(cpuView(labels) as Int32Array, r, labels.offset);
  const params = new Float64Array([...rowParams(r, code, logits, labels, lse), loss.offset]);
  if (lib.symbols.nt_cross_entropy(params, logits.storage.cpu, labels.storage.cpu, lse.storage.cpu, loss.storage.cpu) !== 0)
    throw new Error(`crossEntropy: native kernel failed (out of memory?) for ${r.rows} rows of ${r.classes} classes`);
  return true;
}

/** dlogits = (softmax − onehot) · scale into dense f32 `dx`; false when the logits' dtype has no kernel. */
export function crossEntropyGradNative(
  lib: NativeKernels,
  logits: Tensor,
  labels: Tensor,
  lse: Tensor,
  scale: Tensor,
  perRowScale: boolean,
  r: CrossEntropyRows,
  dx: Tensor,
): boolean {
  const code = logitsCode(logits);
  if (code === null || scale.dtype !== 'f32' || lse.dtype !== 'f32') return false;
  const params = new Float64Array([...rowParams(r, code, logits, labels, lse), scale.offset, perRowScale ? 1 : 0, dx.offset]);
  const rc = lib.symbols.nt_cross_entropy_backward(params, logits.storage.cpu, labels.storage.cpu, lse.storage.cpu, scale.storage.cpu, dx.storage.cpu);
  if (rc !== 0) throw new Error(`crossEntropy backward: native kernel failed (out of memory?) for ${r.rows} rows of ${r.classes} classes`);
  return true;
}
