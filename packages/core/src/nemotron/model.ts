/** The backbone (spec §2.0): embeddings, the pattern's blocks, and the final norm `norm_f`. */
import type { NemotronHConfig } from '../config';
import { Embedding } from '../nn/embedding';
import { Module, ModuleList, type Placement } from '../nn/module';
import { NemotronHBlock } from './block';
import { RMSNorm } from './rms-norm';

export class NemotronV3Model extends Module {
  readonly embeddings: Embedding;
  readonly layers: ModuleList<NemotronHBlock>;
  readonly normF: RMSNorm;

  constructor(
    readonly config: NemotronHConfig,
    placement: Placement = {},
  ) {
    super();
    this.embeddings = this.registerModule('embeddings', new Embedding(config.vocabSize, config.hiddenSize, placement));
    this.layers = this.registerModule('layers', new ModuleList(config.layerKinds.map((kind) => new NemotronHBlock(config, kind, placement))));
    this.normF = this.registerModule('norm_f', new RMSNorm(config.hiddenSize, config.layerNormEpsilon, placement));
  }
}
