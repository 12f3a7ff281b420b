/**
 * A worker's mixed precision, as the one-device trainer does it: each trained parameter that is not
 * f32 (bf16 weights) gets an f32 master copy that the optimizer updates; before a step the
 * parameter's (f32) gradient moves to its master, after it the master is rounded back into the
 * parameter. f32 parameters (A_log, D, dt_bias and LoRA adapters always) are their own masters.
 */
import { cast, copyInto, keep, noGrad, type Tensor } from '@nemotron-ts/kernels';

export class MasterWeights {
  /** [name, parameter, master] in the parameters' order; the master is the parameter itself when it is f32. */
  private readonly entries: readonly (readonly [string, Tensor, Tensor])[];

  constructor(named: readonly (readonly [string, Tensor])[]) {
    this.entries = named.map(([name, p]) => [name, p, p.dtype === 'f32' ? p : keep(noGrad(() => cast(p, 'f32')))] as const);
  }

  /** What the optimizer updates, by parameter name. */
  named(): [string, Tensor][] {
    return this.entries.map(([name, , m]) => [name, m]);
  }

  /** The masters that are copies (of bf16 parameters), by name. */
  separate(): [string, Tensor][] {
    return this.entries.filter(([, p, m]) => m !== p).map(([name, , m]) => [name, m]);
  }

  /** The master of `param` when it is a copy, else null. */
  copyOf(param: Tensor): Tensor | null {
    const e = this.entries.find(([, p]) => p === param);
    return e && e[2] !== param ? e[2] : null;
  }

  /** Hands each bf16 parameter's gradient to its master (before the optimizer step). */
  moveGradients(): void {
    for (const [, p, m] of this.entries) {
      if (m === p || !p.grad) continue;
      m.grad?.dispose();
      m.grad = p.grad;
      p.grad = null;
    }
  }

  /** Drops the masters' gradients and rounds the updated masters into the bf16 parameters (after the step). */
  copyBack(): void {
    noGrad(() => {
      for (const [, p, m] of this.entries) {
        if (m === p) continue;
        m.grad?.dispose();
        m.grad = null;
        copyInto(p, m);
        // Written in place: copies kept for it (packed matmul textures) are stale.
        p.storage.invalidateDerived();
      }
    });
  }

  /** Frees the master copies (not the parameters). */
  dispose(): void {
    for (const [, p, m] of this.entries) {
      if (m === p) continue;
      m.grad?.dispose();
      m.dispose();
    }
  }
}
