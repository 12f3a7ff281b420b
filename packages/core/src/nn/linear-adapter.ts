/**
 * A trainable term attached to a {@link Linear} (LoRA is the one in this repository):
 * `y = x Wᵀ + b + delta(x)`. The Linear owns the routing, so every path through it — the training
 * forward, the row slices Mamba's in_proj takes, and the fused decode projections — adds the term.
 */
import type { Tensor } from '@nemotron-ts/kernels';
import type { Module } from './module';

export interface LinearAdapter {
  /** Modules registered as children of the Linear while attached, so their parameters join the tree. */
  readonly modules: readonly (readonly [string, Module])[];
  /** False while the term is folded into the Linear's weight (merged): the Linear then adds nothing. */
  readonly active: boolean;
  /**
   * x [..., in] → the low-rank code of x, computed once per input (dropout, when `training`, draws
   * one mask per input, shared by every row slice).
   */
  encode(x: Tensor, training: boolean): Tensor;
  /** code → the term for output rows [start, start + size): f32 [..., size]. */
  expand(code: Tensor, start: number, size: number): Tensor;
}
