/**
 * Gradient checkpointing: trade compute for memory. The forward pass of `fn` runs without
 * recording, and its intermediates are disposed as soon as it returns: only the inputs are kept. When backward reaches the
 * result, `fn` runs again with recording on and its gradient is propagated through that fresh
 * graph, which is released as it goes.
 *
 * Gradients reach the tensor inputs and any leaf that `fn` reads directly (its parameters, found
 * while the forward runs). A tensor that requires grad but was computed outside `fn` must be passed
 * as an input. `fn` must compute the same thing twice (no hidden randomness or mutable state).
 */
import { tidy } from '../runtime/scope';
import type { Tensor } from '../tensor';
import { backward } from './backward';
import { detach } from './detach';
import { enableGrad, isGradEnabled, noGrad, observeUnrecordedInputs, record } from './graph';

export function checkpoint<Args extends Tensor[]>(fn: (...inputs: Args) => Tensor, ...inputs: Args): Tensor {
  if (!isGradEnabled()) return fn(...inputs);
  const leaves = new Set<Tensor>();
  const result = observeUnrecordedInputs(
    (t) => {
      if (!inputs.includes(t)) leaves.add(t);
    },
    () => tidy(() => noGrad(() => fn(...inputs))),
  );
  for (const t of leaves) {
    if (t.gradFn) throw new Error(`checkpoint: fn reads ${t}, which requires grad and was computed outside fn; pass it as an input`);
  }
  const out = inputs.includes(result) ? result.share() : result;
  const params = [...leaves];
  const needs = inputs.map((t) => t.requiresGrad);
  record(
    'checkpoint',
    out,
    [...inputs, ...params],
    (grad, saved) => {
      const detached = saved.map((s, i) => detach(s).requiresGrad_(needs[i]!)) as Args;
      const recomputed = enableGrad(() => fn(...detached));
      // The parameters' gradients accumulate directly during this inner pass.
      if (recomputed.requiresGrad) backward(recomputed, { grad });
      return [...detached.map((d) => d.grad), ...params.map(() => null)];
    },
    inputs,
  );
  return out;
}
