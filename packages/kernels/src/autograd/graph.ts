/**
 * Reverse-mode autograd: each op that reads a tensor requiring gradients records a node holding
 * its backward rule and the tensors it saved. `backward()` walks the nodes in reverse topological
 * order, accumulates gradients, and releases every saved tensor as soon as its node has run.
 */
import { markForwardOp } from '../runtime/op-profile';
import { keep } from '../runtime/scope';
import type { Tensor } from '../tensor';

/** Gradient of one input, or null when that input gets none. */
export type InputGrad = Tensor | null;

/**
 * A buffer `backward()` offers a rule to write input `i`'s gradient into (see {@link GradTargets}):
 * dense f32 of the input's shape; `fresh` when it holds nothing yet (overwrite it), otherwise it holds
 * the gradient accumulated so far (add to it).
 */
export interface GradTarget {
  readonly buffer: Tensor;
  readonly fresh: boolean;
}

/**
 * Lets a rule write a gradient where it ends up instead of returning it for `backward()` to sum: a
 * GEMM adds its product into the sum (its beta = 1), and the gradient of a row slice of a weight
 * (Mamba's in_proj) lands in those rows of the weight's gradient. `into(i)` gives input `i`'s
 * buffer, or null where none is offered (return the gradient as usual). A rule that takes a buffer
 * must write it before asking for another and returns null for that input.
 */
export interface GradTargets {
  into(input: number): GradTarget | null;
}

/**
 * Backward rule: receives the output gradient and the saved tensors, returns one gradient per input
 * (or writes it into a buffer of `targets`).
 */
export type BackwardRule = (grad: Tensor, saved: readonly Tensor[], targets: GradTargets) => readonly InputGrad[];

/**
 * Marks a node whose one input's gradient is zero except along `axis` at [start, start + length),
 * where it is the node's output gradient (narrow): `backward()` may then write that gradient into
 * the slice of the input's gradient it is accumulating, instead of a full-size zero tensor per slice.
 */
export interface SliceGrad {
  readonly axis: number;
  readonly start: number;
  readonly length: number;
}

export interface GradNode {
  readonly name: string;
  readonly inputs: readonly Tensor[];
  readonly outputShape: readonly number[];
  saved: Tensor[];
  backward: BackwardRule | null;
  /** Set for a slice of its one input (see {@link SliceGrad}); the rule stays the general path. */
  readonly slice?: SliceGrad;
}

let gradEnabled = true;

export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording autograd nodes (inference, optimizer steps). */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/** Runs `fn` with recording switched on even inside {@link noGrad}. */
export function enableGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = true;
  try {
    return fn();
  } finally {
    gradEnabled = prev;
  }
}

/**
 * Called with each tensor that requires grad and is read by an op while recording is off. Lets
 * `checkpoint` find the leaves (parameters) its function uses without recording anything.
 */
let unrecordedInputObserver: ((t: Tensor) => void) | null = null;

/** Runs `fn`, reporting to `observer` every tensor requiring grad that an op reads under {@link noGrad}. */
export function observeUnrecordedInputs<T>(observer: (t: Tensor) => void, fn: () => T): T {
  const prev = unrecordedInputObserver;
  unrecordedInputObserver = observer;
  try {
    return fn();
  } finally {
    unrecordedInputObserver = prev;
  }
}

/** True when an op on `inputs` should record a node. */
export function needsGrad(inputs: readonly (Tensor | null | undefined)[]): boolean {
  if (!gradEnabled) {
    if (unrecordedInputObserver) for (const t of inputs) if (t?.requiresGrad) unrecordedInputObserver(t);
    return false;
  }
  return inputs.some((t) => t?.requiresGrad === true);
}

/**
 * Records the op that produced `output` from `inputs`. `saved` tensors stay alive (own references)
 * until the node's backward has run, even if the caller disposes them. `slice` marks a slice of the
 * one input (see {@link SliceGrad}).
 */
export function record(
  name: string,
  output: Tensor,
  inputs: readonly Tensor[],
  backward: BackwardRule,
  saved: readonly Tensor[] = [],
  slice?: SliceGrad,
): void {
  if (!needsGrad(inputs)) return;
  markForwardOp(name);
  output.requiresGrad = true;
  output.gradFn = {
    name,
    inputs: [...inputs],
    outputShape: [...output.shape],
    saved: saved.map((t) => keep(t.share())),
    backward,
    ...(slice ? { slice } : {}),
  };
}

export function releaseNode(node: GradNode): void {
  for (const t of node.saved) t.dispose();
  node.saved = [];
  node.backward = null;
}

/**
 * Releases the saved tensors of every node reachable from `roots` that has not run its backward
 * (a graph that will never be backpropagated), not walking past the nodes in `keep`.
 */
export function releaseGraph(roots: readonly Tensor[], keep: ReadonlySet<GradNode> = new Set()): void {
  const seen = new Set<GradNode>();
  const stack = roots.map((t) => t.gradFn).filter((n): n is GradNode => n !== null && n !== undefined);
  while (stack.length > 0) {
    const node = stack.pop()!;
    if (seen.has(node) || keep.has(node)) continue;
    seen.add(node);
    for (const input of node.inputs) if (input.gradFn) stack.push(input.gradFn);
    releaseNode(node);
  }
}

/** Topological order of the nodes reachable from `root` (iterative: model graphs are deep). */
export function topoOrder(root: GradNode): GradNode[] {
  const order: GradNode[] = [];
  const state = new Map<GradNode, 1 | 2>();
  const stack: [GradNode, number][] = [[root, 0]];
  state.set(root, 1);
  while (stack.length > 0) {
    const top = stack[stack.length - 1]!;
    const [node, i] = top;
    if (i < node.inputs.length) {
      top[1] = i + 1;
      const child = node.inputs[i]!.gradFn;
      if (child && !state.has(child)) {
        state.set(child, 1);
        stack.push([child, 0]);
      }
    } else {
      stack.pop();
      state.set(node, 2);
      order.push(node);
    }
  }
  return order.reverse();
}
