/** A linear layer `y = x @ weight.T (+ bias)`, PyTorch's `nn.Linear` layout. */
import { linear, type Tensor } from '@nemotron-ts/kernels';
import { Module, type Placement } from './module';

export interface LinearOptions extends Placement {
  /** Adds a `bias` [outFeatures] parameter (default false). */
  bias?: boolean;
}

export class Linear extends Module {
  readonly hasBias: boolean;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: LinearOptions = {},
  ) {
    super();
    this.hasBias = options.bias ?? false;
    this.createParameter('weight', [outFeatures, inFeatures], options);
    if (this.hasBias) this.createParameter('bias', [outFeatures], options);
  }

  /** [outFeatures, inFeatures] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** [outFeatures], or null without bias. */
  get bias(): Tensor | null {
    return this.hasBias ? this.slotTensor('bias') : null;
  }

  /** x [..., in] → f32 [..., out]. */
  forward(x: Tensor): Tensor {
    return linear(x, this.weight, this.bias ?? undefined);
  }
}
