/**
 * The optimizer base: parameter groups (each with its own hyperparameters over shared defaults),
 * per-parameter state (step count and f32 buffers, created at a parameter's first step), one fused
 * update per parameter tensor, and exact state save/restore.
 *
 * Trained parameters are f32 and dense: the update runs in place on them. A bf16 parameter is an
 * error — keep an f32 master copy and cast it for compute (mixed precision is the caller's choice).
 * Parameters without a gradient are skipped, and their step count does not advance.
 */
import { zeroGrad } from '../autograd/detach';
import { noGrad } from '../autograd/graph';
import { zeros } from '../creation';
import { mul } from '../ops/elementwise/elementwise';
import { contiguous } from '../ops/layout/layout';
import { formatShape, shapesEqual } from '../shape';
import type { Tensor } from '../tensor';
import { cloneDense } from './clone';

/** Optimizer state of one parameter. */
export interface ParamState {
  /** Updates applied to this parameter so far. */
  step: number;
  /** Named f32 buffers shaped like the parameter (moments, momentum). */
  buffers: Record<string, Tensor>;
}

/** Parameters plus any hyperparameters that override the optimizer's defaults for them. */
export type ParamGroupInput<H> = { params: readonly Tensor[] } & Partial<H>;

export type ParamGroup<H> = H & { params: Tensor[] };

/** A snapshot: copies of every state tensor, so it stays valid while training goes on. */
export interface OptimizerStateDict<H> {
  /** Calls to `step()` so far (what schedules read). */
  stepCount: number;
  /** Hyperparameters of each group, in order. */
  groups: H[];
  /** State of each parameter, groups in order (null before its first step). */
  params: (ParamState | null)[];
}

export interface StepOptions {
  /** Multiplies every group's learning rate for this step (the value of an LR schedule). */
  lrScale?: number;
  /**
   * Multiplies every gradient before the update (default 1): a clipping coefficient (see
   * `clipGradNorm`'s `scale: false`) applied inside the update where the optimizer can, saving the
   * pass that writes scaled gradients; the gradients themselves are left as they are.
   */
  gradScale?: number;
}

export abstract class Optimizer<H extends object> {
  readonly groups: ParamGroup<H>[];
  /** Calls to `step()` so far. */
  stepCount = 0;
  private readonly state = new Map<Tensor, ParamState>();

  protected constructor(
    /** Named in errors, e.g. `AdamW`. */
    readonly name: string,
    params: readonly Tensor[] | readonly ParamGroupInput<H>[],
    defaults: H,
  ) {
    const inputs: ParamGroupInput<H>[] = isTensorList(params) ? [{ params } as ParamGroupInput<H>] : [...params];
    const seen = new Set<Tensor>();
    this.groups = inputs.map((g, i) => {
      const group = { ...defaults, ...g, params: [...g.params] } as ParamGroup<H>;
      this.validate(group, i);
      for (const p of group.params) {
        if (seen.has(p)) throw new Error(`${name}: parameter ${p} appears in more than one group`);
        seen.add(p);
        this.checkParam(p);
      }
      return group;
    });
  }

  /** Throws on invalid hyperparameters of group `index`. */
  protected abstract validate(group: H, index: number): void;
  /** The zero-initialised buffers a parameter's state starts with. */
  protected abstract initialBuffers(param: Tensor, group: H): Record<string, Tensor>;
  /**
   * Updates `param` (and `state.buffers`) in place; `state.step` already counts this step. The
   * gradient to apply is `gradScale · grad` (gradScale is 1 unless {@link foldsGradScale}).
   */
  protected abstract update(param: Tensor, grad: Tensor, state: ParamState, group: H, lrScale: number, gradScale: number): void;

  /** Whether `update` applies a gradScale ≠ 1 itself for this parameter; otherwise `step` scales a copy of the gradient first. */
  protected foldsGradScale(_param: Tensor): boolean {
    return false;
  }

  /** Every parameter, groups in order. */
  get params(): Tensor[] {
    return this.groups.flatMap((g) => g.params);
  }

  private checkParam(p: Tensor): void {
    p.assertAlive(`${this.name} parameter`);
    if (p.dtype !== 'f32') {
      throw new Error(`${this.name}: parameter ${p} is ${p.dtype}; optimizers update f32 parameters (keep an f32 master copy and cast it for compute)`);
    }
    if (!p.isContiguous) throw new Error(`${this.name}: parameter ${p} must be dense (it is updated in place)`);
  }

