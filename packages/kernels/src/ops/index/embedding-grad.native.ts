/** Native embedding gradient (packages/kernels/native/embedding.c): the scatter-add of `embedding`'s backward for dense operands. */
import type { NativeKernels } from '../../native/library';
import type { Tensor } from '../../tensor';

/**
 * Adds the rows of `g` ([...ids.shape, hidden] f32) into the dense f32 `out` [vocab, hidden] at
 * their ids; false (nothing written) unless ids and g are dense.
 */
export function embeddingGradNative(lib: NativeKernels, out: Tensor, ids: Tensor, g: Tensor): boolean {
  if (!ids.isContiguous || !g.isContiguous || g.dtype !== 'f32' || out.dtype !== 'f32' || !out.isContiguous) return false;
  const [vocab, hidden] = out.shape as [number, number];
  const params = new Float64Array([ids.size, vocab, hidden, ids.offset, g.offset, out.offset]);
  if (lib.symbols.nt_embedding_backward(params, ids.storage.cpu, g.storage.cpu, out.storage.cpu) !== 0)
    throw new Error(`embedding backward: native kernel failed (out of memory?) for ${ids.size} ids into [${vocab}, ${hidden}]`);
  return true;
}
