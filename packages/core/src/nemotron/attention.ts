/**
 * GQA self-attention (spec §2.4): no positional encoding, no q/k norm. q/k/v/o never have
 * biases, whatever `attention_bias` says: HF's attention ignores the flag and the golden fixtures
 * follow HF (NeMo alone would add biases).
 */
import { attention, reshape, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import { PLAIN_SEQUENCES, type SequenceInfo } from './sequence';

export class Attention extends Module {
  readonly kind = 'attention' as const;
  readonly qProj: Linear;
  readonly kProj: Linear;
  readonly vProj: Linear;
  readonly oProj: Linear;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    const { hiddenSize: H, numAttentionHeads: nq, numKeyValueHeads: nkv, headDim: d } = config;
    this.qProj = this.registerModule('q_proj', new Linear(H, nq * d, placement));
    this.kProj = this.registerModule('k_proj', new Linear(H, nkv * d, placement));
    this.vProj = this.registerModule('v_proj', new Linear(H, nkv * d, placement));
    this.oProj = this.registerModule('o_proj', new Linear(nq * d, H, placement));
  }

  /**
   * x [B, L, H] → f32 [B, L, H]: causal attention with scale head_dim^-0.5, query head i reading kv
   * head i / (nq / nkv); padded keys are never attended to and packed documents only see themselves.
   */
  forward(x: Tensor, sequences: SequenceInfo = PLAIN_SEQUENCES): Tensor {
    return tidy(() => {
      const { numAttentionHeads: nq, numKeyValueHeads: nkv, headDim: d } = this.config;
      const [batch, length] = x.shape as [number, number, number];
      const q = reshape(this.qProj.forward(x), [batch, length, nq, d]);
      const k = reshape(this.kProj.forward(x), [batch, length, nkv, d]);
      const v = reshape(this.vProj.forward(x), [batch, length, nkv, d]);
      const o = attention(q, k, v, {
        causal: true,
        scale: d ** -0.5,
        keyMask: sequences.paddingMask ?? undefined,
        seqIds: sequences.seqIdx ?? undefined,
      });
      return this.oProj.forward(reshape(o, [batch, length, nq * d]));
    });
  }
}
