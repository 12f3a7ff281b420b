/**
 * Custom differentiable functions with a hand-written backward, so fused kernels (SSD scan, flash
 * attention, fused cross-entropy) plug into autograd as one node:
 *
 *   const scaled = defineFunction({
 *     name: 'scaled',
 *     forward(ctx, x: Tensor, s: number) { ctx.save(x); ctx.state.s = s; return mul(x, s); },
 *     backward(ctx, g) { return [mul(g, ctx.state.s as number)]; },
 *   });
 *   const y = scaled(x, 2);
 *
 * `forward` runs without recording; temporaries it creates are disposed when it returns, except
 * its result and what it passes to `ctx.save`. Saved tensors stay alive until the node's backward
 * has run (or its graph is dropped) and are released right after. The tensor arguments (top-level
 * `Tensor` values, in order) are the node's inputs; `backward` returns one gradient (or null) for each.
 */
import { keep, tidy } from '../runtime/scope';
import { Tensor } from '../tensor';
import { isGradEnabled, noGrad, record, type InputGrad } from './graph';

export interface FunctionContext<State> {
  /** Keeps tensors for backward. */
  save(...tensors: Tensor[]): void;
  /** The saved tensors in the order saved (inside backward). */
  readonly saved: readonly Tensor[];
  /** For each tensor input, whether it needs a gradient (a backward may skip the others' work). */
  readonly needsInputGrad: readonly boolean[];
  /** Non-tensor values forward leaves for backward (tensors go through `save`). Starts empty. */
  state: State;
}

export interface FunctionDefinition<Args extends readonly unknown[], State> {
  /** Node name, shown in errors. */
  name: string;
  forward(ctx: FunctionContext<State>, ...args: Args): Tensor;
  /** One gradient per tensor argument (null where there is none), from the output gradient. */
  backward(ctx: FunctionContext<State>, grad: Tensor): readonly InputGrad[];
}

class Context<State> implements FunctionContext<State> {
  toSave: Tensor[] = [];
  saved: readonly Tensor[] = [];
  state = {} as State;

  constructor(readonly needsInputGrad: readonly boolean[]) {}

  save(...tensors: Tensor[]): void {
    for (const t of tensors) t.assertAlive('ctx.save()');
    this.toSave.push(...tensors);
  }
}

/** Wraps `def` into a function that runs `forward` and records `backward` as one autograd node. */
export function defineFunction<Args extends readonly unknown[], State = Record<string, unknown>>(
  def: FunctionDefinition<Args, State>,
): (...args: Args) => Tensor {
  return (...args: Args): Tensor => {
    const inputs = args.filter((a): a is Tensor => a instanceof Tensor);
    const grad = isGradEnabled();
    const ctx = new Context<State>(inputs.map((t) => grad && t.requiresGrad));
    let held: Tensor[] = [];
    const out = tidy(() =>
      noGrad(() => {
        const result: unknown = def.forward(ctx, ...args);
        if (!(result instanceof Tensor)) throw new Error(`${def.name}: forward must return a Tensor`);
        held = ctx.toSave.map((t) => keep(t.share()));
        // The node's output must be a tensor of its own, never one of its inputs.
        return inputs.includes(result) ? result.share() : result;
      }),
    );
    ctx.toSave = [];
    record(
      def.name,
      out,
      inputs,
      (g, saved) => {
        ctx.saved = saved;
        try {
          const grads = def.backward(ctx, g);
          if (grads.length !== inputs.length) {
            throw new Error(`${def.name}: backward returned ${grads.length} gradients for ${inputs.length} tensor inputs`);
          }
          return grads;
        } finally {
          ctx.saved = [];
        }
      },
      held,
    );
    for (const t of held) t.dispose();
    return out;
  };
}
