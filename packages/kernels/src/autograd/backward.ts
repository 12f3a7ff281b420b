/** `backward()`: runs the recorded rules in reverse topological order and accumulates gradients. */
import { add } from '../ops/elementwise/elementwise';
import { BINARY, IDENTITY } from '../ops/elementwise/definitions';
import { elementwise } from '../ops/elementwise/elementwise-kernel';
import { copyInto, narrowRaw } from '../ops/layout/layout';
import { onesLike, zeros } from '../creation';
import { profileSpan } from '../runtime/op-profile';
import { keep, tidy } from '../runtime/scope';
import { formatShape, shapesEqual } from '../shape';
import type { Tensor } from '../tensor';
import { noGrad, releaseNode, topoOrder, type GradNode } from './graph';

export interface BackwardOptions {
  /** Upstream gradient; defaults to one for a one-element `output`. */
  grad?: Tensor;
  /**
   * Called with each leaf requiring grad as soon as its gradient is complete — no node left to run
   * adds to it — in that order (DDP's gradient hooks: roughly the parameters in reverse order of use).
   * Leaves the graph does not reach are not reported.
   */
  onLeafGrad?: (leaf: Tensor) => void;
}

export interface BackwardAsyncOptions extends Omit<BackwardOptions, 'onLeafGrad'> {
  /** As in {@link BackwardOptions}; a returned promise is awaited before the next node runs. */
  onLeafGrad?: (leaf: Tensor) => void | Promise<void>;
}

/**
 * Computes gradients of `output` with respect to every leaf that requires them, accumulating into
 * `leaf.grad` (always f32). Saved tensors are released node by node; the graph can be walked once.
 */
export function backward(output: Tensor, options: BackwardOptions = {}): void {
  const steps = start(output, options);
  noGrad(() => {
    for (const ready of steps) for (const leaf of ready) options.onLeafGrad?.(leaf);
  });
}

/**
 * {@link backward} that awaits `onLeafGrad`'s promises between nodes, so a hook can ship a
 * finished gradient (an all-reduce bucket) while the rest of the backward goes on.
 */
export async function backwardAsync(output: Tensor, options: BackwardAsyncOptions = {}): Promise<void> {
  const steps = start(output, options);
  for (;;) {
    const next = noGrad(() => steps.next());
    if (next.done) return;
    for (const leaf of next.value) await options.onLeafGrad?.(leaf);
  }
}

/** Checks `output` and the seed gradient; the returned steps each yield the leaves whose gradients just completed. */
function start(output: Tensor, options: { grad?: Tensor }): Generator<Tensor[], void> {
  if (!output.requiresGrad) throw new Error(`backward(): ${output} does not require grad (no input of its graph requires grad)`);
  let seed: Tensor;
  if (options.grad) {
    if (!shapesEqual(options.grad.shape, output.shape)) {
      throw new Error(`backward(): grad ${formatShape(options.grad.shape)} does not match output ${formatShape(output.shape)}`);
    }
    seed = keep(options.grad.share());
  } else {
    if (output.size !== 1) throw new Error(`backward(): ${output} is not a scalar; pass { grad } with the upstream gradient`);
    seed = keep(onesLike(output, 'f32'));
  }
  return run(output, seed);
}

function accumulateLeaf(leaf: Tensor, g: Tensor): void {
  if (leaf.grad) {
    const sum = keep(profileSpan('backward accumulate', () => add(leaf.grad!, g)));
    leaf.grad.dispose();
    g.dispose();
    leaf.grad = sum;
  } else leaf.grad = g;
}

