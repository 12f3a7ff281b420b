/** A token embedding table (a plain lookup, no scaling). */
import { embedding, type Tensor } from '@nemotron-ts/kernels';
import { Module, type Placement } from './module';

export class Embedding extends Module {
  constructor(
    readonly numEmbeddings: number,
    readonly embeddingDim: number,
    placement: Placement = {},
  ) {
    super();
    this.createParameter('weight', [numEmbeddings, embeddingDim], placement);
  }

  /** [numEmbeddings, embeddingDim] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** ids i32 [...] → f32 [..., embeddingDim]. */
  forward(ids: Tensor): Tensor {
    return embedding(this.weight, ids);
  }
}
