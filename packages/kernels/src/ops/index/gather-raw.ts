/** The gather kernel without autograd: what `embedding`, `indexSelect` and `gather` run, and what scatter's backward runs. */
import { empty } from '../../creation';
import { isFloat } from '../../dtype';
import type { Tensor } from '../../tensor';
import { gatherCpu } from './gather.cpu';
import { gatherGpu } from './gather.wgsl';
import type { IndexMap } from './index-map';

/** Gathers `table` through `map` into a new dense tensor of `shape` (not recorded). */
export function gatherRaw(op: string, table: Tensor, index: Tensor, map: IndexMap, shape: readonly number[]): Tensor {
  const device = table.device;
  const out = empty(shape, { dtype: isFloat(table.dtype) ? 'f32' : table.dtype, device });
  if (out.size === 0) return out;
  if (device.kind === 'cpu') gatherCpu(table, index, map, out);
  else gatherGpu(device, op, table, index, map, out);
  return out;
}