function* run(output: Tensor, seed: Tensor): Generator<Tensor[], void> {
  if (!output.gradFn) {
    accumulateLeaf(output, seed);
    yield [output];
    return;
  }
  const order = topoOrder(output.gradFn);
  // Edges still to run into each leaf: its gradient is complete when none is left.
  const remaining = new Map<Tensor, number>();
  for (const node of order) for (const input of node.inputs) if (!input.gradFn && input.requiresGrad) remaining.set(input, (remaining.get(input) ?? 0) + 1);
  const completed = (node: GradNode): Tensor[] => {
    const done: Tensor[] = [];
    for (const input of node.inputs) {
      const left = remaining.get(input);
      if (left === undefined) continue;
      if (left > 1) remaining.set(input, left - 1);
      else {
        remaining.delete(input);
        done.push(input);
      }
    }
    return done;
  };
  const pending = new Map<GradNode, Tensor>([[output.gradFn, seed]]);
  const accumulateNode = (node: GradNode, g: Tensor) => {
    const prev = pending.get(node);
    if (!prev) return void pending.set(node, g);
    pending.set(node, keep(profileSpan('backward accumulate', () => add(prev, g))));
    prev.dispose();
    g.dispose();
  };
  // Gradients this run made for slices (narrow) to write into: the only ones written in place.
  const sliceBuffers = new Set<Tensor>();
  /** Adds a slice node's gradient into its input's accumulating gradient; false: take the rule's path. */
  const intoSlice = (node: GradNode, g: Tensor): boolean => {
    const input = node.inputs[0]!;
    const slice = node.slice!;
    if (node.inputs.length !== 1 || !input.requiresGrad || g.dtype !== 'f32') return false;
    const target = input.gradFn ? pending.get(input.gradFn) : input.grad;
    if (target && !sliceBuffers.has(target) && (target.dtype !== 'f32' || !shapesEqual(target.shape, input.shape))) return false;
    profileSpan('backward narrow', () => {
      let buffer = target;
      if (!buffer || !sliceBuffers.has(buffer)) {
        // A fresh buffer: zeros, or a copy of a gradient that came from elsewhere (never written in place).
        buffer = keep(buffer ? elementwise('copy', IDENTITY, ['x'], [buffer]) : zeros(input.shape, { device: g.device }));
        sliceBuffers.add(buffer);
        target?.dispose();
        if (input.gradFn) pending.set(input.gradFn, buffer);
        else input.grad = buffer;
      }
      const into = buffer;
      tidy(() => {
        const view = narrowRaw(into, slice.axis, slice.start, slice.length);
        if (!target) copyInto(view, g);
        // WebGPU may not bind one buffer as both an input and the output.
        else if (g.device.kind === 'cpu') elementwise('add', BINARY.add, ['a', 'b'], [view, g], [], { into: view });
        else copyInto(view, add(view, g));
      });
    });
    return true;
  };
  for (const node of order) {
    const g = pending.get(node);
    pending.delete(node);
    if (!g) {
      releaseNode(node);
      const done = completed(node);
      if (done.length > 0) yield done;
      continue;
    }
    const rule = node.backward;
    if (!rule) throw new Error(`backward(): the graph through '${node.name}' was already freed (backward runs once per forward)`);
    if (node.slice && intoSlice(node, g)) {
      g.dispose();
      releaseNode(node);
      const done = completed(node);
      if (done.length > 0) yield done;
      continue;
    }
    const grads = profileSpan(`backward ${node.name}`, () => tidy(() => rule(g, node.saved)));
    // A rule may pass its input gradient through or return one tensor for several inputs: give each
    // consumer its own handle so every handle is disposed exactly once.
    const seen = new Set<Tensor>([g, ...node.saved]);
    const owned = grads.map((gi) => {
      if (!gi) return null;
      const h = keep(seen.has(gi) ? gi.share() : gi);
      seen.add(gi);
      return h;
    });
    g.dispose();
    releaseNode(node);
    node.inputs.forEach((input, i) => {
      const gi = owned[i];
      if (!gi) return;
      if (!input.requiresGrad) return gi.dispose();
      if (!shapesEqual(gi.shape, input.shape)) {
        throw new Error(`backward of '${node.name}': gradient ${formatShape(gi.shape)} for input ${i} does not match its shape ${formatShape(input.shape)}`);
      }
      if (input.gradFn) accumulateNode(input.gradFn, gi);
      else accumulateLeaf(input, gi);
    });
    for (let i = node.inputs.length; i < owned.length; i++) owned[i]?.dispose();
    const done = completed(node);
    if (done.length > 0) yield done;
  }
  for (const g of pending.values()) g.dispose();
}
