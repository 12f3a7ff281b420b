/**
 * Inclusive prefix sum along an axis (default: the last). Float input (f32, bf16) gives f32;
 * i32 and u32 stay in their dtype and wrap on overflow. The gradient is the reversed prefix sum
 * of the upstream gradient.
 */
import { record } from '../../autograd/graph';
import { empty } from '../../creation';
import type { Tensor } from '../../tensor';
import { alongAxis, dense, rowsOf } from '../rows';
import { cumsumCpu } from './cumsum.cpu';
import { cumsumDType, cumsumGpu } from './cumsum.wgsl';

export function cumsum(x: Tensor, axis = -1): Tensor {
  x.assertAlive('cumsum input');
  if (x.rank === 0) throw new Error('cumsum: input must have at least one dimension, got a scalar');
  return alongAxis(x, axis, 'cumsum', (t) => {
    const out = prefixSum(t, false);
    record('cumsum', out, [t], (g) => [prefixSum(g, true)]);
    return out;
  });
}

/** Forward or reversed inclusive prefix sums over the last axis (not recorded). */
function prefixSum(x: Tensor, reverse: boolean): Tensor {
  const { rows, cols } = rowsOf(x);
  const out = empty(x.shape, { dtype: cumsumDType(x.dtype), device: x.device });
  if (out.size === 0) return out;
  const xd = dense(x);
  if (x.device.kind === 'cpu') cumsumCpu(xd, rows, cols, reverse, out);
  else cumsumGpu(x.device, xd, rows, cols, reverse, out);
  xd.dispose();
  return out;
}
