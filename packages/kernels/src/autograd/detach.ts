/** `detach` and `zeroGrad`: cutting a tensor out of the graph, and clearing accumulated gradients. */
import type { Tensor } from '../tensor';

/**
 * A new handle to the same storage and view that does not require grad and has no history:
 * gradients never flow through it. The caller disposes it like any tensor.
 */
export function detach(t: Tensor): Tensor {
  return t.share();
}

/** Disposes and clears `grad` of every tensor (parameters between optimizer steps). */
export function zeroGrad(params: Iterable<Tensor>): void {
  for (const p of params) {
    p.grad?.dispose();
    p.grad = null;
  }
}
