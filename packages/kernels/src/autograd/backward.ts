/** `backward()`: runs the recorded rules in reverse topological order and accumulates gradients. */
import { add } from '../ops/elementwise/elementwise';
import { BINARY, IDENTITY } from '../ops/elementwise/definitions';
import { elementwise } from '../ops/elementwise/elementwise-kernel';
import { copyInto, narrowRaw } from '../ops/layout/layout';
import { empty, onesLike, zeros } from '../creation';
import { profileSpan } from '../runtime/op-profile';
import { keep, tidy } from '../runtime/scope';
import { formatShape, shapesEqual } from '../shape';
import type { Tensor } from '../tensor';
import { noGrad, releaseNode, topoOrder, type GradNode, type GradTarget, type GradTargets } from './graph';

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
  // Edges into each node: a slice with one consumer can hand that consumer its rows of the input's gradient.
  const consumers = new Map<GradNode, number>();
  for (const node of order) for (const input of node.inputs) if (input.gradFn) consumers.set(input.gradFn, (consumers.get(input.gradFn) ?? 0) + 1);
  const pending = new Map<GradNode, Tensor>([[output.gradFn, seed]]);
  // Gradients this run made and alone holds (slice targets, rules' targets, sums): the only ones written in place.
  const writable = new Set<Tensor>();
  const accumulateNode = (node: GradNode, g: Tensor) => {
    const prev = pending.get(node);
    if (!prev) return void pending.set(node, g);
    const sum = keep(profileSpan('backward accumulate', () => add(prev, g)));
    writable.add(sum);
    pending.set(node, sum);
    prev.dispose();
    g.dispose();
  };
  const current = (input: Tensor): Tensor | undefined => (input.gradFn ? pending.get(input.gradFn) : (input.grad ?? undefined));
  const setCurrent = (input: Tensor, buffer: Tensor) => {
    writable.add(buffer);
    if (input.gradFn) pending.set(input.gradFn, buffer);
    else input.grad = buffer;
  };
  /**
   * `input`'s accumulating gradient as a buffer this run may write in place: zeros when there is
   * none yet, a copy of one that came from elsewhere; null when it cannot be (not f32 or misshapen).
   */
  const writableGrad = (input: Tensor): Tensor | null => {
    const target = current(input);
    if (target && writable.has(target)) return target;
    if (target && (target.dtype !== 'f32' || !shapesEqual(target.shape, input.shape))) return null;
    const buffer = keep(target ? elementwise('copy', IDENTITY, ['x'], [target]) : zeros(input.shape, { device: input.device }));
    target?.dispose();
    setCurrent(input, buffer);
    return buffer;
  };
  /** Adds a slice node's gradient into its input's accumulating gradient; false: take the rule's path. */
  const intoSlice = (node: GradNode, g: Tensor): boolean => {
    const input = node.inputs[0]!;
    const slice = node.slice!;
    if (node.inputs.length !== 1 || !input.requiresGrad || g.dtype !== 'f32') return false;
    const fresh = current(input) === undefined;
    return profileSpan('backward narrow', () => {
      const into = writableGrad(input);
      if (!into) return false;
      tidy(() => {
        const view = narrowRaw(into, slice.axis, slice.start, slice.length);
        if (fresh) copyInto(view, g);
        // WebGPU may not bind one buffer as both an input and the output.
        else if (g.device.kind === 'cpu') elementwise('add', BINARY.add, ['a', 'b'], [view, g], [], { into: view });
        else copyInto(view, add(view, g));
      });
      return true;
    });
  };
  /** Input `i` of `node`'s buffer for its rule to write (see GradTargets). */
  const targetsOf = (node: GradNode): GradTargets => ({
    into(i: number): GradTarget | null {
      const input = node.inputs[i];
      if (!input?.requiresGrad) return null;
      const target = current(input);
      if (target) return writable.has(target) ? { buffer: target, fresh: false } : null;
      const slice = input.gradFn?.slice;
      if (slice && input.gradFn!.inputs.length === 1 && consumers.get(input.gradFn!) === 1) {
        // The slice's only consumer: its rows of the parent's gradient, and the slice node then has nothing to do.
        const parent = input.gradFn!.inputs[0]!;
        const rows = parent.requiresGrad ? writableGrad(parent) : null;
        if (!rows) return null;
        const view = narrowRaw(rows, slice.axis, slice.start, slice.length);
        if (view.isContiguous) return { buffer: view, fresh: false };
        view.dispose();
        return null;
      }
      const buffer = keep(empty(input.shape, { device: input.device }));
      setCurrent(input, buffer);
      return { buffer, fresh: true };
    },
  });
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
    const grads = profileSpan(`backward ${node.name}`, () => tidy(() => rule(g, node.saved, targetsOf(node))));
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
