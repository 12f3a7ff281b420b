/**
 * GQA self-attention parameters (spec §2.4): no positional encoding, no q/k norm. q/k/v/o never have
 * biases, whatever `attention_bias` says: HF's attention ignores the flag and the golden fixtures
 * follow HF (NeMo alone would add biases).
 */
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';

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
}
