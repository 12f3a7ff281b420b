/**
 * A decoder block (spec §2.2): `h + mixer(norm(h))`, one pre-norm and exactly one mixer, whose type
 * comes from the layer pattern.
 */
import { add, tidy, type Tensor } from '@nemotron-ts/kernels';
import type { CachedDecode, CachedPrefill } from './cache';
import type { LayerKind, NemotronHConfig } from '../config';
import { Module, type Placement } from '../nn/module';
import { allocating, mixerSizes } from './allocation-errors';
import { Attention } from './attention';
import { Mamba2Mixer } from './mamba2';
import { MLP } from './mlp';
import { MoE } from './moe';
import { RMSNorm } from './rms-norm';
import { PLAIN_SEQUENCES, type SequenceInfo } from './sequence';

export type Mixer = Mamba2Mixer | Attention | MLP | MoE;

export function createMixer(kind: LayerKind, config: NemotronHConfig, placement: Placement = {}): Mixer {
  return allocating(`the ${kind} mixer's weights (${mixerSizes(kind, config)})`, () => buildMixer(kind, config, placement));
}

function buildMixer(kind: LayerKind, config: NemotronHConfig, placement: Placement): Mixer {
  switch (kind) {
    case 'mamba':
      return new Mamba2Mixer(config, placement);
    case 'attention':
      return new Attention(config, placement);
    case 'mlp':
      return new MLP(config, config.intermediateSize, placement);
    case 'moe':
      return new MoE(config, placement);
  }
}

export class NemotronHBlock extends Module {
  readonly norm: RMSNorm;
  readonly mixer: Mixer;

  constructor(
    readonly config: NemotronHConfig,
    readonly kind: LayerKind,
    placement: Placement = {},
  ) {
    super();
    this.norm = this.registerModule('norm', new RMSNorm(config.hiddenSize, config.layerNormEpsilon, placement));
    this.mixer = this.registerModule('mixer', createMixer(kind, config, placement));
  }

  /**
   * h [B, L, H] → f32 `h + mixer(norm(h))` (the residual stays f32: residual_in_fp32 needs nothing).
   * `cached`: this layer's cache entry for a prefill (Mamba and attention layers).
   */
  forward(h: Tensor, sequences: SequenceInfo = PLAIN_SEQUENCES, cached?: CachedPrefill): Tensor {
    return tidy(() => {
      const x = this.norm.forward(h);
      const mixer = this.mixer;
      const y = mixer.kind === 'mamba' || mixer.kind === 'attention' ? mixer.forward(x, sequences, cached) : mixer.forward(x);
      return add(h, y);
    });
  }

  /**
   * One decode step, h [B, 1, H] → f32 `h + mixer(norm(h))`. The block owns the norm and the residual
   * here as in {@link forward}; mixers with fused decode kernels take both into their first and last
   * projections (`decodeWithResidual`: a normed prologue and a residual epilogue instead of two more
   * kernels per layer, the decode step being bound by kernel count). `cached` is required for Mamba
   * and attention.
   */
  decode(h: Tensor, cached: CachedDecode | null): Tensor {
    const mixer = this.mixer;
    switch (mixer.kind) {
      case 'mamba':
      case 'attention':
        if (!cached) throw new Error(`NemotronHBlock.decode: a ${mixer.kind} layer needs its cache entry`);
        return mixer.decodeWithResidual(h, this.norm, cached);
      case 'mlp':
        return mixer.decodeWithResidual(h, this.norm);
      case 'moe':
        return tidy(() => add(h, mixer.forward(this.norm.forward(h))));
    }
  }
}
