/** A linear layer `y = x @ weight.T (+ bias)`, PyTorch's `nn.Linear` layout. */
import { add, fusedLinear, linear, narrow, relu2, rmsNorm, tidy, type FusedLinearOptions, type Tensor } from '@nemotron-ts/kernels';
import type { LinearAdapter } from './linear-adapter';
import { Module, type Placement } from './module';

export interface LinearOptions extends Placement {
  /** Adds a `bias` [outFeatures] parameter (default false). */
  bias?: boolean;
  /** Keep the parameters f32 whatever dtype the model is cast to (LoRA adapters). */
  keepF32?: boolean;
}

/** The prologue and epilogue of {@link Linear.fused} (its weight and bias are the layer's). */
export type FusedProjection = Omit<FusedLinearOptions, 'bias'>;

export class Linear extends Module {
  readonly hasBias: boolean;
  private attached: LinearAdapter | null = null;

  constructor(
    readonly inFeatures: number,
    readonly outFeatures: number,
    options: LinearOptions = {},
  ) {
    super();
    this.hasBias = options.bias ?? false;
    const slot = { keepF32: options.keepF32 ?? false };
    this.createParameter('weight', [outFeatures, inFeatures], options, slot);
    if (this.hasBias) this.createParameter('bias', [outFeatures], options, slot);
  }

  /** [outFeatures, inFeatures] */
  get weight(): Tensor {
    return this.slotTensor('weight');
  }

  /** [outFeatures], or null without bias. */
  get bias(): Tensor | null {
    return this.hasBias ? this.slotTensor('bias') : null;
  }

  /** The attached adapter (LoRA), or null. */
  get adapter(): LinearAdapter | null {
    return this.attached;
  }

  /** Attaches `adapter`: its modules become children of this layer, and every path adds its term. */
  attachAdapter(adapter: LinearAdapter): void {
    if (this.attached) throw new Error('Linear.attachAdapter: this layer already has an adapter');
    for (const [name, module] of adapter.modules) this.registerModule(name, module);
    this.attached = adapter;
  }

  /** Detaches the adapter and returns it (its modules are no longer children; the caller disposes them). */
  detachAdapter(): LinearAdapter {
    const adapter = this.attached;
    if (!adapter) throw new Error('Linear.detachAdapter: this layer has no adapter');
    for (const [name] of adapter.modules) this.unregisterModule(name);
    this.attached = null;
    return adapter;
  }

  /** x [..., in] → f32 [..., out], plus the adapter's term when one is attached and not merged. */
  forward(x: Tensor): Tensor {
    const adapter = this.activeAdapter();
    if (!adapter) return linear(x, this.weight, this.bias ?? undefined);
    return tidy(() => add(linear(x, this.weight, this.bias ?? undefined), adapter.expand(adapter.encode(x, this.training), 0, this.outFeatures)));
  }

  /**
   * x [..., in] → a function giving output rows [start, start + size) of `forward(x)` as dense
   * f32 [..., size], each computed on its own (no strided copy of one wide output). The adapter's
   * code of x is computed once, here, so every slice shares its dropout mask.
   */
  rows(x: Tensor): (start: number, size: number) => Tensor {
    const { weight, bias } = this;
    const adapter = this.activeAdapter();
    const code = adapter ? adapter.encode(x, this.training) : null;
    return (start, size) => {
      const base = linear(x, narrow(weight, 0, start, size), bias ? narrow(bias, 0, start, size) : undefined);
      return adapter && code ? add(base, adapter.expand(code, start, size)) : base;
    };
  }

  /**
   * The decode-step projection `residual + act(rmsNorm(x) Wᵀ + b)` as one fused kernel (inference
   * only, see `fusedLinear`). With an unmerged adapter its term is added to the product before the
   * activation, from the normalised input: the base product stays fused, the low-rank part (two
   * thin GEMVs) runs beside it, and the activation / residual move out of the kernel only when they
   * must follow the term. Merging the adapter (`mergeLora`) gives back the single kernel.
   */
  fused(x: Tensor, options: FusedProjection = {}): Tensor {
    const adapter = this.activeAdapter();
    if (!adapter) return fusedLinear(x, this.weight, { ...options, bias: this.bias });
    return tidy(() => {
      const { norm, activation, residual } = options;
      const normed = norm ? rmsNorm(x, norm.weight, norm.eps) : x;
      const term = adapter.expand(adapter.encode(normed, false), 0, this.outFeatures);
      if (!activation) return add(fusedLinear(x, this.weight, { bias: this.bias, norm, residual }), term);
      const activated = relu2(add(fusedLinear(x, this.weight, { bias: this.bias, norm }), term));
      return residual ? add(residual, activated) : activated;
    });
  }

  private activeAdapter(): LinearAdapter | null {
    return this.attached?.active ? this.attached : null;
  }
}
