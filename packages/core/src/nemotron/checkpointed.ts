/**
 * Gradient checkpointing of one block (HF's `gradient_checkpointing_enable`): the block's forward
 * runs without saving its intermediates, and runs again during backward. The padding mask and
 * document ids are passed to `checkpoint` as inputs, so they stay alive until that recompute.
 */
import { checkpoint, type Tensor } from '@nemotron-ts/kernels';
import type { SequenceInfo } from './sequence';

/** `fn(inputs, sequences)` under `checkpoint`; gradients reach `inputs` and every parameter `fn` reads. */
export function checkpointed(fn: (inputs: Tensor[], sequences: SequenceInfo) => Tensor, inputs: readonly Tensor[], sequences: SequenceInfo): Tensor {
  const { paddingMask, seqIdx } = sequences;
  const extras = [paddingMask, seqIdx].filter((t): t is Tensor => t !== null);
  const n = inputs.length;
  return checkpoint(
    (...all: Tensor[]) => {
      let next = n;
      const seq: SequenceInfo = { paddingMask: paddingMask ? all[next++]! : null, seqIdx: seqIdx ? all[next++]! : null };
      return fn(all.slice(0, n), seq);
    },
    ...inputs,
    ...extras,
  );
}
