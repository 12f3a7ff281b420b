/**
 * Multi-token prediction (spec §5): D depths, each a run of P sublayers following the MTP pattern.
 * A sublayer is an ordinary decoder block (`norm` + `mixer`); the first of a depth adds the fusion
 * `enorm`, `hnorm` and `eh_proj` (2H → H, input = [enorm(embedding) | hnorm(hidden)]), the last adds
 * `final_layernorm`. Sublayer `depth·P + s` is `mtp.layers.{depth·P+s}`. With
 * `mtp_use_repeated_layer` one physical depth is built and run D times (weights tied across depths).
 * MTP shares the backbone's embeddings and lm_head.
 */
import { concat, isGradEnabled, narrow, tidy, zeros, type Tensor } from '@nemotron-ts/kernels';
import { checkpointed } from './checkpointed';
import type { LayerKind, NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, ModuleList, type Placement } from '../nn/module';
import { NemotronHBlock } from './block';
import { RMSNorm } from './rms-norm';
import type { SequenceInfo } from './sequence';

export class MtpSublayer extends NemotronHBlock {
  readonly enorm: RMSNorm | null;
  readonly hnorm: RMSNorm | null;
  readonly ehProj: Linear | null;
  readonly finalLayernorm: RMSNorm | null;

  constructor(
    config: NemotronHConfig,
    kind: LayerKind,
    /** Position of this sublayer within its depth. */
    readonly sublayerIndex: number,
    placement: Placement = {},
  ) {
    super(config, kind, placement);
    const H = config.hiddenSize;
    const eps = config.layerNormEpsilon;
    const first = sublayerIndex === 0;
    const last = sublayerIndex === config.mtpLayerKinds.length - 1;
    this.enorm = first ? this.registerModule('enorm', new RMSNorm(H, eps, placement)) : null;
    this.hnorm = first ? this.registerModule('hnorm', new RMSNorm(H, eps, placement)) : null;
    this.ehProj = first ? this.registerModule('eh_proj', new Linear(2 * H, H, placement)) : null;
    this.finalLayernorm = last ? this.registerModule('final_layernorm', new RMSNorm(H, eps, placement)) : null;
  }
}

export class MultiTokenPrediction extends Module {
  readonly layers: ModuleList<MtpSublayer>;
  /** D: depths that run (each predicts one token further ahead). */
  readonly numDepths: number;
  /** P: sublayers per depth. */
  readonly sublayersPerDepth: number;
  /** Recompute each sublayer during backward (see `NemotronV3Model.gradientCheckpointing`). */
  gradientCheckpointing = false;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    if (!config.mtpEnabled) throw new Error('MultiTokenPrediction: the config has no MTP (num_nextn_predict_layers = 0 or no MTP pattern)');
    this.numDepths = config.numNextnPredictLayers;
    this.sublayersPerDepth = config.mtpLayerKinds.length;
    const sublayers: MtpSublayer[] = [];
    for (let depth = 0; depth < config.mtpPhysicalDepths; depth++) {
      config.mtpLayerKinds.forEach((kind, s) => sublayers.push(new MtpSublayer(config, kind, s, placement)));
    }
    this.layers = this.registerModule('layers', new ModuleList(sublayers));
  }

  /**
   * Runs every depth (spec §5.2) and returns h_k, f32 [B, L, H] per depth. `hidden` is the
   * backbone's output after norm_f, `ids` the i32 [B, L] input ids; depth k fuses the previous
   * depth's output (the backbone's for k = 0) with the embeddings of the ids rolled left k + 1
   * places, zero-filled — over the whole row, across packed documents too (NeMo's single-rank
   * path; those positions have no target). The sublayers see the backbone's masks and documents.
   */
  forward(hidden: Tensor, ids: Tensor, embed: (ids: Tensor) => Tensor, sequences: SequenceInfo): Tensor[] {
    return tidy(() => {
      const outputs: Tensor[] = [];
      let h = hidden;
      for (let depth = 0; depth < this.numDepths; depth++) {
        const e = embed(rollLeft(ids, depth + 1));
        let x = h;
        for (let s = 0; s < this.sublayersPerDepth; s++) {
          const layer = this.sublayer(depth, s);
          const run = (input: Tensor, embedded: Tensor, seq: SequenceInfo) => {
            // Embedding first, then the hidden state (NeMo's concatenation order).
            let y = layer.ehProj ? layer.ehProj.forward(concat([layer.enorm!.forward(embedded), layer.hnorm!.forward(input)], -1)) : input;
            y = layer.forward(y, seq);
            return layer.finalLayernorm ? layer.finalLayernorm.forward(y) : y;
          };
          x =
            this.gradientCheckpointing && isGradEnabled()
              ? checkpointed(([input, embedded], seq) => run(input!, embedded!, seq), [x, e], sequences)
              : run(x, e, sequences);
        }
        outputs.push(x);
        h = x;
      }
      return outputs;
    });
  }

  /** Sublayer `s` of the weights that depth `depth` runs (depth 0's when layers are repeated). */
  sublayer(depth: number, s: number): MtpSublayer {
    if (depth < 0 || depth >= this.numDepths) throw new RangeError(`MTP depth ${depth} is outside 0..${this.numDepths - 1}`);
    if (s < 0 || s >= this.sublayersPerDepth) throw new RangeError(`MTP sublayer ${s} is outside 0..${this.sublayersPerDepth - 1}`);
    const physical = this.config.mtpUseRepeatedLayer ? 0 : depth;
    return this.layers.at(physical * this.sublayersPerDepth + s);
  }
}

/** ids [B, L] shifted left by `n` places along L, the last n filled with token 0. */
function rollLeft(ids: Tensor, n: number): Tensor {
  const [batch, length] = ids.shape as [number, number];
  const fill = zeros([batch, Math.min(n, length)], { dtype: 'i32', device: ids.device });
  return n >= length ? fill : concat([narrow(ids, 1, n, length - n), fill], 1);
}
