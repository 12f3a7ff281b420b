/**
 * Parameters of a depthwise causal 1-D convolution: one kernel of width K per channel. The weight is
 * [channels, K] (PyTorch's grouped `Conv1d` stores [channels, 1, K]; the state-dict adapter reshapes),
 * with tap K-1 multiplying the current position.
 */
import type { Tensor } from '@nemotron-ts/kernels';
import { Module, type Placement } from './module';

export interface DepthwiseConv1dOptions extends Placement {
  /** Adds a `bias` [channels] parameter (default true, like PyTorch). */
  bias?: boolean;
}

export class DepthwiseConv1d extends Module {
  readonly hasBias: boolean;

  constructor(
    readonly channels: number,
    readonly kernelSize: number,
    options: DepthwiseConv1dOptions = {},
  ) {
    super();
    this.hasBias = options.bias ?? true;
    this.createParameter('weight', [channels, kernelSize], options);
    if (this.hasBias) this.createParameter('bias', [channels], options);
  }

  /** [channels, kernelSize] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** [channels], or null without bias. */
  get bias(): Tensor | null {
    return this.hasBias ? this.slotTensor('bias') : null;
  }
}
