/** CPU reference for `incrementInPlace` (wrapping like the kernel's 32-bit integers). */
import { cpuView, type Tensor } from '../../tensor';

export function incrementCpu(t: Tensor, by: number): void {
  const data = cpuView(t) as Int32Array | Uint32Array;
  for (let i = t.offset; i < t.offset + t.size; i++) data[i] = data[i]! + by;
}
