/**
 * `incrementInPlace`: adds a constant to every element of an integer tensor, in place — the step
 * counters of a recorded decode step (cache positions), which live on the device so the recorded
 * kernels can read them. (An elementwise op cannot write into its own input: WebGPU forbids
 * binding one buffer for reading and writing in the same dispatch.)
 */
import { formatShape } from '../../shape';
import type { Tensor } from '../../tensor';
import { incrementCpu } from './increment.cpu';
import { incrementGpu } from './increment.wgsl';

/** t += by, elementwise; `t` is a dense i32 or u32 tensor, `by` an integer. */
export function incrementInPlace(t: Tensor, by: number): void {
  t.assertAlive('incrementInPlace');
  if ((t.dtype !== 'i32' && t.dtype !== 'u32') || !t.isContiguous)
    throw new Error(`incrementInPlace: needs a dense i32 or u32 tensor, got ${t.dtype} ${formatShape(t.shape)}`);
  if (!Number.isInteger(by) || Math.abs(by) > 0x7fffffff) throw new Error(`incrementInPlace: by must be an i32, got ${by}`);
  if (t.size === 0) return;
  t.storage.invalidateDerived();
  if (t.device.kind === 'cpu') incrementCpu(t, by);
  else incrementGpu(t.device, t, by);
}
