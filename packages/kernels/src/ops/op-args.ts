/**
 * Argument handling shared by ops with several tensor inputs: shape and dtype checks whose errors
 * name the op and the tensor at fault, one device for all inputs, and dense copies of the inputs
 * that are released together once the kernels are recorded.
 */
import { needsGrad } from '../autograd/graph';
import { formatShape, shapesEqual } from '../shape';
import type { Tensor } from '../tensor';
import { contiguous } from './layout/layout';

export function expectShape(op: string, what: string, t: Tensor, shape: readonly number[]): void {
  if (!shapesEqual(t.shape, shape)) throw new Error(`${op}: ${what} must be ${formatShape(shape)}, got ${formatShape(t.shape)}`);
}

export function expectRank(op: string, what: string, t: Tensor, dims: readonly string[]): void {
  if (t.rank !== dims.length) throw new Error(`${op}: ${what} must be [${dims.join(', ')}], got ${formatShape(t.shape)}`);
}

export function expectFloat(op: string, what: string, t: Tensor): void {
  if (t.dtype !== 'f32' && t.dtype !== 'bf16') throw new Error(`${op}: ${what} must be f32 or bf16, got ${t.dtype}`);
}

/**
 * Checks that the given inputs (nulls skipped) are alive and on one device, and that none needs a
 * gradient when the op has no backward rule yet. Returns the device.
 */
export function checkInputs(op: string, named: Readonly<Record<string, Tensor | null | undefined>>, options: { differentiable: boolean }): Tensor['device'] {
  const present = Object.entries(named).filter((e): e is [string, Tensor] => e[1] != null);
  if (present.length === 0) throw new Error(`${op}: no tensor inputs`);
  const device = present[0]![1].device;
  for (const [what, t] of present) {
    t.assertAlive(`${op}: ${what}`);
    if (t.device !== device) throw new Error(`${op}: ${what} is on ${t.device.kind}, ${present[0]![0]} on ${device.kind}`);
  }
  if (!options.differentiable && needsGrad(present.map((e) => e[1]))) {
    const which = present.filter((e) => e[1].requiresGrad).map((e) => e[0]);
    throw new Error(
      `${op} backward is not implemented yet (${which.join(', ')} require${which.length === 1 ? 's' : ''} grad): run it under noGrad() or on detached tensors`,
    );
  }
  return device;
}

/** Dense views of an op's inputs (copies where strided), disposed together after the kernels are recorded. */
export class DenseInputs {
  private readonly owned: Tensor[] = [];

  of(t: Tensor): Tensor {
    const d = contiguous(t);
    this.owned.push(d);
    return d;
  }

  maybe(t: Tensor | null | undefined): Tensor | null {
    return t ? this.of(t) : null;
  }

  dispose(): void {
    for (const t of this.owned) t.dispose();
    this.owned.length = 0;
  }
}
