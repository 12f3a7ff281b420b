/**
 * What the token mixers need to know about the rows of a batch besides their activations: which
 * positions are padding, and where packed documents start. MLP and MoE mixers need neither.
 */
import type { Tensor } from '@nemotron-ts/kernels';

export interface SequenceInfo {
  /**
   * f32 [B, L]: 1 = token, 0 = padding (HF's 2-D attention_mask), or null when every position is a
   * token. Attention never attends to padded keys; Mamba zeroes its input and its conv output there.
   */
  readonly paddingMask: Tensor | null;
  /**
   * i32 [B, L]: document id of each position of a packed row (NeMo's seq_idx, spec §4), or null
   * when each row is one sequence. No document sees another: attention is block-diagonal causal,
   * the conv reads zeros across a boundary and the SSM state restarts at each document.
   */
  readonly seqIdx: Tensor | null;
}

/** Rows that are each one unpadded sequence. */
export const PLAIN_SEQUENCES: SequenceInfo = Object.freeze({ paddingMask: null, seqIdx: null });
