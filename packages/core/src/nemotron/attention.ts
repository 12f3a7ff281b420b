/**
 * GQA self-attention (spec §2.4): no positional encoding, no q/k norm. q/k/v/o never have
 * biases, whatever `attention_bias` says: HF's attention ignores the flag and the golden fixtures
 * follow HF (NeMo alone would add biases).
 */
import { attention, copyInto, copyIntoAt, narrow, permute, reshape, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, type Placement } from '../nn/module';
import type { AttentionLayerCache, CachedDecode, CachedPrefill } from './cache';
import type { RMSNorm } from './rms-norm';
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
   * With a cache, k and v go into their slots [past, past + L) and the queries attend over every
   * cached key (the cache's key mask holds the padding).
   */
  forward(x: Tensor, sequences: SequenceInfo = PLAIN_SEQUENCES, cached?: CachedPrefill): Tensor {
    return tidy(() => {
      const { numAttentionHeads: nq, numKeyValueHeads: nkv, headDim: d } = this.config;
      const [batch, length] = x.shape as [number, number, number];
      const q = reshape(this.qProj.forward(x), [batch, length, nq, d]);
      const k = reshape(this.kProj.forward(x), [batch, length, nkv, d]);
      const v = reshape(this.vProj.forward(x), [batch, length, nkv, d]);
      let o: Tensor;
      if (cached) {
        const entry = cached.entry as AttentionLayerCache;
        copyInto(narrow(entry.k, 2, cached.past, length), permute(k, [0, 2, 1, 3]));
        copyInto(narrow(entry.v, 2, cached.past, length), permute(v, [0, 2, 1, 3]));
        o = attention(q, entry.k, entry.v, {
          causal: true,
          scale: d ** -0.5,
          kvLayout: 'bhsd',
          kvLength: cached.past + length,
          queryOffset: cached.past,
          keyMask: cached.keyMask ?? undefined,
        });
      } else {
        o = attention(q, k, v, {
          causal: true,
          scale: d ** -0.5,
          keyMask: sequences.paddingMask ?? undefined,
          seqIds: sequences.seqIdx ?? undefined,
        });
      }
      return this.oProj.forward(reshape(o, [batch, length, nq * d]));
    });
  }

  /**
   * One decode step with the enclosing block's norm and residual fused in (the block asks for it,
   * see `NemotronHBlock.decode`): h [B, 1, H] → f32 `h + attention(norm(h))`, the norm run inside
   * q/k/v_proj and h added by o_proj. The new k and v go into slot position − 1 and the query
   * attends over `position` keys, both read on the device.
   */
  decodeWithResidual(h: Tensor, norm: RMSNorm, cached: CachedDecode): Tensor {
    return tidy(() => {
      const { hiddenSize: H, numAttentionHeads: nq, numKeyValueHeads: nkv, headDim: d } = this.config;
      const batch = h.shape[0]!;
      const entry = cached.entry as AttentionLayerCache;
      const hs = reshape(h, [batch, H]);
      const normed = { norm: { weight: norm.weight, eps: norm.eps } };
      const q = reshape(this.qProj.fused(hs, normed), [batch, 1, nq, d]);
      // [B, nkv·d] is [B, nkv, 1, d] in memory: the slot's layout in the cache.
      copyIntoAt(entry.k, reshape(this.kProj.fused(hs, normed), [batch, nkv, 1, d]), 2, cached.position, -1);
      copyIntoAt(entry.v, reshape(this.vProj.fused(hs, normed), [batch, nkv, 1, d]), 2, cached.position, -1);
      const o = attention(q, entry.k, entry.v, {
        causal: true,
        scale: d ** -0.5,
        kvLayout: 'bhsd',
        kvLength: cached.position,
        keyMask: cached.keyMask ?? undefined,
      });
      return reshape(this.oProj.fused(reshape(o, [batch, nq * d]), { residual: hs }), [batch, 1, H]);
    });
  }
}
