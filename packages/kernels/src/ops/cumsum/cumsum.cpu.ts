/** CPU reference for prefix sums over the rows of a dense [rows, cols] view (f64 for floats, wrapping for integers). */
import { cpuView, type Tensor } from '../../tensor';
import { storageReader } from '../cpu-values';

export function cumsumCpu(x: Tensor, rows: number, cols: number, reverse: boolean, out: Tensor): void {
  const read = storageReader(x);
  const dst = cpuView(out);
  const wrap = out.dtype === 'i32' ? (v: number) => v | 0 : out.dtype === 'u32' ? (v: number) => v >>> 0 : (v: number) => v;
  for (let r = 0; r < rows; r++) {
    let s = 0;
    for (let k = 0; k < cols; k++) {
      const c = reverse ? cols - 1 - k : k;
      s = wrap(s + read(x.offset + r * cols + c));
      dst[out.offset + r * cols + c] = s;
    }
  }
}
