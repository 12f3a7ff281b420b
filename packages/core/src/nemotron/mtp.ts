/**
 * Multi-token prediction (spec §5): D depths, each a run of P sublayers following the MTP pattern.
 * A sublayer is an ordinary decoder block (`norm` + `mixer`); the first of a depth adds the fusion
 * `enorm`, `hnorm` and `eh_proj` (2H → H, input = [enorm(embedding) | hnorm(hidden)]), the last adds
 * `final_layernorm`. Sublayer `depth·P + s` is `mtp.layers.{depth·P+s}`. With
 * `mtp_use_repeated_layer` one physical depth is built and run D times (weights tied across depths).
 * MTP shares the backbone's embeddings and lm_head.
 */
import type { LayerKind, NemotronHConfig } from '../config';
import { Linear } from '../nn/linear';
import { Module, ModuleList, type Placement } from '../nn/module';
import { NemotronHBlock } from './block';
import { RMSNorm } from './rms-norm';

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

  /** Sublayer `s` of the weights that depth `depth` runs (depth 0's when layers are repeated). */
  sublayer(depth: number, s: number): MtpSublayer {
    if (depth < 0 || depth >= this.numDepths) throw new RangeError(`MTP depth ${depth} is outside 0..${this.numDepths - 1}`);
    if (s < 0 || s >= this.sublayersPerDepth) throw new RangeError(`MTP sublayer ${s} is outside 0..${this.sublayersPerDepth - 1}`);
    const physical = this.config.mtpUseRepeatedLayer ? 0 : depth;
    return this.layers.at(physical * this.sublayersPerDepth + s);
  }
}