  /** Applies one update to every parameter that has a gradient. */
  step(options: StepOptions = {}): void {
    const lrScale = options.lrScale ?? 1;
    if (!(lrScale >= 0)) throw new Error(`${this.name}.step: lrScale must be ≥ 0, got ${lrScale}`);
    const gradScale = options.gradScale ?? 1;
    if (!(gradScale >= 0 && gradScale < Infinity)) throw new Error(`${this.name}.step: gradScale must be finite and ≥ 0, got ${gradScale}`);
    noGrad(() => {
      for (const group of this.groups) {
        for (const p of group.params) {
          if (!p.grad) continue;
          this.checkParam(p);
          const grad = p.grad;
          grad.assertAlive(`${this.name} gradient`);
          if (!shapesEqual(grad.shape, p.shape) || grad.dtype !== 'f32' || grad.device !== p.device) {
            throw new Error(`${this.name}: gradient ${grad} does not match parameter ${p} ${formatShape(p.shape)}`);
          }
          let state = this.state.get(p);
          if (!state) this.state.set(p, (state = { step: 0, buffers: this.initialBuffers(p, group) }));
          state.step++;
          const folds = gradScale === 1 || this.foldsGradScale(p);
          const dense = !folds ? mul(grad, gradScale) : grad.isContiguous ? grad : contiguous(grad);
          try {
            this.update(p, dense, state, group, lrScale, folds ? gradScale : 1);
            // Written in place: copies kept for it (e.g. a frozen weight's packed matmul texture) are stale.
            p.storage.invalidateDerived();
          } finally {
            if (dense !== grad) dense.dispose();
          }
        }
      }
    });
    this.stepCount++;
  }

  /** Clears the gradients of every parameter. */
  zeroGrad(): void {
    zeroGrad(this.params);
  }

  /** Zero f32 buffers shaped like `param`. */
  protected zerosLike(param: Tensor): Tensor {
    return zeros(param.shape, { device: param.device });
  }

  stateDict(): OptimizerStateDict<H> {
    return {
      stepCount: this.stepCount,
      groups: this.groups.map(({ params: _params, ...hyper }) => ({ ...hyper }) as unknown as H),
      params: this.params.map((p) => {
        const s = this.state.get(p);
        return s ? { step: s.step, buffers: mapBuffers(s.buffers, cloneDense) } : null;
      }),
    };
  }

  /** Restores a snapshot taken by `stateDict()` (the snapshot's tensors are copied, not adopted). */
  loadStateDict(dict: OptimizerStateDict<H>): void {
    const params = this.params;
    if (dict.groups.length !== this.groups.length || dict.params.length !== params.length) {
      throw new Error(
        `${this.name}.loadStateDict: ${dict.groups.length} groups / ${dict.params.length} parameters, expected ${this.groups.length} / ${params.length}`,
      );
    }
    dict.groups.forEach((h, i) => this.validate(h, i));
    dict.params.forEach((s, i) => {
      if (!s) return;
      const p = params[i]!;
      for (const [key, t] of Object.entries(s.buffers)) {
        if (!shapesEqual(t.shape, p.shape) || t.dtype !== 'f32' || t.device !== p.device) {
          throw new Error(`${this.name}.loadStateDict: state '${key}' of parameter ${i} is ${t}, expected f32 ${formatShape(p.shape)} on ${p.device.kind}`);
        }
      }
    });
    this.disposeState();
    dict.groups.forEach((h, i) => Object.assign(this.groups[i]!, h, { params: this.groups[i]!.params }));
    dict.params.forEach((s, i) => {
      if (s) this.state.set(params[i]!, { step: s.step, buffers: mapBuffers(s.buffers, cloneDense) });
    });
    this.stepCount = dict.stepCount;
  }

  /** The state of `param` (null before its first step). */
  stateOf(param: Tensor): Readonly<ParamState> | null {
    return this.state.get(param) ?? null;
  }

  private disposeState(): void {
    for (const s of this.state.values()) for (const t of Object.values(s.buffers)) t.dispose();
    this.state.clear();
  }

  /** Releases the optimizer's state tensors (not the parameters or their gradients). */
  dispose(): void {
    this.disposeState();
  }
}

function isTensorList<H>(params: readonly Tensor[] | readonly ParamGroupInput<H>[]): params is readonly Tensor[] {
  return params.length === 0 || !('params' in params[0]!);
}

function mapBuffers(buffers: Record<string, Tensor>, fn: (t: Tensor) => Tensor): Record<string, Tensor> {
  return Object.fromEntries(Object.entries(buffers).map(([k, t]) => [k, fn(t)]));
}

/** Disposes every tensor of a state dict (snapshots own their copies). */
export function disposeStateDict<H>(dict: OptimizerStateDict<H>): void {
  for (const s of dict.params) if (s) for (const t of Object.values(s.buffers)) t.dispose();
}

/**
 * Two groups from one parameter list: matrices (rank ≥ 2) with `weightDecay`, vectors and scalars
 * (norm scales, biases) without — the usual setting for AdamW.
 */
export function decayGroups(params: readonly Tensor[], weightDecay: number): { params: Tensor[]; weightDecay: number }[] {
  return [
    { params: params.filter((p) => p.rank >= 2), weightDecay },
    { params: params.filter((p) => p.rank < 2), weightDecay: 0 },
  ];
}
